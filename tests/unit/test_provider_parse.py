"""Lenient parsing of provider replies, the breaker's state machine and the adapter types (all pure)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from server.catalog.importer import Offer, ProviderTerms, plan
from server.catalog.pricing import PricingRule, Rules
from server.catalog.repo import SyncedService
from server.common.errors import FailedPrecondition
from server.providers import adapters
from server.providers.adapters import (
    ADAPTERS,
    AddOrder,
    Balance,
    OrderStatus,
    ProviderConnection,
    RefillState,
    Rejected,
    Unknown,
    UpstreamStatus,
)
from server.providers.adapters.base import SERVICE_TYPES
from server.providers.adapters.breaker import BreakerPhase, BreakerPolicy, BreakerState, admit, observe
from server.providers.adapters.parse import (
    Body,
    ParseError,
    UnrecognisedWord,
    classify,
    load_json,
    normalise_refill_state,
    normalise_status,
    normalise_type,
    parse_add,
    parse_balance,
    parse_cancel,
    parse_refill,
    parse_refill_status,
    parse_refill_statuses,
    parse_refills,
    parse_services,
    parse_status,
    parse_statuses,
    redact,
    to_bool,
    to_id,
    to_int,
    to_micros,
)


def j(text: str) -> object:
    """JSON as the adapter loads it (decimals as Decimal)."""
    return load_json(text)


# --- scalars ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("157", 157),
        (157, 157),
        (" 157 ", 157),
        ("157.0", 157),
        (Decimal("3572"), 3572),
        ("1,234", 1234),
        ("-5", -5),  # over-delivery shows as negative remains
        ("Unknown", None),
        ("unknown", None),
        ("", None),
        ("N/A", None),
        (None, None),
        ("12.5", None),
        ("abc", None),
        (True, None),
        ("NaN", None),
        ("Infinity", None),
        ("1e999999", None),
        ([], None),
        ("9223372036854775807", 2**63 - 1),
        ("9300000000000000000", None),  # beyond BIGINT: it once failed the status update (a 500)
        ("-9300000000000000000", None),
    ],
)
def test_to_int(value: object, expected: int | None) -> None:
    assert to_int(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0.27819", 278_190),
        ("0.90", 900_000),
        ("8", 8_000_000),
        (8, 8_000_000),
        (Decimal("0.5"), 500_000),
        (0.5, 500_000),  # only if someone parsed JSON with floats; no binary noise leaks in
        ("100.84292", 100_842_920),
        ("0.0000005", 1),  # half up
        ("0.00000049", 0),
        ("-0.0000005", -1),  # half away from zero
        ("1e-3", 1_000),
        (" 12.50 ", 12_500_000),
        ("", None),
        ("free", None),
        ("NaN", None),
        (None, None),
        (False, None),
        ("1e30", None),  # absurdly large: refused rather than overflowing BIGINT later
        ("1e999999", None),
        ("1000000001", None),  # over MAX_MICROS
    ],
)
def test_to_micros(value: object, expected: int | None) -> None:
    assert to_micros(value) == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        ("true", True),
        ("True", True),
        (1, True),
        ("1", True),
        ("yes", True),
        (False, False),
        ("false", False),
        (0, False),
        ("0", False),
        (None, False),
        ("", False),
        ("maybe", False),
        (2, False),
    ],
)
def test_to_bool(value: object, expected: bool) -> None:
    assert to_bool(value) is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (23501, "23501"),
        ("23501", "23501"),
        (" 23501 ", "23501"),
        (Decimal("23501"), "23501"),
        (Decimal("23501.0"), "23501"),
        ("007", "7"),
        ("a1b2-c3", "a1b2-c3"),  # opaque string ids are kept
        (0, None),
        ("0", None),
        (-4, None),
        ("", None),
        ("12 34", None),
        (Decimal("1.5"), None),
        (True, None),
        (None, None),
        ("x" * 65, None),
        ("\u00b2", "\u00b2"),  # "²".isdigit() is true, int("²") fails: an opaque id, not a number
    ],
)
def test_to_id(value: object, expected: str | None) -> None:
    assert to_id(value) == expected


# --- words -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Default", "Default"),
        ("default", "Default"),
        ("DEFAULT", "Default"),
        ("custom comments", "Custom Comments"),
        ("custom_comments_package", "Custom Comments Package"),
        ("Mentions  With   Hashtags", "Mentions with Hashtags"),
        ("seo", "SEO"),
        ("web-traffic", "Web Traffic"),
        ("Subscription", "Subscriptions"),
        ("Invites From Groups", "Invites from Groups"),
        ("Something New", "Something New"),  # unknown kept as given
        ("", "Default"),
        (None, "Default"),
    ],
)
def test_normalise_type(value: object, expected: str) -> None:
    assert normalise_type(value) == expected


def test_every_canonical_type_maps_to_itself() -> None:
    assert [normalise_type(t) for t in SERVICE_TYPES] == list(SERVICE_TYPES)
    assert [normalise_type(t.lower()) for t in SERVICE_TYPES] == list(SERVICE_TYPES)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Pending", OrderStatus.PENDING),
        ("pending", OrderStatus.PENDING),
        ("Awaiting", OrderStatus.PENDING),
        ("In progress", OrderStatus.IN_PROGRESS),
        ("In Progress", OrderStatus.IN_PROGRESS),
        ("in_progress", OrderStatus.IN_PROGRESS),
        ("inprogress", OrderStatus.IN_PROGRESS),
        ("Active", OrderStatus.IN_PROGRESS),
        ("Paused", OrderStatus.IN_PROGRESS),
        ("Processing", OrderStatus.PROCESSING),
        ("processing", OrderStatus.PROCESSING),
        ("Completed", OrderStatus.COMPLETED),
        ("COMPLETED", OrderStatus.COMPLETED),
        ("Complete", OrderStatus.COMPLETED),
        ("Expired", OrderStatus.COMPLETED),
        ("Partial", OrderStatus.PARTIAL),
        ("partially completed", OrderStatus.PARTIAL),
        ("Canceled", OrderStatus.CANCELED),
        ("Cancelled", OrderStatus.CANCELED),
        ("canceled", OrderStatus.CANCELED),
        ("Refunded", OrderStatus.CANCELED),
        ("refunds", OrderStatus.CANCELED),
        ("Failed", None),
        ("Error", None),
        ("Unknown", None),
        ("", None),
        (None, None),
        (3, None),
    ],
)
def test_normalise_status(value: object, expected: OrderStatus | None) -> None:
    assert normalise_status(value) is expected


def test_order_statuses_are_the_six_pp_words() -> None:
    assert [s.value for s in OrderStatus] == [
        "Pending",
        "In progress",
        "Processing",
        "Completed",
        "Partial",
        "Canceled",
    ]
    assert {s for s in OrderStatus if s.final} == {
        OrderStatus.COMPLETED,
        OrderStatus.PARTIAL,
        OrderStatus.CANCELED,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Pending", RefillState.PENDING),
        ("Awaiting", RefillState.PENDING),
        ("In progress", RefillState.IN_PROGRESS),
        ("Processing", RefillState.IN_PROGRESS),
        ("Completed", RefillState.COMPLETED),
        ("Processed", RefillState.COMPLETED),
        ("Rejected", RefillState.REJECTED),
        ("Failed", RefillState.REJECTED),
        ("Error", RefillState.REJECTED),
        ("Canceled", RefillState.REJECTED),
        ("whatever", None),
        (None, None),
    ],
)
def test_normalise_refill_state(value: object, expected: RefillState | None) -> None:
    assert normalise_refill_state(value) is expected


# --- classification --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "text", "kind", "detail"),
    [
        (200, '{"order": 23501}', "body", {"order": 23501}),
        (200, '\ufeff{"order": 1}', "body", {"order": 1}),  # a BOM is tolerated
        (201, '{"order": 1}', "body", {"order": 1}),
        (200, '[{"service": 1}]', "body", [{"service": 1}]),
        (200, '{"order": 1, "error": null}', "body", {"order": 1, "error": None}),
        (200, '{"error": "Incorrect request"}', "rejected", "Incorrect request"),
        (
            200,
            '{"order": 23501, "error": "Low balance warning"}',  # the order may exist: not a rejection
            "unknown",
            "HTTP 200: an order id and an error in one reply: Low balance warning",
        ),
        (200, '{"Error": "Invalid API key"}', "rejected", "Invalid API key"),
        (200, '{"error": {"message": "Bad link"}}', "rejected", "Bad link"),
        (200, '{"error": ["Bad link", "Try again"]}', "rejected", "Bad link; Try again"),
        (422, '{"error": "Quantity less than minimal 50"}', "rejected", "Quantity less than minimal 50"),
        (400, '{"message": "The link field is required."}', "rejected", "The link field is required."),
        (403, '{"error": "API is Disable for this user"}', "rejected", "API is Disable for this user"),
        (404, "<html>Not Found</html>", "unknown", "HTTP 404 without a JSON error"),
        (400, '{"detail": "x"}', "unknown", "HTTP 400 without a JSON error"),
        (429, '{"error": "Too many requests"}', "unknown-not-sent", "HTTP 429 Too Many Requests"),
        (500, '{"error": "Incorrect request"}', "unknown", "HTTP 500"),  # a 5xx is never a rejection
        (502, "<html>Bad gateway</html>", "unknown", "HTTP 502"),
        (503, "", "unknown", "HTTP 503"),
        (301, "", "unknown", "HTTP 301"),
        (
            200,
            "<!DOCTYPE html><html><body>Just a moment...</body></html>",
            "unknown",
            "HTTP 200: HTML page instead of JSON",
        ),
        (200, '{"order": 12', "unknown", "HTTP 200: malformed JSON"),
        (200, "", "unknown", "HTTP 200: empty body"),
        (200, "   \n", "unknown", "HTTP 200: empty body"),
        (200, "OK", "unknown", "HTTP 200: malformed JSON"),
        (200, '{"balance": NaN}', "unknown", "HTTP 200: malformed JSON"),
    ],
)
def test_classify(status: int, text: str, kind: str, detail: object) -> None:
    result = classify(status, text)
    if kind == "body":
        assert isinstance(result, Body)
        assert result.data == detail
    elif kind == "rejected":
        assert result == Rejected(str(detail))
    elif kind == "unknown":
        assert result == Unknown(str(detail), sent=True)
    else:
        assert result == Unknown(str(detail), sent=False)


def test_json_decimals_never_become_floats() -> None:
    data = load_json('{"charge": 0.1, "n": 3}')
    assert isinstance(data, dict)
    assert data["charge"] == Decimal("0.1")
    assert isinstance(data["charge"], Decimal)
    assert data["n"] == 3


def test_redact_removes_the_key_in_every_spelling() -> None:
    key = "s3cr3t+key/=="
    text = f'{{"echo": "{key}", "url": "key=s3cr3t%2Bkey%2F%3D%3D", "plus": "s3cr3t%2Bkey%2F%3D%3D"}}'
    redacted = redact(text, key)
    assert key not in redacted
    assert "s3cr3t" not in redacted
    assert redact("nothing here", "") == "nothing here"


# --- add -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '{"order": 23501}',
        '{"order": "23501"}',
        '{"status": "success", "order": 23501}',
        '{"order": 23501, "charge": 0.50}',
        '{"Order": "23501", "charge": "0.5", "currency": "USD"}',
        '{"order_id": 23501}',
    ],
)
def test_parse_add_variants(text: str) -> None:
    assert parse_add(j(text)) == "23501"


@pytest.mark.parametrize(
    "text", ['{"status": "success"}', '{"order": 0}', '{"order": null}', "[]", '"23501"', '{"order": "  "}']
)
def test_parse_add_without_an_id_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_add(j(text))


# --- status ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"charge": "0.27819", "start_count": "3572", "status": "Partial", "remains": "157", "currency": "USD"}',
            UpstreamStatus(OrderStatus.PARTIAL, 278_190, 3572, 157, "USD"),
        ),
        (
            '{"charge": 1.5, "start_count": 10, "status": "Cancelled", "remains": 0}',  # smmserver.life
            UpstreamStatus(OrderStatus.CANCELED, 1_500_000, 10, 0, None),
        ),
        (
            '{"charge": "0.1", "start_count": "0", "status": "processing", "remains": "Unknown", "currency": "USD"}',
            UpstreamStatus(OrderStatus.PROCESSING, 100_000, 0, None, "USD"),
        ),
        (
            '{"Charge": "2", "Start_Count": "55", "Status": "In Progress", "Remains": "7", "Currency": "EUR"}',  # lunasmm
            UpstreamStatus(OrderStatus.IN_PROGRESS, 2_000_000, 55, 7, "EUR"),
        ),
        (
            '{"status": "Completed", "order": 5, "runs": "3", "orders": [1, 2], "extra": {"x": 1}}',  # extra keys
            UpstreamStatus(OrderStatus.COMPLETED, None, None, None, None),
        ),
        (
            '{"status": "Refunded", "charge": "", "start_count": null, "remains": "-3"}',
            UpstreamStatus(OrderStatus.CANCELED, None, None, -3, None),
        ),
    ],
)
def test_parse_status(text: str, expected: UpstreamStatus) -> None:
    assert parse_status(j(text)) == expected


@pytest.mark.parametrize(
    ("word", "status", "subscription_word"),
    [
        ("Active", OrderStatus.IN_PROGRESS, "Active"),
        ("paused", OrderStatus.IN_PROGRESS, "Paused"),
        ("EXPIRED", OrderStatus.COMPLETED, "Expired"),
        ("In progress", OrderStatus.IN_PROGRESS, None),
        ("Completed", OrderStatus.COMPLETED, None),
    ],
)
def test_parse_status_keeps_subscription_words(
    word: str, status: OrderStatus, subscription_word: str | None
) -> None:
    parsed = parse_status({"status": word, "remains": "5"})
    assert (parsed.status, parsed.subscription_word, parsed.remains) == (status, subscription_word, 5)


@pytest.mark.parametrize(
    "text",
    ['{"charge": "1"}', '{"status": "Failed"}', '{"status": null}', "[]", '"Completed"', '{"status": 3}'],
)
def test_parse_status_without_a_known_status_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_status(j(text))


def test_parse_statuses_canonical_object() -> None:
    text = """{"1": {"charge": "0.27819", "start_count": "3572", "status": "Partial", "remains": "157", "currency": "USD"},
               "10": {"error": "Incorrect order ID"},
               "100": {"charge": "1.44219", "start_count": "234", "status": "In progress", "remains": "10", "currency": "USD"}}"""
    result = parse_statuses(j(text), ["1", "10", "100"])
    assert result == {
        "1": UpstreamStatus(OrderStatus.PARTIAL, 278_190, 3572, 157, "USD"),
        "10": Rejected("Incorrect order ID"),
        "100": UpstreamStatus(OrderStatus.IN_PROGRESS, 1_442_190, 234, 10, "USD"),
    }


def test_parse_statuses_smartpanel_bare_string_and_unrecognised_entries() -> None:
    text = """{"1": {"order": 1, "status": "Completed", "charge": "1"},
               "2": "Incorrect order ID",
               "3": {"status": "Failed"},
               "4": {"unexpected": true},
               "99": {"status": "Completed"}}"""
    result = parse_statuses(j(text), ["1", "2", "3", "4", "5"])
    assert result == {
        "1": UpstreamStatus(OrderStatus.COMPLETED, 1_000_000),
        "2": Rejected("Incorrect order ID"),
    }  # 3 and 4 unrecognised, 5 missing, 99 not asked for: all left out (unknown)


def test_parse_statuses_list_form() -> None:
    text = """[{"order": 1, "status": "Completed", "charge": "0.5", "remains": "0"},
               {"order": "2", "error": "Incorrect order ID"},
               {"status": "Completed"}]"""
    assert parse_statuses(j(text), ["1", "2"]) == {
        "1": UpstreamStatus(OrderStatus.COMPLETED, 500_000, None, 0),
        "2": Rejected("Incorrect order ID"),
    }


def test_parse_statuses_single_object_for_one_id() -> None:
    assert parse_statuses(j('{"status": "Pending", "charge": "0"}'), ["7"]) == {
        "7": UpstreamStatus(OrderStatus.PENDING, 0)
    }


@pytest.mark.parametrize("text", ['{"status": "ok"}', "[]", '"x"', '{"5": {"status": "Completed"}}'])
def test_parse_statuses_with_nothing_about_the_ids_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_statuses(j(text), ["1", "2"])


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_status, '{"status": "Failed"}'),
        (lambda d: parse_statuses(d, ["7"]), '{"status": "On hold", "remains": "0"}'),
        (lambda d: parse_statuses(d, ["1", "2"]), '{"1": {"status": "Frozen"}, "2": {"x": 1}}'),
        (lambda d: parse_statuses(d, ["1", "2"]), '[{"order": 1, "status": "Frozen"}]'),
        (parse_refill_status, '{"status": "Refunded"}'),
        (lambda d: parse_refill_statuses(d, ["1", "2"]), '{"1": "Refunded", "2": {"status": "Sideways"}}'),
    ],
)
def test_an_answer_in_the_action_shape_with_only_odd_words_is_an_unrecognised_word(
    parse: Callable[[object], object], text: str
) -> None:
    """The provider answered, in words smm does not know: no retry, no failure for its circuit."""
    with pytest.raises(UnrecognisedWord):
        parse(j(text))


@pytest.mark.parametrize(
    ("parse", "text"),
    [
        (parse_status, '{"status": null}'),
        (parse_status, '{"status": 3}'),
        (parse_status, '{"status": " "}'),
        (parse_status, '{"charge": "1"}'),
        (lambda d: parse_statuses(d, ["1", "2"]), '{"1": {"charge": "1"}, "2": {"status": null}}'),
        (lambda d: parse_statuses(d, ["1", "2"]), "{}"),
        (parse_refill_status, '"Refunded"'),  # a bare string is an entry's form, not a reply's
        (parse_refill_status, '{"state": "Completed"}'),
        (parse_refill_status, '{"status": {"x": 1}}'),
        (lambda d: parse_refill_statuses(d, ["1"]), '[{"refill": 1, "status": 2}]'),
    ],
)
def test_an_answer_of_another_shape_is_a_plain_parse_error(
    parse: Callable[[object], object], text: str
) -> None:
    with pytest.raises(ParseError) as raised:
        parse(j(text))
    assert not isinstance(raised.value, UnrecognisedWord)


# --- refill, refill_status, cancel -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"refill": "1"}', "1"),
        ('{"refill": 12345, "success": "Your order will be refill asap. Thank you for patience"}', "12345"),
        ('{"status": "success", "message": "Refill queued"}', ""),
        ('{"success": "ok"}', ""),
        (
            '{"refill": {"error": "Refill is disabled for this service"}}',
            Rejected("Refill is disabled for this service"),
        ),
        ('{"refill": "Order not eligible for refill."}', Rejected("Order not eligible for refill.")),
    ],
)
def test_parse_refill(text: str, expected: object) -> None:
    assert parse_refill(j(text)) == expected


@pytest.mark.parametrize("text", ['{"ok": 1}', "[]", '{"refill": null}'])
def test_parse_refill_without_an_id_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_refill(j(text))


def test_parse_refills_list_and_single() -> None:
    text = '[{"order": 1, "refill": 1}, {"order": 2, "refill": 2}, {"order": 3, "refill": {"error": "Incorrect order ID"}}]'
    assert parse_refills(j(text), ["1", "2", "3"]) == {
        "1": "1",
        "2": "2",
        "3": Rejected("Incorrect order ID"),
    }
    assert parse_refills(j('{"refill": "9"}'), ["4"]) == {"4": "9"}
    assert parse_refills(
        j('{"1": {"refill": 5}, "2": {"error": "Order not eligible for refill."}}'), ["1", "2"]
    ) == {
        "1": "5",
        "2": Rejected("Order not eligible for refill."),
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"status": "Completed"}', RefillState.COMPLETED),
        ('{"status": "Rejected"}', RefillState.REJECTED),
        ('{"Status": "in progress"}', RefillState.IN_PROGRESS),
        ('{"status": {"error": "Refill not found"}}', Rejected("Refill not found")),  # Laravel deviation
    ],
)
def test_parse_refill_status(text: str, expected: object) -> None:
    assert parse_refill_status(j(text)) == expected


@pytest.mark.parametrize("text", ['{"status": "Sideways"}', '{"state": "Completed"}', '{"status": {"x": 1}}'])
def test_parse_refill_status_unrecognised_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_refill_status(j(text))


def test_parse_refill_statuses() -> None:
    text = '[{"refill": 1, "status": "Completed"}, {"refill": 2, "status": "Rejected"}, {"refill": 3, "status": {"error": "Refill not found"}}, {"refill": 4, "status": "??"}]'
    assert parse_refill_statuses(j(text), ["1", "2", "3", "4"]) == {
        "1": RefillState.COMPLETED,
        "2": RefillState.REJECTED,
        "3": Rejected("Refill not found"),
    }
    assert parse_refill_statuses(j('{"1": "Pending", "2": {"status": "Processing"}}'), ["1", "2"]) == {
        "1": RefillState.PENDING,
        "2": RefillState.IN_PROGRESS,
    }


@pytest.mark.parametrize(
    ("text", "ids", "expected"),
    [
        (
            '[{"order": 9, "cancel": {"error": "Incorrect order ID"}}, {"order": 2, "cancel": 1}]',
            ["9", "2"],
            {"9": Rejected("Incorrect order ID"), "2": True},
        ),
        (
            '[{"order": 1, "cancel": "1"}, {"order": 2, "cancel": true}, {"order": 3, "cancel": "success"}, {"order": 4, "cancel": 0}]',
            ["1", "2", "3", "4"],
            {"1": True, "2": True, "3": True, "4": False},
        ),
        (
            '[{"order": 5, "cancel": "Order can no longer be canceled"}]',
            ["5"],
            {"5": Rejected("Order can no longer be canceled")},
        ),
        ('{"cancel": "1"}', ["8"], {"8": True}),
        ('{"success": "Order will be canceled"}', ["8"], {"8": True}),
        (
            '{"8": {"cancel": 1}, "9": {"error": "Order cannot be cancelled"}}',
            ["8", "9"],
            {"8": True, "9": Rejected("Order cannot be cancelled")},
        ),
    ],
)
def test_parse_cancel(text: str, ids: list[str], expected: dict[str, object]) -> None:
    assert parse_cancel(j(text), ids) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"balance": "100.84292", "currency": "USD"}', Balance(100_842_920, "USD")),
        ('{"status": "success", "balance": 12.3, "currency": "usd"}', Balance(12_300_000, "USD")),
        ('{"Balance": "-5.5", "Currency": "EUR"}', Balance(-5_500_000, "EUR")),
        ('{"balance": "7"}', Balance(7_000_000, "")),
    ],
)
def test_parse_balance(text: str, expected: Balance) -> None:
    assert parse_balance(j(text)) == expected


@pytest.mark.parametrize("text", ['{"currency": "USD"}', '{"balance": "lots"}', "[]"])
def test_parse_balance_without_an_amount_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_balance(j(text))


# --- services --------------------------------------------------------------------------------------


def test_parse_services_canonical_and_variants() -> None:
    text = json.dumps(
        [
            {
                "service": 1,
                "name": "Followers",
                "type": "Default",
                "category": "First Category",
                "rate": "0.90",
                "min": "50",
                "max": "10000",
                "refill": True,
                "cancel": True,
            },
            {
                "service": "3331",
                "name": "Comments",
                "type": "custom comments",
                "rate": "8",
                "min": 10,
                "max": 1500,
                "dripfeed": False,
                "desc": "Real comments",
            },
            {
                "Service": "7",
                "Name": "Auto",
                "Type": "Subscriptions",
                "Rate": 0.000_000_5,
                "Min": "1",
                "Max": "1",
                "refill": "1",
                "cancel": "yes",
                "dripfeed": 1,
                "description": "d",
                "average_time": 35,
                "extra": [1],
            },
            {
                "service": 8,
                "name": "Brand new",
                "type": "Story Poll Votes",
                "rate": "1.2345678",
                "min": "1",
                "max": "5",
            },
        ]
    )
    services, problems = parse_services(j(text))
    assert problems == []
    first, second, third, fourth = services
    assert (first.service_id, first.name, first.type, first.category) == (
        "1",
        "Followers",
        "Default",
        "First Category",
    )
    assert (first.rate_micros, first.min, first.max) == (900_000, 50, 10000)
    assert (first.refill, first.cancel, first.dripfeed, first.description, first.average_time) == (
        True,
        True,
        False,
        "",
        None,
    )
    assert (second.service_id, second.type, second.rate_micros, second.description) == (
        "3331",
        "Custom Comments",
        8_000_000,
        "Real comments",
    )
    assert second.category == ""
    assert (third.service_id, third.rate_micros, third.refill, third.cancel, third.dripfeed) == (
        "7",
        1,
        True,
        True,
        True,
    )
    assert (third.description, third.average_time) == ("d", "35")
    assert (fourth.type, fourth.rate_micros) == ("Story Poll Votes", 1_234_568)  # unknown type kept; half up


def test_parse_services_skips_bad_entries_and_keeps_first_duplicate() -> None:
    text = json.dumps(
        [
            {"service": 1, "name": "Good", "rate": "1", "min": "1", "max": "10"},
            {"service": 1, "name": "Duplicate", "rate": "1", "min": "1", "max": "10"},
            {"name": "No id", "rate": "1", "min": "1", "max": "10"},
            {"service": 3, "name": "", "rate": "1", "min": "1", "max": "10"},
            {"service": 4, "name": "Bad rate", "rate": "cheap", "min": "1", "max": "10"},
            {"service": 5, "name": "Negative", "rate": "-1", "min": "1", "max": "10"},
            {"service": 6, "name": "Upside down", "rate": "1", "min": "10", "max": "1"},
            "not an object",
        ]
    )
    services, problems = parse_services(j(text))
    assert [s.service_id for s in services if not s.problem] == ["1"]
    # Listed with an id but unusable: kept with the reason, so a sync never takes them for gone.
    assert [(s.service_id, s.problem, s.rate_micros) for s in services if s.problem] == [
        ("3", "no name", 0),
        ("4", "bad rate", 0),
        ("5", "bad rate", 0),
        ("6", "bad min/max", 0),
    ]
    assert len(problems) == 7


def test_parse_services_wrapped_and_empty() -> None:
    services, _ = parse_services(
        j('{"data": [{"service": 2, "name": "X", "rate": "1", "min": "1", "max": "2"}]}')
    )
    assert [s.service_id for s in services] == ["2"]
    assert parse_services(j("[]")) == ([], [])


@pytest.mark.parametrize(
    "text", ['{"services": "none"}', '"services"', '[{"service": 1}]', '{"status": "ok"}']
)
def test_parse_services_unusable_is_a_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_services(j(text))


# --- types -----------------------------------------------------------------------------------------


def test_add_order_sends_only_the_parameters_set() -> None:
    order = AddOrder(service="17", username="someone", min=50, max=100, delay=30, expiry="31/12/2030")
    assert order.params() == {
        "service": "17",
        "username": "someone",
        "min": "50",
        "max": "100",
        "delay": "30",
        "expiry": "31/12/2030",
    }
    assert list(AddOrder(service="1", link="https://x.com/a", quantity=100).params()) == [
        "service",
        "link",
        "quantity",
    ]


def test_add_order_covers_every_parameter_of_protocol_md() -> None:
    expected = {
        "service", "link", "quantity", "runs", "interval", "keywords", "comments", "usernames", "hashtags", "hashtag",
        "username", "media", "answer_number", "groups", "min", "max", "posts", "old_posts", "delay", "expiry",
        "country", "device", "type_of_traffic", "google_keyword", "referring_url",
    }  # fmt: skip
    assert set(AddOrder.__dataclass_fields__) == expected


def test_provider_connection_hides_the_key() -> None:
    config = ProviderConnection("https://panel.example/api/v2", "sk-very-secret")
    assert "sk-very-secret" not in repr(config)
    assert "sk-very-secret" not in str(config)
    assert (config.timeout_s, config.max_concurrency, config.max_requests_per_s) == (15.0, 8, 10.0)
    with pytest.raises(ValueError, match="positive"):
        ProviderConnection("https://panel.example/api/v2", "k", timeout_s=0)


def test_standard_is_the_registered_default() -> None:
    assert list(ADAPTERS) == ["standard"]


def test_public_names_are_pinned() -> None:
    assert adapters.__all__ == [
        "ADAPTERS", "DEFAULT_PROTOCOL", "Accepted", "AdapterFactory", "AddOrder", "Balance", "Breaker", "Exchange",
        "ExchangeHook", "InMemoryBreaker", "OrderStatus", "ProviderAdapter", "ProviderConnection", "RefillState",
        "Rejected", "Reply", "Unknown", "UnknownProtocol", "UpstreamService", "UpstreamStatus", "create_adapter",
    ]  # fmt: skip
    assert all(hasattr(adapters, name) for name in adapters.__all__)


# --- breaker state machine -------------------------------------------------------------------------

POLICY = BreakerPolicy(failure_threshold=3, reset_after_s=10.0)


def test_breaker_opens_after_consecutive_failures_only() -> None:
    state = BreakerState()
    state = observe(state, POLICY, 0.0, ok=False)
    state = observe(state, POLICY, 1.0, ok=False)
    state = observe(state, POLICY, 2.0, ok=True)  # a success resets the count
    assert state == BreakerState()
    for now in (3.0, 4.0):
        state = observe(state, POLICY, now, ok=False)
        assert state.phase is BreakerPhase.CLOSED
    state = observe(state, POLICY, 5.0, ok=False)
    assert (state.phase, state.failures, state.opened_at) == (BreakerPhase.OPEN, 3, 5.0)


def test_breaker_refuses_while_open_then_lets_one_probe_through() -> None:
    opened = BreakerState(BreakerPhase.OPEN, failures=3, opened_at=100.0)
    allowed, same = admit(opened, POLICY, 109.9)
    assert (allowed, same) == (False, opened)
    allowed, probing = admit(opened, POLICY, 110.0)
    assert allowed
    assert (probing.phase, probing.probe_at) == (BreakerPhase.HALF_OPEN, 110.0)
    allowed, still = admit(probing, POLICY, 111.0)  # one probe at a time
    assert (allowed, still) == (False, probing)
    allowed, replaced = admit(probing, POLICY, 120.5)  # the probe never reported: another one
    assert allowed
    assert replaced.probe_at == 120.5


def test_breaker_half_open_closes_on_success_and_reopens_on_failure() -> None:
    probing = BreakerState(BreakerPhase.HALF_OPEN, failures=3, opened_at=100.0, probe_at=110.0)
    assert observe(probing, POLICY, 111.0, ok=True) == BreakerState()
    reopened = observe(probing, POLICY, 111.0, ok=False)
    assert (reopened.phase, reopened.opened_at) == (BreakerPhase.OPEN, 111.0)
    assert admit(reopened, POLICY, 120.0)[0] is False  # the wait starts again
    assert admit(reopened, POLICY, 121.0)[0] is True


def test_breaker_closed_always_admits_and_open_ignores_late_reports() -> None:
    assert admit(BreakerState(), POLICY, 0.0) == (True, BreakerState())
    opened = BreakerState(BreakerPhase.OPEN, failures=3, opened_at=5.0)
    assert observe(opened, POLICY, 6.0, ok=True) == opened
    assert observe(opened, POLICY, 6.0, ok=False) == opened
    with pytest.raises(ValueError, match="failure_threshold"):
        BreakerPolicy(failure_threshold=0)


def test_deeply_nested_json_is_malformed_not_a_crash() -> None:
    with pytest.raises(ParseError):
        load_json("[" * 100_000)


# --- text PostgreSQL cannot store, and the importer's plan for unusable offers ------------------------


def test_services_drop_nul_and_lone_surrogates_and_refuse_such_ids() -> None:
    entries = [
        {"service": 1, "name": "SEO\x00clicks", "type": "Default", "category": "Web\ud800 traffic",
         "rate": "0.5", "min": 1, "max": 10, "desc": "a\x00b\udfff"},
        {"service": "7\x00", "name": "Bad id", "rate": "1", "min": 1, "max": 2},
    ]  # fmt: skip
    services, problems = parse_services(entries)
    [seo] = services
    assert (seo.name, seo.category, seo.description) == ("SEOclicks", "Web traffic", "ab")
    assert problems == ["service without an id"]
    for text in (seo.name, seo.category, seo.description):
        text.encode("utf-8")  # would raise on a lone surrogate


def _offer(**changes: object) -> Offer:
    base = Offer(upstream_id="1", name="Followers", type="DEFAULT", category="Instagram",
                 rate_micros=900_000, min_quantity=50, max_quantity=10_000, refill=False,
                 cancel=False, dripfeed=False, description="")  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


def _synced(**changes: object) -> SyncedService:
    base = SyncedService(
        id=10, upstream_service_id="1", category_id=3, name="Followers", description="", type="DEFAULT",
        min_quantity=50, max_quantity=10_000, refill=False, refill_days=0, cancel=False, dripfeed=False,
        upstream_dripfeed=False, enabled=True, rate_micros=1_170_000, provider_rate_micros=900_000,
        provider_currency="USD", exchange_rate=Decimal(1), cost_micros=900_000, manual_price=False,
        admin_edited=[], quarantined=False, quarantine_reason="", pending_provider_rate_micros=None,
        pending_exchange_rate=None, gone_upstream_time=None, disabled_by_sync=False,
        upstream_category="Instagram",
    )  # fmt: skip
    return replace(base, **changes)  # type: ignore[arg-type]


_TERMS = ProviderTerms(
    provider_id=1, currency="USD", exchange_rate=Decimal(1), enable_new=True, jump_bps=2000
)
_RULES = Rules([PricingRule(1, None, None, 3000, 0, 100, datetime(2024, 1, 1, tzinfo=UTC))])


def test_plan_nul_in_an_offer_is_dropped_not_written() -> None:
    planned = plan([], [_offer(name="A\x00B", category="\x00", description="x\ud800")], _TERMS, _RULES, {})
    [(category, row)] = planned.creates
    assert (row.name, category, row.description) == ("AB", "Uncategorised", "x")


@pytest.mark.parametrize(
    ("offer", "problem"),
    [
        (_offer(type="LIKES_PREMIUM"), "unsupported service type"),
        (_offer(min_quantity=0), "bad quantity range"),
        (_offer(rate_micros=10**16), "is too large"),  # beyond BIGINT-safe money
        (_offer(rate_micros=10**12), "cost"),  # fine alone, too large at 20,000 panel units each
    ],
)
def test_plan_an_unusable_offer_quarantines_the_existing_service(offer: Offer, problem: str) -> None:
    terms = replace(_TERMS, exchange_rate=Decimal(20_000))
    current = _synced(quarantined=True, pending_provider_rate_micros=5, pending_exchange_rate=Decimal(1))
    planned = plan([current], [offer], terms, _RULES, {"Instagram": 3})
    assert (planned.counts.skipped, planned.counts.disabled) == (1, 0)
    [(_, row)] = planned.updates
    assert row.quarantined
    assert problem in row.quarantine_reason
    assert (row.pending_provider_rate_micros, row.rate_micros) == (None, current.rate_micros)
    [change] = planned.changes
    assert change.action == "quarantine"
    # The same offer again changes nothing more, and is still reported.
    again = plan([row], [offer], terms, _RULES, {"Instagram": 3})
    assert (again.updates, again.counts.skipped, [c.action for c in again.changes]) == ([], 1, ["skip"])
    # Nor is a new service created from it.
    fresh = plan([], [offer], terms, _RULES, {})
    assert (fresh.creates, fresh.counts.skipped) == ([], 1)


def test_plan_a_return_upstream_re_enables_only_what_the_sync_disabled() -> None:
    now = datetime(2024, 1, 1, tzinfo=UTC)
    for enabled in (True, False):
        other = _offer(upstream_id="2")  # the provider still lists something else
        [(_, gone)] = plan(
            [_synced(enabled=enabled)], [other], _TERMS, _RULES, {"Instagram": 3}, now=now
        ).updates
        assert (gone.enabled, gone.disabled_by_sync, gone.gone_upstream_time) == (False, enabled, now)
        [(_, back)] = plan([gone], [_offer()], _TERMS, _RULES, {"Instagram": 3}).updates
        assert (back.enabled, back.disabled_by_sync, back.gone_upstream_time) == (enabled, False, None)


def test_plan_refuses_an_empty_list_while_the_provider_has_services_listed() -> None:
    with pytest.raises(FailedPrecondition) as refused:
        plan([_synced(), _synced(id=11, upstream_service_id="2")], [], _TERMS, _RULES, {})
    assert refused.value.reason == "EMPTY_SERVICE_LIST"
    # Nothing listed here, or everything already gone upstream: an empty list changes nothing.
    assert plan([], [], _TERMS, _RULES, {}).updates == []
    gone = _synced(enabled=False, gone_upstream_time=datetime(2024, 1, 1, tzinfo=UTC))
    assert plan([gone], [], _TERMS, _RULES, {}).updates == []


def test_plan_puts_a_new_service_where_its_upstream_siblings_live() -> None:
    renamed = _synced(category_id=3)  # staff renamed category 3 from "Instagram" to "IG Growth"
    sibling = _offer(upstream_id="2", name="Likes")
    planned = plan([renamed], [_offer(), sibling], _TERMS, _RULES, {"IG Growth": 3})
    [(name, row)] = planned.creates
    assert (name, row.category_id, planned.new_categories) == ("Instagram", 3, [])
    # Services staff moved by hand do not count; with the others split, most of them decide.
    moved = [
        _synced(id=20 + n, upstream_service_id=f"m{n}", category_id=8, admin_edited=["category"])
        for n in range(3)
    ]
    split = [
        renamed,
        _synced(id=12, upstream_service_id="4", category_id=3),
        _synced(id=13, upstream_service_id="5", category_id=5),
    ]
    offers = [_offer(upstream_id=s.upstream_service_id) for s in [*moved, *split]] + [sibling]
    [(_, row)] = plan([*moved, *split], offers, _TERMS, _RULES, {"IG Growth": 3}).creates
    assert row.category_id == 3


def test_plan_moves_a_service_only_when_its_upstream_category_changes() -> None:
    renamed = _synced(category_id=3)  # staff renamed category 3 from "Instagram"
    quiet = plan([renamed], [_offer()], _TERMS, _RULES, {"IG Growth": 3})
    assert (quiet.updates, quiet.new_categories, quiet.counts.unchanged) == ([], [], 1)
    moved = plan([renamed], [_offer(category="Instagram VIP")], _TERMS, _RULES, {"IG Growth": 3})
    assert moved.new_categories == ["Instagram VIP"]
    [(name, row)] = moved.updates
    assert (name, row.category_id, row.upstream_category) == ("Instagram VIP", 0, "Instagram VIP")


def test_plan_matches_category_names_ignoring_case() -> None:
    """Only an exactly equal name matched: the provider's "instagram" beside our "Instagram" (or
    "TikTok" and "TIKTOK" in one list) planned a second category for the same thing."""
    planned = plan([], [_offer(category="instagram")], _TERMS, _RULES, {"Instagram": 3})
    [(_, row)] = planned.creates
    assert (row.category_id, planned.new_categories) == (3, [])
    # An exactly equal name still wins over one that differs in case (a panel's older duplicates).
    [(_, row)] = plan(
        [], [_offer(category="instagram")], _TERMS, _RULES, {"Instagram": 3, "instagram": 7}
    ).creates
    assert row.category_id == 7
    both = [_offer(category="TikTok"), _offer(upstream_id="2", category="TIKTOK")]
    assert plan([], both, _TERMS, _RULES, {}).new_categories == ["TikTok"]
    # A provider re-casing its category name moves nothing, not out of a category staff renamed either.
    renamed = _synced(category_id=3)  # staff renamed category 3 from "Instagram" to "IG Growth"
    recased = plan(
        [renamed], [_offer(category="INSTAGRAM"), _offer(upstream_id="2")], _TERMS, _RULES, {"IG Growth": 3}
    )
    assert recased.new_categories == []
    [(_, moved)] = recased.updates
    assert (moved.category_id, moved.upstream_category) == (3, "INSTAGRAM")
    [(_, sibling)] = recased.creates
    assert sibling.category_id == 3


@pytest.mark.parametrize("key", ["AbC+dEf/GhI9kLm==", 'k"ey\\with/quotes', "ключ/1"])
def test_a_key_the_provider_echoes_json_escaped_is_redacted_before_parsing(key: str) -> None:
    """PHP's json_encode (behind most panels) writes '/' as '\\/'; parsing turned the escaped echo
    back into the key, past the redaction of the raw text."""
    for body in (
        json.dumps({"error": f"Invalid API key {key}"}),
        json.dumps({"error": f"Invalid API key {key}"}, ensure_ascii=False),
        json.dumps({"error": f"Invalid API key {key}"}).replace("/", "\\/"),
    ):
        parsed = load_json(redact(body, key))
        assert key not in str(parsed), (body, parsed)


# --- a provider's cost is never rounded below what it charges --------------------------------------


def test_a_rate_finer_than_a_micro_unit_rounds_up_not_to_a_lower_cost() -> None:
    """A rate with more decimals than micro-units hold was rounded half up: "0.0000004" per 1000 became
    a cost of 0 (the service sold for nothing but the rule's fixed part) and "0.0000014" became
    0.000001, below what the provider charges."""
    entries = [
        {"service": 1, "name": "Views", "rate": "0.0000004", "min": 1, "max": 10},
        {"service": 2, "name": "Plays", "rate": "0.0000014", "min": 1, "max": 10},
        {"service": 3, "name": "Likes", "rate": "0.90", "min": 1, "max": 10},
    ]
    services, problems = parse_services(entries)
    assert problems == []
    assert [s.rate_micros for s in services] == [1, 2, 900_000]


def test_plan_a_cost_converted_from_another_currency_is_never_below_the_providers() -> None:
    """convert_micros rounded half up: 0.000001 EUR at 0.4 made a cost of 0 (a price of 0 under the
    default rule), and 1.000001 EUR at 1.0825 (1.0825010825) a cost of 1.082501."""
    free = replace(_TERMS, currency="EUR", exchange_rate=Decimal("0.4"))
    [(_, row)] = plan([], [_offer(rate_micros=1)], free, _RULES, {"Instagram": 3}).creates
    assert (row.cost_micros, row.rate_micros) == (1, 100)
    terms = replace(_TERMS, currency="EUR", exchange_rate=Decimal("1.0825"))
    at_cost = Rules([PricingRule(1, None, None, 0, 0, 1, datetime(2024, 1, 1, tzinfo=UTC))])
    [(_, row)] = plan([], [_offer(rate_micros=1_000_001)], terms, at_cost, {"Instagram": 3}).creates
    assert (row.cost_micros, row.rate_micros) == (1_082_502, 1_082_502)
    # An exact conversion is not rounded further.
    [(_, row)] = plan([], [_offer(rate_micros=900_000)], replace(terms, exchange_rate=Decimal("1.1")),
                      at_cost, {"Instagram": 3}).creates  # fmt: skip
    assert row.cost_micros == 990_000
