"""The types every provider adapter speaks, whatever the wire protocol underneath.

Every call returns a ``Reply``, one of three outcomes::

    Reply[T]
    ├── Accepted(value)           the provider answered and the answer parsed
    ├── Rejected(message)         a definite "no" from the provider: nothing happened upstream
    └── Unknown(reason, sent)     anything else: timeout, reset, 5xx, HTML, garbage, an odd shape

The standard protocol has no idempotency key, so an ``Unknown`` reply to ``add`` may hide an order
that exists upstream: it is never a rejection. ``Unknown.sent`` is ``True`` unless the request
provably never reached the provider (circuit open, the local rate limit or concurrency queue gave
up, the TCP connection was never made, or HTTP 429 Too Many Requests, which RFC 6585 defines as
"not processed"); only then may a write be sent again without a look-up.

Money is int micro-units (1e-6) of the provider's currency, never a float.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Generic, Literal, Protocol, TypeAlias, TypeVar

__all__ = [
    "ORDER_STATUSES",
    "SERVICE_TYPES",
    "Accepted",
    "AddOrder",
    "Balance",
    "Breaker",
    "Exchange",
    "ExchangeHook",
    "OrderStatus",
    "OutcomeKind",
    "ProviderAdapter",
    "ProviderConnection",
    "RefillState",
    "Rejected",
    "Reply",
    "Unknown",
    "UpstreamService",
    "UpstreamStatus",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


@dataclass(frozen=True)
class Accepted(Generic[T_co]):
    value: T_co


@dataclass(frozen=True)
class Rejected:
    """A definite error from the provider (``{"error": "..."}``, or a 4xx with a JSON error)."""

    message: str


@dataclass(frozen=True)
class Unknown:
    """The outcome is not known. ``sent=False`` only when the request provably never left or was refused
    unprocessed (see the module docstring): a dispatcher may then send an ``add`` again."""

    reason: str
    sent: bool = True


Reply: TypeAlias = Accepted[T] | Rejected | Unknown
OutcomeKind = Literal["accepted", "rejected", "unknown"]


@dataclass(frozen=True)
class ProviderConnection:
    """Where and how to reach one provider. ``api_key`` is a secret: it is left out of the repr."""

    api_url: str
    api_key: str = field(repr=False)
    timeout_s: float = 15.0
    max_concurrency: int = 8
    max_requests_per_s: float = 10.0

    def __post_init__(self) -> None:
        if not self.api_url:
            raise ValueError("api_url is required")
        if self.timeout_s <= 0 or self.max_concurrency < 1 or self.max_requests_per_s <= 0:
            raise ValueError("timeout_s, max_concurrency and max_requests_per_s must be positive")


# PROTOCOL.md §3.1, in the canonical Perfect Panel spelling.
SERVICE_TYPES: tuple[str, ...] = (
    "Default",
    "Package",
    "SEO",
    "Custom Comments",
    "Custom Comments Package",
    "Mentions",
    "Mentions with Hashtags",
    "Mentions Custom List",
    "Mentions Hashtag",
    "Mentions User Followers",
    "Mentions Media Likers",
    "Comment Likes",
    "Comment Replies",
    "Poll",
    "Invites from Groups",
    "Subscriptions",
    "Web Traffic",
)


class OrderStatus(enum.StrEnum):
    """The six Perfect Panel order statuses (PROTOCOL.md §4); the value is the exact PP word."""

    PENDING = "Pending"
    IN_PROGRESS = "In progress"
    PROCESSING = "Processing"
    COMPLETED = "Completed"
    PARTIAL = "Partial"
    CANCELED = "Canceled"

    @property
    def final(self) -> bool:
        return self in (OrderStatus.COMPLETED, OrderStatus.PARTIAL, OrderStatus.CANCELED)


ORDER_STATUSES: tuple[OrderStatus, ...] = tuple(OrderStatus)


class RefillState(enum.StrEnum):
    PENDING = "Pending"
    IN_PROGRESS = "In progress"
    COMPLETED = "Completed"
    REJECTED = "Rejected"


@dataclass(frozen=True)
class UpstreamService:
    service_id: str
    name: str
    type: str  # canonical PP spelling when recognised, else as the provider sent it
    category: str
    rate_micros: int  # per 1000, in the provider's currency
    min: int
    max: int
    refill: bool = False
    cancel: bool = False
    dripfeed: bool = False
    description: str = ""
    average_time: str | None = None
    # Why smm cannot use this listed entry (a bad rate, min/max or no name; its figures are then 0),
    # or "": the sync skips it and quarantines a service linked to it, never takes it for gone.
    problem: str = ""


@dataclass(frozen=True)
class UpstreamStatus:
    status: OrderStatus
    charge_micros: int | None = None
    start_count: int | None = None
    remains: int | None = None
    currency: str | None = None
    # "Active", "Paused" or "Expired" when the provider answered with a subscription word (PROTOCOL.md
    # §4): ``status`` is then In progress, In progress or Completed, which is what they mean for an
    # order, but a subscription's paused and expired are states of their own (its expired end
    # releases what was not delivered).
    subscription_word: str | None = None


@dataclass(frozen=True)
class Balance:
    amount_micros: int
    currency: str  # "" when the provider does not say


@dataclass(frozen=True)
class AddOrder:
    """One ``add`` call. Only the parameters that are set are sent (PROTOCOL.md §3.2)."""

    service: str
    link: str | None = None
    quantity: int | None = None
    runs: int | None = None
    interval: int | None = None
    keywords: str | None = None
    comments: str | None = None
    usernames: str | None = None
    hashtags: str | None = None
    hashtag: str | None = None
    username: str | None = None
    media: str | None = None
    answer_number: int | None = None
    groups: str | None = None
    min: int | None = None
    max: int | None = None
    posts: int | None = None
    old_posts: int | None = None
    delay: int | None = None
    expiry: str | None = None  # d/m/Y
    country: str | None = None
    device: int | None = None
    type_of_traffic: int | None = None
    google_keyword: str | None = None
    referring_url: str | None = None

    def params(self) -> dict[str, str]:
        """The wire parameters, ``service`` first, without the unset ones."""
        out: dict[str, str] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = str(value)
        return out


@dataclass(frozen=True)
class Exchange:
    """One request/response with a provider, for the per-order provider log and health stats.

    ``params`` never holds the API key, and ``body`` (at most 2,000 characters) has the key redacted
    if the provider echoed it. ``sent=False`` records a call refused locally (nothing went out).
    """

    action: str
    params: Mapping[str, str]
    http_status: int | None
    body: str
    latency_s: float
    outcome: OutcomeKind
    reason: str = ""
    sent: bool = True
    attempt: int = 1


ExchangeHook = Callable[[Exchange], Awaitable[None]]


class Breaker(Protocol):
    """A circuit breaker shared by the calls to one provider."""

    async def allow(self) -> bool: ...

    async def record(self, ok: bool, latency_s: float) -> None:
        """``ok`` is False only for Unknown outcomes that are no answer; a Rejected reply, or one in
        the action's shape with a status word smm does not know, proves the provider is alive."""
        ...


class ProviderAdapter(Protocol):
    """A provider's API as the panel uses it. Ids are strings; lists over 100 ids are batched.

    In the per-id dicts an id that is absent has an unknown outcome (the provider did not say, or
    its batch failed): ask again.
    """

    async def services(self, *, fresh: bool = False) -> Reply[list[UpstreamService]]: ...

    async def add(self, order: AddOrder) -> Reply[str]: ...

    async def status(self, order_id: str) -> Reply[UpstreamStatus]: ...

    async def statuses(self, order_ids: list[str]) -> Reply[dict[str, UpstreamStatus | Rejected]]: ...

    async def refill(self, order_id: str) -> Reply[str]: ...

    async def refills(self, order_ids: list[str]) -> Reply[dict[str, str | Rejected]]: ...

    async def refill_status(self, refill_ids: list[str]) -> Reply[dict[str, RefillState | Rejected]]: ...

    async def cancel(self, order_ids: list[str]) -> Reply[dict[str, bool | Rejected]]: ...

    async def balance(self, *, fresh: bool = False) -> Reply[Balance]: ...
