"""ProvidersService servicer: proto <-> domain, nothing else."""

from __future__ import annotations

from decimal import Decimal

import grpc
from smm.v1 import providers_service_pb2 as pb
from smm.v1 import providers_service_pb2_grpc as pb_grpc

from server.catalog.importer import Change
from server.common import auth, idempotency
from server.common.convert import mask_paths, timestamp
from server.common.errors import InvalidArgument
from server.common.money import format_micros, format_rate, parse_micros, parse_rate
from server.providers.logic import ProvidersLogic
from server.providers.repo import ExchangeRateRow, ProviderFields, ProviderRow, SyncRunRow
from server.providers.sync import ProviderSync

PROVIDER_FIELDS = frozenset(
    {
        "name", "protocol", "api_url", "api_key", "currency", "enabled", "timeout_ms", "max_concurrency",
        "max_requests_per_s", "enable_new_services", "webhook_secret", "low_balance",
    }
)  # fmt: skip
MAX_PREVIEW_CHANGES = 1000


def provider_to_proto(row: ProviderRow) -> pb.Provider:
    return pb.Provider(
        id=row.id,
        name=row.name,
        protocol=row.protocol,
        api_url=row.api_url,
        currency=row.currency,
        enabled=row.status == "enabled",
        timeout_ms=row.timeout_ms,
        max_concurrency=row.max_concurrency,
        max_requests_per_s=row.max_requests_per_s,
        enable_new_services=row.enable_new_services,
        low_balance=format_micros(row.low_balance_micros),
        balance="" if row.balance_micros is None else format_micros(row.balance_micros),
        balance_currency=row.balance_currency,
        balance_time=timestamp(row.balance_time),
        health=pb.ProviderHealth(
            circuit_state=row.circuit_phase,
            calls=row.calls,
            failures=row.failures,
            recent_error_rate=format_rate(_ppm(row.recent_error_ppm)),
            recent_latency_ms=row.recent_latency_us // 1000,
            last_error=row.last_error,
            last_call_time=timestamp(row.last_call_time),
            last_failure_time=timestamp(row.last_failure_time),
        ),
        status=row.status,
        webhooks_enabled=row.webhooks_enabled,
        create_time=timestamp(row.create_time),
        update_time=timestamp(row.update_time),
    )


def _ppm(ppm: int) -> Decimal:
    return (Decimal(ppm) / 1_000_000).quantize(Decimal("0.0001"))


def sync_run_to_proto(row: SyncRunRow) -> pb.SyncRun:
    return pb.SyncRun(
        id=row.id,
        provider_id=row.provider_id,
        status=row.status,
        trigger=row.trigger,
        total=row.total,
        processed=row.processed,
        created=row.created,
        updated=row.updated,
        quarantined=row.quarantined,
        disabled=row.disabled,
        unchanged=row.unchanged,
        skipped=row.skipped,
        error=row.error,
        create_time=timestamp(row.create_time),
        start_time=timestamp(row.start_time),
        finish_time=timestamp(row.finish_time),
    )


def change_to_proto(change: Change) -> pb.SyncChange:
    return pb.SyncChange(
        action=change.action,
        upstream_service_id=change.upstream_id,
        service_id=change.service_id,
        name=change.name,
        fields=list(change.fields),
        old_rate="" if change.old_rate_micros is None else format_micros(change.old_rate_micros),
        new_rate="" if change.new_rate_micros is None else format_micros(change.new_rate_micros),
        reason=change.reason,
    )


def rate_to_proto(row: ExchangeRateRow) -> pb.ExchangeRate:
    return pb.ExchangeRate(
        currency=row.currency, rate=format_rate(row.rate), update_time=timestamp(row.update_time)
    )


def provider_fields(provider: pb.Provider) -> ProviderFields:
    return ProviderFields(
        name=provider.name,
        protocol=provider.protocol or "standard",
        api_url=provider.api_url.strip(),
        api_key_ciphertext="",
        currency=provider.currency.strip().upper(),
        status="enabled" if provider.enabled or not provider.HasField("enabled") else "disabled",
        timeout_ms=provider.timeout_ms or 15_000,
        max_concurrency=provider.max_concurrency or 8,
        max_requests_per_s=provider.max_requests_per_s or 10,
        enable_new_services=provider.enable_new_services
        if provider.HasField("enable_new_services")
        else True,
        low_balance_micros=low_balance_micros(provider.low_balance),
    )


def low_balance_micros(text: str) -> int:
    """The alert mark staff set: a decimal string in the provider's currency; empty is 0 (never)."""
    return parse_micros(text, field="provider.low_balance") if text.strip() else 0


class ProvidersServicer(pb_grpc.ProvidersServiceServicer):
    def __init__(self, logic: ProvidersLogic, sync: ProviderSync) -> None:
        self._logic = logic
        self._sync = sync

    async def CreateProvider(
        self, request: pb.CreateProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Provider:
        fields = provider_fields(request.provider)
        key = idempotency.request_key("CreateProvider", auth.principal().actor, request.request_id, request)
        created = await self._logic.create(
            fields, request.provider.api_key, key, webhook_secret=request.provider.webhook_secret
        )
        return provider_to_proto(created)

    async def ListProviders(
        self, request: pb.ListProvidersRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListProvidersResponse:
        return pb.ListProvidersResponse(
            providers=[provider_to_proto(r) for r in await self._logic.list_providers()]
        )

    async def GetProvider(
        self, request: pb.GetProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Provider:
        return provider_to_proto(await self._logic.get(request.id))

    async def UpdateProvider(
        self, request: pb.UpdateProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Provider:
        provider = request.provider
        if provider.id <= 0:
            raise InvalidArgument.for_field("provider.id", "is required")
        paths = mask_paths(request.update_mask, provider, allowed=PROVIDER_FIELDS, prefix="provider")
        changes: dict[str, object] = {}
        api_key = None
        webhook_secret = None
        for path in paths:
            if path == "api_key":
                api_key = provider.api_key
            elif path == "webhook_secret":
                webhook_secret = provider.webhook_secret
            elif path == "enabled":
                changes["status"] = "enabled" if provider.enabled else "disabled"
            elif path == "currency":
                changes["currency"] = provider.currency.strip().upper()
            elif path == "low_balance":
                changes["low_balance_micros"] = low_balance_micros(provider.low_balance)
            else:
                changes[path] = getattr(provider, path)
        return provider_to_proto(await self._logic.update(provider.id, changes, api_key, webhook_secret))

    async def DeleteProvider(
        self, request: pb.DeleteProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.Provider:
        return provider_to_proto(await self._logic.delete(request.id))

    async def TestProviderConnection(
        self, request: pb.TestProviderConnectionRequest, context: grpc.aio.ServicerContext
    ) -> pb.TestProviderConnectionResponse:
        test = await self._logic.test_connection(request.id)
        return pb.TestProviderConnectionResponse(
            ok=test.balance is not None,
            outcome=test.outcome,
            message=test.message,
            balance="" if test.balance is None else format_micros(test.balance.amount_micros),
            currency="" if test.balance is None else test.balance.currency,
            latency_ms=test.latency_ms,
        )

    async def ListUpstreamServices(
        self, request: pb.ListUpstreamServicesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListUpstreamServicesResponse:
        services, currency = await self._logic.upstream_services(request.id, fresh=request.fresh)
        return pb.ListUpstreamServicesResponse(
            services=[
                pb.UpstreamService(
                    service=s.service_id,
                    name=s.name,
                    type=s.type,
                    category=s.category,
                    rate=format_micros(s.rate_micros),
                    min=s.min,
                    max=s.max,
                    refill=s.refill,
                    cancel=s.cancel,
                    dripfeed=s.dripfeed,
                    description=s.description,
                )
                for s in services
            ],
            currency=currency,
        )

    async def SyncProvider(
        self, request: pb.SyncProviderRequest, context: grpc.aio.ServicerContext
    ) -> pb.SyncRun:
        return sync_run_to_proto(await self._sync.request(request.id))

    async def PreviewSync(
        self, request: pb.PreviewSyncRequest, context: grpc.aio.ServicerContext
    ) -> pb.PreviewSyncResponse:
        preview = await self._sync.preview(request.id)
        c = preview.plan.counts
        summary = pb.SyncRun(
            provider_id=preview.provider_id,
            status="preview",
            total=c.total,
            processed=c.total,
            created=c.created,
            updated=c.updated,
            quarantined=c.quarantined,
            disabled=c.disabled,
            unchanged=c.unchanged,
            skipped=c.skipped,
        )
        changes = [change_to_proto(ch) for ch in preview.plan.changes[:MAX_PREVIEW_CHANGES]]
        return pb.PreviewSyncResponse(summary=summary, changes=changes)

    async def GetSyncRun(
        self, request: pb.GetSyncRunRequest, context: grpc.aio.ServicerContext
    ) -> pb.SyncRun:
        return sync_run_to_proto(await self._logic.sync_run(request.provider_id, request.id))

    async def ListSyncRuns(
        self, request: pb.ListSyncRunsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListSyncRunsResponse:
        limit = min(max(request.page_size or 20, 1), 100)
        runs = await self._logic.sync_runs(request.provider_id, limit=limit)
        return pb.ListSyncRunsResponse(sync_runs=[sync_run_to_proto(r) for r in runs])

    async def RunSync(self, request: pb.RunSyncRequest, context: grpc.aio.ServicerContext) -> pb.SyncRun:
        return sync_run_to_proto(await self._sync.run(request.id))

    async def SetExchangeRate(
        self, request: pb.SetExchangeRateRequest, context: grpc.aio.ServicerContext
    ) -> pb.ExchangeRate:
        rate = parse_rate(request.rate, field="rate")
        return rate_to_proto(await self._logic.set_exchange_rate(request.currency.strip().upper(), rate))

    async def ListExchangeRates(
        self, request: pb.ListExchangeRatesRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListExchangeRatesResponse:
        rows = await self._logic.exchange_rates()
        return pb.ListExchangeRatesResponse(
            exchange_rates=[rate_to_proto(r) for r in rows], panel_currency=self._logic.panel_currency
        )
