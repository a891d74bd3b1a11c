"""Provider management: settings (the API key encrypted, never returned), connection tests,
upstream service lists, exchange rates."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, replace
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from smm.v1 import events_pb2

from server.common import audit, idempotency
from server.common.db import Pool
from server.common.errors import (
    DomainError,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unavailable,
    collect,
)
from server.common.money import format_micros
from server.common.outbox import add_event
from server.providers.adapters import ADAPTERS
from server.providers.adapters.base import Accepted, Balance, Rejected, Unknown, UpstreamService
from server.providers.clients import ProviderClients
from server.providers.errors import DOMAIN, no_exchange_rate, provider_not_found, sync_run_not_found
from server.providers.repo import (
    Conn,
    ExchangeRateRow,
    ProviderFields,
    ProviderRow,
    ProvidersRepo,
    SyncRunRow,
)
from server.providers.transport import unreachable

CURRENCY = re.compile(r"^[A-Z]{3}$")
URL = re.compile(r"^https?://[^\s/$.?#][^\s]*$", re.IGNORECASE)
# The catalog's own subject (server/catalog/logic.py SERVICE_CHANGED; one service never imports
# another): whether a provider is enabled decides whether its services are on sale, so a change of
# its status drops every edge's cached catalog, in the same transaction as the change.
CATALOG_CHANGED = "smm.catalog.service.changed"
PROVIDER_BALANCE_LOW = "smm.providers.alert.low_balance"


@dataclass(frozen=True)
class ConnectionTest:
    outcome: str
    message: str
    balance: Balance | None
    latency_ms: int


def validate(fields: ProviderFields, *, api_key: str | None, before: ProviderFields | None = None) -> None:
    """``before``: the provider as stored, whose URL is judged by the rules it was saved under
    until staff change it (a patch of another field is not refused for it)."""
    violations: list[FieldViolation] = []
    if not 1 <= len(fields.name.strip()) <= 100:
        violations.append(FieldViolation("provider.name", "must be 1 to 100 characters"))
    if fields.protocol not in ADAPTERS:
        violations.append(
            FieldViolation("provider.protocol", "must be one of " + ", ".join(sorted(ADAPTERS)))
        )
    if len(fields.api_url) > 2000 or not URL.match(fields.api_url):
        violations.append(FieldViolation("provider.api_url", "must be an http(s) URL"))
    elif before is None or before.api_url != fields.api_url:
        violations += _url_violations(fields.api_url)
    if api_key is not None and not 1 <= len(api_key.strip()) <= 500:
        violations.append(FieldViolation("provider.api_key", "is required (at most 500 characters)"))
    if not CURRENCY.match(fields.currency):
        violations.append(FieldViolation("provider.currency", "must be an ISO 4217 code like USD"))
    if not 100 <= fields.timeout_ms <= 120_000:
        violations.append(FieldViolation("provider.timeout_ms", "must be 100 to 120000"))
    if not 1 <= fields.max_concurrency <= 256:
        violations.append(FieldViolation("provider.max_concurrency", "must be 1 to 256"))
    if not 1 <= fields.max_requests_per_s <= 10_000:
        violations.append(FieldViolation("provider.max_requests_per_s", "must be 1 to 10000"))
    collect(violations, domain=DOMAIN)


def _url_violations(url: str) -> list[FieldViolation]:
    """The URL is shown to staff, kept in the audit trail and logged with each failed call: a
    user and password in it would be a credential in all three (the key goes in ``api_key``,
    stored encrypted). A fragment never reaches the provider, and a URL without a host name or
    with a bad port cannot be called."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number in range
    except ValueError:
        return [FieldViolation("provider.api_url", "must be an http(s) URL")]
    if parts.username is not None or parts.password is not None:
        return [
            FieldViolation(
                "provider.api_url",
                "must not carry a user name or password (the key goes in api_key, stored encrypted)",
            )
        ]
    if not parts.hostname:
        return [FieldViolation("provider.api_url", "must be an http(s) URL")]
    if unreachable(parts.hostname):  # a name resolving there is refused when called (transport.py)
        return [FieldViolation("provider.api_url", "must not be a link-local address (cloud metadata)")]
    if "#" in url:
        return [FieldViolation("provider.api_url", "must not have a #fragment")]
    return []


def visible(fields: ProviderFields) -> dict[str, Any]:
    # What the audit trail keeps of a provider: never its key, not even encrypted.
    shown = vars(fields).copy()
    shown.pop("api_key_ciphertext")
    return shown


class ProvidersLogic:
    def __init__(
        self, pool: Pool, repo: ProvidersRepo, clients: ProviderClients, panel_currency: str
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._clients = clients
        self.panel_currency = panel_currency

    async def create(
        self,
        fields: ProviderFields,
        api_key: str,
        key: idempotency.RequestKey | None = None,
        webhook_secret: str = "",
    ) -> ProviderRow:
        validate(fields, api_key=api_key)
        fields = replace(
            fields, name=fields.name.strip(), api_key_ciphertext=self._clients.encrypt_key(api_key.strip())
        )
        async with self._pool.connection() as conn, conn.transaction():
            if key and (stored := await idempotency.claim(conn, key)) is not None:
                provider_id = int(stored)  # the same request again (AIP-155): the first answer
            else:
                provider_id = await self._repo.insert(conn, fields)
                if webhook_secret:
                    await self._repo.set_webhook_secret(
                        conn, provider_id, self._clients.encrypt_webhook_secret(webhook_secret.strip())
                    )
                await audit.record(
                    conn, "provider.created", target=f"provider:{provider_id}", after=visible(fields)
                )
                if key:
                    await idempotency.remember(conn, key, str(provider_id).encode())
            row = await self._repo.get(conn, provider_id)
        assert row is not None
        return row

    async def list_providers(self) -> list[ProviderRow]:
        async with self._pool.connection() as conn:
            return await self._repo.all(conn)

    async def get(self, provider_id: int) -> ProviderRow:
        async with self._pool.connection() as conn:
            row = await self._repo.get(conn, provider_id)
        if row is None:
            raise provider_not_found(provider_id)
        return row

    async def update(
        self,
        provider_id: int,
        changes: dict[str, Any],
        api_key: str | None,
        webhook_secret: str | None = None,
    ) -> ProviderRow:
        async with self._pool.connection() as conn, conn.transaction():
            if not await self._repo.lock(conn, provider_id):
                raise provider_not_found(provider_id)
            current = await self._repo.get(conn, provider_id)
            assert current is not None
            before = current.fields()
            after = replace(before, **changes)
            validate(after, api_key=api_key, before=before)
            if api_key is not None:
                after = replace(after, api_key_ciphertext=self._clients.encrypt_key(api_key.strip()))
            after = replace(after, name=after.name.strip())
            await self._repo.update(conn, provider_id, after)
            if after.status != before.status:
                await add_event(conn, CATALOG_CHANGED, events_pb2.CatalogChanged())
            if webhook_secret is not None:
                await self._repo.set_webhook_secret(
                    conn, provider_id, self._clients.encrypt_webhook_secret(webhook_secret.strip())
                )
            shown_after = {
                **visible(after),
                "api_key_changed": api_key is not None,
                "webhook_secret_changed": webhook_secret is not None,
            }
            await audit.record(
                conn,
                "provider.updated",
                target=f"provider:{provider_id}",
                before=visible(before),
                after=shown_after,
            )
            row = await self._repo.get(conn, provider_id)
        self._clients.forget(provider_id)
        assert row is not None
        return row

    async def delete(self, provider_id: int) -> ProviderRow:
        async with self._pool.connection() as conn, conn.transaction():
            if not await self._repo.lock(conn, provider_id):
                raise provider_not_found(provider_id)
            open_orders = await self._repo.open_orders(conn, provider_id)
            if open_orders:
                raise FailedPrecondition(
                    f"the provider has {open_orders} open order(s), drip-feed run(s) or refill(s):"
                    " disable it and let them finish first",
                    reason="PROVIDER_HAS_OPEN_ORDERS",
                    domain=DOMAIN,
                    metadata={"open_orders": str(open_orders)},
                )
            current = await self._repo.get(conn, provider_id)
            assert current is not None
            deleted = replace(current.fields(), status="deleted")
            await self._repo.update(conn, provider_id, deleted)
            if current.status != "deleted":
                await add_event(conn, CATALOG_CHANGED, events_pb2.CatalogChanged())
            await audit.record(
                conn, "provider.deleted", target=f"provider:{provider_id}", before=visible(current.fields())
            )
        self._clients.forget(provider_id)
        return replace(current, status="deleted")

    async def test_connection(self, provider_id: int) -> ConnectionTest:
        provider = await self.get(provider_id)
        started = time.monotonic()
        reply = await self._clients.adapter(provider).balance(fresh=True)
        latency_ms = int((time.monotonic() - started) * 1000)
        if isinstance(reply, Accepted):
            async with self._pool.connection() as conn, conn.transaction():
                await self.record_balance(conn, provider_id, reply.value)
            return ConnectionTest("accepted", "", reply.value, latency_ms)
        if isinstance(reply, Rejected):
            return ConnectionTest("rejected", reply.message, None, latency_ms)
        return ConnectionTest("unknown", reply.reason, None, latency_ms)

    async def record_balance(self, conn: Conn, provider_id: int, balance: Balance) -> None:
        """Record what the provider reported (inside the caller's transaction) and, when it starts
        a spell below the provider's mark, the staff alert: once per spell (sql/0031)."""
        mark = await self._repo.record_balance(conn, provider_id, balance.amount_micros, balance.currency)
        if mark is not None and mark.newly_low:
            low = events_pb2.ProviderBalanceLow(
                provider_id=provider_id,
                provider_name=mark.name,
                balance=format_micros(balance.amount_micros),
                low_balance=format_micros(mark.low_balance_micros),
                currency=balance.currency or mark.currency,
            )
            await add_event(conn, PROVIDER_BALANCE_LOW, low)

    async def upstream_services(self, provider_id: int, *, fresh: bool) -> tuple[list[UpstreamService], str]:
        provider = await self.get(provider_id)
        reply = await self._clients.adapter(provider).services(fresh=fresh)
        if isinstance(reply, Accepted):  # entries smm cannot use have no figures to show
            return [s for s in reply.value if not s.problem], provider.currency
        raise upstream_failed(reply)

    async def sync_run(self, provider_id: int, run_id: int) -> SyncRunRow:
        async with self._pool.connection() as conn:
            run = await self._repo.sync_run(conn, run_id)
        if run is None or run.provider_id != provider_id:
            raise sync_run_not_found(run_id)
        return run

    async def sync_runs(self, provider_id: int, *, limit: int) -> list[SyncRunRow]:
        await self.get(provider_id)
        async with self._pool.connection() as conn:
            return await self._repo.sync_runs(conn, provider_id, limit)

    async def exchange_rates(self) -> list[ExchangeRateRow]:
        async with self._pool.connection() as conn:
            return await self._repo.exchange_rates(conn)

    async def set_exchange_rate(self, currency: str, rate: Decimal) -> ExchangeRateRow:
        if not CURRENCY.match(currency):
            raise InvalidArgument.for_field("currency", "must be an ISO 4217 code like EUR")
        if currency == self.panel_currency:
            raise InvalidArgument.for_field("currency", f"{currency} is the panel's own currency (rate 1)")
        async with self._pool.connection() as conn, conn.transaction():
            before = await self._repo.exchange_rate(conn, currency)
            row = await self._repo.set_exchange_rate(conn, currency, rate)
            await audit.record(
                conn,
                "exchange_rate.set",
                target=f"currency:{currency}",
                before=None if before is None else {"rate": str(before)},
                after={"rate": str(rate)},
            )
            return row

    async def rate_for(self, conn: Any, currency: str) -> Decimal:
        if currency == self.panel_currency:
            return Decimal(1)
        rate = await self._repo.exchange_rate(conn, currency)
        if rate is None:
            raise no_exchange_rate(currency, self.panel_currency)
        return rate


def upstream_failed(reply: Rejected | Unknown) -> DomainError:
    if isinstance(reply, Rejected):  # e.g. a wrong key: staff must fix the provider's settings
        return FailedPrecondition(
            f"the provider refused: {reply.message}",
            reason="PROVIDER_REJECTED",
            domain=DOMAIN,
            metadata={"detail": reply.message[:200]},
        )
    return Unavailable(
        f"the provider did not answer usefully: {reply.reason}",
        reason="PROVIDER_UNAVAILABLE",
        domain=DOMAIN,
        metadata={"detail": reply.reason[:200]},
    )
