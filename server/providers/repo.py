"""Providers persistence: providers, their health and circuit, exchange rates, sync runs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from server.common.db import map_db_errors
from server.common.sqlfile import load
from server.providers.adapters.base import Exchange
from server.providers.errors import provider_name_taken

QUERIES = load(__file__)
CONSTRAINTS = {"providers_name_key": provider_name_taken}
Conn = AsyncConnection[Any]


@dataclass(frozen=True)
class ProviderFields:
    """What staff set on a provider (the key already encrypted)."""

    name: str
    protocol: str
    api_url: str
    api_key_ciphertext: str
    currency: str
    status: str
    timeout_ms: int
    max_concurrency: int
    max_requests_per_s: int
    enable_new_services: bool
    low_balance_micros: int = 0  # staff are alerted below this balance (provider currency); 0: never


@dataclass(frozen=True)
class ProviderRow:
    id: int
    name: str
    protocol: str
    api_url: str
    api_key_ciphertext: str
    currency: str
    status: str
    timeout_ms: int
    max_concurrency: int
    max_requests_per_s: int
    enable_new_services: bool
    low_balance_micros: int
    balance_micros: int | None
    balance_currency: str
    balance_time: datetime | None
    create_time: datetime
    update_time: datetime
    circuit_phase: str
    calls: int
    failures: int
    recent_error_ppm: int
    recent_latency_us: int
    last_error: str
    last_call_time: datetime | None
    last_failure_time: datetime | None
    webhooks_enabled: bool

    def fields(self) -> ProviderFields:
        return ProviderFields(**{name: getattr(self, name) for name in ProviderFields.__dataclass_fields__})


@dataclass(frozen=True)
class BalanceMark:
    """A provider's low-balance mark after a balance was recorded, and whether that balance
    starts a spell below it not yet reported."""

    name: str
    currency: str
    low_balance_micros: int
    newly_low: bool


@dataclass(frozen=True)
class CircuitRow:
    circuit_phase: str
    circuit_failures: int
    opened_at: float | None
    probe_at: float | None


@dataclass(frozen=True)
class ExchangeRateRow:
    currency: str
    rate: Decimal
    update_time: datetime


@dataclass(frozen=True)
class SyncRunRow:
    id: int
    provider_id: int
    status: str
    trigger: str
    total: int
    processed: int
    created: int
    updated: int
    quarantined: int
    disabled: int
    unchanged: int
    skipped: int
    error: str
    create_time: datetime
    start_time: datetime | None
    finish_time: datetime | None


class ProvidersRepo:
    async def insert(self, conn: Conn, fields: ProviderFields) -> int:
        with map_db_errors(CONSTRAINTS):
            provider_id = int(await QUERIES.scalar(conn, "insert_provider", **vars(fields)))
        await QUERIES.execute(conn, "insert_provider_health", provider_id=provider_id)
        return provider_id

    async def all(self, conn: Conn) -> list[ProviderRow]:
        return await QUERIES.all(conn, "list_providers", ProviderRow)

    async def get(self, conn: Conn, provider_id: int) -> ProviderRow | None:
        return await QUERIES.one(conn, "get_provider", ProviderRow, id=provider_id)

    async def lock(self, conn: Conn, provider_id: int) -> bool:
        return await QUERIES.scalar(conn, "lock_provider", id=provider_id) is not None

    async def update(self, conn: Conn, provider_id: int, fields: ProviderFields) -> None:
        with map_db_errors(CONSTRAINTS):
            await QUERIES.execute(conn, "update_provider", id=provider_id, **vars(fields))

    async def record_balance(
        self, conn: Conn, provider_id: int, micros: int, currency: str
    ) -> BalanceMark | None:
        return await QUERIES.one(
            conn,
            "record_balance",
            BalanceMark,
            id=provider_id,
            balance_micros=micros,
            balance_currency=currency,
        )

    async def read_circuit(self, conn: Conn, provider_id: int) -> CircuitRow | None:
        return await QUERIES.one(conn, "read_circuit", CircuitRow, provider_id=provider_id)

    async def lock_circuit(self, conn: Conn, provider_id: int) -> CircuitRow | None:
        return await QUERIES.one(conn, "lock_circuit", CircuitRow, provider_id=provider_id)

    async def store_circuit(
        self,
        conn: Conn,
        provider_id: int,
        phase: str,
        failures: int,
        opened_at: float | None,
        probe_at: float | None,
    ) -> None:
        await QUERIES.execute(
            conn,
            "store_circuit",
            provider_id=provider_id,
            phase=phase,
            failures=failures,
            opened_at=opened_at,
            probe_at=probe_at,
        )

    async def record_call(
        self,
        conn: Conn,
        provider_id: int,
        *,
        failed: bool,
        latency_us: int,
        error: str,
        logged: tuple[list[int], Exchange] | None = None,
    ) -> None:
        """The call in the provider's health; ``logged`` (orders, exchange) also goes into the
        per-order provider log, in the same statement."""
        values = _exchange_values(*logged) if logged else dict.fromkeys(_EXCHANGE_FIELDS)
        await QUERIES.execute(
            conn,
            "record_call",
            provider_id=provider_id,
            failed=failed,
            latency_us=latency_us,
            error=error[:500],
            logged=logged is not None,
            **values,
        )

    async def exchange_rates(self, conn: Conn) -> list[ExchangeRateRow]:
        return await QUERIES.all(conn, "list_exchange_rates", ExchangeRateRow)

    async def exchange_rate(self, conn: Conn, currency: str) -> Decimal | None:
        rate: Decimal | None = await QUERIES.scalar(conn, "get_exchange_rate", currency=currency)
        return rate

    async def set_exchange_rate(self, conn: Conn, currency: str, rate: Decimal) -> ExchangeRateRow:
        row = await QUERIES.one(conn, "set_exchange_rate", ExchangeRateRow, currency=currency, rate=rate)
        assert row is not None
        return row

    async def queue_sync(self, conn: Conn, provider_id: int, trigger: str) -> tuple[SyncRunRow, bool]:
        """The queued run, and whether it is new (a run already queued or running is returned)."""
        await QUERIES.execute(conn, "fail_stale_sync_runs", provider_id=provider_id)
        row = await QUERIES.one(conn, "insert_sync_run", SyncRunRow, provider_id=provider_id, trigger=trigger)
        if row is not None:
            return row, True
        active = await QUERIES.one(conn, "active_sync_run", SyncRunRow, provider_id=provider_id)
        assert active is not None
        return active, False

    async def sync_run(self, conn: Conn, run_id: int) -> SyncRunRow | None:
        return await QUERIES.one(conn, "get_sync_run", SyncRunRow, id=run_id)

    async def sync_runs(self, conn: Conn, provider_id: int, limit: int) -> list[SyncRunRow]:
        return await QUERIES.all(conn, "list_sync_runs", SyncRunRow, provider_id=provider_id, limit=limit)

    async def start_sync_run(self, conn: Conn, run_id: int) -> bool:
        return await QUERIES.scalar(conn, "start_sync_run", id=run_id) is not None

    async def sync_progress(self, conn: Conn, run_id: int, total: int, processed: int) -> None:
        await QUERIES.execute(conn, "sync_progress", id=run_id, total=total, processed=processed)

    async def finish_sync_run(self, conn: Conn, run_id: int, status: str, error: str, **counts: int) -> None:
        await QUERIES.execute(conn, "finish_sync_run", id=run_id, status=status, error=error[:2000], **counts)

    async def enabled_provider_ids(self, conn: Conn) -> list[int]:
        async with conn.cursor() as cur:
            await cur.execute(QUERIES.sql("enabled_provider_ids"))
            return [row[0] for row in await cur.fetchall()]

    async def record_exchange(
        self, conn: Conn, provider_id: int, order_ids: list[int], exchange: Exchange
    ) -> None:
        await QUERIES.execute(
            conn, "insert_exchange", provider_id=provider_id, **_exchange_values(order_ids, exchange)
        )

    async def webhook_secret(self, conn: Conn, provider_id: int) -> str | None:
        found: str | None = await QUERIES.scalar(conn, "webhook_secret", id=provider_id)
        return found

    async def set_webhook_secret(self, conn: Conn, provider_id: int, ciphertext: str) -> None:
        await QUERIES.execute(conn, "set_webhook_secret", id=provider_id, ciphertext=ciphertext)

    async def open_orders(self, conn: Conn, provider_id: int) -> int:
        return int(await QUERIES.scalar(conn, "open_orders", provider_id=provider_id))


_EXCHANGE_FIELDS = ("order_ids", "action", "params", "http_status", "body", "outcome", "reason", "latency_ms")


def _exchange_values(order_ids: list[int], exchange: Exchange) -> dict[str, Any]:
    return {
        "order_ids": order_ids,
        "action": exchange.action,
        "params": Jsonb(dict(exchange.params)),
        "http_status": exchange.http_status,
        "body": exchange.body[:2000],
        "outcome": exchange.outcome,
        "reason": exchange.reason[:500],
        "latency_ms": int(exchange.latency_s * 1000),
    }
