"""The edge's typed application context, built in before_server_start."""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from google.protobuf.message import Message
from nats.aio.client import Client as NATS

from core.config import Settings
from edge.cache import ResponseCache
from edge.routes import Route

UnaryCall = Callable[..., Awaitable[Message]]


@dataclass
class EdgeContext:
    settings: Settings
    routes: list[Route]
    trusted_proxies: list[ipaddress.IPv4Network | ipaddress.IPv6Network]
    channel: grpc.aio.Channel | None = None
    calls: dict[str, UnaryCall] = field(default_factory=dict)
    openapi: dict[str, Any] = field(default_factory=dict)
    openapi_body: bytes = b""
    cache: ResponseCache = field(default_factory=ResponseCache)
    nats: NATS | None = None
    nats_task: asyncio.Task[None] | None = None
    cors_origins: frozenset[str] = frozenset()


def parse_proxies(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    return [ipaddress.ip_network(part.strip(), strict=False) for part in value.split(",") if part.strip()]
