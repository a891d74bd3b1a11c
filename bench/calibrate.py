"""How fast is this machine now, against the figures ../shared/ENVIRONMENT.md measured on its day?

The issue's targets were set against that file's figures, and this machine's speed moves by a
factor of three between days (other sessions share it). This script repeats three of them with
nothing of smm's in the way, so that a run of the other benchmarks can be read against the
machine it ran on:

- a bare Sanic route (one process, wrk -c64): ENVIRONMENT.md measured about 23,000 req/s;
- a Sanic JSON route forwarding each request to a grpc.aio echo server (each its own process, wrk
  -c32 as orders.py uses): about 5,000 req/s. This is the edge -> gRPC hop every order takes
  before any work of its own;
- the minimal order write (bench/reference/, pgbench -c16 on a throwaway durable PostgreSQL):
  about 12,700 tx/s (measured there with 32 clients).

Prints each figure, its share of the day's, and what 1,000 requests/s of the bare hop alone would
take of the machine. Nothing is asserted."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from catalog_read import Children, ensure_wrk, parse_wrk  # bench/ is sys.path[0] when run as a script
from orders import REFERENCE_TPS_THEN, postmaster_pid_of, run_reference

from ops.embedded import free_port, start_postgres

PY = sys.executable
HERE = Path(__file__).resolve().parent
DURATION_S = 10
WARMUP_S = 2
READY_TIMEOUT_S = 30.0
HELLO_THEN = 23_000  # ENVIRONMENT.md: Sanic hello-world, 1 worker, wrk with 64 connections
HOP_THEN = 5_000  # ENVIRONMENT.md: Sanic JSON -> gRPC echo
ORDER_BODY = '{"service": "2", "link": "https://instagram.com/p/smm-bench", "quantity": "1000"}'


@dataclass(frozen=True)
class Figure:
    name: str
    now: float
    then: float
    unit: str


def _wait_http(url: str, children: Children) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        children.check()
        try:
            httpx.get(url, timeout=2, trust_env=False)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {READY_TIMEOUT_S:g}s")


def _wrk(wrk: str, url: str, connections: int, script: Path | None) -> float:
    load = [wrk, "-t2", f"-c{connections}", *(["-s", str(script)] if script else [])]
    subprocess.run([*load, f"-d{WARMUP_S}s", url], check=True, capture_output=True)
    measured = [*load, f"-d{DURATION_S}s", "--latency", url]
    out = subprocess.run(measured, check=True, capture_output=True, text=True).stdout
    result = parse_wrk(url, out)
    if result.errors:
        raise RuntimeError(f"{url}: {result.errors} errors under load:\n{out}")
    return result.rps


def http_figures(wrk: str, root: Path) -> list[Figure]:
    grpc_port, http_port = free_port(), free_port()
    post = root / "post.lua"
    post.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = '{ORDER_BODY}'\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    children = Children(root)
    try:
        children.start("grpc-echo", [PY, str(HERE / "_echo.py"), "grpc", str(grpc_port)], env)
        children.start("sanic", [PY, str(HERE / "_echo.py"), "sanic", str(http_port), str(grpc_port)], env)
        base = f"http://127.0.0.1:{http_port}"
        _wait_http(base + "/hello", children)
        hello = _wrk(wrk, base + "/hello", 64, None)
        hop = _wrk(wrk, base + "/echo", 32, post)
        children.check()
    finally:
        children.stop()
    return [
        Figure("bare Sanic route", hello, HELLO_THEN, "req/s"),
        Figure("Sanic JSON -> gRPC echo", hop, HOP_THEN, "req/s"),
    ]


def reference_figure(root: Path) -> Figure:
    pg = start_postgres(root / "pg", free_port(), durable=True)
    try:
        log_dir = root / "pgbench"
        log_dir.mkdir()
        run = run_reference(pg.url, 16, DURATION_S, log_dir, postmaster_pid_of(pg.data_dir))
    finally:
        pg.stop()
    return Figure("minimal order write (pgbench)", run.tps, REFERENCE_TPS_THEN, "tx/s")


def report(figures: list[Figure]) -> None:
    print(f"  {'figure':<32} {'now':>10} {'ENVIRONMENT.md':>15} {'share':>7}")
    for f in figures:
        print(f"  {f.name:<32} {f.now:>10,.0f} {f.then:>15,.0f} {f.now / f.then:>7.0%}  {f.unit}")
    hop = next(f for f in figures if f.name.startswith("Sanic JSON"))
    print(
        f"  1,000 requests/s through the bare edge -> gRPC hop alone would take {1000 / hop.now:.0%}"
        " of this machine now, before any work of an order's own"
    )


def main() -> int:
    argparse.ArgumentParser(
        prog="bench/calibrate.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    wrk = ensure_wrk()
    if wrk is None:
        print("this benchmark needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="smm-bench-calibrate-"))
    try:
        print(
            "calibration: three of ENVIRONMENT.md's figures, repeated with nothing of smm's in the way",
            flush=True,
        )
        figures = http_figures(wrk, root)
        figures.append(reference_figure(root))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(root, ignore_errors=True)
    report(figures)
    return 0


if __name__ == "__main__":
    sys.exit(main())
