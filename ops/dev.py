"""``smm dev`` (what ``make run`` runs): the whole panel on one machine.

Starts embedded PostgreSQL and NATS (unless ``SMM_DATABASE_URL`` / ``SMM_NATS_URL`` point elsewhere),
applies migrations, runs the gRPC server, the edge and the workers as child processes, seeds a demo
catalog into an empty panel and prints where everything listens. Ctrl-C or SIGTERM stops it all;
the data under ``var/`` stays for the next run. Secrets the processes must share are generated once
into ``var/dev-secrets.json`` (mode 0600) and never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import grpc
import httpx
import psycopg
from psycopg import conninfo as pg_conninfo
from psycopg import errors as pg_errors
from pydantic import SecretStr

from core.config import Settings
from ops import embedded
from ops.admin import SEED_ADMIN_EMAIL, seed_admin
from ops.grpc_client import internal_metadata, wait_for_grpc
from ops.seed import seed_catalog, seed_demo_provider
from server.common.migrate import MigrationError, migrate
from server.common.secretbox import new_key_config

__all__ = [
    "WORKERS",
    "Address",
    "ChildExited",
    "ChildSpec",
    "DevError",
    "Layout",
    "PortTaken",
    "check_port_free",
    "dev_secrets",
    "ensure_database",
    "plan_children",
    "plan_layout",
    "redact_url",
    "run_dev",
    "wait_for_edge",
]

# Worker names, each started as `python -m ops.cli worker NAME`; issues that add workers add them here.
WORKERS: list[str] = ["scheduler", "analytics", "maintenance", "email", "sms", "provider-sync", "dispatch"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

SECRETS_FILE = "dev-secrets.json"
DATABASE = "smm"
EDGE_HEALTH_PATH = "/api/v1/public/health"
GRPC_READY_TIMEOUT_S = 30.0
EDGE_READY_TIMEOUT_S = 20.0
STOP_GRACE_S = 10.0
TOOL = "dev"
_POLL_S = 0.2
_SERVER_GONE_AFTER = 3  # checks in a row, _POLL_S apart
_WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})

T = TypeVar("T")


class DevError(Exception):
    """A problem ``smm dev`` explains in one line, without a traceback."""


class PortTaken(DevError):
    """A port the children need belongs to another program."""


class ChildExited(DevError):
    """A child process ended while it should have been serving."""


# --------------------------------------------------------------------------- addresses and ports


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    @classmethod
    def parse(cls, value: str, env_var: str) -> Address:
        host, sep, port = value.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise DevError(f"{env_var}={value!r} is not HOST:PORT (for example 127.0.0.1:8080)")
        return cls(host.removeprefix("[").removesuffix("]"), int(port))

    def shifted(self, offset: int, env_var: str) -> Address:
        if self.port + offset > 65535:
            raise DevError(
                f"copy {offset + 1} would need port {self.port + offset}; lower the port in {env_var}"
            )
        return Address(self.host, self.port + offset)

    @property
    def dial(self) -> Address:
        """Where a client on this machine reaches a server bound to this address."""
        return Address("127.0.0.1", self.port) if self.host in _WILDCARD_HOSTS else self

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class Layout:
    grpc: tuple[Address, ...]
    edges: tuple[Address, ...]
    # What the edges and workers dial: the first gRPC server.
    grpc_target: str
    # The demo provider, when SMM_DEMO_PROVIDER_ADDR is set.
    demo: Address | None = None


def plan_layout(settings: Settings, copies: int) -> Layout:
    """Copy i (from 0) of the gRPC server listens on SMM_GRPC_ADDR's port + i; edges likewise."""
    grpc_base = Address.parse(settings.grpc_addr, "SMM_GRPC_ADDR")
    edge_base = Address.parse(settings.edge_addr, "SMM_EDGE_ADDR")
    grpc_addrs = tuple(grpc_base.shifted(i, "SMM_GRPC_ADDR") for i in range(copies))
    edge_addrs = tuple(edge_base.shifted(i, "SMM_EDGE_ADDR") for i in range(copies))
    if {a.port for a in grpc_addrs} & {a.port for a in edge_addrs}:
        raise DevError("the ports of SMM_GRPC_ADDR and SMM_EDGE_ADDR (and their copies) overlap")
    demo = None
    if settings.demo_provider_addr:
        demo = Address.parse(settings.demo_provider_addr, "SMM_DEMO_PROVIDER_ADDR")
        if demo.port in {a.port for a in grpc_addrs + edge_addrs}:
            raise DevError("SMM_DEMO_PROVIDER_ADDR's port overlaps the gRPC or edge ports")
    return Layout(grpc_addrs, edge_addrs, str(grpc_addrs[0].dial), demo)


def check_port_free(addr: Address, env_var: str) -> str | None:
    """None if a server could listen on `addr`, else one line naming the port and `env_var`."""
    try:
        family, kind, proto, _, sockaddr = socket.getaddrinfo(
            addr.host, addr.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as exc:
        return f"cannot resolve the host in {env_var} ({addr}): {exc.strerror}"
    with socket.socket(family, kind, proto) as probe:
        # The servers set SO_REUSEADDR too, so leftovers in TIME_WAIT do not count as taken.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(sockaddr)
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return f"port {addr.port} ({addr}) is already in use; set {env_var} to a free HOST:PORT"
            return f"cannot listen on {addr} ({env_var}): {exc.strerror}"
    return None


def _check_ports(layout: Layout) -> None:
    wanted = [(a, "SMM_GRPC_ADDR") for a in layout.grpc] + [(a, "SMM_EDGE_ADDR") for a in layout.edges]
    if layout.demo is not None:
        wanted.append((layout.demo, "SMM_DEMO_PROVIDER_ADDR"))
    for addr, env_var in wanted:
        problem = check_port_free(addr, env_var)
        if problem is not None:
            raise PortTaken(problem)


def _remembered_port(var_dir: Path, name: str, env_var: str) -> int:
    try:
        return embedded.remembered_port(var_dir, name, os.environ.get(env_var))
    except ValueError as exc:
        raise DevError(f"{env_var}: {exc}") from None


# --------------------------------------------------------------------------- secrets


def dev_secrets(var_dir: Path, settings: Settings) -> dict[str, str]:
    """The shared secrets as env vars: the configured ones, else ones generated once into var_dir."""
    given = {
        "SMM_INTERNAL_TOKEN": settings.internal_token.get_secret_value(),
        "SMM_PAGE_TOKEN_SECRET": settings.page_token_secret.get_secret_value(),
        "SMM_ENCRYPTION_KEYS": settings.encryption_keys.get_secret_value(),
        "SMM_DEMO_PROVIDER_KEY": settings.demo_provider_key.get_secret_value(),
    }
    path = var_dir / SECRETS_FILE
    stored = _read_secrets(path)
    missing = [name for name, value in given.items() if not value and not stored.get(name)]
    if missing:
        stored.update({name: _new_secret(name) for name in missing})
        _write_private_json(path, stored)
    return {name: value or stored[name] for name, value in given.items()}


def local_internal_token(settings: Settings) -> SecretStr:
    """The internal token `smm dev` generated under the var dir ("" when there is none)."""
    try:
        stored = _read_secrets(Path(settings.var_dir) / SECRETS_FILE)
    except DevError:
        return SecretStr("")
    return SecretStr(stored.get("SMM_INTERNAL_TOKEN", ""))


def _new_secret(name: str) -> str:
    return new_key_config("dev1") if name == "SMM_ENCRYPTION_KEYS" else secrets.token_urlsafe(32)


def _read_secrets(path: Path) -> dict[str, str]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise DevError(
            f"cannot read {path} ({type(exc).__name__}); delete it to generate new dev secrets"
        ) from None
    if not isinstance(raw, dict) or not all(isinstance(v, str) for v in raw.values()):
        raise DevError(f"{path} is not a JSON object of strings; delete it to generate new dev secrets")
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return {str(k): v for k, v in raw.items()}


def _write_private_json(path: Path, data: Mapping[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fh.fileno(), 0o600)  # O_CREAT leaves the mode of a leftover file as it was
        json.dump(dict(data), fh, indent=2, sort_keys=True)
        fh.write("\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


# --------------------------------------------------------------------------- PostgreSQL and NATS


def ensure_database(server_url: str, name: str) -> str:
    """A URL for database `name` on the server behind `server_url`, creating it if missing."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    if found is None:
        with contextlib.suppress(pg_errors.DuplicateDatabase):
            return embedded.create_database(server_url, name)
    return urlunsplit(urlsplit(server_url)._replace(path="/" + quote(name, safe="")))


def _database_url(settings: Settings, var_dir: Path, stack: contextlib.ExitStack, children: _Children) -> str:
    if settings.database_url:
        return settings.database_url
    port = _remembered_port(var_dir, "postgres", embedded.PG_PORT_ENV)
    server = embedded.start_postgres(var_dir / "postgres", port, durable=True)
    stack.callback(server.stop)
    children.watch("embedded PostgreSQL", server.is_running)
    return ensure_database(server.url, DATABASE)


def _nats_url(settings: Settings, var_dir: Path, stack: contextlib.ExitStack, children: _Children) -> str:
    if settings.nats_url:
        return settings.nats_url
    port = _remembered_port(var_dir, "nats", embedded.NATS_PORT_ENV)
    server = embedded.start_nats(var_dir / "nats", port)
    stack.callback(server.stop)
    children.watch("embedded NATS", server.is_running)
    return server.url


def redact_url(url: str) -> str:
    """`url` (a URL or a libpq key=value string) without its password."""
    if "://" not in url:
        params = {k: v for k, v in pg_conninfo.conninfo_to_dict(url).items() if k != "password"}
        return pg_conninfo.make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}@{host}"
    elif "@" in netloc and not parts.scheme.startswith("postgres"):
        # nats://TOKEN@host: a user part alone is the token, not a name.
        netloc = "***@" + netloc.rpartition("@")[2]
    query = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k != "password"])
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def scrub_url_secret(message: str, url: str) -> str:
    """``message`` without the password (or token) of ``url``, found by hand: libpq quotes the bad
    part of a malformed URL in its errors, and such a URL does not parse (nor is it parsed here:
    an unclosed ``[`` or a mistyped ``postgresql//`` scheme must not let the password through)."""
    if "://" in url:
        userinfo = url.partition("://")[2].rpartition("@")[0]
        secret = userinfo.partition(":")[2] or (userinfo if not url.startswith("postgres") else "")
    else:  # no scheme (or a mistyped one): libpq quotes the whole string back
        secret = url.rpartition("@")[0].rpartition("/")[2].partition(":")[2]
    for text in {secret, *(part for part in re.split(r"[%:]", secret) if len(part) >= 4)} - {""}:
        message = message.replace(text, "***")
    params = dict(parse_qsl(url.partition("?")[2]))
    if params.get("password"):
        message = message.replace(params["password"], "***")
    return message


# --------------------------------------------------------------------------- children


@dataclass(frozen=True)
class ChildSpec:
    name: str
    args: tuple[str, ...]  # after `python -m ops.cli`
    env: Mapping[str, str]  # on top of the shared environment


def plan_children(layout: Layout, workers: Sequence[str], copies: int) -> list[ChildSpec]:
    specs = []
    if layout.demo is not None:  # first: the seeding syncs it as soon as the server is up
        specs.append(
            ChildSpec("demo-provider", ("demo-provider",), {"SMM_DEMO_PROVIDER_ADDR": str(layout.demo)})
        )
    specs += [
        ChildSpec(f"grpc-{i}", ("serve", "grpc"), {"SMM_GRPC_ADDR": str(addr)})
        for i, addr in enumerate(layout.grpc, start=1)
    ]
    specs += [
        ChildSpec(f"edge-{i}", ("serve", "edge"), {"SMM_EDGE_ADDR": str(addr)})
        for i, addr in enumerate(layout.edges, start=1)
    ]
    specs += [
        ChildSpec(f"worker-{name}-{i}", ("worker", name), {})
        for name in workers
        for i in range(1, copies + 1)
    ]
    return specs


@dataclass(frozen=True)
class _Child:
    name: str
    process: subprocess.Popen[bytes]


class _Children:
    def __init__(self) -> None:
        self._children: list[_Child] = []
        # The embedded servers smm dev started (PostgreSQL, NATS): each one's name and liveness,
        # and how many checks in a row found it gone (PostgreSQL's is read from its pid file,
        # which it rewrites now and then: one odd read is not a death).
        self._servers: list[tuple[str, Callable[[], bool]]] = []
        self._missed: dict[str, int] = {}

    def watch(self, name: str, is_running: Callable[[], bool]) -> None:
        self._servers.append((name, is_running))

    def start(self, spec: ChildSpec, shared_env: Mapping[str, str]) -> None:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", *spec.args],
            env={**os.environ, **shared_env, **spec.env},
            stdin=subprocess.DEVNULL,
        )
        self._children.append(_Child(spec.name, process))

    def check(self) -> None:
        for child in self._children:
            code = child.process.poll()
            if code is not None:
                raise ChildExited(f"{child.name} (pid {child.process.pid}) exited with code {code}")
        for name, is_running in self._servers:
            self._missed[name] = 0 if is_running() else self._missed.get(name, 0) + 1
            if self._missed[name] >= _SERVER_GONE_AFTER:
                raise ChildExited(f"the {name} stopped")

    def stop(self, grace_s: float = STOP_GRACE_S) -> None:
        """SIGTERM to every child still running, then SIGKILL to those alive after `grace_s`."""
        alive = [c for c in self._children if c.process.poll() is None]
        for child in alive:
            with contextlib.suppress(ProcessLookupError):
                child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for child in alive:
            try:
                child.process.wait(timeout=max(deadline - time.monotonic(), 0))
            except subprocess.TimeoutExpired:
                _say(f"{child.name} (pid {child.process.pid}) did not stop within {grace_s:g}s; killing it")
                child.process.kill()
                child.process.wait()


async def _while_alive(children: _Children, work: Awaitable[T]) -> T:
    """Await `work`, giving up with ChildExited as soon as a child process dies."""
    task = asyncio.ensure_future(work)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=_POLL_S)
            if done:
                return task.result()
            children.check()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def wait_for_edge(base_url: str, timeout_s: float) -> None:
    """Return once GET `base_url`/api/v1/public/health answers 200; TimeoutError otherwise."""
    await wait_for_http(base_url + EDGE_HEALTH_PATH, timeout_s, "the edge")


async def wait_for_http(url: str, timeout_s: float, what: str) -> None:
    """Return once GET `url` answers 200; TimeoutError naming `what` otherwise."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last = "no answer"
    # trust_env=False: a proxy from HTTP_PROXY must not stand between us and our own loopback server.
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while loop.time() < deadline:
            try:
                reply = await client.get(url)
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            else:
                if reply.status_code == httpx.codes.OK:
                    return
                last = f"HTTP {reply.status_code}"
            await asyncio.sleep(_POLL_S)
    raise TimeoutError(f"{what} at {url} did not answer 200 within {timeout_s:g}s (last answer: {last})")


async def _become_ready(
    settings: Settings, layout: Layout, children: _Children, start_workers: Callable[[], None]
) -> None:
    metadata = internal_metadata(settings, TOOL)
    for addr in layout.grpc:
        await _while_alive(children, wait_for_grpc(str(addr.dial), GRPC_READY_TIMEOUT_S, metadata=metadata))
    # Workers call the gRPC server from their first moment: started before it listens, each
    # scheduled job logged a connection-refused retry.
    start_workers()
    if layout.demo is not None:
        api_url = f"http://{layout.demo.dial}/api/v2"
        await _while_alive(children, wait_for_http(api_url, EDGE_READY_TIMEOUT_S, "the demo provider"))
        synced = await _while_alive(children, seed_demo_provider(layout.grpc_target, settings, api_url))
        if synced is not None:
            _say(f"no providers yet: added the demo provider at {api_url} and synced {synced} services")
    elif await _while_alive(children, seed_catalog(layout.grpc_target, settings)):
        _say("the catalog was empty: seeded demo categories and services")
    password = await _while_alive(children, seed_admin(layout.grpc_target, settings))
    if password:
        # Shown once, on the operator's own terminal; only its Argon2id hash is stored.
        _say(f"created the first admin: {SEED_ADMIN_EMAIL} / {password}  (shown once: write it down)")
    for addr in layout.edges:
        await _while_alive(children, wait_for_edge(f"http://{addr.dial}", EDGE_READY_TIMEOUT_S))


# --------------------------------------------------------------------------- output and signals


def _say(message: str) -> None:
    print(f"smm dev: {message}", file=sys.stderr, flush=True)


def _print_urls(layout: Layout, database_url: str, nats_url: str) -> None:
    edges = [f"http://{a.dial}" for a in layout.edges]
    rows = [
        ("edge API", ", ".join(f"{e}/api/v1" for e in edges)),
        ("Swagger UI", f"{edges[0]}/api/v1/docs"),
        ("OpenAPI", f"{edges[0]}/api/v1/openapi.json"),
        ("gRPC", ", ".join(str(a.dial) for a in layout.grpc)),
        *([("demo provider", f"http://{layout.demo.dial}/api/v2")] if layout.demo else []),
        ("PostgreSQL", redact_url(database_url)),
        ("NATS", redact_url(nats_url)),
    ]
    lines = [f"  {label + ':':<12} {value}" for label, value in rows]
    print("\n".join(["smm dev is up (Ctrl-C stops everything; data is kept):", *lines]), flush=True)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    # SIGINT's handler (Python's, or asyncio.run's while it runs) then stops us like a Ctrl-C would.
    signal.raise_signal(signal.SIGINT)


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _ignore_interrupts() -> None:
    """Let the shutdown finish: a second Ctrl-C must not leave PostgreSQL running."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


# --------------------------------------------------------------------------- the supervisor


def run_dev(settings: Settings, *, copies: int = 1) -> int:
    """Run the panel until Ctrl-C or SIGTERM (0), a child's death (1) or a taken port (2)."""
    if copies < 1:
        _say(f"--copies must be at least 1, not {copies}")
        return EXIT_USAGE
    with _terminate_as_interrupt():
        stack = contextlib.ExitStack()
        try:
            code = _guarded(lambda: _run(settings, copies, stack), settings.database_url or "")
        finally:
            try:
                _ignore_interrupts()
            finally:
                closed = _guarded(lambda: _close(stack))
        return code if code != EXIT_OK else closed


def _run(settings: Settings, copies: int, stack: contextlib.ExitStack) -> int:
    layout = plan_layout(settings, copies)
    _check_ports(layout)
    var_dir = Path(settings.var_dir).resolve()
    var_dir.mkdir(parents=True, exist_ok=True)
    shared_secrets = dev_secrets(var_dir, settings)
    children = _Children()
    database_url = _database_url(settings, var_dir, stack, children)
    nats_url = _nats_url(settings, var_dir, stack, children)
    applied = migrate(database_url)
    if applied:
        _say(f"applied migrations {', '.join(applied)}")

    stack.callback(children.stop)
    shared_env = {
        **shared_secrets,
        "SMM_DATABASE_URL": database_url,
        "SMM_NATS_URL": nats_url,
        "SMM_GRPC_TARGET": layout.grpc_target,
        "SMM_VAR_DIR": str(var_dir),
        "PYTHONUNBUFFERED": "1",
    }
    specs = plan_children(layout, WORKERS, copies)
    workers = [spec for spec in specs if spec.args[0] == "worker"]
    for spec in specs:
        if spec.args[0] != "worker":
            children.start(spec, shared_env)

    def start_workers() -> None:
        for spec in workers:
            children.start(spec, shared_env)

    ready_settings = settings.model_copy(
        update={
            "internal_token": SecretStr(shared_secrets["SMM_INTERNAL_TOKEN"]),
            "page_token_secret": SecretStr(shared_secrets["SMM_PAGE_TOKEN_SECRET"]),
            "encryption_keys": SecretStr(shared_secrets["SMM_ENCRYPTION_KEYS"]),
            "demo_provider_key": SecretStr(shared_secrets["SMM_DEMO_PROVIDER_KEY"]),
        }
    )
    asyncio.run(_become_ready(ready_settings, layout, children, start_workers))
    _print_urls(layout, database_url, nats_url)
    while True:
        children.check()
        time.sleep(_POLL_S)


def _close(stack: contextlib.ExitStack) -> int:
    stack.close()
    return EXIT_OK


def _guarded(step: Callable[[], int], database_url: str = "") -> int:
    """Run `step`, turning the failures smm dev expects into one line and an exit code."""
    try:
        return step()
    except KeyboardInterrupt:
        _say("stopping")
        return EXIT_OK
    except (PortTaken, embedded.PortInUse) as exc:
        _say(str(exc))
        return EXIT_USAGE
    except ChildExited as exc:
        _say(f"{exc}; stopping the rest")
        return EXIT_FAILED
    except (DevError, embedded.EmbeddedError, MigrationError, TimeoutError) as exc:
        _say(str(exc))
        return EXIT_FAILED
    except psycopg.Error as exc:
        _say(f"PostgreSQL: {scrub_url_secret(str(exc), database_url)}")
        return EXIT_FAILED
    except grpc.aio.AioRpcError as exc:
        _say(f"a gRPC call failed: {exc.code().name}: {exc.details()}")
        return EXIT_FAILED
