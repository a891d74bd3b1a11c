"""The bare servers of calibrate.py: `grpc PORT` (a grpc.aio echo) or `sanic PORT GRPC_PORT` (a
hello route and a JSON route that forwards each body to the echo and answers with its reply)."""

from __future__ import annotations

import json
import sys

import grpc
import uvloop
from sanic import HTTPResponse, Request, Sanic, response

ECHO = "/calibrate.Echo/Echo"


async def _echo(request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]) -> bytes:
    return request


async def _serve_grpc(port: int) -> None:
    server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(_echo)
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler("calibrate.Echo", {"Echo": handler}),)
    )
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def _sanic(grpc_port: int) -> Sanic:  # type: ignore[type-arg]
    app = Sanic("bench_calibrate")

    @app.before_server_start
    async def connect(app: Sanic, _: object) -> None:  # type: ignore[type-arg]
        app.ctx.channel = grpc.aio.insecure_channel(f"127.0.0.1:{grpc_port}")
        app.ctx.echo = app.ctx.channel.unary_unary(ECHO)

    @app.get("/hello")
    async def hello(request: Request) -> HTTPResponse:
        return response.text("hello")

    @app.post("/echo")
    async def echo(request: Request) -> HTTPResponse:
        reply = await app.ctx.echo(json.dumps(request.json).encode())
        return response.json(json.loads(reply))

    return app


if __name__ == "__main__":
    if sys.argv[1] == "grpc":
        uvloop.run(_serve_grpc(int(sys.argv[2])))
    else:
        _sanic(int(sys.argv[3])).run(
            host="127.0.0.1", port=int(sys.argv[2]), single_process=True, access_log=False, motd=False
        )
