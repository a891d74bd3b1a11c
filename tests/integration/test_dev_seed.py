"""`smm dev` and its pieces: dev secrets, the port check, the health waits and the catalog seed."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from pydantic import SecretStr
from smm.v1 import catalog_service_pb2 as pb
from smm.v1 import catalog_service_pb2_grpc as pb_grpc

from core.config import Settings
from demo.provider.catalog import CATALOG as DEMO_CATALOG
from ops.dev import (
    SECRETS_FILE,
    Address,
    DevError,
    check_port_free,
    dev_secrets,
    plan_children,
    plan_layout,
    redact_url,
    run_dev,
    wait_for_edge,
)
from ops.embedded import free_port
from ops.grpc_client import internal_metadata, wait_for_grpc
from ops.seed import CATEGORIES, SERVICES, seed_catalog, seed_demo_provider
from server.common.secretbox import SecretBox
from server.main import ServerHandle
from tests.fix_demo import DemoHandle
from tests.fix_grpc import anonymous_metadata

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SECRET_VARS = ("SMM_INTERNAL_TOKEN", "SMM_PAGE_TOKEN_SECRET", "SMM_ENCRYPTION_KEYS", "SMM_DEMO_PROVIDER_KEY")


def _bare_settings(var_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "var_dir": str(var_dir),
        "internal_token": SecretStr(""),
        "page_token_secret": SecretStr(""),
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def occupied_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


# --------------------------------------------------------------------------- dev secrets


def test_dev_secrets_are_generated_once_private_and_reused(tmp_path: Path) -> None:
    settings = _bare_settings(tmp_path)
    first = dev_secrets(tmp_path, settings)
    path = tmp_path / SECRETS_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert set(first) == set(SECRET_VARS)
    assert all(len(value) >= 40 for value in first.values())
    assert first["SMM_INTERNAL_TOKEN"] != first["SMM_PAGE_TOKEN_SECRET"]
    # The encryption key is in SecretBox's own format, so the server accepts it as generated.
    assert SecretBox.from_config(first["SMM_ENCRYPTION_KEYS"]).current_id == "dev1"
    written = path.stat().st_mtime_ns

    assert dev_secrets(tmp_path, settings) == first
    assert path.stat().st_mtime_ns == written  # reused, not rewritten


def test_dev_secrets_prefer_configured_values(tmp_path: Path) -> None:
    generated = dev_secrets(tmp_path, _bare_settings(tmp_path))
    configured = _bare_settings(tmp_path, internal_token=SecretStr("from-the-environment"))
    values = dev_secrets(tmp_path, configured)
    assert values["SMM_INTERNAL_TOKEN"] == "from-the-environment"
    assert values["SMM_PAGE_TOKEN_SECRET"] == generated["SMM_PAGE_TOKEN_SECRET"]
    # The configured secret is not copied into the file.
    assert "from-the-environment" not in (tmp_path / SECRETS_FILE).read_text()


def test_dev_secrets_tighten_a_loose_file(tmp_path: Path) -> None:
    first = dev_secrets(tmp_path, _bare_settings(tmp_path))
    path = tmp_path / SECRETS_FILE
    path.chmod(0o644)
    assert dev_secrets(tmp_path, _bare_settings(tmp_path)) == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- ports and layout


def test_port_check_names_the_port_and_the_variable(occupied_port: int) -> None:
    problem = check_port_free(Address("127.0.0.1", occupied_port), "SMM_EDGE_ADDR")
    assert problem is not None
    assert str(occupied_port) in problem
    assert "SMM_EDGE_ADDR" in problem
    assert "\n" not in problem
    assert check_port_free(Address("127.0.0.1", free_port()), "SMM_EDGE_ADDR") is None


@pytest.mark.parametrize("env_var", ["SMM_EDGE_ADDR", "SMM_GRPC_ADDR"])
def test_run_dev_refuses_a_taken_port_in_one_line(
    tmp_path: Path, occupied_port: int, env_var: str, capsys: pytest.CaptureFixture[str]
) -> None:
    addrs = {"SMM_EDGE_ADDR": f"127.0.0.1:{free_port()}", "SMM_GRPC_ADDR": f"127.0.0.1:{free_port()}"}
    addrs[env_var] = f"127.0.0.1:{occupied_port}"
    var_dir = tmp_path / "var"
    settings = _bare_settings(var_dir, edge_addr=addrs["SMM_EDGE_ADDR"], grpc_addr=addrs["SMM_GRPC_ADDR"])

    assert run_dev(settings) == 2

    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("\n") == 1
    assert str(occupied_port) in err
    assert env_var in err
    assert "Traceback" not in err
    assert not var_dir.exists()  # nothing was started


def test_copies_listen_on_consecutive_ports_and_dial_the_first_grpc_server(tmp_path: Path) -> None:
    settings = _bare_settings(
        tmp_path, grpc_addr="0.0.0.0:50051", edge_addr="127.0.0.1:8080", demo_provider_addr="127.0.0.1:8090"
    )
    layout = plan_layout(settings, 2)
    assert [str(a) for a in layout.grpc] == ["0.0.0.0:50051", "0.0.0.0:50052"]
    assert [str(a) for a in layout.edges] == ["127.0.0.1:8080", "127.0.0.1:8081"]
    assert layout.grpc_target == "127.0.0.1:50051"

    specs = plan_children(layout, ["dispatch"], 2)
    assert [(s.name, s.args) for s in specs] == [
        ("demo-provider", ("demo-provider",)),
        ("grpc-1", ("serve", "grpc")),
        ("grpc-2", ("serve", "grpc")),
        ("edge-1", ("serve", "edge")),
        ("edge-2", ("serve", "edge")),
        ("worker-dispatch-1", ("worker", "dispatch")),
        ("worker-dispatch-2", ("worker", "dispatch")),
    ]
    assert specs[0].env == {"SMM_DEMO_PROVIDER_ADDR": "127.0.0.1:8090"}
    assert specs[2].env == {"SMM_GRPC_ADDR": "0.0.0.0:50052"}
    assert specs[4].env == {"SMM_EDGE_ADDR": "127.0.0.1:8081"}
    without_demo = plan_layout(_bare_settings(tmp_path, demo_provider_addr=""), 1)
    assert without_demo.demo is None
    assert [s.name for s in plan_children(without_demo, [], 1)] == ["grpc-1", "edge-1"]
    with pytest.raises(DevError, match="overlaps"):
        plan_layout(
            _bare_settings(tmp_path, edge_addr="127.0.0.1:8090", demo_provider_addr="127.0.0.1:8090"), 1
        )


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://postgres@127.0.0.1:5432/smm", "postgresql://postgres@127.0.0.1:5432/smm"),
        ("postgresql://smm:s3cret@db.internal:5432/smm", "postgresql://smm@db.internal:5432/smm"),
        ("postgresql://db/smm?sslmode=require&password=s3cret", "postgresql://db/smm?sslmode=require"),
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
    ],
)
def test_urls_are_shown_without_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_conninfo_strings_are_shown_without_passwords() -> None:
    shown = redact_url("host=db dbname=smm password=s3cret")
    assert "s3cret" not in shown
    assert "dbname=smm" in shown


# --------------------------------------------------------------------------- readiness waits


def test_internal_metadata(settings: Settings) -> None:
    assert internal_metadata(settings, "seed") == (
        ("x-smm-internal-token", settings.internal_token.get_secret_value()),
        ("x-smm-actor", "system:seed"),
    )


async def test_wait_for_grpc_returns_once_serving(grpc_server: ServerHandle, settings: Settings) -> None:
    await wait_for_grpc(f"127.0.0.1:{grpc_server.port}", 5.0, metadata=internal_metadata(settings, "dev"))


async def test_wait_for_grpc_times_out_without_the_token(grpc_server: ServerHandle) -> None:
    with pytest.raises(TimeoutError, match="UNAUTHENTICATED"):
        await wait_for_grpc(f"127.0.0.1:{grpc_server.port}", 0.5)


async def test_wait_for_grpc_times_out_when_nothing_listens() -> None:
    target = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(TimeoutError, match=target):
        await wait_for_grpc(target, 0.5)
    assert time.monotonic() - started < 3


async def test_wait_for_edge_times_out_when_nothing_listens() -> None:
    with pytest.raises(TimeoutError, match="/api/v1/public/health"):
        await wait_for_edge(f"http://127.0.0.1:{free_port()}", 0.5)


# --------------------------------------------------------------------------- seeding


async def _on_sale(channel: grpc.aio.Channel) -> tuple[list[str], list[pb.Service]]:
    stub = pb_grpc.CatalogServiceStub(channel)
    categories = await stub.ListCategories(pb.ListCategoriesRequest(), metadata=anonymous_metadata())
    services = await stub.ListServices(pb.ListServicesRequest(), metadata=anonymous_metadata())
    return [c.name for c in categories.categories], list(services.services)


async def test_seed_fills_an_empty_catalog_once(
    grpc_server: ServerHandle, channel: grpc.aio.Channel, settings: Settings
) -> None:
    target = f"127.0.0.1:{grpc_server.port}"
    assert await seed_catalog(target, settings) is True

    categories, services = await _on_sale(channel)
    assert categories == list(CATEGORIES)
    assert [s.name for s in services] == [spec.service.name for spec in SERVICES]
    types = {s.type for s in services}
    assert {
        pb.SERVICE_TYPE_DEFAULT,
        pb.SERVICE_TYPE_PACKAGE,
        pb.SERVICE_TYPE_CUSTOM_COMMENTS,
        pb.SERVICE_TYPE_POLL,
        pb.SERVICE_TYPE_SUBSCRIPTIONS,
    } <= types
    followers = services[0]
    assert (followers.refill, followers.refill_days, followers.dripfeed) == (True, 30, True)
    assert followers.rate == "0.90"

    assert await seed_catalog(target, settings) is False
    assert len((await _on_sale(channel))[1]) == len(SERVICES)


async def test_seed_runs_that_overlap_create_everything_once(
    grpc_server: ServerHandle, channel: grpc.aio.Channel, settings: Settings
) -> None:
    # Both runs see an empty catalog; the request ids make the second one get the first's rows.
    target = f"127.0.0.1:{grpc_server.port}"
    runs = await asyncio.gather(seed_catalog(target, settings), seed_catalog(target, settings))
    assert list(runs) == [True, True]
    categories, services = await _on_sale(channel)
    assert categories == list(CATEGORIES)
    assert len(services) == len(SERVICES)


async def test_seed_adds_the_demo_provider_once_and_sells_its_services(
    grpc_server: ServerHandle, channel: grpc.aio.Channel, settings: Settings, demo_provider: DemoHandle
) -> None:
    target = f"127.0.0.1:{grpc_server.port}"
    keyed = settings.model_copy(update={"demo_provider_key": SecretStr(demo_provider.api_key)})
    assert await seed_demo_provider(target, keyed, demo_provider.api_url) == len(DEMO_CATALOG)
    _, services = await _on_sale(channel)
    assert len(services) == len(DEMO_CATALOG)
    assert await seed_demo_provider(target, keyed, demo_provider.api_url) is None  # a provider exists


# --------------------------------------------------------------------------- the whole supervisor


def _wait_for_text(path: Path, text: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in path.read_text(encoding="utf-8", errors="replace"):
        assert process.poll() is None, f"smm dev exited with {process.returncode}"
        assert time.monotonic() < deadline, f"{text!r} did not appear in {path}"
        time.sleep(0.2)


@dataclass(frozen=True)
class _Dev:
    process: subprocess.Popen[bytes]
    edge: str
    out: Path
    err: Path


@pytest.fixture
def smm_dev(db_url: str, tmp_path: Path) -> Iterator[_Dev]:
    """`smm dev` in a subprocess against a test database, up and serving."""
    edge = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SMM_")}
    env.update(
        SMM_DATABASE_URL=db_url,
        SMM_VAR_DIR=str(tmp_path / "var"),
        SMM_EDGE_ADDR=edge,
        SMM_GRPC_ADDR=f"127.0.0.1:{free_port()}",
        SMM_DEMO_PROVIDER_ADDR=f"127.0.0.1:{free_port()}",
    )
    out, err = tmp_path / "out.log", tmp_path / "err.log"
    with out.open("wb") as out_fh, err.open("wb") as err_fh:
        process = subprocess.Popen(
            [sys.executable, "-m", "ops.cli", "dev"],
            cwd=ROOT,
            env=env,
            stdout=out_fh,
            stderr=err_fh,
            start_new_session=True,  # its own process group: a failed test can take all of it down
        )
    try:
        _wait_for_text(out, "smm dev is up", process, 60)
        yield _Dev(process, edge, out, err)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):  # children a killed `smm dev` could not stop
            os.killpg(process.pid, signal.SIGKILL)


def _child_pid(parent: int, *command: str) -> int:
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    for pid in children:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
        if list(command) == argv[-len(command) - 1 : -1]:
            return int(pid)
    raise AssertionError(f"no child runs {command}")


@pytest.mark.slow
def test_smm_dev_serves_the_seeded_catalog_and_stops_on_sigterm(smm_dev: _Dev, tmp_path: Path) -> None:
    reply = httpx.get(f"http://{smm_dev.edge}/api/v1/public/services", trust_env=False)
    assert reply.status_code == 200
    assert len(reply.json()["services"]) == len(DEMO_CATALOG)  # the demo provider's, synced
    printed = smm_dev.out.read_text()
    assert f"http://{smm_dev.edge}/api/v1/docs" in printed
    generated = json.loads((tmp_path / "var" / SECRETS_FILE).read_text())
    assert all(value not in printed + smm_dev.err.read_text() for value in generated.values())
    # The workers start once the gRPC server answers: no job retried against a closed port.
    assert "Connection refused" not in printed + smm_dev.err.read_text()

    smm_dev.process.send_signal(signal.SIGTERM)
    assert smm_dev.process.wait(timeout=30) == 0
    assert "Traceback" not in smm_dev.err.read_text()


@pytest.mark.slow
def test_smm_dev_stops_everything_when_a_child_dies(smm_dev: _Dev) -> None:
    edge_pid = _child_pid(smm_dev.process.pid, "serve", "edge")
    os.kill(_child_pid(smm_dev.process.pid, "serve", "grpc"), signal.SIGKILL)
    assert smm_dev.process.wait(timeout=30) == 1
    assert "grpc-1" in smm_dev.err.read_text()
    assert not Path(f"/proc/{edge_pid}").exists()  # stopped and reaped, not left behind


@pytest.mark.slow
def test_smm_dev_stops_everything_when_its_embedded_nats_dies(smm_dev: _Dev) -> None:
    """smm dev watched only the processes it ran itself: with its embedded NATS gone, it went on
    as if all were well (every process retrying for ever), and said nothing."""
    parent = smm_dev.process.pid
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    [nats_pid] = [
        int(pid)
        for pid in children
        if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"nats-server")
    ]
    edge_pid = _child_pid(parent, "serve", "edge")
    os.kill(nats_pid, signal.SIGKILL)
    assert smm_dev.process.wait(timeout=30) == 1
    assert "embedded NATS" in smm_dev.err.read_text()
    assert not Path(f"/proc/{edge_pid}").exists()
