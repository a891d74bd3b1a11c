"""One adapter per provider per process, built from its stored settings (the key decrypted only
here, in memory), sharing one HTTP connection pool; rebuilt when the provider's settings change."""

from __future__ import annotations

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
        self, pool: Pool, repo: ProvidersRepo, box: SecretBox, http: httpx.AsyncClient, policy: BreakerPolicy
    ) -> None:
        self._pool = pool
        self._repo = repo
        self._box = box
        self._http = http
        self._policy = policy
        self._adapters: dict[int, tuple[object, ProviderAdapter]] = {}

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
        return SharedBreaker(self._pool, self._repo, provider_id, self._policy)

    def encrypt_key(self, api_key: str) -> str:
        return self._box.encrypt(api_key, context=KEY_CONTEXT)

    async def adapter_for(self, provider_id: int) -> ProviderAdapter | None:
        """The adapter of an enabled provider, or None (disabled, deleted or unknown)."""
        async with self._pool.connection() as conn:
            row = await self._repo.get(conn, provider_id)
        if row is None or row.status != "enabled":
            return None
        return self.adapter(row)

    def encrypt_webhook_secret(self, secret: str) -> str:
        return self._box.encrypt(secret, context=WEBHOOK_CONTEXT) if secret else ""

    async def webhook_secret(self, provider_id: int) -> str | None:
        """The secret an enabled provider signs its webhooks with, or None (no webhooks)."""
        async with self._pool.connection() as conn:
            ciphertext = await self._repo.webhook_secret(conn, provider_id)
        if not ciphertext:
            return None
        return self._box.decrypt(ciphertext, context=WEBHOOK_CONTEXT)
