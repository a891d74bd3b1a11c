"""One adapter per provider per process, built from its stored settings (the key decrypted only
here, in memory), sharing one HTTP connection pool; rebuilt when the provider's settings change.

``adapter_for`` (every order sent, every status poll) trusts the provider row it read for
``state_cache_s`` seconds (``SMM_PROVIDER_STATE_CACHE_S``), like the API key cache: the copy that
changes a provider (``ProvidersLogic``) forgets it once its transaction commits, other copies
within the TTL; a generation counter keeps a read that raced the change from being remembered."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from server.common.db import Pool
from server.common.secretbox import SecretBox
from server.providers.adapters import create_adapter
from server.providers.adapters.base import ProviderAdapter, ProviderConnection
from server.providers.adapters.breaker import BreakerPolicy
from server.providers.health import HealthRecorder, SharedBreaker
from server.providers.repo import ProviderRow, ProvidersRepo

KEY_CONTEXT = "provider-api-key"
WEBHOOK_CONTEXT = "provider-webhook-secret"


class ProviderClients:
    def __init__(
        self,
        pool: Pool,
        repo: ProvidersRepo,
        box: SecretBox,
        http: httpx.AsyncClient,
        policy: BreakerPolicy,
        *,
        state_cache_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._box = box
        self._http = http
        self._policy = policy
        self._state_cache_s = state_cache_s
        self._clock = clock
        self._adapters: dict[int, tuple[object, ProviderAdapter]] = {}
        self._rows: dict[int, tuple[float, ProviderRow | None]] = {}  # id -> (trusted until, row)
        self._generation = 0

    def adapter(self, provider: ProviderRow) -> ProviderAdapter:
        version = (provider.update_time, provider.api_key_ciphertext)
        cached = self._adapters.get(provider.id)
        if cached is not None and cached[0] == version:
            return cached[1]
        connection = ProviderConnection(
            api_url=provider.api_url,
            api_key=self._box.decrypt(provider.api_key_ciphertext, context=KEY_CONTEXT),
            timeout_s=provider.timeout_ms / 1000,
            max_concurrency=provider.max_concurrency,
            max_requests_per_s=float(provider.max_requests_per_s),
        )
        adapter = create_adapter(
            provider.protocol,
            connection,
            http=self._http,
            breaker=self.breaker(provider.id),
            on_exchange=HealthRecorder(self._pool, self._repo, provider.id),
        )
        self._adapters[provider.id] = (version, adapter)
        return adapter

    def breaker(self, provider_id: int) -> SharedBreaker:
        return SharedBreaker(
            self._pool, self._repo, provider_id, self._policy, healthy_for_s=self._state_cache_s
        )

    def encrypt_key(self, api_key: str) -> str:
        return self._box.encrypt(api_key, context=KEY_CONTEXT)

    async def adapter_for(self, provider_id: int, *, open_orders: bool = False) -> ProviderAdapter | None:
        """The adapter of an enabled provider, or None (disabled, deleted or unknown).

        ``open_orders``: for orders already at the provider (their statuses, cancels, refills, the
        lost-order look-up). A disabled provider answers those too: disabling stops selling its
        services and sending it orders, and the orders already there must still reach their end
        (their money settled or released, a customer's cancel or refill guarantee honoured), or it
        could never be deleted. A deleted provider has no open orders (deleting waits for them)."""
        row = await self._row(provider_id)
        if row is None or row.status not in (("enabled", "disabled") if open_orders else ("enabled",)):
            return None
        return self.adapter(row)

    async def _row(self, provider_id: int) -> ProviderRow | None:
        cached = self._rows.get(provider_id)
        if cached is not None and self._clock() < cached[0]:
            return cached[1]
        generation = self._generation
        async with self._pool.connection() as conn:
            row = await self._repo.get(conn, provider_id)
        if self._state_cache_s > 0 and generation == self._generation:
            self._rows[provider_id] = (self._clock() + self._state_cache_s, row)
        return row

    def forget(self, provider_id: int) -> None:
        """The provider changed (call after the change commits): read it again on next use."""
        self._generation += 1
        self._rows.pop(provider_id, None)

    def encrypt_webhook_secret(self, secret: str) -> str:
        return self._box.encrypt(secret, context=WEBHOOK_CONTEXT) if secret else ""

    async def webhook_secret(self, provider_id: int) -> str | None:
        """The secret a provider signs its webhooks with, or None (no webhooks, or deleted). A
        disabled provider's pushes are about orders already there, like its polls."""
        async with self._pool.connection() as conn:
            ciphertext = await self._repo.webhook_secret(conn, provider_id)
        if not ciphertext:
            return None
        return self._box.decrypt(ciphertext, context=WEBHOOK_CONTEXT)
