"""Provider adapters, one module per wire protocol, chosen by the provider's ``protocol`` setting.

``"standard"`` (PROTOCOL.md) is the default and, so far, the only one. A provider that speaks
something else is one new module with a class satisfying ``ProviderAdapter`` and constructible as
``AdapterFactory``, registered in ``ADAPTERS`` below.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from server.providers.adapters.base import (
    Accepted,
    AddOrder,
    Balance,
    Breaker,
    Exchange,
    ExchangeHook,
    OrderStatus,
    ProviderAdapter,
    ProviderConnection,
    RefillState,
    Rejected,
    Reply,
    Unknown,
    UpstreamService,
    UpstreamStatus,
)
from server.providers.adapters.breaker import InMemoryBreaker
from server.providers.adapters.standard import StandardAdapter

__all__ = [
    "ADAPTERS",
    "DEFAULT_PROTOCOL",
    "Accepted",
    "AdapterFactory",
    "AddOrder",
    "Balance",
    "Breaker",
    "Exchange",
    "ExchangeHook",
    "InMemoryBreaker",
    "OrderStatus",
    "ProviderAdapter",
    "ProviderConnection",
    "RefillState",
    "Rejected",
    "Reply",
    "Unknown",
    "UnknownProtocol",
    "UpstreamService",
    "UpstreamStatus",
    "create_adapter",
]

DEFAULT_PROTOCOL = "standard"


class AdapterFactory(Protocol):
    def __call__(
        self,
        config: ProviderConnection,
        *,
        http: httpx.AsyncClient,
        breaker: Breaker | None = None,
        on_exchange: ExchangeHook | None = None,
    ) -> ProviderAdapter: ...


ADAPTERS: dict[str, AdapterFactory] = {
    "standard": StandardAdapter,
}


class UnknownProtocol(KeyError):
    """No adapter is registered under the name; the message lists the known ones."""

    def __init__(self, protocol: str) -> None:
        super().__init__(protocol)
        self.protocol = protocol

    def __str__(self) -> str:
        return f"unknown provider protocol {self.protocol!r}; known: {', '.join(sorted(ADAPTERS))}"


def create_adapter(
    protocol: str,
    config: ProviderConnection,
    *,
    http: httpx.AsyncClient,
    breaker: Breaker | None = None,
    on_exchange: ExchangeHook | None = None,
) -> ProviderAdapter:
    """The adapter for ``protocol`` (case-insensitive; empty means ``"standard"``)."""
    name = protocol.strip().lower() or DEFAULT_PROTOCOL
    try:
        factory = ADAPTERS[name]
    except KeyError:
        raise UnknownProtocol(protocol) from None
    return factory(config, http=http, breaker=breaker, on_exchange=on_exchange)
