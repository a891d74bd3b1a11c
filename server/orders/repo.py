"""Orders persistence: rows as frozen dataclasses; the named queries are in queries.sql."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection

from server.common.sqlfile import load

QUERIES = load(__file__)
Conn = AsyncConnection[Any]


@dataclass(frozen=True)
class ServiceForOrder:
    id: int
    name: str
    type: str
    min_quantity: int
    max_quantity: int
    dripfeed: bool
    upstream_dripfeed: bool
    rate_micros: int
    provider_id: int | None
    upstream_service_id: str
    provider_rate_micros: int | None
    provider_currency: str
    exchange_rate: Decimal | None
    one_active_order_per_link: bool
    on_sale: bool
    discount_bps: int
    order_id: int  # the id the order will have, drawn from the sequence


@dataclass(frozen=True)
class OrderRow:
    id: int
    user_id: int
    service_id: int
    service_name: str
    service_type: str
    status: str
    link: str
    quantity: int
    runs: int
    interval_minutes: int
    upstream_params: dict[str, str]
    billable: int
    price_micros: int
    charged_micros: int
    released_micros: int
    provider_id: int | None
    upstream_service_id: str
    upstream_order_id: str
    attempt: int
    start_count: int | None
    remains: int | None
    source: str
    status_note: str
    create_time: datetime
    update_time: datetime
    cancel_state: str
    cancel_message: str
    finish_time: datetime | None
    service_refill: bool
    refill_days: int
    service_cancel: bool
    pinned_provider: bool
    panel_dripfeed: bool

    @property
    def units(self) -> int:
        """What the provider counts in ``remains``: the whole quantity (all runs). Orders placed
        without a quantity have units too, or a partial end would release nothing: a package is
        one unit upstream, and a subscription the most it may deliver (max x posts), which is what
        its hold covers."""
        if self.quantity > 0:
            return self.quantity * max(1, self.runs)
        if self.service_type == "SUBSCRIPTIONS":
            return self.billable
        return 1


@dataclass(frozen=True)
class OrderEventRow:
    status: str
    note: str
    create_time: datetime


@dataclass(frozen=True)
class Candidate:
    provider_id: int
    upstream_service_id: str
    position: int = 0  # 0 = the service's primary provider, then its fallbacks


@dataclass(frozen=True)
class KnownTerms:
    """What a provider charges per 1000 for an upstream service, in its currency, and the rate."""

    provider_rate_micros: int
    exchange_rate: Decimal


@dataclass(frozen=True)
class Claim:
    """An order claimed for one submission: what the provider call and its record need."""

    id: int
    user_id: int
    upstream_params: dict[str, str]
    provider_id: int
    upstream_service_id: str
    submission_id: int

    @property
    def candidate(self) -> Candidate:
        return Candidate(self.provider_id, self.upstream_service_id)


@dataclass(frozen=True)
class DueOrder:
    id: int
    provider_id: int
    upstream_order_id: str


@dataclass(frozen=True)
class RefillRow:
    id: int
    order_id: int
    user_id: int
    provider_id: int
    status: str
    upstream_refill_id: str
    message: str
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class ExchangeRow:
    provider_id: int
    action: str
    params: dict[str, str]
    http_status: int | None
    body: str
    outcome: str
    reason: str
    latency_ms: int
    create_time: datetime


@dataclass(frozen=True)
class RunRow:
    """One run of a drip-feed smm sends itself (``order_runs``)."""

    order_id: int
    run_no: int
    quantity: int
    state: str
    due_time: datetime
    attempt: int
    provider_id: int | None
    upstream_service_id: str
    upstream_order_id: str
    start_count: int | None
    remains: int | None
    note: str
    next_poll_time: datetime | None
    submit_time: datetime | None
    finish_time: datetime | None
    update_time: datetime


@dataclass(frozen=True)
class DueRun:
    order_id: int
    run_no: int
    provider_id: int
    upstream_order_id: str


@dataclass(frozen=True)
class LostSubmission:
    provider_id: int
    upstream_service_id: str
    create_time: datetime
    finish_time: datetime | None
    primary_provider: bool
    provider_rate_micros: int | None
    billable: int


@dataclass(frozen=True)
class StalledOrder:
    order_id: int
    provider_id: int  # the one its last submission could not reach, else the order's own


@dataclass(frozen=True)
class InterruptedSubmission:
    order_id: int
    submission_id: int
    provider_id: int
