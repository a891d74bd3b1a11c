"""The reseller endpoint (POST /api/v1/reseller, the standard SMM panel API) beside the JSON API.

One throwaway stack, set up as bench/orders.py sets it up (and with its functions): durable embedded
PostgreSQL and NATS, `smm serve grpc` (with its outbox relay), `smm serve edge`, `smm worker
dispatch` and the demo provider, each a child process; the demo provider added and synced, USERS
users each with a balance and an API key, rate limits raised. Then, with the same wrk concurrency
and duration:

1. the JSON API: wrk POSTs /api/v1/dashboard/orders with the keys in turn (bench/orders.py's script);
2. the reseller `add`: wrk POSTs form bodies `key=...&action=add&service=...&link=...&quantity=...`
   with the keys in turn; an answer counts as an order only if it is `{"order": <id>}` (the endpoint
   answers errors with HTTP 200 and `{"error": ...}`);
3. the reseller `status` batch: one user's 100 orders (topped up to 100 through `add` if the runs
   left it fewer), POSTed as `action=status&orders=<100 ids>` by wrk on STATUS_CONNECTIONS
   connection(s), for p50/p95/p99.

The two order runs are measured in halves, JSON / reseller / reseller / JSON (after a warm-up of
each), so that the stack's drift over the run (a growing orders table, dispatch's backlog, warming
caches) weighs on both alike; each rate is its two halves' successful orders over their seconds.
Dispatch keeps running throughout, as in bench/orders.py; it is drained (up to --drain-timeout)
before the status batches, and the backlog left is reported. Afterwards the orders in the database
must match the successful adds of every run, and WalletService.VerifyLedger must pass; otherwise
exit 1. The targets (reseller orders/s within 10% of the JSON API's; status batch p95 under 20 ms)
are reported as PASS/MISS, never asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

import psycopg
from _stack import Stack, bench_settings, throwaway_stack  # bench/ is sys.path[0] when run as a script
from catalog_read import Children, ensure_wrk
from orders import (
    DEMO_APP,
    LINK,
    PATH,
    PY,
    WRK_DONE,
    BenchUser,
    Outcome,
    WrkRun,
    WrongResult,
    _check,
    _drain,
    _env,
    _setup,
    _verify_with_channel,
    run_wrk,
    write_wrk_script,
)

from ops.embedded import free_port

RESELLER_PATH = "/api/v1/reseller"
USERS = 100
CONNECTIONS = 32
THREADS = 2
DURATION_S = 16  # per API, in two halves
WARMUP_S = 3
QUANTITY = 1000
DISPATCH_WORKERS = 1
DRAIN_TIMEOUT_S = 30.0
BATCH = 100  # ids per status request: the endpoint's maximum
STATUS_DURATION_S = 10
STATUS_CONNECTIONS = 1

TARGET_RATIO = 0.9
TARGET_STATUS_P95_MS = 20.0

# Each request takes the next prepared form body (threads start at different ones). An answer is
# "ok" only when it is 2xx and holds EXPECT but no "error" key: the endpoint's errors are HTTP 200.
# done() prints the line bench/orders.py's run_wrk parses (e4xx also counts those error answers).
WRK_SCRIPT = (
    """
local bodies = @BODIES@
local path = @PATH@
local expect = @EXPECT@
local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  reqs = {}
  for i, body in ipairs(bodies) do
    reqs[i] = wrk.format("POST", path,
      {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
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
    if string.find(body, expect, 1, true) and not string.find(body, '"error"', 1, true) then
      ok = ok + 1
    else
      e4xx = e4xx + 1
    end
  elseif status < 500 then
    e4xx = e4xx + 1
  else
    e5xx = e5xx + 1
  end
end

"""
    + WRK_DONE
)


@dataclass
class Figures:
    service_id: int = 0
    service_name: str = ""
    segments: list[tuple[str, bool, WrkRun]] = field(default_factory=list)  # (kind, measured, run)
    status_run: WrkRun | None = None
    status_user: int = 0
    topped_up: int = 0
    drain_s: float | None = None
    backlog: int = 0

    def rate(self, kind: str) -> float:
        runs = [r for k, measured, r in self.segments if k == kind and measured]
        seconds = sum(r.seconds for r in runs)
        return sum(r.ok for r in runs) / seconds if seconds else 0.0


def write_reseller_script(path: Path, bodies: list[str], expect: str) -> None:
    lua_bodies = "{" + ", ".join(json.dumps(b) for b in bodies) + "}"
    text = WRK_SCRIPT.replace("@BODIES@", lua_bodies).replace("@PATH@", json.dumps(RESELLER_PATH))
    path.write_text(text.replace("@EXPECT@", json.dumps(expect)))


def add_body(key: str, service_id: int, quantity: int) -> str:
    return urlencode({"key": key, "action": "add", "service": service_id, "link": LINK, "quantity": quantity})


def status_body(key: str, ids: list[int]) -> str:
    return urlencode({"key": key, "action": "status", "orders": ",".join(str(i) for i in ids)})


def post_form(url: str, body: str) -> object:
    request = urllib.request.Request(  # noqa: S310 - our own loopback edge
        url,
        data=body.encode(),
        method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return json.loads(response.read())


def _status_orders(url: str, users: list[BenchUser], edge_url: str, service_id: int, quantity: int) -> tuple[
    BenchUser, list[int], WrkRun
]:  # fmt: skip
    """The bench user with the most orders, topped up to BATCH orders through `add` if needed, and
    its latest BATCH order ids; the top-up as a WrkRun-like tally for the database check."""
    by_id = {u.id: u for u in users}
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT user_id FROM orders WHERE user_id = ANY(%s) GROUP BY 1 ORDER BY count(*) DESC LIMIT 1",
            (list(by_id),),
        ).fetchone()
        user = by_id[int(row[0])] if row else users[0]
        have = conn.execute("SELECT count(*) FROM orders WHERE user_id = %s", (user.id,)).fetchone()
        missing = max(0, BATCH - int(have[0] if have else 0))
        ok = errors = 0
        for _ in range(missing):
            reply = post_form(edge_url + RESELLER_PATH, add_body(user.api_key, service_id, quantity))
            if isinstance(reply, dict) and isinstance(reply.get("order"), int) and "error" not in reply:
                ok += 1
            else:
                errors += 1
                print(f"  top-up add failed: {reply}", file=sys.stderr)
        ids = [
            int(r[0])
            for r in conn.execute(
                "SELECT id FROM orders WHERE user_id = %s ORDER BY id DESC LIMIT %s", (user.id, BATCH)
            ).fetchall()
        ]
    tally = WrkRun(missing, ok, errors, 0, 0, 1.0, 0.0, 0.0, 0.0, 0.0)
    return user, ids, tally


def _backlog(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM orders WHERE status IN ('pending', 'submitting')").fetchone()
    return int(row[0]) if row else 0


def _check_status_answer(reply: object, ids: list[int]) -> None:
    """One status batch must answer every id, each with a standard status and no error."""
    if not isinstance(reply, dict) or "error" in reply:
        raise WrongResult(f"status batch answered {str(reply)[:300]}")
    missing = [i for i in ids if str(i) not in reply]
    if missing:
        raise WrongResult(f"status batch left out {len(missing)} of {len(ids)} ids (e.g. {missing[:5]})")
    bad = {k: v for k, v in reply.items() if not isinstance(v, dict) or "error" in v or "status" not in v}
    if bad:
        raise WrongResult(
            f"status batch: {len(bad)} entries without a status, e.g. {next(iter(bad.items()))}"
        )


def bench(stack: Stack, args: argparse.Namespace) -> Figures:
    fig = Figures()
    grpc_addr = f"127.0.0.1:{free_port()}"
    edge_port, demo_port = free_port(), free_port()
    settings = bench_settings(stack)
    env = _env(stack, settings, grpc_addr, edge_port)
    demo_key = os.urandom(12).hex()
    children = Children(stack.root)
    url = stack.database_url
    try:
        children.start("demo", [PY, "-c", DEMO_APP, str(demo_port), demo_key], env)
        children.start("grpc", [PY, "-m", "ops.cli", "serve", "grpc"], env)
        children.start("edge", [PY, "-m", "ops.cli", "serve", "edge"], env)
        for n in range(1, args.dispatch_workers + 1):
            children.start(f"dispatch-{n}", [PY, "-m", "ops.cli", "worker", "dispatch"], env)
        edge_url = f"http://127.0.0.1:{edge_port}"
        fig.service_id, fig.service_name, users = asyncio.run(
            _setup(
                stack, settings, grpc_addr, edge_url, (f"http://127.0.0.1:{demo_port}", demo_key), args,
                children,
            )
        )  # fmt: skip
        wrk = ensure_wrk()
        if wrk is None:
            raise RuntimeError("this benchmark needs wrk (apt-get install -y wrk)")
        print(
            f"load: wrk -t{args.threads} -c{args.connections}, {len(users)} API keys in turn;"
            f" service {fig.service_id} ({fig.service_name}), quantity {args.quantity}",
            flush=True,
        )

        json_script = stack.root / "orders.lua"
        write_wrk_script(json_script, [u.api_key for u in users], fig.service_id, args.quantity)
        add_script = stack.root / "reseller_add.lua"
        bodies = [add_body(u.api_key, fig.service_id, args.quantity) for u in users]
        write_reseller_script(add_script, bodies, '"order":')
        targets = {"json": (json_script, edge_url + PATH), "add": (add_script, edge_url + RESELLER_PATH)}
        half = (args.duration + 1) // 2
        plan = [("json", False, args.warmup), ("add", False, args.warmup)]
        plan += [(kind, True, half) for kind in ("json", "add", "add", "json")]
        print(
            f"  order runs: {args.warmup}s warm-up of each, then {half}s measured each of JSON (POST {PATH}),"
            f" reseller add (POST {RESELLER_PATH}), reseller add, JSON",
            flush=True,
        )
        for kind, measured, seconds in plan:
            script, target = targets[kind]
            run, _ = run_wrk(wrk, script, target, args, seconds, children)
            fig.segments.append((kind, measured, run))

        waited, _, left = _drain(url, args.drain_timeout)
        fig.drain_s = waited if left == 0 else None
        # The status batches measure the read path: dispatch still catching up would take the CPU.
        children.stop_some("dispatch-")
        fig.backlog = _backlog(url)
        user, ids, topped = _status_orders(url, users, edge_url, fig.service_id, args.quantity)
        fig.status_user, fig.topped_up = user.id, topped.ok
        body = status_body(user.api_key, ids)
        _check_status_answer(post_form(edge_url + RESELLER_PATH, body), ids)
        status_script = stack.root / "reseller_status.lua"
        write_reseller_script(status_script, [body], '"status":')
        status_args = argparse.Namespace(threads=1, connections=args.status_connections)
        print(
            f"  reseller status: {len(ids)} ids of user {user.id} per request"
            f" ({topped.ok} orders added for it first), wrk -t1 -c{args.status_connections}"
            f" -d{args.status_duration}s",
            flush=True,
        )
        fig.status_run, _ = run_wrk(
            wrk, status_script, edge_url + RESELLER_PATH, status_args, args.status_duration, children
        )

        children.check()
        report(fig)
        verify = asyncio.run(_verify_with_channel(grpc_addr, settings))
        _check(url, Outcome(), [r for _, _, r in fig.segments] + [topped], verify)
        if fig.status_run.e4xx or fig.status_run.e5xx:
            raise WrongResult(
                f"{fig.status_run.e4xx + fig.status_run.e5xx} status answers for the user's own orders"
                " were errors or lacked a status"
            )
        if topped.e4xx:
            raise WrongResult(f"{topped.e4xx} top-up adds failed")
    finally:
        children.stop()
    return fig


def report(f: Figures) -> None:
    assert f.status_run is not None
    names = {"json": "JSON orders", "add": "reseller add"}
    print(
        f"  {'run':<22} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'max ms':>8}"
        f" {'requests':>9} {'errors':>8}"
    )
    rows = [(names[k] + ("" if measured else " warm-up"), r) for k, measured, r in f.segments]
    rows.append((f"reseller status x{BATCH}", f.status_run))
    for name, w in rows:
        print(
            f"  {name:<22} {w.rps:>8,.0f} {w.p50_ms:>8.2f} {w.p95_ms:>8.2f} {w.p99_ms:>8.2f}"
            f" {w.max_ms:>8.1f} {w.answered + w.socket_errors:>9,} {w.error_rate:>7.2%}"
        )
        if w.errors:
            print(f"    errors: {w.e4xx} error answers/4xx, {w.e5xx} 5xx, {w.socket_errors} socket errors")
    drained = f"drained in {f.drain_s:.1f} s" if f.drain_s is not None else "not drained in time"
    print(
        f"  before the status batches: dispatch {drained}, then stopped; {f.backlog:,} orders still pending"
    )
    json_rate, add_rate = f.rate("json"), f.rate("add")
    ratio = add_rate / json_rate if json_rate else 0.0
    print(
        f"  reseller add / JSON orders/s (both halves each): {add_rate:,.1f} / {json_rate:,.1f} = {ratio:.2f}"
    )
    print(f"  {'figure':<30} {'measured':>10} {'target':>10}  result")
    targets = (
        ("reseller/JSON order rate", f"{ratio:.2f}", f">= {TARGET_RATIO:g}", ratio >= TARGET_RATIO),
        (
            f"status batch ({BATCH} ids) p95",
            f"{f.status_run.p95_ms:.1f} ms",
            f"< {TARGET_STATUS_P95_MS:g} ms",
            f.status_run.p95_ms < TARGET_STATUS_P95_MS,
        ),
    )
    for name, measured, target, met in targets:
        print(f"  {name:<30} {measured:>10} {target:>10}  {'PASS' if met else 'MISS'}")
    sys.stdout.flush()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="bench/reseller.py",
        description=(
            "Reseller endpoint benchmark: `add` orders/s beside the JSON API's on the same stack, and the "
            f"latency of a {BATCH}-order `status` batch (throwaway embedded stack)."
        ),
    )
    add = parser.add_argument
    add("--users", type=int, default=USERS, help=f"users, each with an API key (default {USERS})")
    add("--connections", type=int, default=CONNECTIONS, help=f"wrk connections (default {CONNECTIONS})")
    add("--threads", type=int, default=THREADS, help=f"wrk threads (default {THREADS})")
    add(
        "--duration",
        type=int,
        default=DURATION_S,
        help=f"measured seconds per API, in two halves (default {DURATION_S})",
    )
    add("--warmup", type=int, default=WARMUP_S, help=f"warm-up seconds per order run (default {WARMUP_S})")
    add("--quantity", type=int, default=QUANTITY, help=f"quantity per order (default {QUANTITY})")
    add(
        "--dispatch-workers",
        type=int,
        default=DISPATCH_WORKERS,
        help=f"`smm worker dispatch` processes (default {DISPATCH_WORKERS})",
    )
    add(
        "--drain-timeout",
        type=float,
        default=DRAIN_TIMEOUT_S,
        help=f"seconds to let dispatch catch up before the status batches (default {DRAIN_TIMEOUT_S:g})",
    )
    add(
        "--status-duration",
        type=int,
        default=STATUS_DURATION_S,
        help=f"seconds of status batches (default {STATUS_DURATION_S})",
    )
    add(
        "--status-connections",
        type=int,
        default=STATUS_CONNECTIONS,
        help=f"wrk connections for the status batches (default {STATUS_CONNECTIONS})",
    )
    args = parser.parse_args(argv)
    if min(args.users, args.connections, args.threads, args.duration, args.quantity, args.warmup) < 1:
        parser.error(
            "--users, --connections, --threads, --duration, --warmup and --quantity must be positive"
        )
    if args.dispatch_workers < 0 or args.status_duration < 1 or args.status_connections < 1:
        parser.error("--status-duration and --status-connections must be positive")
    if args.connections < args.threads:
        parser.error("--connections must be at least --threads")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if ensure_wrk() is None:
        print("this benchmark needs wrk (apt-get install -y wrk)", file=sys.stderr)
        return 2
    print(
        "reseller endpoint: `add` beside the JSON API, then status batches; the edge -> gRPC -> PostgreSQL"
        f" with API keys, the relay, {args.dispatch_workers} dispatch worker(s) and the demo provider"
        " running",
        flush=True,
    )
    started = time.perf_counter()
    try:
        with throwaway_stack("reseller") as stack:
            bench(stack, args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except WrongResult as exc:
        print(f"wrong result: {exc}", file=sys.stderr)
        return 1
    print(f"  total run time {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
