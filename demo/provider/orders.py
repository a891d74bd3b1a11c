"""The demo's order and refill book: validation, charges, progression. Pure: the clock is an argument.

An order moves one step every ``step_s`` seconds::

    Pending (remains = quantity, start_count 0)
    -> In progress (a third delivered) -> In progress (two thirds delivered)
    -> Completed (remains 0) | Partial (a third left, refunded pro rata) | Canceled (all refunded)

Deterministic outcomes, for tests: a link (or, for Subscriptions, a username) containing "partial"
ends Partial, one containing "cancel" ends Canceled, anything else Completed. A refill goes Pending ->
In progress -> Completed one step apart, or ends Rejected when the order's link contains "norefill".
A cancel request takes effect at once: a Pending order becomes Canceled (full refund), an order
in progress becomes Partial (the undelivered part refunded).
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Literal

from demo.provider.catalog import Service

__all__ = [
    "PENDING",
    "ApiError",
    "NewOrder",
    "Order",
    "OrderBook",
    "Refill",
    "charge_for",
    "validate_order",
]

PENDING, IN_PROGRESS, COMPLETED, PARTIAL, CANCELED = (
    "Pending",
    "In progress",
    "Completed",
    "Partial",
    "Canceled",
)
FINAL = frozenset({COMPLETED, PARTIAL, CANCELED})
REFILL_COMPLETED, REFILL_REJECTED = "Completed", "Rejected"
SUBSCRIPTION_DELAYS = frozenset(
    {0, 5, 10, 15, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600}
)
_LINK = re.compile(r"^\S+\.\S+$")
_PROGRESS_STEPS = 2  # In progress steps before the final one


class ApiError(Exception):
    """A request the panel refuses: rendered as HTTP 200 ``{"error": message}``."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- validation ------------------------------------------------------------------------------------

QuantityRule = Literal["given", "lines", "package", "subscription"]
# type -> (how the quantity is set, the parameter whose lines are the quantity, other required parameters)
_RULES: dict[str, tuple[QuantityRule, str | None, tuple[str, ...]]] = {
    "Default": ("given", None, ()),
    "Package": ("package", None, ()),
    "SEO": ("given", None, ("keywords",)),
    "Custom Comments": ("lines", "comments", ()),
    "Custom Comments Package": ("package", None, ("comments",)),
    "Mentions": ("given", None, ("usernames",)),
    "Mentions with Hashtags": ("given", None, ("usernames", "hashtags")),
    "Mentions Custom List": ("lines", "usernames", ()),
    "Mentions Hashtag": ("given", None, ("hashtag",)),
    "Mentions User Followers": ("given", None, ("username",)),
    "Mentions Media Likers": ("given", None, ("media",)),
    "Comment Likes": ("given", None, ("username",)),
    "Comment Replies": ("lines", "comments", ("username",)),
    "Poll": ("given", None, ("answer_number",)),
    "Invites from Groups": ("given", None, ("groups",)),
    "Subscriptions": ("subscription", None, ("username",)),
    "Web Traffic": ("given", None, ("country", "device", "type_of_traffic")),
}
_FIELD_NAMES = {
    "keywords": "Keywords",
    "comments": "Comments",
    "usernames": "Usernames",
    "hashtags": "Hashtags",
    "hashtag": "Hashtag",
    "username": "Username",
    "media": "Media",
    "answer_number": "Answer number",
    "groups": "Groups",
    "country": "Country",
    "device": "Device",
    "type_of_traffic": "Type of traffic",
}


@dataclass(frozen=True)
class NewOrder:
    """A validated ``add``: ``quantity`` is the total (per run * runs for drip-feed)."""

    service: Service
    link: str | None
    quantity: int
    charge_micros: int
    runs: int | None = None
    interval: int | None = None
    details: Mapping[str, str] = field(default_factory=dict)  # the type's own parameters, as given


def _int(params: Mapping[str, str], name: str) -> int | None:
    text = params.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit():
        raise ApiError(f"Incorrect {name.replace('_', ' ')}")
    return int(text)


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.replace("\r\n", "\n").split("\n") if line.strip()]


def _bounds(service: Service, quantity: int) -> None:
    if quantity < service.min:
        raise ApiError(f"Quantity less than minimal {service.min}")
    if quantity > service.max:
        raise ApiError(f"Quantity more than maximum {service.max}")


def charge_for(service: Service, quantity: int) -> int:
    """rate * quantity / 1000, rounded half up, in micros; a package costs its rate once."""
    rule = _RULES[service.type][0]
    if rule == "package":
        return service.rate_micros
    quotient, remainder = divmod(service.rate_micros * quantity, 1000)
    return quotient + (1 if 2 * remainder >= 1000 else 0)


def validate_order(service: Service, params: Mapping[str, str]) -> NewOrder:
    """The checks a panel makes on ``add`` for the service's type (PROTOCOL.md §3.2)."""
    rule, lines_field, required = _RULES[service.type]
    details: dict[str, str] = {}
    for name in required:
        value = params.get(name, "").strip()
        if not value:
            raise ApiError(f"{_FIELD_NAMES.get(name, name)} field is required")
        details[name] = value
    link: str | None = None
    if rule != "subscription":
        link = params.get("link", "").strip()
        if not link or len(link) > 2000 or not _LINK.match(link):
            raise ApiError("Incorrect link")
    runs = interval = None
    if rule == "given":
        quantity = _int(params, "quantity")
        if quantity is None:
            raise ApiError("Quantity is required")
        runs, interval = _int(params, "runs"), _int(params, "interval")
        if runs is not None or interval is not None:
            if not service.dripfeed:
                raise ApiError("This services does not support Dripfeed feature!")
            if runs is None:
                raise ApiError("Runs is required")
            if interval is None:
                raise ApiError("Interval time is required")
            if runs < 2:
                raise ApiError("Incorrect runs")
            if interval < 1:
                raise ApiError("Incorrect interval")
            if quantity < service.min:
                _bounds(service, quantity)
            _bounds(service, quantity * runs)
            quantity *= runs
        else:
            _bounds(service, quantity)
    elif rule == "lines":
        assert lines_field is not None
        entries = _lines(params.get(lines_field, ""))
        if not entries:
            raise ApiError(f"{_FIELD_NAMES[lines_field]} field is required")
        details[lines_field] = "\n".join(entries)
        quantity = len(entries)
        _bounds(service, quantity)
    elif rule == "package":
        quantity = 1
    else:
        quantity = _subscription(service, params, details)
    if service.type == "Poll" and int(_int(params, "answer_number") or 0) < 1:
        raise ApiError("Incorrect answer number")
    if service.type == "Web Traffic":
        _web_traffic(params, details)
    if service.type in ("SEO", "Mentions", "Mentions with Hashtags", "Invites from Groups"):
        for name in required:
            details[name] = "\n".join(_lines(details[name]))
    return NewOrder(service, link, quantity, charge_for(service, quantity), runs, interval, details)


def _subscription(service: Service, params: Mapping[str, str], details: dict[str, str]) -> int:
    low, high = _int(params, "min"), _int(params, "max")
    if low is None or high is None:
        raise ApiError("Min and Max are required")
    if low > high:
        raise ApiError("Min cannot be higher than Max")
    _bounds(service, low)
    _bounds(service, high)
    posts, old_posts, delay = _int(params, "posts"), _int(params, "old_posts"), _int(params, "delay")
    if posts is not None and posts < 1:
        raise ApiError("Incorrect posts")
    if delay is None or delay not in SUBSCRIPTION_DELAYS:
        raise ApiError("Incorrect delay")
    expiry = params.get("expiry", "").strip()
    if expiry:
        try:
            datetime.strptime(expiry, "%d/%m/%Y")
        except ValueError:
            raise ApiError("Incorrect expiry date") from None
        details["expiry"] = expiry
    details.update(min=str(low), max=str(high), delay=str(delay))
    if posts is not None:
        details["posts"] = str(posts)
    if old_posts is not None:
        details["old_posts"] = str(old_posts)
    # The demo charges up front for ``posts`` posts (one when unlimited) at ``max`` each.
    return high * (posts or 1)


def _web_traffic(params: Mapping[str, str], details: dict[str, str]) -> None:
    device, kind = _int(params, "device"), _int(params, "type_of_traffic")
    if device not in (1, 2, 3, 4, 5):
        raise ApiError("Incorrect device")
    if kind not in (1, 2, 3):
        raise ApiError("Incorrect type of traffic")
    country = details["country"]
    if not (2 <= len(country) <= 56) or not country.replace(" ", "").isalpha():
        raise ApiError("Incorrect country")
    if kind == 1:
        keyword = params.get("google_keyword", "").strip()
        if not keyword:
            raise ApiError("Google keyword field is required")
        details["google_keyword"] = keyword
    if kind == 2:
        referrer = params.get("referring_url", "").strip()
        if not _LINK.match(referrer):
            raise ApiError("Incorrect referring URL")
        details["referring_url"] = referrer


# --- the book --------------------------------------------------------------------------------------


@dataclass
class Order:
    id: int
    account: str
    service: Service
    link: str | None
    quantity: int
    charge_micros: int  # what the order costs now (after refunds)
    status: str
    start_count: int
    remains: int
    ending: str  # the final status it is headed for
    next_step_at: float
    step: int = 0
    runs: int | None = None
    interval: int | None = None
    details: Mapping[str, str] = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def snapshot(self) -> Order:
        return replace(self)


@dataclass
class Refill:
    id: int
    account: str
    order_id: int
    status: str
    ending: str
    next_step_at: float
    step: int = 0


def _ending(order: NewOrder) -> str:
    marker = (order.link or order.details.get("username", "")).lower()
    if "partial" in marker:
        return PARTIAL
    if "cancel" in marker:
        return CANCELED
    return COMPLETED


def _refund(charge: int, remains: int, quantity: int) -> int:
    """charge * remains / quantity, rounded half up."""
    if quantity <= 0:
        return charge
    quotient, remainder = divmod(charge * remains, quantity)
    return quotient + (1 if 2 * remainder >= quantity else 0)


class OrderBook:
    """Every account's balance, orders and refills."""

    def __init__(self, step_s: float, *, reject_duplicate_links: bool = False) -> None:
        self.step_s = step_s
        self.reject_duplicate_links = reject_duplicate_links
        self.balances: dict[str, int] = {}
        self.orders: dict[int, Order] = {}
        self.refills: dict[int, Refill] = {}
        # (next step's time, order id) of open orders: a request steps only the orders that are
        # due, not every order ever placed (the book grows to tens of thousands in a benchmark).
        self._due: list[tuple[float, int]] = []

    def open_account(self, account: str, balance_micros: int) -> None:
        self.balances.setdefault(account, balance_micros)

    def place(self, account: str, new: NewOrder, now: float) -> Order:
        if self.reject_duplicate_links and new.link is not None:
            for other in self.orders.values():
                if other.account == account and other.link == new.link and not other.final:
                    raise ApiError(
                        "You have active order with this link. Please wait until order being completed."
                    )
        if self.balances[account] < new.charge_micros:
            raise ApiError("Not enough funds on balance")
        self.balances[account] -= new.charge_micros
        order = Order(
            id=len(self.orders) + 1,
            account=account,
            service=new.service,
            link=new.link,
            quantity=new.quantity,
            charge_micros=new.charge_micros,
            status=PENDING,
            start_count=0,
            remains=new.quantity,
            ending=_ending(new),
            next_step_at=now + self.step_s,
            runs=new.runs,
            interval=new.interval,
            details=dict(new.details),
        )
        self.orders[order.id] = order
        heapq.heappush(self._due, (order.next_step_at, order.id))
        return order

    def order(self, account: str, order_id: str) -> Order | None:
        text = order_id.strip()
        order = self.orders.get(int(text)) if text.isdigit() else None
        return order if order is not None and order.account == account else None

    def refill_of(self, account: str, refill_id: str) -> Refill | None:
        text = refill_id.strip()
        refill = self.refills.get(int(text)) if text.isdigit() else None
        return refill if refill is not None and refill.account == account else None

    def advance(self, now: float) -> list[Order]:
        """Apply every step due by ``now``; returns snapshots of the orders whose state changed."""
        changed: list[Order] = []
        while self._due and self._due[0][0] <= now:
            due_at, order_id = heapq.heappop(self._due)
            order = self.orders[order_id]
            if order.final or order.next_step_at != due_at:
                continue  # cancelled meanwhile
            while not order.final and now >= order.next_step_at:
                self._step(order)
                order.next_step_at += self.step_s
            if not order.final:
                heapq.heappush(self._due, (order.next_step_at, order.id))
            changed.append(order.snapshot())
        changed.sort(key=lambda order: order.id)
        for refill in self.refills.values():
            while refill.status not in (REFILL_COMPLETED, REFILL_REJECTED) and now >= refill.next_step_at:
                refill.step += 1
                refill.status = IN_PROGRESS if refill.step == 1 else refill.ending
                refill.next_step_at += self.step_s
        return changed

    def _step(self, order: Order) -> None:
        order.step += 1
        delivered_third = order.quantity // 3
        if order.step <= _PROGRESS_STEPS:
            if order.step == 1:
                order.start_count = 1000 + (order.id * 37) % 9000
            order.status = IN_PROGRESS
            order.remains = order.quantity - delivered_third * order.step
            return
        if order.ending == COMPLETED:
            order.status, order.remains = COMPLETED, 0
        elif order.ending == PARTIAL:
            self._finish(order, PARTIAL, order.quantity - 2 * delivered_third)
        else:
            self._finish(order, CANCELED, order.quantity)

    def _finish(self, order: Order, status: str, remains: int) -> None:
        refund = (
            order.charge_micros
            if status == CANCELED
            else _refund(order.charge_micros, remains, order.quantity)
        )
        self.balances[order.account] += refund
        order.charge_micros -= refund
        order.status, order.remains = status, remains

    def cancel(self, account: str, order_id: str, now: float) -> Order:
        """Cancel at once (see the module docstring); returns the changed order's snapshot."""
        self.advance(now)
        order = self.order(account, order_id)
        if order is None:
            raise ApiError("Incorrect order ID")
        if not order.service.cancel:
            raise ApiError("Order cannot be cancelled")
        if order.final:
            raise ApiError("Order can no longer be canceled")
        if order.status == PENDING or order.remains >= order.quantity:
            self._finish(order, CANCELED, order.quantity)
        else:
            self._finish(order, PARTIAL, order.remains)
        return order.snapshot()

    def refill(self, account: str, order_id: str, now: float) -> Refill:
        self.advance(now)
        order = self.order(account, order_id)
        if order is None:
            raise ApiError("Incorrect order ID")
        if not order.service.refill:
            raise ApiError("Refill is disabled for this service")
        if order.status != COMPLETED:
            raise ApiError("The order is not completed")
        ending = REFILL_REJECTED if "norefill" in (order.link or "").lower() else REFILL_COMPLETED
        refill = Refill(len(self.refills) + 1, account, order.id, PENDING, ending, now + self.step_s)
        self.refills[refill.id] = refill
        return refill
