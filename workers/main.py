"""Worker processes (``smm worker NAME``): the composition root of every worker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

from nats.aio.client import Client as NATS

from core import loop
from core.config import Settings
from core.events import Namespace, connect
from core.logs import setup_logging
from core.tracing import setup_tracing
from workers import analytics, dispatch, email, maintenance, provider_sync, sms
from workers.rpc import RpcContext, open_channel
from workers.runner import Consumer, Runner
from workers.scheduler import Scheduler

log = logging.getLogger(__name__)

CONSUMERS: dict[str, Callable[[RpcContext, Settings], list[Consumer]]] = {
    "analytics": analytics.consumers,
    "maintenance": maintenance.consumers,
    "email": email.consumers,
    "sms": sms.consumers,
    "provider-sync": provider_sync.consumers,
    "dispatch": dispatch.consumers,
}
NAMES = ("scheduler", *CONSUMERS)


async def run_worker(settings: Settings, name: str, stop: asyncio.Event | None = None) -> None:
    if name not in NAMES:
        raise SystemExit(f"unknown worker {name!r}; known: {', '.join(NAMES)}")
    if not settings.nats_url:
        raise SystemExit("SMM_NATS_URL is not set (smm dev sets it for you)")
    stop = stop or _stop_on_signals()
    nc = await _connect_unless_stopped(settings.nats_url, f"smm-worker-{name}", stop)
    if nc is None:
        return
    ns = Namespace(settings.nats_namespace)
    try:
        if name == "scheduler":
            await Scheduler(nc, ns).run(stop)
            return
        rpc = open_channel(settings, name)
        try:
            await Runner(nc, ns, CONSUMERS[name](rpc, settings)).run(stop)
        finally:
            await rpc.channel.close()
    finally:
        await nc.drain()


async def _connect_unless_stopped(url: str, name: str, stop: asyncio.Event) -> NATS | None:
    """Connect, or give up when told to stop: the first connection retries for as long as NATS is
    away, and SIGTERM (which only sets ``stop``) used to leave the worker waiting for it."""
    connecting = asyncio.create_task(connect(url, name=name), name="nats-connect")
    stopping = asyncio.create_task(stop.wait(), name="stop-wait")
    await asyncio.wait({connecting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if connecting.done():
        return connecting.result()
    log.info("stopped before NATS could be reached")
    connecting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await connecting
    return None


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def main(settings: Settings, name: str) -> None:
    setup_logging(f"worker-{name}", settings.log_level)
    setup_tracing(f"{settings.service_name}-worker-{name}")
    loop.run(run_worker(settings, name))
