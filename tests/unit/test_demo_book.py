"""The demo provider's order book steps exactly the orders that are due, each once per step."""

from __future__ import annotations

from demo.provider.catalog import CATALOG
from demo.provider.orders import NewOrder, OrderBook

SERVICE = next(service for service in CATALOG if service.cancel)


def _new(link: str) -> NewOrder:
    return NewOrder(service=SERVICE, link=link, quantity=300, charge_micros=3_000)


def _book() -> OrderBook:
    book = OrderBook(step_s=10.0)
    book.open_account("a", 1_000_000)
    return book


def test_only_due_orders_step_and_each_change_is_reported_once() -> None:
    book = _book()
    early = book.place("a", _new("https://x.com/early"), now=0.0)
    late = book.place("a", _new("https://x.com/late"), now=5.0)

    assert [order.id for order in book.advance(9.9)] == []
    changed = book.advance(10.0)
    assert [(order.id, order.status, order.remains) for order in changed] == [(early.id, "In progress", 200)]
    assert book.orders[late.id].status == "Pending"
    assert book.advance(10.0) == []

    # 40 s later both are due several steps over: reported once each, in id order, at their end.
    changed = book.advance(50.0)
    assert [(order.id, order.status, order.remains) for order in changed] == [
        (early.id, "Completed", 0),
        (late.id, "Completed", 0),
    ]
    assert book.advance(1_000.0) == []


def test_a_cancelled_order_is_not_stepped_again() -> None:
    book = _book()
    kept = book.place("a", _new("https://x.com/kept"), now=0.0)
    gone = book.place("a", _new("https://x.com/gone"), now=0.0)
    book.cancel("a", str(gone.id), now=1.0)
    balance_after_cancel = book.balances["a"]

    changed = book.advance(100.0)

    assert [order.id for order in changed] == [kept.id]
    assert book.orders[gone.id].status == "Canceled"
    assert book.balances["a"] == balance_after_cancel


def test_partial_ending_refunds_the_undelivered_third() -> None:
    book = _book()
    order = book.place("a", _new("https://x.com/partial"), now=0.0)
    before = book.balances["a"]

    [finished] = book.advance(30.0)

    assert (finished.id, finished.status, finished.remains) == (order.id, "Partial", 100)
    assert book.balances["a"] == before + 1_000
