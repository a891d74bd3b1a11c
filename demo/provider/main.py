"""Running the demo provider: blocking (``smm demo-provider``) or inside a running loop (tests)."""

from __future__ import annotations

import itertools
import socket
from dataclasses import dataclass
from typing import Any

from demo.provider.app import DemoApp, create_demo_app
from demo.provider.config import DemoConfig

__all__ = ["RunningDemo", "run", "start_demo_provider"]

_names = itertools.count(1)


def run(host: str, port: int, config: DemoConfig) -> None:
    """Serve until interrupted, in this process."""
    app = create_demo_app(config, "smm-demo-provider")
    app.run(host=host, port=port, single_process=True, access_log=False, motd=False)


@dataclass
class RunningDemo:
    app: DemoApp
    base_url: str  # http://127.0.0.1:<port>
    api_url: str  # base_url + "/api/v2"
    port: int
    server: Any  # sanic.server.AsyncioServer

    @property
    def config(self) -> DemoConfig:
        return self.app.ctx.config

    async def stop(self) -> None:
        await self.server.before_stop()
        self.server.close()
        await self.server.wait_closed()
        await self.server.after_stop()


async def start_demo_provider(
    config: DemoConfig, host: str = "127.0.0.1", port: int = 0, *, name: str | None = None
) -> RunningDemo:
    """Start the demo on ``host:port`` (0: any free port) in the running event loop."""
    app = create_demo_app(config, name or f"smm-demo-provider-{next(_names)}")
    # Sanic's touch-up rewrites its HTTP classes once per process; with many apps in one process the
    # second rewrite fails, and it only prunes signal calls.
    app.config.TOUCHUP = False
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound_port: int = sock.getsockname()[1]
    server: Any = await app.create_server(
        sock=sock, return_asyncio_server=True, access_log=False, debug=False
    )
    assert server is not None
    await server.startup()
    await server.before_start()
    await server.after_start()
    base_url = f"http://{host}:{bound_port}"
    return RunningDemo(app, base_url, f"{base_url}/api/v2", bound_port, server)
