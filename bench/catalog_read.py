"""Cached catalog read through the edge vs. a bare Sanic route, driven by wrk.

Starts a throwaway stack like production (durable embedded PostgreSQL, NATS, `smm serve grpc` and
`smm serve edge` as child processes), seeds the demo catalog, and compares
GET /api/v1/public/services with a bare single-process Sanic app serving the same bytes.
Prints numbers only; nothing here asserts on speed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from _stack import (  # bench/ is sys.path[0] when run as a script
    Stack,
    bench_settings,
    secret_env,
    throwaway_stack,
)

from core.config import Settings
from ops.dev import wait_for_edge
from ops.embedded import free_port
from ops.grpc_client import internal_metadata, wait_for_grpc
from ops.seed import seed_catalog

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PATH = "/api/v1/public/services"
CONNECTIONS = 64
THREADS = 2
DURATION_S = 10
WARMUP_S = 2
READY_TIMEOUT_S = 30.0
TARGET_RATIO = 0.50
TARGET_P99_MS = 10.0

BARE_APP = """
import sys
from pathlib import Path
from sanic import Sanic
from sanic.response import raw

body = Path(sys.argv[1]).read_bytes()
app = Sanic("bench_bare")

@app.get("/bare")
async def bare(request):
    return raw(body, content_type="application/json")

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[2]), single_process=True, access_log=False, motd=False)
"""


@dataclass(frozen=True)
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 1.0


class Children:
    """Child processes, each in its own session; stop() terminates them all (then kills)."""

    def __init__(self, log_dir: Path) -> None:
        self._log_dir = log_dir
        self._procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self._log_dir / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                argv,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._procs.append((name, proc))
        return proc

    def check(self) -> None:
        for name, proc in self._procs:
            if proc.poll() is not None:
                tail = (self._log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{tail}")

    def stop_some(self, prefix: str) -> int:
        """Terminates the children whose names start with ``prefix``; returns how many."""
        chosen = [(name, proc) for name, proc in self._procs if name.startswith(prefix)]
        for _, proc in chosen:
            proc.terminate()
        for _, proc in chosen:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._procs = [(name, proc) for name, proc in self._procs if not name.startswith(prefix)]
        return len(chosen)

    def stop(self) -> None:
        for _, proc in reversed(self._procs):
            if proc.poll() is None:
                proc.terminate()
        deadline = time.monotonic() + 10
        for _, proc in reversed(self._procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------- load generators


def ensure_wrk() -> str | None:
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk not found; trying `apt-get install -y wrk` ...", flush=True)
    try:
        subprocess.run(["apt-get", "install", "-y", "wrk"], check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError) as exc:
        print(f"could not install wrk ({exc}); falling back to an httpx load loop", flush=True)
        return None
    return shutil.which("wrk")


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([0-9.]+)(us|ms|s|m)", text.strip())
    if not m:
        return float("nan")
    return float(m.group(1)) * _UNITS_MS[m.group(2)]


def parse_wrk(name: str, out: str) -> Result:
    rps = re.search(r"Requests/sec:\s+([0-9.]+)", out)
    total = re.search(r"(\d+) requests in", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if not (rps and total and p50 and p99):
        raise RuntimeError(f"cannot parse wrk output:\n{out}")
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(g) for g in sock.groups())
    return Result(
        name, float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), int(total.group(1)), errors
    )


def run_wrk(wrk: str, name: str, url: str) -> Result:
    subprocess.run(
        [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{WARMUP_S}s", url], check=True, capture_output=True
    )
    out = subprocess.run(
        [wrk, f"-t{THREADS}", f"-c{CONNECTIONS}", f"-d{DURATION_S}s", "--latency", url],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return parse_wrk(name, out)


async def _httpx_load(url: str, seconds: float) -> tuple[list[float], int, int]:
    """CONNECTIONS clients, each with its own keep-alive connection (one shared httpx pool is
    the bottleneck under this much concurrency)."""
    latencies: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    ok = (await client.get(url)).is_success
                except httpx.HTTPError:
                    ok = False
                latencies.append((time.perf_counter() - t0) * 1000)
                errors += 0 if ok else 1

    await asyncio.gather(*(worker() for _ in range(CONNECTIONS)))
    return latencies, len(latencies), errors


def run_httpx(name: str, url: str) -> Result:
    asyncio.run(_httpx_load(url, WARMUP_S))
    started = time.perf_counter()
    latencies, total, errors = asyncio.run(_httpx_load(url, DURATION_S))
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return Result(name, total / elapsed, pct(0.50), pct(0.99), total, errors)


# --------------------------------------------------------------------------- the stack


async def _ready_and_seed(grpc_target: str, edge_url: str, settings: Settings, children: Children) -> bytes:
    metadata = internal_metadata(settings, "bench")
    waits = [
        wait_for_grpc(grpc_target, READY_TIMEOUT_S, metadata=metadata),
        wait_for_edge(edge_url, READY_TIMEOUT_S),
    ]
    for wait in waits:
        task = asyncio.ensure_future(wait)
        while not task.done():
            children.check()
            await asyncio.wait([task], timeout=0.2)
        task.result()
    await seed_catalog(grpc_target, settings)
    async with httpx.AsyncClient(timeout=10, trust_env=False) as client:
        reply = await client.get(edge_url + PATH)
        reply.raise_for_status()
        return reply.content


def _wait_http(url: str, children: Children) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        children.check()
        try:
            if httpx.get(url, timeout=2, trust_env=False).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {READY_TIMEOUT_S:g}s")


def bench(stack: Stack) -> list[Result]:
    grpc_addr = f"127.0.0.1:{free_port()}"
    edge_port, bare_port = free_port(), free_port()
    settings = bench_settings(stack)
    env = {
        **os.environ,
        "SMM_DATABASE_URL": stack.database_url,
        "SMM_NATS_URL": stack.nats_url,
        **secret_env(settings),
        "SMM_GRPC_ADDR": grpc_addr,
        "SMM_GRPC_TARGET": grpc_addr,
        "SMM_EDGE_ADDR": f"127.0.0.1:{edge_port}",
        "SMM_LOG_LEVEL": "WARNING",
        "SMM_VAR_DIR": str(stack.root / "var"),
        "PYTHONUNBUFFERED": "1",
    }
    children = Children(stack.root)
    try:
        children.start("grpc", [PY, "-m", "ops.cli", "serve", "grpc"], env)
        children.start("edge", [PY, "-m", "ops.cli", "serve", "edge"], env)
        edge_url = f"http://127.0.0.1:{edge_port}"
        body = asyncio.run(_ready_and_seed(grpc_addr, edge_url, settings, children))
        body_file = stack.root / "bare-body.json"
        body_file.write_bytes(body)
        children.start("bare", [PY, "-c", BARE_APP, str(body_file), str(bare_port)], env)
        bare_url = f"http://127.0.0.1:{bare_port}/bare"
        _wait_http(bare_url, children)
        print(f"catalog read: {PATH} ({len(body)} bytes of JSON; the bare route serves the same bytes)")

        wrk = ensure_wrk()
        tool = (
            f"wrk -t{THREADS} -c{CONNECTIONS} -d{DURATION_S}s"
            if wrk
            else f"httpx, {CONNECTIONS} clients (client-bound: a floor, not the server's ceiling)"
        )
        print(f"load: {tool}, after a {WARMUP_S}s warm-up per target", flush=True)
        results = []
        for name, url in (("edge (cached catalog)", edge_url + PATH), ("bare Sanic", bare_url)):
            result = run_wrk(wrk, name, url) if wrk else run_httpx(name, url)
            results.append(result)
        children.check()
        return results
    finally:
        children.stop()


def report(results: list[Result]) -> None:
    print(f"  {'target':<22} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'requests':>10} {'errors':>8}")
    for r in results:
        print(
            f"  {r.name:<22} {r.rps:>10,.0f} {r.p50_ms:>8.2f} {r.p99_ms:>8.2f} {r.requests:>10,}"
            f" {r.error_rate:>7.2%}"
        )
    edge, bare = results
    ratio = edge.rps / bare.rps if bare.rps else 0.0
    met = ratio >= TARGET_RATIO and edge.p99_ms < TARGET_P99_MS and edge.error_rate == 0
    target = f">= {TARGET_RATIO:.0%} of bare with p99 < {TARGET_P99_MS:g} ms"
    print(
        f"  edge/bare throughput: {ratio:.0%}   edge p99: {edge.p99_ms:.2f} ms"
        f"   (target: {target}: {'met' if met else 'NOT met'})"
    )


def main() -> int:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    try:
        with throwaway_stack("catalog") as stack:
            results = bench(stack)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
