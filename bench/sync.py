"""Provider sync of a big service list: the first import, unchanged re-syncs, and a re-sync with a
few prices changed upstream.

In-process against a throwaway durable embedded PostgreSQL and NATS: the gRPC server (with its
outbox relay, as `smm serve grpc` runs it) and the demo provider offering its 18 fixed services plus
`--services` generated ones on loopback. Each figure is one RunSync call timed end to end: fetching
the list from the provider over HTTP, parsing, planning and writing, in one transaction. The counts
each run reports are checked; wrong counts exit 1. Speed targets are reported, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import httpx
from _stack import Stack, bench_settings, throwaway_stack  # bench/ is sys.path[0] when run as a script
from smm.v1 import providers_service_pb2 as pb
from smm.v1 import providers_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    # Only in the .pyi: what ProvidersServiceStub(<aio channel>) is.
    from smm.v1.providers_service_pb2_grpc import ProvidersServiceAsyncStub

from core.events import connect
from demo.provider import DemoConfig, RunningDemo, start_demo_provider
from demo.provider.catalog import CATALOG, GENERATED_FIRST_ID
from demo.provider.config import MICROS
from ops.embedded import free_port
from ops.grpc_client import Metadata, internal_metadata
from server.common.db import Pool, open_pool
from server.main import create_server

SERVICES = 5_000
RESYNCS = 3
CHANGED_PERCENT = 5.0
TARGET_IMPORT_S = 10.0
TARGET_RESYNC_S = 2.0
PRICE_CUT = Decimal("0.9")  # a cut never quarantines, so every changed service is an "updated" one
CALL_TIMEOUT_S = 10.0
RUN_TIMEOUT_S = 300.0
COUNTED = ("total", "created", "updated", "quarantined", "disabled", "unchanged", "skipped")


@dataclass(frozen=True)
class Timed:
    label: str
    seconds: float
    run: pb.SyncRun


class WrongCounts(Exception):
    pass


def _counts(run: pb.SyncRun) -> dict[str, int]:
    return {name: int(getattr(run, name)) for name in COUNTED}


def _show(timed: Timed) -> None:
    c = _counts(timed.run)
    print(
        f"  {timed.label:<28} {timed.seconds:7.3f} s   total={c['total']} created={c['created']}"
        f" updated={c['updated']} unchanged={c['unchanged']} quarantined={c['quarantined']}"
        f" disabled={c['disabled']} skipped={c['skipped']}",
        flush=True,
    )


def _check(timed: Timed, want: dict[str, int]) -> None:
    if timed.run.status != "succeeded":
        raise WrongCounts(f"{timed.label}: status {timed.run.status!r} ({timed.run.error})")
    got = _counts(timed.run)
    expected = {name: want.get(name, 0) for name in COUNTED}
    if got != expected:
        raise WrongCounts(f"{timed.label}: counts {got}, expected {expected}")


class Bench:
    def __init__(self, stub: ProvidersServiceAsyncStub, metadata: Metadata, profile_dir: Path | None):
        self._stub = stub
        self._metadata = metadata
        self._profile_dir = profile_dir

    async def sync(self, provider_id: int, label: str, profile_as: str = "") -> Timed:
        queued = await self._stub.SyncProvider(
            pb.SyncProviderRequest(id=provider_id), metadata=self._metadata, timeout=CALL_TIMEOUT_S
        )
        profiler = cProfile.Profile() if self._profile_dir is not None and profile_as else None
        started = time.perf_counter()
        if profiler is not None:
            profiler.enable()
        run = await self._stub.RunSync(
            pb.RunSyncRequest(id=queued.id), metadata=self._metadata, timeout=RUN_TIMEOUT_S
        )
        if profiler is not None:
            profiler.disable()
        elapsed = time.perf_counter() - started
        if profiler is not None and self._profile_dir is not None:
            path = self._profile_dir / f"{profile_as}.pstats"
            profiler.dump_stats(path)
            print(f"    (cProfile of this run: {path})", flush=True)
        timed = Timed(label, elapsed, run)
        _show(timed)
        return timed


async def _change_prices(demo: RunningDemo, count: int) -> None:
    """Cut the price of ``count`` generated services at the demo, spread over the whole list."""
    total = demo.config.extra_services
    step = max(1, total // count) if count else 1
    ids = [GENERATED_FIRST_ID + n for n in range(0, total, step)][:count]
    headers = {"X-Control-Token": demo.config.control_token or ""}
    async with httpx.AsyncClient(
        base_url=demo.base_url, headers=headers, timeout=10, trust_env=False
    ) as http:
        for service_id in ids:
            current = demo.app.ctx.api.services[service_id].rate_micros
            rate = (Decimal(current) * PRICE_CUT / MICROS).quantize(Decimal("0.000001"))
            reply = await http.put(f"/control/services/{service_id}", json={"rate": str(rate)})
            reply.raise_for_status()


async def _check_stored(pool: Pool, provider_id: int, demo: RunningDemo, label: str) -> None:
    """The catalog holds exactly the demo's services at the demo's current rates."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT upstream_service_id, provider_rate_micros FROM services WHERE provider_id = %s",
            (provider_id,),
        )
        stored = {str(upstream): int(rate) for upstream, rate in await cur.fetchall()}
    offered = {str(s.id): s.rate_micros for s in demo.app.ctx.api.services.values()}
    if stored != offered:
        wrong = sorted(k for k in offered.keys() | stored.keys() if stored.get(k) != offered.get(k))
        raise WrongCounts(f"{label}: {len(wrong)} services stored wrong, e.g. {wrong[:5]}")


async def _fetch_list(demo: RunningDemo) -> tuple[float, int]:
    """One direct `services` call to the demo: the provider side of every sync, for reference."""
    async with httpx.AsyncClient(timeout=30, trust_env=False) as http:
        started = time.perf_counter()
        reply = await http.post(demo.api_url, data={"key": demo.config.api_keys[0], "action": "services"})
        reply.raise_for_status()
        reply.json()
        return time.perf_counter() - started, len(reply.content)


def _print_profile(profile_dir: Path) -> None:
    for path in sorted(profile_dir.glob("*.pstats")):
        # Own time shows the hot spots; select.epoll's poll is the wait for PostgreSQL and HTTP.
        print(f"--- {path.name}: top 20 by own time")
        pstats.Stats(str(path)).strip_dirs().sort_stats("tottime").print_stats(20)


async def bench(stack: Stack, args: argparse.Namespace) -> list[Timed]:
    settings = bench_settings(stack, nats_namespace="bench")
    metadata = internal_metadata(settings, "bench")
    config = DemoConfig(extra_services=args.services, control_token=os.urandom(16).hex())
    offered = len(CATALOG) + args.services
    changed = round(args.services * args.changed_percent / 100)
    demo = await start_demo_provider(config, port=free_port(), name="smm-bench-sync-demo")
    pool = await open_pool(settings)
    nc = await connect(stack.nats_url, name="bench-sync")
    server = await create_server(settings, pool, address="127.0.0.1:0", nc=nc)
    results: list[Timed] = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = pb_grpc.ProvidersServiceStub(channel)
            created = await stub.CreateProvider(
                pb.CreateProviderRequest(
                    provider=pb.Provider(
                        name="Bench provider",
                        api_url=demo.api_url,
                        api_key=config.api_keys[0],
                        currency="USD",
                    )
                ),
                metadata=metadata,
                timeout=CALL_TIMEOUT_S,
            )
            fetch_s, size = await _fetch_list(demo)
            print(
                f"provider sync: {offered} upstream services ({len(CATALOG)} fixed + {args.services}"
                f" generated), {size:,} bytes of JSON; the demo alone answers `services` in"
                f" {fetch_s * 1000:.0f} ms",
                flush=True,
            )
            runner = Bench(stub, metadata, args.profile)
            first = await runner.sync(created.id, "first import", "import")
            _check(first, {"total": offered, "created": offered})
            await _check_stored(pool, created.id, demo, first.label)
            results.append(first)
            for i in range(1, args.resyncs + 1):
                again = await runner.sync(created.id, f"unchanged re-sync #{i}", "resync" if i == 1 else "")
                _check(again, {"total": offered, "unchanged": offered})
                results.append(again)
            await _change_prices(demo, changed)
            cut = await runner.sync(created.id, f"re-sync, {changed} prices cut", "resync-changed")
            _check(cut, {"total": offered, "updated": changed, "unchanged": offered - changed})
            await _check_stored(pool, created.id, demo, cut.label)
            results.append(cut)
            back = await runner.sync(created.id, "unchanged re-sync after it")
            _check(back, {"total": offered, "unchanged": offered})
            results.append(back)
    finally:
        await asyncio.wait_for(server.stop(None), 10)
        await asyncio.wait_for(nc.close(), 10)
        await asyncio.wait_for(pool.close(), 10)
        await demo.stop()
    return results


def report(results: list[Timed]) -> None:
    first = results[0]
    resyncs = [t.seconds for t in results if t.label.startswith("unchanged re-sync #")]
    best, median = min(resyncs), statistics.median(resyncs)
    print(f"  unchanged re-syncs: best {best:.3f} s, median {median:.3f} s of {len(resyncs)}")
    print(f"  {'figure':<28} {'measured':>9} {'target':>9}  result")
    rows = (
        ("first import", first.seconds, TARGET_IMPORT_S),
        ("unchanged re-sync (median)", median, TARGET_RESYNC_S),
    )
    for name, seconds, target in rows:
        verdict = "PASS" if seconds < target else "MISS"
        print(f"  {name:<28} {seconds:>7.3f} s {'< ' + format(target, 'g') + ' s':>9}  {verdict}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/sync.py",
        description=(
            "Provider sync benchmark: the first import of a demo provider with many services, "
            "unchanged re-syncs and a re-sync with some prices changed (throwaway embedded stack)."
        ),
    )
    parser.add_argument(
        "--services", type=int, default=SERVICES, help=f"generated services (default {SERVICES})"
    )
    parser.add_argument(
        "--resyncs", type=int, default=RESYNCS, help=f"unchanged re-syncs timed (default {RESYNCS})"
    )
    parser.add_argument(
        "--changed-percent",
        type=float,
        default=CHANGED_PERCENT,
        help=f"share of generated services whose price changes upstream (default {CHANGED_PERCENT:g})",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="write cProfile stats of three runs to DIR and print their hot spots (slows those runs)",
    )
    args = parser.parse_args(argv)
    if args.services < 1 or args.resyncs < 1 or not 0 < args.changed_percent <= 100:
        parser.error("--services and --resyncs must be positive, --changed-percent in (0, 100]")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    try:
        with throwaway_stack("sync") as stack:
            results = asyncio.run(bench(stack, args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except WrongCounts as exc:
        print(f"wrong counts: {exc}", file=sys.stderr)
        return 1
    report(results)
    if args.profile is not None:
        _print_profile(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
