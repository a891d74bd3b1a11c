"""The gRPC server process: the only place its dependencies are wired."""

from __future__ import annotations

import asyncio
import functools
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection
from nats.aio.client import Client as NATS
from opentelemetry.instrumentation.grpc import aio_server_interceptor
from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor
from psycopg_pool import PoolTimeout
from smm.v1 import (
    accounts_service_pb2,
    accounts_service_pb2_grpc,
    catalog_service_pb2,
    catalog_service_pb2_grpc,
    notifications_service_pb2,
    notifications_service_pb2_grpc,
    orders_service_pb2,
    orders_service_pb2_grpc,
    providers_service_pb2,
    providers_service_pb2_grpc,
    system_service_pb2,
    system_service_pb2_grpc,
    wallet_service_pb2,
    wallet_service_pb2_grpc,
)

from core import tracing
from core.config import Settings
from core.events import Namespace, connect
from core.logs import setup_logging
from server.accounts.admin import UserAdmin
from server.accounts.apikeys import ApiKeys, UsageCounter
from server.accounts.emails import AccountEmails, LinkSettings
from server.accounts.keycache import ApiKeyCache
from server.accounts.logic import AccountsLogic, CredentialStore, Profiles
from server.accounts.phones import Phones, PhoneSettings, derive_code_key
from server.accounts.repo import AccountsRepo
from server.accounts.rpc import AccountsServicer
from server.accounts.totp import TwoFactor
from server.catalog.admin import CatalogAdmin, refresh_completion_times
from server.catalog.logic import CatalogLogic
from server.catalog.repo import PostgresCatalogRepo
from server.catalog.rpc import CatalogServicer
from server.common import auth
from server.common.db import Pool, open_pool
from server.common.durability import warn_if_not_durable
from server.common.health import CHECK_TIMEOUT_S, HealthChecks, postgres_check
from server.common.interceptors import (
    AuthenticationInterceptor,
    AuthorizationInterceptor,
    Chain,
    ErrorMappingInterceptor,
    RequestIdInterceptor,
)
from server.common.nul_guard import NulGuardInterceptor
from server.common.pagetoken import PageTokenCodec
from server.common.ratelimit import IpRateLimitInterceptor, Limits, RateLimiter, limit_principal
from server.common.relay import Relay
from server.common.secretbox import SecretBox, SecretBoxError
from server.notifications.logic import Notifications
from server.notifications.rpc import NotificationsServicer
from server.notifications.sms import SmsNotifications
from server.orders.admin import OrdersAdmin
from server.orders.aftercare import Aftercare
from server.orders.dispatch import Dispatcher
from server.orders.dripfeed import DripFeed
from server.orders.logic import OrdersLogic
from server.orders.reconcile import Reconciler
from server.orders.rpc import OrdersServicer
from server.orders.stalled import StalledOrders
from server.orders.tracking import Tracker
from server.orders.webhooks import ProviderWebhooks
from server.providers.adapters.breaker import BreakerPolicy
from server.providers.clients import ProviderClients
from server.providers.logic import ProvidersLogic
from server.providers.repo import ProvidersRepo
from server.providers.rpc import ProvidersServicer
from server.providers.sync import ProviderSync
from server.providers.transport import provider_http_client
from server.system.logic import SystemLogic
from server.system.retention import Policy as RetentionPolicy
from server.system.rpc import SystemServicer
from server.wallet.logic import WalletLogic
from server.wallet.rpc import WalletServicer

log = logging.getLogger(__name__)
VERSION = "0.1.0"
GRACE_S = 10.0


@dataclass
class ServerHandle:
    server: grpc.aio.Server
    port: int
    health: HealthServicer
    checks: HealthChecks
    relay: Relay | None = None
    usage: UsageCounter | None = None
    key_cache: ApiKeyCache | None = None
    limiter: RateLimiter | None = None
    provider_http: httpx.AsyncClient | None = None
    background: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self, grace: float | None = GRACE_S) -> None:
        await self.health.enter_graceful_shutdown()
        await self.stop_relay()
        await self.server.stop(grace)
        if self.provider_http is not None:
            await self.provider_http.aclose()

    async def stop_relay(self) -> None:
        if self.relay is not None:
            self.relay.stop()
        if self.usage is not None:
            self.usage.stop()
        if self.limiter is not None:
            self.limiter.stop()
        await asyncio.gather(*self.background, return_exceptions=True)


async def create_server(
    settings: Settings,
    pool: Pool,
    *,
    address: str | None = None,
    resolver: auth.CredentialResolver | None = None,
    nc: NATS | None = None,
    rate_clock: Callable[[], float] | None = None,
) -> ServerHandle:
    """Build and start the server on ``address`` (default settings.grpc_addr; ":0" picks a port).
    ``rate_clock`` is the time the rate limiter's windows follow (default ``time.time``)."""
    accounts_repo = AccountsRepo()
    limiter = RateLimiter(
        pool, Limits.from_settings(settings), rate_clock or time.time, sync_s=settings.rate_sync_s
    )
    usage = UsageCounter(pool, accounts_repo, flush_every_s=settings.api_key_usage_flush_s)
    key_cache = ApiKeyCache(settings.api_key_cache_s)
    api_keys = ApiKeys(
        pool,
        accounts_repo,
        rotation_grace=timedelta(hours=settings.api_key_rotation_grace_h),
        usage=usage,
        cache=key_cache,
    )
    box = SecretBox.from_config(settings.encryption_keys.get_secret_value())
    requirements = auth.Requirements(
        email_verification=settings.require_email_verification, staff_totp=settings.require_staff_totp
    )
    stages = Chain(
        [
            RequestIdInterceptor(),
            ErrorMappingInterceptor(),
            NulGuardInterceptor(),
            IpRateLimitInterceptor(limiter),
            AuthenticationInterceptor(
                settings.internal_token.get_secret_value(),
                resolver or CredentialStore(pool, accounts_repo, api_keys),
            ),
            AuthorizationInterceptor(functools.partial(limit_principal, limiter), requirements),
        ]
    )
    interceptors: list[grpc.aio.ServerInterceptor] = [
        *([aio_server_interceptor()] if tracing.enabled() else []),  # type: ignore[no-untyped-call]
        stages,
    ]
    # so_reuseport off: a second server on a taken port must fail, not share it silently.
    server = grpc.aio.server(interceptors=interceptors, options=[("grpc.so_reuseport", 0)])

    checks = HealthChecks()
    checks.add("postgres", postgres_check(pool))
    relay = None
    if nc is not None:
        relay = Relay(
            pool,
            nc,
            Namespace(settings.nats_namespace),
            conninfo=settings.database_url,
            batch=settings.relay_batch,
            poll_s=settings.relay_poll_s,
        )
        checks.add("nats", nats_check(relay))
    tokens = PageTokenCodec(settings.page_token_secret.get_secret_value().encode())
    catalog = CatalogServicer(
        CatalogLogic(pool, PostgresCatalogRepo()), CatalogAdmin(pool), tokens, settings.currency
    )
    catalog_service_pb2_grpc.add_CatalogServiceServicer_to_server(catalog, server)
    two_factor = TwoFactor(pool, accounts_repo, box, issuer=settings.panel_name, keys=key_cache)
    accounts = AccountsLogic(
        pool, accounts_repo, session_ttl=timedelta(hours=settings.session_ttl_h), two_factor=two_factor
    )
    links = LinkSettings(
        web_url=settings.web_url,
        verify_ttl_s=settings.verify_email_ttl_s,
        reset_ttl_s=settings.reset_password_ttl_s,
        change_ttl_s=settings.change_email_ttl_s,
    )
    accounts_service_pb2_grpc.add_AccountsServiceServicer_to_server(
        AccountsServicer(
            accounts,
            api_keys,
            Profiles(pool, accounts_repo, accounts),
            UserAdmin(pool, accounts_repo, keys=key_cache),
            tokens,
            AccountEmails(pool, accounts_repo, links, keys=key_cache),
            two_factor,
            Phones(pool, accounts_repo, limiter, phone_settings(settings)),
        ),
        server,
    )
    providers_repo = ProvidersRepo()
    provider_http = provider_http_client()  # one connection pool for every provider
    clients = ProviderClients(
        pool,
        providers_repo,
        box,
        provider_http,
        BreakerPolicy(settings.provider_failure_threshold, settings.provider_circuit_reset_s),
        state_cache_s=settings.provider_state_cache_s,
    )
    providers = ProvidersLogic(pool, providers_repo, clients, settings.currency)
    sync = ProviderSync(
        pool, providers_repo, clients, providers, jump_bps=settings.sync_price_jump_percent * 100
    )
    providers_service_pb2_grpc.add_ProvidersServiceServicer_to_server(
        ProvidersServicer(providers, sync), server
    )
    wallet = WalletLogic(pool)
    wallet_service_pb2_grpc.add_WalletServiceServicer_to_server(
        WalletServicer(wallet, tokens, settings.currency), server
    )
    tracker = Tracker(pool, clients, stuck_after_h=settings.order_stuck_after_h)
    dripfeed = DripFeed(pool, clients)
    orders_admin = OrdersAdmin(pool, dripfeed)
    dispatcher = Dispatcher(pool, clients, dripfeed)
    orders_service_pb2_grpc.add_OrdersServiceServicer_to_server(
        OrdersServicer(
            OrdersLogic(pool, subscription_default_posts=settings.subscription_default_posts),
            dispatcher,
            tracker,
            tokens,
            settings.currency,
            aftercare=Aftercare(pool, clients, dripfeed),
            admin=orders_admin,
            dripfeed=dripfeed,
            reconciler=Reconciler(pool, clients, orders_admin),
            stalled=StalledOrders(pool, dispatcher),
            webhooks=ProviderWebhooks(clients, tracker, pool),
        ),
        server,
    )
    notifications = Notifications(
        pool,
        tokens,
        api_url=settings.api_url,
        web_url=settings.web_url,
        currency=settings.currency,
        low_balance_default=settings.low_balance_threshold,
        resend_webhook_secret=settings.resend_webhook_secret.get_secret_value(),
        alert_interval_s=settings.admin_alert_interval_s,
    )
    sms = SmsNotifications(
        pool,
        api_url=settings.api_url,
        web_url=settings.web_url,
        currency=settings.currency,
        admin_alerts=settings.sms_admin_alerts,
        twilio_auth_token=settings.twilio_auth_token.get_secret_value(),
        alert_interval_s=settings.admin_alert_interval_s,
    )
    notifications_service_pb2_grpc.add_NotificationsServiceServicer_to_server(
        NotificationsServicer(notifications, sms), server
    )
    jobs = {
        "provider-sync": sync.enqueue_all,
        "order-poll": tracker.request_poll,
        "ledger-verify": wallet.verify_job,
        "service-stats": refresh_completion_times,
    }
    system = SystemLogic(pool, jobs, RetentionPolicy.from_settings(settings))
    system_service_pb2_grpc.add_SystemServiceServicer_to_server(
        SystemServicer(checks, system, tokens, VERSION), server
    )

    health = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    names = [
        accounts_service_pb2.DESCRIPTOR.services_by_name["AccountsService"].full_name,
        catalog_service_pb2.DESCRIPTOR.services_by_name["CatalogService"].full_name,
        providers_service_pb2.DESCRIPTOR.services_by_name["ProvidersService"].full_name,
        wallet_service_pb2.DESCRIPTOR.services_by_name["WalletService"].full_name,
        orders_service_pb2.DESCRIPTOR.services_by_name["OrdersService"].full_name,
        notifications_service_pb2.DESCRIPTOR.services_by_name["NotificationsService"].full_name,
        system_service_pb2.DESCRIPTOR.services_by_name["SystemService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    ]
    reflection.enable_server_reflection(names, server)

    port = server.add_insecure_port(address or settings.grpc_addr)
    if port == 0:
        raise OSError(f"cannot listen on {address or settings.grpc_addr}: the port is in use")
    await server.start()
    for name in ["", *names[:7]]:
        await health.set(name, health_pb2.HealthCheckResponse.SERVING)
    handle = ServerHandle(
        server,
        port,
        health,
        checks,
        relay,
        usage,
        key_cache=key_cache,
        limiter=limiter,
        provider_http=provider_http,
    )
    handle.background.append(asyncio.create_task(usage.run(), name="api-key-usage"))
    handle.background.append(asyncio.create_task(limiter.run(), name="rate-limit-sync"))
    if relay is not None:
        handle.background.append(asyncio.create_task(relay.run(), name="outbox-relay"))
    return handle


def phone_settings(settings: Settings) -> PhoneSettings:
    return PhoneSettings(
        code_ttl_s=settings.phone_code_ttl_minutes * 60,
        max_attempts=settings.phone_code_max_attempts,
        sends_per_min=settings.rate_sms_per_account_per_min,
        hash_key=derive_code_key(settings.page_token_secret.get_secret_value().encode()),
    )


def nats_check(relay: Relay) -> Callable[[], Awaitable[None]]:
    async def check() -> None:
        await relay.ping(CHECK_TIMEOUT_S)

    return check


def _check_secrets(settings: Settings) -> None:
    """The server's secrets, each named in one line when missing or malformed (before the database
    is opened), rather than a traceback from deep in the set-up."""
    for name, secret in (
        ("SMM_INTERNAL_TOKEN", settings.internal_token),
        ("SMM_PAGE_TOKEN_SECRET", settings.page_token_secret),
    ):
        if not secret.get_secret_value():
            raise SystemExit(f"gRPC server: {name} is not set (the same value on every process)")
    try:
        SecretBox.from_config(settings.encryption_keys.get_secret_value())
    except SecretBoxError as exc:
        raise SystemExit(f"gRPC server: {exc} (docs/ACCESS.md, Secrets at rest)") from None


async def serve(settings: Settings) -> None:
    setup_logging("grpc", settings.log_level)
    if tracing.setup_tracing(f"{settings.service_name}-grpc"):
        PsycopgInstrumentor().instrument(enable_commenter=False)
    if not settings.database_url:
        raise SystemExit("SMM_DATABASE_URL is not set (smm dev sets it for you)")
    _check_secrets(settings)
    try:
        pool = await open_pool(settings)
    except PoolTimeout:
        # An operator's typo or a database still starting: one line (never the URL: it may hold the
        # password), not psycopg_pool's traceback.
        raise SystemExit(
            f"gRPC server: PostgreSQL (SMM_DATABASE_URL) accepted no connection within "
            f"{settings.db_pool_timeout_s * 3:g} s; is it running and reachable?"
        ) from None
    await warn_if_not_durable(pool)
    nc = await connect(settings.nats_url, name="smm-grpc") if settings.nats_url else None
    try:
        handle = await create_server(settings, pool, nc=nc)
    except (OSError, RuntimeError) as exc:
        await pool.close()
        raise SystemExit(f"gRPC server: {exc} (set SMM_GRPC_ADDR)") from None
    log.info("gRPC server listening", extra={"port": handle.port})
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("gRPC server draining")
    await handle.stop()
    if nc is not None:
        await nc.drain()
    await pool.close()
