"""The order state machine and the money of a final status (pure)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from server.common.errors import FailedPrecondition
from server.common.money import price_of
from server.orders import states
from server.orders.repo import OrderRow
from server.orders.tracking import (
    partial_without_remains,
    poll_interval_s,
    split_money,
    upstream_target,
    upstream_word,
)
from server.providers.adapters.base import OrderStatus, UpstreamStatus


def order(
    price: int, quantity: int, runs: int = 1, status: str = "in_progress", type_: str = "DEFAULT"
) -> OrderRow:
    now = datetime.now(UTC)
    return OrderRow(
        id=1, user_id=1, service_id=1, service_name="s", service_type=type_, status=status, link="", quantity=quantity,
        runs=runs, interval_minutes=0, upstream_params={}, billable=quantity * runs, price_micros=price,
        charged_micros=0, released_micros=0, provider_id=1, upstream_service_id="1", upstream_order_id="9",
        attempt=0, start_count=None, remains=None, source="web", status_note="", create_time=now, update_time=now,
        cancel_state="", cancel_message="", finish_time=None, service_refill=False, refill_days=0, service_cancel=False,
        pinned_provider=False,
        panel_dripfeed=False,
    )  # fmt: skip


def test_every_state_has_its_moves_and_finals_have_none() -> None:
    assert set(states.TRANSITIONS) == states.ALL
    for final in states.FINAL:
        assert states.TRANSITIONS[final] == frozenset()
    for targets in states.TRANSITIONS.values():
        assert targets <= states.ALL
    assert states.can_move("pending", "submitting")
    assert not states.can_move("completed", "canceled")
    assert not states.can_move("pending", "completed")  # never completed without going upstream
    assert states.can_move("in_progress", "in_progress")  # a poll that finds no change
    for final in states.FINAL:  # finishing twice would split the money twice
        assert not states.can_move(final, final)
    with pytest.raises(FailedPrecondition):
        states.check_move("failed", "in_progress")


@pytest.mark.parametrize(
    ("status", "remains", "expected"),
    [
        ("completed", None, (389_610, 0)),
        ("completed", 50, (389_610, 0)),  # remains on a completed order never release
        ("canceled", None, (0, 389_610)),
        ("failed", None, (0, 389_610)),
        ("partial", 111, (259_740, 129_870)),  # 389610 x 111 / 333 = 129870 exactly
        ("partial", 1, (388_440, 1_170)),  # 389610 / 333 = 1170
        ("partial", 0, (389_610, 0)),
        ("partial", 500, (0, 389_610)),  # over-reported remains never release more than was held
        ("partial", -5, (389_610, 0)),
    ],
)
def test_final_money_splits_exactly(status: str, remains: int | None, expected: tuple[int, int]) -> None:
    row = order(389_610, 333)
    charged, released = split_money(row, status, remains)
    assert (charged, released) == expected
    assert charged + released == row.price_micros


def test_partial_rounds_half_up_per_order() -> None:
    # 1,000,000 x 1 / 3 = 333,333.33 -> 333,333 released; 2 / 3 = 666,666.67 -> 666,667
    assert split_money(order(1_000_000, 3), "partial", 1) == (666_667, 333_333)
    assert split_money(order(1_000_000, 3), "partial", 2) == (333_333, 666_667)
    # drip-feed: remains count every run
    assert split_money(order(600_000, 100, runs=3), "partial", 150) == (300_000, 300_000)


def test_price_rounds_once_half_up_after_the_discount() -> None:
    assert price_of(1_170_000, 333, 0) == 389_610
    assert price_of(1_170_000, 333, 1_000) == 350_649  # 389,610 x 0.9 = 350,649
    assert price_of(1, 500, 0) == 1  # 0.5 micro rounds up
    assert price_of(1, 499, 0) == 0
    assert price_of(2_500_000, 1000, 10_000) == 0  # a 100% discount


def test_upstream_words_map_onto_our_states() -> None:
    assert upstream_target(order(1, 1), "Processing") == "processing"
    assert upstream_target(order(1, 1), "Pending") == "in_progress"
    assert upstream_target(order(1, 1, type_="SUBSCRIPTIONS"), "In progress") == "active"
    assert upstream_target(order(1, 1, type_="SUBSCRIPTIONS"), "Partial") == "expired"
    # Subscription words: states of their own for a subscription, what they mean for another order.
    sub = order(1, 1, type_="SUBSCRIPTIONS", status="active")
    assert [upstream_target(sub, w) for w in ("Paused", "Expired", "Active")] == [
        "paused",
        "expired",
        "active",
    ]
    paused = order(1, 1, type_="SUBSCRIPTIONS", status="paused")
    assert [upstream_target(paused, w) for w in ("Active", "In progress", "Paused")] == [
        "active",
        "active",
        "paused",
    ]
    assert [upstream_target(order(1, 1), w) for w in ("Active", "Paused", "Expired")] == [
        "in_progress",
        "in_progress",
        "completed",
    ]
    expired = UpstreamStatus(OrderStatus.COMPLETED, subscription_word="Expired")
    assert partial_without_remains(expired, upstream_target(sub, upstream_word(expired)))
    assert not partial_without_remains(expired, upstream_target(order(1, 1), upstream_word(expired)))
    assert [poll_interval_s(a) for a in (0, 900, 7200, 200_000)] == [15, 60, 300, 1800]
