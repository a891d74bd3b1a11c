"""Placing orders and reading them back.

One unit of work per order: the order row, the hold on the user's wallet (``server/wallet/ledger``)
and the ``smm.orders.order.created`` outbox event commit together or not at all.

Price rule (one rounding, half up, in micro-units): ``price = rate_per_1000 x billable / 1000 x
(1 - discount)``, computed by ``server.common.money.price_of`` (the catalog shows a user's rate by it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from psycopg import errors as pg_errors
from psycopg.types.json import Jsonb
from smm.v1 import events_pb2

from server.common import outbox
from server.common.db import Pool
from server.common.errors import (
    Aborted,
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    collect,
)
from server.common.money import MAX_MICROS, price_of
from server.common.search import contains_pattern, search_id
from server.orders import states
from server.orders.errors import (
    DOMAIN,
    active_order_for_link,
    idempotency_key_reused,
    order_not_found,
    service_not_on_sale,
)
from server.orders.repo import QUERIES, Conn, OrderEventRow, OrderRow, RefillRow, ServiceForOrder
from server.orders.validation import MAX_URL, OrderInput, ServiceTerms, sizing_field, validate_order
from server.wallet import ledger

ORDER_CREATED = "smm.orders.order.created"
MAX_MASS_LINES = 500
PERIODS = ("day", "week", "month")
MAX_PERIODS = 366


@dataclass(frozen=True)
class Placement:
    user_id: int
    service_id: int
    order: OrderInput
    source: str = "web"
    api_key_id: int | None = None
    idempotency_key: str | None = None
    request_hash: bytes | None = None


@dataclass(frozen=True)
class _StoredHash:
    request_hash: bytes | None


@dataclass(frozen=True)
class MassLine:
    line: int
    order_id: int = 0
    error: str = ""


# A mass order line's service id and quantity: ASCII digits that fit an int64 ("²".isdigit() is true).
_NUMBER = re.compile(r"[0-9]{1,18}")


class OrdersLogic:
    def __init__(self, pool: Pool, *, subscription_default_posts: int = 0) -> None:
        self._pool = pool
        self._subscription_default_posts = subscription_default_posts
        self._time_zones: dict[str, str] = {}

    async def place(self, placement: Placement) -> OrderRow:
        """Two round trips: read the terms (and draw the order's id), then one statement that holds
        the price, writes the order, its timeline entry, its drip-feed runs when smm sends them
        itself, and its outbox event, and returns the order (``ledger.hold_with``). One more when
        the request has an idempotency key, and one when the service allows one active order per
        link."""
        async with self._pool.connection() as conn:
            if placement.idempotency_key:
                existing = await self._existing(conn, placement)
                if existing is not None:
                    return existing
            service = await QUERIES.one(
                conn, "service_for_order", ServiceForOrder, id=placement.service_id, user_id=placement.user_id
            )
            if service is None or not service.on_sale:
                if placement.service_id <= 0:
                    raise InvalidArgument.for_field("service_id", "is required", domain=DOMAIN)
                raise service_not_on_sale(placement.service_id)
            terms = ServiceTerms(
                service.type,
                service.min_quantity,
                service.max_quantity,
                service.dripfeed,
                dripfeed_upstream=service.upstream_dripfeed,
                default_posts=self._subscription_default_posts,
            )
            valid = validate_order(terms, placement.order, today=datetime.now(UTC).date())
            panel_dripfeed = valid.runs > 1 and not service.upstream_dripfeed
            # The rule is about links: a subscription has none (its link is ""), and must not be
            # refused for every other subscription of the service.
            if (
                service.one_active_order_per_link
                and valid.link
                and await QUERIES.scalar(
                    conn,
                    "active_order_for_link",
                    user_id=placement.user_id,
                    service_id=service.id,
                    link=valid.link,
                )
            ):
                raise active_order_for_link()
            price = price_of(service.rate_micros, valid.billable, service.discount_bps)
            if price > MAX_MICROS:
                raise InvalidArgument.for_field(
                    sizing_field(service.type), "makes the order larger than any wallet", domain=DOMAIN
                )
            order_id = service.order_id
            event = outbox.event_values(
                ORDER_CREATED, events_pb2.OrderCreated(order_id=order_id, user_id=placement.user_id)
            )
            along = ledger.Along(
                QUERIES.sql("insert_held_order"),
                {
                    "order_id": order_id,
                    "user_id": placement.user_id,
                    "service_id": service.id,
                    # The order keeps the type it was sold as (its kind and units), whatever the
                    # service becomes later.
                    "service_type": service.type,
                    "link": valid.link,
                    "quantity": valid.quantity,
                    "runs": valid.runs,
                    "interval_minutes": valid.interval,
                    "panel_dripfeed": panel_dripfeed,
                    # Drip-feed smm sends itself: one scheduled run per run (dripfeed.py sends them).
                    "panel_runs": valid.runs if panel_dripfeed else 0,
                    "upstream_params": Jsonb(valid.upstream),
                    "billable": valid.billable,
                    "rate_micros": service.rate_micros,
                    "discount_bps": service.discount_bps,
                    "price_micros": price,
                    "provider_id": service.provider_id,
                    "upstream_service_id": service.upstream_service_id,
                    "provider_rate_micros": service.provider_rate_micros,
                    "provider_currency": service.provider_currency,
                    "exchange_rate": service.exchange_rate,
                    "source": placement.source,
                    "api_key_id": placement.api_key_id,
                    "idempotency_key": placement.idempotency_key,
                    "request_hash": placement.request_hash,
                    "event_subject": event.subject,
                    "event_payload": event.payload,
                    "event_headers": event.headers,
                },
                OrderRow,
            )
            try:
                row = await ledger.hold_with(
                    conn,
                    user_id=placement.user_id,
                    amount=price,
                    key=f"order:{order_id}:hold",
                    reference=f"order:{order_id}",
                    actor=f"user:{placement.user_id}",
                    along=along,
                )
            except pg_errors.UniqueViolation as exc:
                if exc.diag.constraint_name != "orders_user_idempotency_key":
                    raise
                existing = await self._existing(conn, placement)  # the same key committed meanwhile
                assert existing is not None
                return existing
            except (FailedPrecondition, Aborted):
                # A retry racing the first request under the same key: the first one's hold may
                # have taken the funds this one was refused for. Its order is the answer.
                existing = await self._existing(conn, placement) if placement.idempotency_key else None
                if existing is None:
                    raise
                return existing
        outbox.committed()  # the statement committed: wake this copy's relay (no NOTIFY needed)
        return row

    async def _existing(self, conn: Conn, placement: Placement) -> OrderRow | None:
        found = await conn.execute(
            QUERIES.sql("order_by_key"),
            {"user_id": placement.user_id, "idempotency_key": placement.idempotency_key},
        )
        match = await found.fetchone()
        if match is None:
            return None
        order_id, stored_hash = match
        if stored_hash is not None and bytes(stored_hash) != placement.request_hash:
            raise idempotency_key_reused()
        return await QUERIES.one(conn, "get_order", OrderRow, id=order_id)

    async def place_mass(
        self,
        user_id: int,
        text: str,
        *,
        source: str,
        api_key_id: int | None,
        request_id: str = "",
        request_hash: bytes | None = None,
    ) -> list[MassLine]:
        """Each line placed or refused on its own; blank lines are skipped, and every answer carries
        its line's number in the text. With a request id, line n is placed under the
        key ``mass:<request id>:<n>``: a retry answers the orders placed the first time and places
        only the lines refused then; the same id with other lines is refused as a whole."""
        # Blank (or whitespace-only) lines are no orders: skipped wherever they are, not refused.
        # Each line keeps its number in the text, for the answer and for its key.
        lines = [
            (number, line)
            for number, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1)
            if line.strip()
        ]
        if not lines or len(lines) > MAX_MASS_LINES:
            collect([FieldViolation("lines", f"must hold 1 to {MAX_MASS_LINES} lines")], domain=DOMAIN)
        keys = {number: f"mass:{request_id}:{number}" for number, _ in lines} if request_id else {}
        if keys:
            async with self._pool.connection() as conn:
                # The key names one text: compared as a whole, since the same lines at other
                # numbers (a blank line added) have keys of their own and would be placed again.
                claim = {"actor": f"user:{user_id}", "request_id": request_id}
                await QUERIES.execute(conn, "claim_mass_request", **claim, request_hash=request_hash or b"")
                first = await QUERIES.scalar(conn, "mass_request_hash", **claim)
                # ... and line by line, for lines placed before their request's id was purged.
                stored = await QUERIES.all(
                    conn, "hashes_by_keys", _StoredHash, user_id=user_id, keys=list(keys.values())
                )
            if (first is not None and bytes(first) != (request_hash or b"")) or any(
                bytes(row.request_hash or b"") != request_hash for row in stored
            ):
                raise idempotency_key_reused()
        results = []
        for number, line in lines:
            # Service and quantity are the first and last fields: a link may hold a "|" itself.
            service, _, rest = line.partition("|")
            link, _, quantity = rest.rpartition("|")
            parts = [service.strip(), link.strip(), quantity.strip()]
            if not link or not _NUMBER.fullmatch(parts[0]) or not _NUMBER.fullmatch(parts[2]):
                results.append(MassLine(number, error="expected: service | link | quantity"))
                continue
            placement = Placement(
                user_id,
                int(parts[0]),
                OrderInput(link=parts[1], quantity=int(parts[2])),
                source,
                api_key_id,
                idempotency_key=keys.get(number),
                request_hash=request_hash if keys else None,
            )
            try:
                order = await self.place(placement)
            except DomainError as exc:  # each line succeeds or fails on its own, with its reason
                results.append(MassLine(number, error=_line_error(exc)))
            else:
                results.append(MassLine(number, order_id=order.id))
        return results

    async def get(
        self, user_id: int | None, order_id: int
    ) -> tuple[OrderRow, list[OrderEventRow], list[RefillRow]]:
        async with self._pool.connection() as conn:
            row = await QUERIES.one(conn, "get_order", OrderRow, id=order_id)
            if row is None or (user_id is not None and row.user_id != user_id):
                raise order_not_found(order_id)
            events = await QUERIES.all(conn, "list_events", OrderEventRow, order_id=order_id)
            refills = await QUERIES.all(conn, "list_refills", RefillRow, order_ids=[order_id])
        return row, events, refills

    async def batch(self, user_id: int, ids: list[int]) -> list[OrderRow]:
        async with self._pool.connection() as conn:
            return await QUERIES.all(conn, "batch_get_orders", OrderRow, user_id=user_id, ids=ids)

    async def list_orders(
        self, user_id: int, *, status: str, query: str, service_id: int, before_id: int, limit: int
    ) -> list[OrderRow]:
        if status and status not in states.ALL:
            collect([FieldViolation("status", "must be an order status")], domain=DOMAIN)
        query = query.strip()
        # Matched whole, never cut: a link holds at most MAX_URL bytes, so at most as many characters
        # (ILIKE folds case character by character), and such a query is no id either.
        if len(query) > MAX_URL:
            return []
        query_id = search_id(query)
        async with self._pool.connection() as conn:
            return await QUERIES.all(
                conn,
                "list_orders",
                OrderRow,
                user_id=user_id,
                status=status,
                query=query,
                query_id=query_id,
                link_pattern=contains_pattern(query),
                service_id=service_id,
                before_id=before_id,
                limit=limit,
            )

    async def stats(
        self, user_id: int, period: str, periods: int, time_zone: str = "UTC"
    ) -> tuple[list[tuple[str, int]], list[Any]]:
        async with self._pool.connection() as conn, conn.cursor() as cur:
            zone = (await self._zones(conn)).get(time_zone.lower())
            violations = []
            if period not in PERIODS:
                violations.append(FieldViolation("period", "must be day, week or month"))
            if not 1 <= periods <= MAX_PERIODS:
                violations.append(FieldViolation("periods", f"must be 1 to {MAX_PERIODS}"))
            if zone is None:
                violations.append(
                    FieldViolation("time_zone", "must be an IANA time zone name, like Europe/Moscow or UTC")
                )
            collect(violations, domain=DOMAIN)
            await cur.execute(QUERIES.sql("stats_by_status"), {"user_id": user_id})
            by_status = [(status, int(count)) for status, count in await cur.fetchall()]
            await cur.execute(
                QUERIES.sql("stats_spend"),
                {"user_id": user_id, "period": period, "periods": periods, "time_zone": zone},
            )
            spend = [(start, int(orders), int(spent or 0)) for start, orders, spent in await cur.fetchall()]
        return by_status, spend

    async def _zones(self, conn: Conn) -> dict[str, str]:
        """PostgreSQL's zone names by their lower case, read once: the list is the server's tzdata
        and does not change while it runs, and reading it walks some 600 files."""
        if not self._time_zones:
            async with conn.cursor() as cur:
                await cur.execute(QUERIES.sql("time_zone_names"))
                self._time_zones = {name.lower(): name for (name,) in await cur.fetchall()}
        return self._time_zones


def _line_error(exc: DomainError) -> str:
    violations = getattr(exc, "violations", None)
    if violations:
        return "; ".join(f"{v.field} {v.description}" for v in violations)
    return exc.message
