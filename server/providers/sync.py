"""Provider sync: queue a run (by hand or on the schedule), run it when the provider-sync worker
asks, or preview it. The catalog side (pricing, quarantine, what never gets overwritten) is
``server/catalog/importer.py``, called on this module's connection so one sync is one transaction.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from smm.v1 import events_pb2

from server.catalog.importer import Offer, Plan, ProviderTerms, sync_offers
from server.common import audit
from server.common.db import Pool
from server.common.outbox import add_event
from server.providers.adapters.base import Accepted, Balance, UpstreamService
from server.providers.clients import ProviderClients
from server.providers.errors import currency_mismatch, provider_not_found, sync_run_not_found
from server.providers.logic import ProvidersLogic, upstream_failed
from server.providers.repo import Conn, ProviderRow, ProvidersRepo, SyncRunRow

log = logging.getLogger(__name__)
SYNC_REQUESTED = "smm.providers.sync.requested"
ISO_CURRENCY = re.compile(r"[A-Z]{3}", re.ASCII)


def our_type(pp_type: str) -> str:
    """ "Custom Comments Package" -> "CUSTOM_COMMENTS_PACKAGE" (PROTOCOL.md's names, our spelling)."""
    return "_".join(pp_type.upper().split())


def offer_of(service: UpstreamService) -> Offer:
    return Offer(
        upstream_id=service.service_id,
        name=service.name,
        type=our_type(service.type),
        category=service.category,
        rate_micros=service.rate_micros,
        min_quantity=service.min,
        max_quantity=service.max,
        refill=service.refill,
        cancel=service.cancel,
        dripfeed=service.dripfeed,
        description=service.description,
        problem=service.problem,
    )


@dataclass(frozen=True)
class Preview:
    provider_id: int
    plan: Plan


class ProviderSync:
    def __init__(
        self,
        pool: Pool,
        repo: ProvidersRepo,
        clients: ProviderClients,
        providers: ProvidersLogic,
        *,
        jump_bps: int,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._clients = clients
        self._providers = providers
        self._jump_bps = jump_bps

    async def request(self, provider_id: int) -> SyncRunRow:
        async with self._pool.connection() as conn, conn.transaction():
            if not await self._repo.lock(conn, provider_id):
                raise provider_not_found(provider_id)
            run, new = await queue(conn, self._repo, provider_id, "manual")
            if new:
                await audit.record(conn, "provider.sync_requested", target=f"provider:{provider_id}")
            return run

    async def enqueue_all(self, conn: Conn) -> str:
        """The scheduled job: a sync for every enabled provider (inside the job's transaction)."""
        queued = 0
        for provider_id in await self._repo.enabled_provider_ids(conn):
            _, new = await queue(conn, self._repo, provider_id, "schedule")
            queued += new
        return f"queued {queued} provider sync(s)"

    async def run(self, run_id: int) -> SyncRunRow:
        async with self._pool.connection() as conn:
            run = await self._repo.sync_run(conn, run_id)
            if run is None:
                raise sync_run_not_found(run_id)
            if not await self._repo.start_sync_run(conn, run_id):
                return run  # running elsewhere or done: a redelivered event changes nothing
            await conn.commit()
            provider = await self._repo.get(conn, run.provider_id)
        counts: dict[str, int] = {}
        try:
            if provider is None:
                raise provider_not_found(run.provider_id)
            plan = await self._apply(provider, run_id)
            counts = _counts(plan)
            status, error = "succeeded", ""
        except Exception as exc:  # the run must end failed, whatever went wrong
            status, error = "failed", getattr(exc, "message", "") or "internal error"
            if not hasattr(exc, "message"):
                log.exception("provider sync failed", extra={"sync_run_id": run_id})
        async with self._pool.connection() as conn:
            await self._repo.finish_sync_run(conn, run_id, status, error, **_all_counts(counts))
            finished = await self._repo.sync_run(conn, run_id)
        assert finished is not None
        return finished

    async def preview(self, provider_id: int) -> Preview:
        provider = await self._providers.get(provider_id)
        offers, _ = await self._offers(provider)
        # A preview writes nothing, and lets go of the locks it took at once.
        async with self._pool.connection() as conn, conn.transaction(force_rollback=True):
            terms = await self._terms(conn, provider)
            plan = await sync_offers(conn, offers, terms, dry_run=True)
        return Preview(provider_id, plan)

    async def _apply(self, provider: ProviderRow, run_id: int) -> Plan:
        offers, balance = await self._offers(provider)
        if balance is not None:  # hourly: staff see a fresh balance, and hear when it runs low
            async with self._pool.connection() as conn, conn.transaction():
                await self._providers.record_balance(conn, provider.id, balance)

        async def progress(done: int, total: int) -> None:
            async with self._pool.connection() as side:  # seen by staff while the sync's transaction is open
                await self._repo.sync_progress(side, run_id, len(offers), min(len(offers), done))

        await progress(0, len(offers))
        # Progress goes through other connections: the sync's transaction never touches its run row.
        async with self._pool.connection() as conn, conn.transaction():
            terms = await self._terms(conn, provider)
            return await sync_offers(conn, offers, terms, dry_run=False, progress=progress)

    async def _offers(self, provider: ProviderRow) -> tuple[list[Offer], Balance | None]:
        """The provider's services as offers, and its balance when it gave one."""
        adapter = self._clients.adapter(provider)
        reply = await adapter.services(fresh=True)
        if not isinstance(reply, Accepted):
            raise upstream_failed(reply)
        # The service list carries no currency; the balance does. Rates in another currency than
        # the one configured would be priced as if they were in it: refuse rather than misprice.
        # A provider that does not say (or not as an ISO code, or does not answer) is taken at its
        # configured currency.
        balance = await adapter.balance(fresh=True)  # recorded: what the provider says now
        if isinstance(balance, Accepted):
            reported = balance.value.currency.strip().upper()
            if ISO_CURRENCY.fullmatch(reported) and reported != provider.currency.upper():
                raise currency_mismatch(provider.currency, reported)
        return [offer_of(s) for s in reply.value], balance.value if isinstance(balance, Accepted) else None

    async def _terms(self, conn: Conn, provider: ProviderRow) -> ProviderTerms:
        return ProviderTerms(
            provider_id=provider.id,
            currency=provider.currency,
            exchange_rate=await self._providers.rate_for(conn, provider.currency),
            enable_new=provider.enable_new_services,
            jump_bps=self._jump_bps,
        )


async def queue(conn: Conn, repo: ProvidersRepo, provider_id: int, trigger: str) -> tuple[SyncRunRow, bool]:
    run, new = await repo.queue_sync(conn, provider_id, trigger)
    if new:
        event = events_pb2.ProviderSyncRequested(sync_run_id=run.id, provider_id=provider_id)
        await add_event(conn, SYNC_REQUESTED, event)
    return run, new


def _counts(plan: Plan) -> dict[str, int]:
    c = plan.counts
    return {
        "total": c.total,
        "processed": c.total,
        "created": c.created,
        "updated": c.updated,
        "quarantined": c.quarantined,
        "disabled": c.disabled,
        "unchanged": c.unchanged,
        "skipped": c.skipped,
    }


def _all_counts(counts: dict[str, int]) -> dict[str, int]:
    names = ("total", "processed", "created", "updated", "quarantined", "disabled", "unchanged", "skipped")
    return {name: counts.get(name, 0) for name in names}
