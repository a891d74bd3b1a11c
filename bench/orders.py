"""Order placement through the edge with API keys, beside pgbench running the same SQL transaction.

Starts a throwaway stack like production, every server a child process: durable embedded
PostgreSQL (max_wal_size raised, no durability switched off) and NATS, `smm serve grpc` (with its
outbox relay), `smm serve edge`, `smm worker dispatch` and the demo provider. Through the real
APIs it adds the demo provider and syncs it, then creates USERS users, each with an ample balance
and an API key of its own. Rate limits are raised for the run (SMM_RATE_*), and so are the
provider's call limits, so that orders go on to the demo provider while the load runs.

wrk POSTs /api/v1/dashboard/orders with the keys in turn (a Lua script: each request takes the
next key; wrk cannot pin a key to a connection): a warm-up, then the measured run, while this
process samples the committed orders every second and the CPU time of every process (the table
says where each order's CPU goes). Then: how far dispatch got, and correctness: the orders in the
database must match the 2xx answers (requests cut off when wrk stopped may or may not have
committed) and WalletService.VerifyLedger must pass, or the exit code is 1. Last, everything but
PostgreSQL stops and pgbench runs the order's own SQL (the statements of OrdersLogic.place,
read from the project's queries.sql files) on the same database, for the ratio
HTTP orders/s / pgbench tx/s, and then ../shared/ENVIRONMENT.md's minimal order write
(bench/reference/), which calibrates the machine against the day that file was measured. Speed
targets are reported (PASS/MISS), never asserted.

`--profile DIR` samples every Python process with py-spy (not a project dependency) during the
measured run and prints the hot spots."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psycopg
from _stack import (  # bench/ is sys.path[0] when run as a script
    Stack,
    bench_settings,
    secret_env,
    throwaway_stack,
)
from catalog_read import Children, ensure_wrk
from smm.v1 import accounts_service_pb2 as accounts_pb
from smm.v1 import accounts_service_pb2_grpc as accounts_grpc
from smm.v1 import events_pb2
from smm.v1 import providers_service_pb2 as providers_pb
from smm.v1 import providers_service_pb2_grpc as providers_grpc
from smm.v1 import wallet_service_pb2 as wallet_pb
from smm.v1 import wallet_service_pb2_grpc as wallet_grpc

from core.config import Settings
from ops.dev import wait_for_edge, wait_for_http
from ops.embedded import free_port, postgres_bin_dir
from ops.grpc_client import internal_metadata, wait_for_grpc
from server.common.interceptors import INTERNAL_TOKEN_KEY
from server.orders.repo import QUERIES as ORDER_SQL
from server.wallet import ledger

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
PATH = "/api/v1/dashboard/orders"
USERS = 100
CONNECTIONS = 32
THREADS = 2
DURATION_S = 30
WARMUP_S = 5
QUANTITY = 1000
UPSTREAM_SERVICE = "2"  # the demo's "Instagram Likes": Default type, 10 to 50,000
LINK = "https://instagram.com/p/smm-bench"
BALANCE = "1000000"  # per user: far more than any run spends
DISPATCH_WORKERS = 1
DRAIN_TIMEOUT_S = 60.0
PGBENCH_CLIENTS = 16  # the server's pool size (SMM_DB_POOL_MAX's default)
PGBENCH_S = 20
PGBENCH_WARMUP_S = 3
REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
# ENVIRONMENT.md's figure for the reference write (one statement, 32 clients) on the machine of its day.
REFERENCE_TPS_THEN = 12_700
READY_TIMEOUT_S = 60.0
CALL_TIMEOUT_S = 30.0
SETUP_CONCURRENCY = 8
HIGH_LIMIT = str(10**9)

TARGET_RPS = 1000.0
TARGET_P99_MS = 50.0
SEED_P95_MS = 200.0
SEED_ERROR_RATE = 0.001

DEMO_APP = """
import sys
from demo.provider import DemoConfig, run

port, key = int(sys.argv[1]), sys.argv[2]
# The provider's own balance must outlast the run: each order costs it the upstream price.
config = DemoConfig(api_keys=(key,), starting_balance_micros=10**9 * 10**6, step_s=5.0)
run("127.0.0.1", port, config)
"""

# wrk's summary line, parsed by run_wrk (bench/reseller.py uses it too).
WRK_DONE = """
function done(summary, latency, requests)
  local s, o, c4, c5 = 0, 0, 0, 0
  for _, t in ipairs(threads) do
    s = s + t:get("sent")
    o = o + t:get("ok")
    c4 = c4 + t:get("e4xx")
    c5 = c5 + t:get("e5xx")
  end
  local e = summary.errors
  io.write(string.format(
    "BENCH sent=%d ok=%d e4xx=%d e5xx=%d connect=%d read=%d write=%d timeout=%d duration_us=%d"
    .. " p50=%d p95=%d p99=%d max=%d\\n",
    s, o, c4, c5, e.connect, e.read, e.write, e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
"""

# Each request takes the next key (threads start at different keys); response() counts the
# answers by class and done() prints one line this script parses.
WRK_SCRIPT = (
    """
local keys = {KEYS}
local path = {PATH}
local body = {BODY}
local threads = {{}}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  reqs = {{}}
  for i, key in ipairs(keys) do
    reqs[i] = wrk.format("POST", path,
      {{["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. key}}, body)
  end
  idx = (tid * 37) % #reqs
  sent, ok, e4xx, e5xx = 0, 0, 0, 0
end

function request()
  idx = idx % #reqs + 1
  sent = sent + 1
  return reqs[idx]
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
  elseif status < 500 then
    e4xx = e4xx + 1
  else
    e5xx = e5xx + 1
  end
end

"""
    + WRK_DONE
)


class WrongResult(Exception):
    pass


# --------------------------------------------------------------------------- figures


@dataclass(frozen=True)
class WrkRun:
    sent: int
    ok: int
    e4xx: int
    e5xx: int
    socket_errors: int
    seconds: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    max_ms: float

    @property
    def answered(self) -> int:
        return self.ok + self.e4xx + self.e5xx

    @property
    def errors(self) -> int:
        return self.e4xx + self.e5xx + self.socket_errors

    @property
    def error_rate(self) -> float:
        total = self.answered + self.socket_errors
        return self.errors / total if total else 1.0

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0


@dataclass(frozen=True)
class PgbenchRun:
    tps: float
    transactions: int
    failed: int
    p50_ms: float
    p99_ms: float
    ours_cores: float  # PostgreSQL and pgbench
    other_cores: float  # everything else on the machine


@dataclass
class Outcome:
    service_id: int = 0
    service_name: str = ""
    warmup: WrkRun | None = None
    run: WrkRun | None = None
    per_second: list[float] = field(default_factory=list)
    cpu: list[tuple[str, float]] = field(default_factory=list)
    cpu_wall_s: float = 0.0
    machine_busy: float = 0.0
    machine_steal: float = 0.0
    commits_per_order: float = 0.0
    wal_bytes_per_order: float = 0.0
    dispatched_in_run: int = 0
    placed_in_run: int = 0
    drain: tuple[float, int, int] = (0.0, 0, 0)
    drain_cpu: list[tuple[str, float]] = field(default_factory=list)  # while dispatch drained alone
    drain_cpu_wall_s: float = 0.0
    drain_machine_busy: float = 0.0
    drain_machine_steal: float = 0.0
    end_to_end: tuple[int, float] = (
        0,
        0.0,
    )  # orders placed and sent, seconds from first request to last sent
    statuses: dict[str, int] = field(default_factory=dict)
    pgbench: PgbenchRun | None = None
    pgbench_statements: int = 0
    reference: PgbenchRun | None = None


# --------------------------------------------------------------------------- CPU per process


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _proc_table() -> dict[int, tuple[int, float]]:
    """pid -> (parent pid, CPU seconds used so far, by it and its reaped children) for every process
    we may read (PostgreSQL's backends that came and went count towards the postmaster)."""
    table: dict[int, tuple[int, float]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            text = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = text[text.rfind(")") + 2 :].split()
        ticks = sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
        table[int(entry.name)] = (int(fields[1]), ticks / CLOCK_TICKS)
    return table


def _tree_cpu(table: dict[int, tuple[int, float]], root: int) -> float:
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += table.get(pid, (0, 0.0))[1]
        todo.extend(children.get(pid, []))
    return total


def _machine_busy() -> tuple[float, float, float]:
    """(busy, of which stolen by the hypervisor, total) jiffies of all CPUs since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    idle = values[3] + values[4]  # idle + iowait
    return float(sum(values) - idle), float(values[7]), float(sum(values))


class CpuMeter:
    """CPU seconds of named process trees between start() and stop()."""

    def __init__(self, roots: dict[str, int]) -> None:
        self._roots = roots
        self._before: dict[str, float] = {}
        self._machine: tuple[float, float, float] = (0.0, 0.0, 0.0)
        self.steal_share = 0.0  # of the machine, taken by the hypervisor (other VMs) meanwhile
        self._self = 0.0
        self._started = 0.0

    def start(self) -> None:
        table = _proc_table()
        self._before = {name: _tree_cpu(table, pid) for name, pid in self._roots.items()}
        self._self = sum(os.times()[:2])
        self._machine = _machine_busy()
        self._started = time.perf_counter()

    def stop(self) -> tuple[list[tuple[str, float]], float, float]:
        """CPU seconds per tree (and this process), wall seconds, and the machine's busy share."""
        table = _proc_table()
        used = [(name, _tree_cpu(table, pid) - self._before[name]) for name, pid in self._roots.items()]
        used.append(("this script", sum(os.times()[:2]) - self._self))
        busy, steal, total = _machine_busy()
        elapsed = max(1.0, total - self._machine[2])
        self.steal_share = (steal - self._machine[1]) / elapsed
        return used, time.perf_counter() - self._started, (busy - self._machine[0]) / elapsed


class OrderSampler(threading.Thread):
    """Orders placed and orders that left 'pending', once a second, from PostgreSQL."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True, name="order-sampler")
        self._url = url
        self._halt = threading.Event()
        self.samples: list[tuple[float, int, int]] = []

    def run(self) -> None:
        with psycopg.connect(self._url, autocommit=True) as conn:
            while True:
                row = conn.execute(
                    "SELECT count(*), count(*) FILTER (WHERE status <> 'pending') FROM orders"
                ).fetchone()
                assert row is not None
                self.samples.append((time.perf_counter(), int(row[0]), int(row[1])))
                if self._halt.wait(1.0):
                    return

    def halt(self) -> None:
        self._halt.set()
        self.join()

    def per_second(self) -> list[float]:
        pairs = zip(self.samples, self.samples[1:], strict=False)
        return [(b[1] - a[1]) / (b[0] - a[0]) for a, b in pairs if b[0] > a[0]]


def _db_counters(url: str) -> tuple[int, int]:
    """(commits in this database, WAL bytes written) so far."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()),"
            " (SELECT wal_bytes FROM pg_stat_wal)"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# --------------------------------------------------------------------------- setup through the APIs


@dataclass(frozen=True)
class BenchUser:
    id: int
    api_key: str


async def _add_provider(channel: grpc.aio.Channel, metadata: Any, api_url: str, key: str) -> int:
    stub = providers_grpc.ProvidersServiceStub(channel)
    provider = providers_pb.Provider(
        name="Bench demo provider",
        api_url=api_url,
        api_key=key,
        currency="USD",
        enabled=True,
        enable_new_services=True,
        # The defaults (8 calls in flight, 10 a second) would hold dispatch at 10 orders/s.
        max_concurrency=64,
        max_requests_per_s=10_000,
    )
    created = await stub.CreateProvider(
        providers_pb.CreateProviderRequest(provider=provider), metadata=metadata, timeout=CALL_TIMEOUT_S
    )
    queued = await stub.SyncProvider(
        providers_pb.SyncProviderRequest(id=created.id), metadata=metadata, timeout=CALL_TIMEOUT_S
    )
    run = await stub.RunSync(providers_pb.RunSyncRequest(id=queued.id), metadata=metadata, timeout=120)
    if run.status != "succeeded":
        raise RuntimeError(f"the demo provider's sync failed: {run.error}")
    return int(created.id)


async def _create_users(channel: grpc.aio.Channel, settings: Settings, count: int) -> list[BenchUser]:
    accounts = accounts_grpc.AccountsServiceStub(channel)
    wallet = wallet_grpc.WalletServiceStub(channel)
    system = internal_metadata(settings, "bench")
    anonymous = ((INTERNAL_TOKEN_KEY, settings.internal_token.get_secret_value()),)
    gate = asyncio.Semaphore(SETUP_CONCURRENCY)

    async def one(n: int) -> BenchUser:
        async with gate:
            email, password = f"bench-{n:04d}@example.com", secrets.token_urlsafe(18)
            user = await accounts.CreateUser(
                accounts_pb.CreateUserRequest(email=email, password=password, name=f"Bench {n}"),
                metadata=system,
                timeout=CALL_TIMEOUT_S,
            )
            await wallet.CreateBalanceAdjustment(
                wallet_pb.CreateBalanceAdjustmentRequest(user_id=user.id, amount=BALANCE, reason="bench"),
                metadata=system,
                timeout=CALL_TIMEOUT_S,
            )
            login = await accounts.Login(
                accounts_pb.LoginRequest(email=email, password=password),
                metadata=anonymous,
                timeout=CALL_TIMEOUT_S,
            )
            key = await accounts.CreateApiKey(
                accounts_pb.CreateApiKeyRequest(name="bench"),
                metadata=(*anonymous, ("authorization", f"Bearer {login.token}")),
                timeout=CALL_TIMEOUT_S,
            )
            return BenchUser(int(user.id), key.secret)

    return list(await asyncio.gather(*(one(n) for n in range(1, count + 1))))


def _service_for(url: str, provider_id: int) -> tuple[int, str]:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT id, name FROM services WHERE provider_id = %s AND upstream_service_id = %s"
            " AND enabled AND NOT quarantined",
            (provider_id, UPSTREAM_SERVICE),
        ).fetchone()
    if row is None:
        raise RuntimeError(f"upstream service {UPSTREAM_SERVICE} is not on sale after the sync")
    return int(row[0]), str(row[1])


async def _verify_ledger(channel: grpc.aio.Channel, settings: Settings) -> wallet_pb.VerifyLedgerResponse:
    stub = wallet_grpc.WalletServiceStub(channel)
    result: wallet_pb.VerifyLedgerResponse = await stub.VerifyLedger(
        wallet_pb.VerifyLedgerRequest(), metadata=internal_metadata(settings, "bench"), timeout=300
    )
    return result


# --------------------------------------------------------------------------- load


def write_wrk_script(path: Path, keys: list[str], service_id: int, quantity: int) -> None:
    body = json.dumps({"serviceId": str(service_id), "link": LINK, "quantity": quantity})
    lua_keys = "{" + ", ".join(json.dumps(k) for k in keys) + "}"
    path.write_text(WRK_SCRIPT.format(KEYS=lua_keys, PATH=json.dumps(PATH), BODY=json.dumps(body)))


def run_wrk(
    wrk: str, script: Path, url: str, args: argparse.Namespace, seconds: int, children: Children
) -> tuple[WrkRun, float]:
    """One wrk run, and the CPU seconds wrk itself used (read from /proc while it runs)."""
    argv = [
        wrk,
        f"-t{args.threads}",
        f"-c{args.connections}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(script),
        url,
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    cpu = [0.0]

    def watch() -> None:
        stat = Path(f"/proc/{proc.pid}/stat")
        while proc.poll() is None:
            try:
                text = stat.read_text()
            except OSError:
                return
            fields = text[text.rfind(")") + 2 :].split()
            cpu[0] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            time.sleep(0.2)

    watcher = threading.Thread(target=watch, daemon=True, name="wrk-cpu")
    watcher.start()
    result = _wrk_result(proc, children)
    watcher.join()
    return result, cpu[0]


def _wrk_result(proc: subprocess.Popen[str], children: Children) -> WrkRun:
    out, _ = proc.communicate()
    children.check()
    m = re.search(r"^BENCH (.*)$", out, re.MULTILINE)
    if proc.returncode != 0 or m is None:
        raise RuntimeError(f"wrk failed (code {proc.returncode}):\n{out}")
    v = {k: int(n) for k, n in (pair.split("=") for pair in m.group(1).split())}
    return WrkRun(
        sent=v["sent"],
        ok=v["ok"],
        e4xx=v["e4xx"],
        e5xx=v["e5xx"],
        socket_errors=v["connect"] + v["read"] + v["write"] + v["timeout"],
        seconds=v["duration_us"] / 1e6,
        p50_ms=v["p50"] / 1000,
        p95_ms=v["p95"] / 1000,
        p99_ms=v["p99"] / 1000,
        max_ms=v["max"] / 1000,
    )


# --------------------------------------------------------------------------- pgbench


def _pg(sql: str, values: dict[str, str], suffix: str = ";") -> str:
    """A psycopg query as a pgbench command: each %(name)s becomes the SQL in ``values``."""
    text = re.sub(r"%\((\w+)\)s", lambda m: values[m.group(1)], sql).replace("%%", "%")
    return text.strip().removesuffix(";") + suffix


def _lit(value: object) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::bytea"
    text = json.dumps(value, separators=(",", ":")) if isinstance(value, dict) else str(value)
    return "'" + text.replace("'", "''") + "'"


def order_transaction_script(url: str, first_user: int, last_user: int) -> tuple[str, int]:
    """The statements OrdersLogic.place runs, with the values of a placed order and a random bench
    user each time: the terms read (which draws the order's id), then the one statement of
    ledger.hold_with that holds the price and writes the order, its timeline entry and its outbox
    event (each statement its own transaction, as on the server's autocommit connections).
    Returns the script and its number of SQL statements."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT o.service_id, o.link, o.quantity, o.runs, o.interval_minutes, o.upstream_params,"
            " o.billable, o.rate_micros, o.price_micros, o.provider_id, o.upstream_service_id,"
            " o.provider_rate_micros, o.provider_currency, o.exchange_rate, o.source, o.api_key_id,"
            " s.one_active_order_per_link, e.headers, o.service_type"
            " FROM orders o JOIN services s ON s.id = o.service_id"
            " JOIN outbox_events e ON e.subject = 'smm.orders.order.created'"
            " ORDER BY o.id LIMIT 1"
        ).fetchone()
    if row is None:
        raise WrongResult("no order was placed over HTTP: nothing to model the pgbench script on")
    (service_id, link, quantity, runs, interval, upstream, billable, rate, price, provider_id,
     upstream_id, provider_rate, provider_currency, exchange_rate, source, api_key_id, one_per_link,
     headers, service_type) = row  # fmt: skip
    payload = events_pb2.OrderCreated(order_id=10**6, user_id=first_user).SerializeToString()
    # pgbench takes any ":name" for a variable, inside quotes too: no literal may hold one.
    user = ":uid::bigint"
    lines = [
        f"\\set uid random({first_user}, {last_user})",
        f"\\set price {int(price)}",
    ]
    if one_per_link:
        lines.append(
            _pg(
                ORDER_SQL.sql("active_order_for_link"),
                {"user_id": user, "service_id": str(service_id), "link": _lit(link)},
            )
        )
    lines.append(
        _pg(
            ORDER_SQL.sql("service_for_order"),
            {"id": f"{service_id}::bigint", "user_id": user},
            " \\gset svc_",
        )
    )
    values = {
        "order_id": ":svc_order_id::bigint",
        "user_id": user,
        "service_id": f"{service_id}::bigint",
        "service_type": _lit(service_type),
        "link": _lit(link),
        "quantity": f"{quantity}::bigint",
        "runs": f"{runs}::integer",
        "interval_minutes": f"{interval}::integer",
        "panel_dripfeed": "false",
        "panel_runs": "0",
        "upstream_params": _lit(upstream) + "::jsonb",
        "billable": f"{billable}::bigint",
        "rate_micros": f"{rate}::bigint",
        "discount_bps": ":svc_discount_bps::integer",
        "price_micros": ":price::bigint",
        "provider_id": _lit(provider_id) + "::bigint",
        "upstream_service_id": _lit(upstream_id),
        "provider_rate_micros": _lit(provider_rate) + "::bigint",
        "provider_currency": _lit(provider_currency),
        "exchange_rate": _lit(exchange_rate) + "::numeric",
        "source": _lit(source),
        "api_key_id": _lit(api_key_id) + "::bigint",
        "idempotency_key": "NULL::text",
        "request_hash": "NULL::bytea",
        "event_subject": "'smm.orders.order.created'",
        "event_payload": _lit(payload),
        "event_headers": _lit(headers) + "::jsonb",
        "hold_user_id": user,
        "hold_amount": ":price",
        "hold_key": "'order' || chr(58) || :svc_order_id::text || chr(58) || 'hold'",
        "hold_reference": "'order' || chr(58) || :svc_order_id::text",
        "hold_actor": "'user' || chr(58) || :uid::text",
        "hold_debit": "'user' || chr(58) || :uid::text || chr(58) || 'available'",
        "hold_credit": "'user' || chr(58) || :uid::text || chr(58) || 'held'",
    }
    lines.append(_pg(ledger.hold_with_sql(ORDER_SQL.sql("insert_held_order")), values))
    statements = sum(1 for line in lines if not line.startswith("\\"))
    return "\n".join(lines) + "\n", statements


def run_pgbench(
    url: str, script: Path, clients: int, seconds: int, log_dir: Path, *, log: bool, postmaster: int
) -> PgbenchRun:
    pgbench = postgres_bin_dir() / "pgbench"
    for old in log_dir.glob("pgbench_log.*"):
        old.unlink()
    argv = [
        str(pgbench),
        "-n",  # no vacuum of pgbench's own tables (there are none)
        "-M",
        "prepared",  # as psycopg, which prepares a statement from its 5th use on
        "-c",
        str(clients),
        "-j",
        "2",
        "-T",
        str(seconds),
        "-f",
        str(script),
        *(["-l"] if log else []),
        url,
    ]
    meter = CpuMeter({"postgres": postmaster})
    children_before = sum(os.times()[2:4])
    meter.start()
    done = subprocess.run(argv, cwd=log_dir, capture_output=True, text=True, check=False)
    used, wall, busy = meter.stop()
    ours = (sum(s for _, s in used) + sum(os.times()[2:4]) - children_before) / wall
    out = done.stdout + done.stderr
    tps = re.search(r"tps = ([0-9.]+) \(without initial connection time\)", out)
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    failed = re.search(r"number of failed transactions: (\d+)", out)
    if done.returncode != 0 or not (tps and processed):
        raise RuntimeError(f"pgbench failed (code {done.returncode}):\n{out[-3000:]}")
    latencies: list[float] = []
    for path in log_dir.glob("pgbench_log.*"):
        with path.open() as fh:
            latencies.extend(int(line.split()[2]) / 1000 for line in fh)
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] if latencies else float("nan")

    return PgbenchRun(
        float(tps.group(1)),
        int(processed.group(1)),
        int(failed.group(1)) if failed else 0,
        pct(0.50),
        pct(0.99),
        ours,
        max(0.0, busy * (os.cpu_count() or 1) - ours),
    )


# --------------------------------------------------------------------------- the run


def _env(stack: Stack, settings: Settings, grpc_addr: str, edge_port: int) -> dict[str, str]:
    return {
        **os.environ,
        "SMM_DATABASE_URL": stack.database_url,
        "SMM_NATS_URL": stack.nats_url,
        **secret_env(settings),
        "SMM_GRPC_ADDR": grpc_addr,
        "SMM_GRPC_TARGET": grpc_addr,
        "SMM_EDGE_ADDR": f"127.0.0.1:{edge_port}",
        "SMM_LOG_LEVEL": "WARNING",
        "SMM_VAR_DIR": str(stack.root / "var"),
        # Every caller is 127.0.0.1 and 100 keys share it: the per-minute limits would stop the run.
        "SMM_RATE_PER_IP_PER_MIN": HIGH_LIMIT,
        "SMM_RATE_PER_USER_PER_MIN": HIGH_LIMIT,
        "SMM_RATE_PER_API_KEY_PER_MIN": HIGH_LIMIT,
        "SMM_RATE_LOGIN_PER_IP_PER_MIN": HIGH_LIMIT,
        "SMM_RATE_LOGIN_PER_ACCOUNT_PER_MIN": HIGH_LIMIT,
        "PYTHONUNBUFFERED": "1",
    }


async def _until_ready(children: Children, *waits: Any) -> None:
    for wait in waits:
        task = asyncio.ensure_future(wait)
        while not task.done():
            children.check()
            await asyncio.wait([task], timeout=0.2)
        task.result()


async def _setup(
    stack: Stack, settings: Settings, grpc_addr: str, edge_url: str, demo: tuple[str, str], args: Any,
    children: Children,
) -> tuple[int, str, list[BenchUser]]:  # fmt: skip
    demo_url, demo_key = demo
    metadata = internal_metadata(settings, "bench")
    await _until_ready(
        children,
        wait_for_grpc(grpc_addr, READY_TIMEOUT_S, metadata=metadata),
        wait_for_edge(edge_url, READY_TIMEOUT_S),
        wait_for_http(demo_url + "/control/stats", READY_TIMEOUT_S, "the demo provider"),
    )
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        provider_id = await _add_provider(channel, metadata, demo_url + "/api/v2", demo_key)
        service_id, name = _service_for(stack.database_url, provider_id)
        started = time.perf_counter()
        users = await _create_users(channel, settings, args.users)
        print(
            f"  set up {len(users)} users (account, balance {BALANCE}, sign-in, API key) in"
            f" {time.perf_counter() - started:.1f} s",
            flush=True,
        )
    return service_id, name, users


def _check(url: str, outcome: Outcome, runs: list[WrkRun], verify: wallet_pb.VerifyLedgerResponse) -> None:
    """Every 2xx answer is an order in the database, and no order came from nowhere."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT user_id) FROM orders").fetchone()
        assert row is not None
        orders, users = int(row[0]), int(row[1])
        statuses = conn.execute("SELECT status, count(*) FROM orders GROUP BY 1 ORDER BY 2 DESC").fetchall()
    outcome.statuses = {str(s): int(n) for s, n in statuses}
    ok = sum(r.ok for r in runs)
    unanswered = sum(r.sent - r.answered for r in runs)
    failed = sum(r.e4xx + r.e5xx for r in runs)
    print(
        f"  orders in PostgreSQL: {orders:,} from {users} users = {ok:,} 2xx answers"
        f" + {orders - ok} of the {unanswered} requests cut off in flight when wrk stopped"
        f" ({failed} error answers)"
    )
    shown = ", ".join(f"{s} {n:,}" for s, n in outcome.statuses.items())
    print(f"  order statuses: {shown}")
    if not ok <= orders <= ok + unanswered + failed:
        raise WrongResult(f"{orders} orders in the database but {ok} successful answers")
    if not verify.ok:
        problems = "; ".join(verify.problems[:5])
        raise WrongResult(f"VerifyLedger found {len(verify.problems)} problem(s): {problems}")
    print(f"  ledger verify: ok ({verify.transactions_checked:,} transactions, every invariant holds)")


def _drain(url: str, timeout_s: float) -> tuple[float, int, int]:
    """Wait (at most timeout_s) until dispatch has sent every order: (seconds waited, orders sent
    meanwhile, orders still waiting)."""
    query = "SELECT count(*) FROM orders WHERE status IN ('pending', 'submitting')"
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        first = left = int(_one(conn.execute(query).fetchone()))
        while left and time.perf_counter() - started < timeout_s:
            time.sleep(0.5)
            left = int(_one(conn.execute(query).fetchone()))
    return time.perf_counter() - started, first - left, left


def _orders_sent(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        return int(
            _one(
                conn.execute(
                    "SELECT count(*) FROM orders WHERE status NOT IN ('pending', 'submitting')"
                ).fetchone()
            )
        )


def _one(row: tuple[Any, ...] | None) -> Any:
    assert row is not None
    return row[0]


def bench(stack: Stack, args: argparse.Namespace) -> Outcome:
    outcome = Outcome()
    grpc_addr = f"127.0.0.1:{free_port()}"
    edge_port, demo_port = free_port(), free_port()
    settings = bench_settings(stack)
    env = _env(stack, settings, grpc_addr, edge_port)
    demo_key = os.urandom(12).hex()
    children = Children(stack.root)
    try:
        demo = children.start("demo", [PY, "-c", DEMO_APP, str(demo_port), demo_key], env)
        grpc_proc = children.start("grpc", [PY, "-m", "ops.cli", "serve", "grpc"], env)
        worker_env, worker_grpc = env, None
        if args.worker_server:  # a second server copy for the workers: each takes a core
            worker_addr = f"127.0.0.1:{free_port()}"
            worker_env = {**env, "SMM_GRPC_ADDR": worker_addr, "SMM_GRPC_TARGET": worker_addr}
            worker_grpc = children.start("grpc-workers", [PY, "-m", "ops.cli", "serve", "grpc"], worker_env)
        edge = children.start("edge", [PY, "-m", "ops.cli", "serve", "edge"], env)
        workers = [
            children.start(f"dispatch-{n}", [PY, "-m", "ops.cli", "worker", "dispatch"], worker_env)
            for n in range(1, args.dispatch_workers + 1)
        ]
        edge_url = f"http://127.0.0.1:{edge_port}"
        outcome.service_id, outcome.service_name, users = asyncio.run(
            _setup(
                stack, settings, grpc_addr, edge_url, (f"http://127.0.0.1:{demo_port}", demo_key), args,
                children,
            )
        )  # fmt: skip
        wrk: str = args.wrk
        script = stack.root / "orders.lua"
        write_wrk_script(script, [u.api_key for u in users], outcome.service_id, args.quantity)
        url = edge_url + PATH
        print(
            f"load: wrk -t{args.threads} -c{args.connections} -d{args.duration}s, {len(users)} API keys"
            " in turn,"
            f" after a {args.warmup}s warm-up; service {outcome.service_id} ({outcome.service_name}),"
            f" quantity {args.quantity}",
            flush=True,
        )
        load_started = time.perf_counter()
        outcome.warmup, _ = run_wrk(wrk, script, url, args, args.warmup, children)

        roots = {
            "edge": edge.pid,
            "grpc server + relay": grpc_proc.pid,
            **({"grpc server (workers)": worker_grpc.pid} if worker_grpc is not None else {}),
            **{f"dispatch worker {n}": w.pid for n, w in enumerate(workers, start=1)},
            "demo provider": demo.pid,
            "postgres (all)": _postmaster_pid(stack),
            "nats": stack.nats.process.pid,
        }
        sampler = OrderSampler(stack.database_url)
        commits0, wal0 = _db_counters(stack.database_url)
        meter = CpuMeter(roots)
        profilers = []
        if args.profile is not None:
            py_names = {n: pid for n, pid in roots.items() if not n.startswith(("postgres", "nats"))}
            profilers = start_profiles(args.py_spy, py_names, args.duration, args.profile)
        sampler.start()
        meter.start()
        outcome.run, wrk_cpu = run_wrk(wrk, script, url, args, args.duration, children)
        for profiler in profilers:
            profiler.wait(timeout=30)
        outcome.cpu, outcome.cpu_wall_s, outcome.machine_busy = meter.stop()
        outcome.machine_steal = meter.steal_share
        outcome.cpu.append(("wrk", wrk_cpu))
        sampler.halt()
        commits1, wal1 = _db_counters(stack.database_url)
        first, last = sampler.samples[0], sampler.samples[-1]
        outcome.placed_in_run = last[1] - first[1]
        outcome.dispatched_in_run = last[2] - first[2]
        outcome.per_second = sampler.per_second()
        placed = max(1, outcome.placed_in_run)
        outcome.commits_per_order = (commits1 - commits0) / placed
        outcome.wal_bytes_per_order = (wal1 - wal0) / placed

        drain_meter = CpuMeter(roots)
        drain_meter.start()
        outcome.drain = _drain(stack.database_url, args.drain_timeout if workers else 0.0)
        outcome.drain_cpu, outcome.drain_cpu_wall_s, outcome.drain_machine_busy = drain_meter.stop()
        outcome.drain_machine_steal = drain_meter.steal_share
        outcome.end_to_end = (_orders_sent(stack.database_url), time.perf_counter() - load_started)
        children.check()
        report_http(outcome)
        verify = asyncio.run(_verify_with_channel(grpc_addr, settings))
        _check(stack.database_url, outcome, [outcome.warmup, outcome.run], verify)
    finally:
        children.stop()

    # Only PostgreSQL is left running: pgbench has the machine to itself, as the HTTP run had.
    first_user, last_user = min(u.id for u in users), max(u.id for u in users)
    if last_user - first_user + 1 != len(users):
        raise WrongResult(f"bench user ids are not contiguous ({first_user}..{last_user})")
    text, outcome.pgbench_statements = order_transaction_script(stack.database_url, first_user, last_user)
    pg_script = stack.root / "order_transaction.sql"
    pg_script.write_text(text)
    log_dir = stack.root / "pgbench"
    log_dir.mkdir()
    print(
        f"pgbench: the order's SQL ({outcome.pgbench_statements} statements from"
        f" OrdersLogic.place), -M prepared -c{args.pgbench_clients} -j2 -T{args.pgbench_duration}"
        f" after a {PGBENCH_WARMUP_S}s warm-up, same database, random bench user"
        f" (script: {pg_script.name})",
        flush=True,
    )
    if args.show_script:
        print(text)
    postmaster = _postmaster_pid(stack)
    clients = args.pgbench_clients
    run_pgbench(
        stack.database_url, pg_script, clients, PGBENCH_WARMUP_S, log_dir, log=False, postmaster=postmaster
    )
    outcome.pgbench = run_pgbench(
        stack.database_url,
        pg_script,
        clients,
        args.pgbench_duration,
        log_dir,
        log=True,
        postmaster=postmaster,
    )
    outcome.reference = run_reference(stack.database_url, clients, args.pgbench_duration, log_dir, postmaster)
    return outcome


def run_reference(url: str, clients: int, seconds: int, log_dir: Path, postmaster: int) -> PgbenchRun:
    """ENVIRONMENT.md's minimal order write (bench/reference/) on the same database, as pgbench ran
    the order's own SQL: how fast the machine is today, apart from what smm's schema adds."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute((REFERENCE_DIR / "schema.sql").read_text().encode())
    script = REFERENCE_DIR / "order.pgbench.sql"
    print(f"pgbench: ENVIRONMENT.md's minimal order write (bench/reference/{script.name})", flush=True)
    run_pgbench(url, script, clients, PGBENCH_WARMUP_S, log_dir, log=False, postmaster=postmaster)
    return run_pgbench(url, script, clients, seconds, log_dir, log=True, postmaster=postmaster)


def _postmaster_pid(stack: Stack) -> int:
    return postmaster_pid_of(stack.pg.data_dir)


def postmaster_pid_of(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split()[0])


async def _verify_with_channel(grpc_addr: str, settings: Settings) -> wallet_pb.VerifyLedgerResponse:
    async with grpc.aio.insecure_channel(grpc_addr) as channel:
        return await _verify_ledger(channel, settings)


# --------------------------------------------------------------------------- profiles


def start_profiles(
    py_spy: str, pids: dict[str, int], seconds: int, out_dir: Path
) -> list[subprocess.Popen[bytes]]:
    """py-spy on each Python process for the measured run (sampling without pausing it)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    procs = []
    for name, pid in pids.items():
        argv = [
            py_spy, "record", "--nonblocking", "--rate", "200", "--format", "raw", "--duration", str(seconds),
            "--output", str(out_dir / f"{_slug(name)}.txt"), "--pid", str(pid),
        ]  # fmt: skip
        procs.append(subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def print_profiles(out_dir: Path, top: int) -> None:
    """Own time per function and time inside each top-level package, from py-spy's collapsed stacks."""
    for path in sorted(out_dir.glob("*.txt")):
        own: dict[str, int] = {}
        inside: dict[str, int] = {}
        total = 0
        for line in path.read_text().splitlines():
            stack, _, count = line.rpartition(" ")
            if not stack or not count.isdigit():
                continue
            n = int(count)
            total += n
            frames = stack.split(";")
            own[frames[-1]] = own.get(frames[-1], 0) + n
            for package in {_package(f) for f in frames}:
                inside[package] = inside.get(package, 0) + n
        if not total:
            continue
        print(f"--- py-spy {path.stem}: {total} samples; top {top} by own time")
        for frame, n in sorted(own.items(), key=lambda kv: -kv[1])[:top]:
            print(f"  {n / total:6.1%}  {frame[:150]}")
        shares = ", ".join(
            f"{pkg} {n / total:.0%}" for pkg, n in sorted(inside.items(), key=lambda kv: -kv[1])[:12]
        )
        print(f"  time inside (inclusive): {shares}")


def _package(frame: str) -> str:
    m = re.search(r"\((.*?):\d+\)$", frame)
    where = m.group(1) if m else frame
    if "site-packages/" in where:
        return where.split("site-packages/", 1)[1].split("/", 1)[0].removesuffix(".py")
    if where.startswith(str(ROOT)):
        return where[len(str(ROOT)) + 1 :].split("/", 1)[0]
    return "python" if "/lib/python3" in where else where.split("/", 1)[0] or "?"


# --------------------------------------------------------------------------- report


def report_http(o: Outcome) -> None:
    assert o.run is not None
    assert o.warmup is not None
    r = o.run
    print(
        f"  {'run':<10} {'orders/s':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'requests':>9} {'errors':>8}"
    )
    for name, w in (("warm-up", o.warmup), ("measured", r)):
        print(
            f"  {name:<10} {w.rps:>9,.0f} {w.p50_ms:>8.2f} {w.p95_ms:>8.2f} {w.p99_ms:>8.2f}"
            f" {w.max_ms:>8.1f} {w.answered + w.socket_errors:>9,} {w.error_rate:>7.2%}"
        )
    if r.errors:
        print(f"    errors: {r.e4xx} 4xx, {r.e5xx} 5xx, {r.socket_errors} socket errors/timeouts")
    if o.per_second:
        rates = sorted(o.per_second)
        print(
            f"  committed per second (sampled): min {rates[0]:,.0f}, median {statistics.median(rates):,.0f},"
            f" max {rates[-1]:,.0f} orders/s over {len(rates)} s"
        )
    waited, sent, left = o.drain
    print(
        f"  dispatch to the demo provider: {o.dispatched_in_run:,} orders sent during the run"
        f" ({o.dispatched_in_run / max(1.0, o.cpu_wall_s):,.0f}/s, while {o.placed_in_run:,} were placed);"
        f" after it, {sent:,} more in"
        f" {waited:.1f} s ({sent / max(waited, 1e-9):,.0f}/s)"
        + (f", {left:,} still waiting" if left else ", none left waiting")
    )
    print(
        f"  per order: {o.commits_per_order:.1f} PostgreSQL commits, {o.wal_bytes_per_order / 1024:.1f} KiB"
        " of WAL (placement and dispatch together)"
    )
    wall = max(o.cpu_wall_s, 1e-9)
    placed = max(1, o.placed_in_run)
    print(
        f"  CPU during the measured run ({wall:.1f} s, machine busy {o.machine_busy:.0%} of"
        f" {os.cpu_count()} cores):"
    )
    print(f"    {'process':<22} {'cores':>6} {'ms/order':>9}")
    for name, seconds in sorted(o.cpu, key=lambda item: -item[1]):
        print(f"    {name:<22} {seconds / wall:>6.2f} {seconds * 1000 / placed:>9.3f}")
    total = sum(s for _, s in o.cpu)
    print(f"    {'total':<22} {total / wall:>6.2f} {total * 1000 / placed:>9.3f}")
    if o.dispatched_in_run:
        # ms/order above is per order placed; the processes that only dispatch, per order they sent:
        server = sum(s for name, s in o.cpu if name == "grpc server (workers)")
        workers = sum(s for name, s in o.cpu if name.startswith("dispatch worker"))
        print(
            f"    per order sent: {server * 1000 / o.dispatched_in_run:.2f} ms in the workers' gRPC server"
            f" copy, {workers * 1000 / o.dispatched_in_run:.2f} ms in the dispatch workers"
        )
    cores = os.cpu_count() or 1
    stolen = o.machine_steal * cores
    others = o.machine_busy * cores - total / wall - stolen
    if others > 0.1:
        print(f"    (other programs on this machine used about {others:.2f} cores: figures are low)")
    if stolen > 0.05:
        print(
            f"    (the hypervisor gave about {stolen:.2f} cores to other machines (steal): figures are low)"
        )
    report_drain(o)
    through, seconds = o.end_to_end
    if through and left == 0:
        print(
            f"  end to end: {through:,} orders placed and sent to the provider in {seconds:.1f} s (from the"
            f" first request to the last order sent): {through / seconds:,.0f} orders/s"
        )
    sys.stdout.flush()


def report_drain(o: Outcome) -> None:
    """What sending one order costs, measured while dispatch alone worked through the backlog."""
    _, sent, _ = o.drain
    wall = o.drain_cpu_wall_s
    if sent < 100 or wall < 1.0:
        return
    print(
        f"  CPU while dispatch drained the backlog alone ({wall:.1f} s, {sent:,} orders sent, machine busy"
        f" {o.drain_machine_busy:.0%}, {o.drain_machine_steal:.0%} of it stolen by the hypervisor):"
    )
    print(f"    {'process':<22} {'cores':>6} {'ms/sent':>9}")
    used = [(name, seconds) for name, seconds in o.drain_cpu if name != "this script"]  # only polling
    for name, seconds in sorted(used, key=lambda item: -item[1]):
        print(f"    {name:<22} {seconds / wall:>6.2f} {seconds * 1000 / sent:>9.3f}")
    total = sum(s for _, s in used)
    print(f"    {'total':<22} {total / wall:>6.2f} {total * 1000 / sent:>9.3f}")
    provider = sum(s for name, s in used if name == "demo provider")
    ours = (total - provider) * 1000 / sent
    print(f"    without the demo provider (upstream, elsewhere in production): {ours:.3f} ms per order sent")


def report(o: Outcome) -> None:
    assert o.run is not None
    assert o.pgbench is not None
    p = o.pgbench
    print(f"  {'pgbench':<10} {'tx/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'tx':>9} {'failed':>7}")
    print(f"  {'':<10} {p.tps:>9,.0f} {p.p50_ms:>8.2f} {p.p99_ms:>8.2f} {p.transactions:>9,} {p.failed:>7}")
    print(f"    CPU: PostgreSQL and pgbench {p.ours_cores:.2f} cores", end="")
    print(
        f"; other programs about {p.other_cores:.2f} cores (figures are low)" if p.other_cores > 0.1 else ""
    )
    ratio = o.run.rps / p.tps if p.tps else 0.0
    print(f"  HTTP orders/s / pgbench tx/s: {o.run.rps:,.0f} / {p.tps:,.0f} = {ratio:.0%}")
    if o.reference is not None:
        r = o.reference
        print(
            f"  the minimal order write: {r.tps:,.0f} tx/s, p99 {r.p99_ms:.2f} ms"
            f" (ENVIRONMENT.md measured about {REFERENCE_TPS_THEN:,} on its day:"
            f" this machine runs at {r.tps / REFERENCE_TPS_THEN:.0%} of that now);"
            f" the order's own SQL costs {r.tps / p.tps:.1f} times as much"
        )
    print(f"  {'figure':<26} {'measured':>10} {'target':>10}  result")
    rows = (
        ("orders/s (measured run)", f"{o.run.rps:,.0f}", f">= {TARGET_RPS:,.0f}", o.run.rps >= TARGET_RPS),
        ("p99 latency", f"{o.run.p99_ms:.1f} ms", f"< {TARGET_P99_MS:g} ms", o.run.p99_ms < TARGET_P99_MS),
        (
            "p95 latency (seed bar)",
            f"{o.run.p95_ms:.1f} ms",
            f"< {SEED_P95_MS:g} ms",
            o.run.p95_ms < SEED_P95_MS,
        ),
        (
            "error rate (seed bar)",
            f"{o.run.error_rate:.3%}",
            f"< {SEED_ERROR_RATE:.1%}",
            o.run.error_rate < SEED_ERROR_RATE,
        ),
    )
    for name, measured, target, met in rows:
        print(f"  {name:<26} {measured:>10} {target:>10}  {'PASS' if met else 'MISS'}")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/orders.py",
        description=(
            "Order placement benchmark: POST /api/v1/dashboard/orders through the edge with per-user API "
            "keys (wrk), relay, dispatch and the demo provider running, then pgbench running the same "
            "order transaction on the same database (throwaway embedded stack)."
        ),
    )
    add = parser.add_argument
    add("--users", type=int, default=USERS, help=f"users, each with an API key (default {USERS})")
    add("--connections", type=int, default=CONNECTIONS, help=f"wrk connections (default {CONNECTIONS})")
    add("--threads", type=int, default=THREADS, help=f"wrk threads (default {THREADS})")
    add("--duration", type=int, default=DURATION_S, help=f"measured seconds (default {DURATION_S})")
    add("--warmup", type=int, default=WARMUP_S, help=f"warm-up seconds (default {WARMUP_S})")
    add("--quantity", type=int, default=QUANTITY, help=f"quantity per order (default {QUANTITY})")
    add(
        "--dispatch-workers",
        type=int,
        default=DISPATCH_WORKERS,
        help=f"`smm worker dispatch` processes (default {DISPATCH_WORKERS})",
    )
    add(
        "--worker-server",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="the dispatch workers call a second gRPC server copy (default on; --no-worker-server: one)",
    )
    add(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT_S,
        help=f"seconds to wait for dispatch to catch up after the load (default {DRAIN_TIMEOUT_S:g})",
    )
    add(
        "--pgbench-clients",
        type=int,
        default=PGBENCH_CLIENTS,
        help=f"pgbench clients (default {PGBENCH_CLIENTS}, the server's pool size)",
    )
    add("--pgbench-duration", type=int, default=PGBENCH_S, help=f"pgbench seconds (default {PGBENCH_S})")
    add("--show-script", action="store_true", help="print the pgbench script")
    add(
        "--profile",
        type=Path,
        metavar="DIR",
        help="py-spy every Python process during the measured run into DIR and print the hot spots",
    )
    add("--py-spy", default=shutil.which("py-spy") or "py-spy", help="the py-spy binary (for --profile)")
    args = parser.parse_args(argv)
    if min(args.users, args.connections, args.threads, args.duration, args.quantity) < 1:
        parser.error("--users, --connections, --threads, --duration and --quantity must be positive")
    if args.warmup < 1 or args.dispatch_workers < 0 or args.pgbench_clients < 1 or args.pgbench_duration < 1:
        parser.error("--warmup, --pgbench-clients and --pgbench-duration must be positive")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    if args.profile is not None and shutil.which(args.py_spy) is None:
        parser.error(
            f"--profile needs py-spy ({args.py_spy} not found; pip install py-spy, or give --py-spy)"
        )
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    args.wrk = ensure_wrk()
    if args.wrk is None:
        print("this benchmark needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    print(
        "order placement: the edge -> gRPC -> PostgreSQL with API keys; durable PostgreSQL, the relay,"
        f" {args.dispatch_workers} dispatch worker(s)"
        + (" (on a second gRPC server copy)" if args.worker_server else "")
        + " and the demo provider running, each a process",
        flush=True,
    )
    try:
        with throwaway_stack("orders") as stack:
            outcome = bench(stack, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except WrongResult as exc:
        print(f"wrong result: {exc}", file=sys.stderr)
        return 1
    report(outcome)
    if args.profile is not None:
        print_profiles(args.profile, top=15)
    return 0


if __name__ == "__main__":
    sys.exit(main())
