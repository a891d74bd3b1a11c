"""The edge: Sanic serving /api/v1 by transcoding HTTP to the gRPC services.

Every route comes from the google.api.http annotations (``edge/routes.py``); there is no
hand-written handler for an annotated RPC. The few routes the edge owns itself are the
OpenAPI document and its Swagger UI.
"""

from __future__ import annotations

import asyncio
import json as jsonlib
import logging
from pathlib import Path
from typing import Any, cast
from urllib.parse import unquote

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from opentelemetry.instrumentation.grpc import aio_client_interceptors
from sanic import HTTPResponse, Request, Sanic
from sanic.config import Config
from sanic.exceptions import NotFound, PayloadTooLarge, RequestCancelled, ServiceUnavailable
from sanic.handlers import ErrorHandler
from sanic.http import Http
from sanic.response import file, raw
from sanic.response.convenience import guess_content_type

from core import tracing
from core.config import Settings
from core.events import Namespace, connect
from edge import docs_page, openapi
from edge.cache import connection_callbacks, listen
from edge.context import EdgeContext, parse_proxies
from edge.errors import FALLBACK_BODY, error_info, http_status, render_error, status_from_rpc_error
from edge.headers import API_SECURITY_HEADERS, DOCS_CSP, forward_metadata, request_id
from edge.reseller import add_reseller_routes, is_reseller_path, protocol_error
from edge.routes import Route, compile_routes
from edge.routing import add_route
from edge.spans import server_span
from edge.transcode import TranscodeError, decode_request, encode_response

log = logging.getLogger(__name__)
JSON = "application/json; charset=utf-8"
EdgeApp = Sanic[Config, EdgeContext]


def create_app(settings: Settings, *, name: str = "smm-edge", routes: list[Route] | None = None) -> EdgeApp:
    compiled = routes if routes is not None else compile_routes()  # a bad HTTP rule stops start-up here
    ctx = EdgeContext(
        settings=settings,
        routes=compiled,
        trusted_proxies=parse_proxies(settings.trusted_proxies),
        cors_origins=frozenset(o.strip() for o in settings.cors_origins.split(",") if o.strip()),
    )
    app: EdgeApp = Sanic(name, ctx=ctx, configure_logging=False, error_handler=JsonErrorHandler())
    app.config.REQUEST_MAX_SIZE = settings.max_body_bytes
    app.config.KEEP_ALIVE_TIMEOUT = 30
    # The reseller `add` reads it too: its attempts share a budget that ends before it.
    app.config.RESPONSE_TIMEOUT = settings.response_timeout_s  # type: ignore[assignment]  # typed int, takes a float
    app.config.FALLBACK_ERROR_FORMAT = "json"
    for index, route in enumerate(compiled):
        add_route(
            app,
            _rpc_handler(route),
            route.sanic_path,
            methods=_with_head([route.http_method]),
            name=f"rpc{index}",
            strict_slashes=False,
        )
    _add_preflight_routes(app, compiled)
    _add_docs_routes(app)
    add_reseller_routes(app, ctx)
    app.before_server_start(_open_channel)
    app.after_server_stop(_close_channel)
    # One response middleware and no request middleware: every handler is on the hot path.
    app.on_response(_finish_response)  # type: ignore[no-untyped-call]
    return app


def _with_head(methods: list[str]) -> list[str]:
    """HEAD wherever GET is (RFC 9110 9.3.2): uptime monitors and link checkers send it, and a
    501 read as the service being down. Sanic answers it with the GET's headers and no body."""
    return [*methods, "HEAD"] if "GET" in methods else methods


async def _open_channel(app: EdgeApp) -> None:
    ctx = app.ctx
    ctx.channel = grpc.aio.insecure_channel(
        ctx.settings.grpc_dial_target,
        interceptors=aio_client_interceptors() if tracing.enabled() else None,  # type: ignore[no-untyped-call]
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    for route in ctx.routes:
        ctx.calls[route.rpc] = ctx.channel.unary_unary(
            route.rpc,
            request_serializer=route.request_class.SerializeToString,
            response_deserializer=route.response_class.FromString,
        )
    ctx.openapi = openapi.build_openapi(ctx.routes)
    ctx.openapi_body = jsonlib.dumps(ctx.openapi, separators=(",", ":")).encode()
    if ctx.settings.nats_url:
        # The edge serves without NATS (uncached); it keeps trying to connect in the background.
        ctx.nats_task = asyncio.create_task(_connect_nats(ctx), name="edge-nats")


async def _connect_nats(ctx: EdgeContext) -> None:
    while True:
        try:
            nc = await connect(ctx.settings.nats_url, name="smm-edge", **connection_callbacks(ctx.cache))
        except Exception as exc:
            log.warning("edge cannot reach NATS (%s); serving uncached, retrying", type(exc).__name__)
            await asyncio.sleep(5)
            continue
        ctx.nats = nc
        await listen(nc, Namespace(ctx.settings.nats_namespace), ctx.cache)
        return


async def _close_channel(app: EdgeApp) -> None:
    if app.ctx.nats_task is not None:
        app.ctx.nats_task.cancel()
        await asyncio.gather(app.ctx.nats_task, return_exceptions=True)
    if app.ctx.nats is not None:
        # Only a cache-invalidation subscription lives here: nothing to drain.
        await app.ctx.nats.close()
    if app.ctx.channel is not None:
        await app.ctx.channel.close()


async def _finish_response(request: Request, response: HTTPResponse) -> None:
    headers = response.headers
    origin = request.headers.get("origin")
    if origin and origin in request.app.ctx.cors_origins:
        headers["Access-Control-Allow-Origin"] = origin
        headers["Access-Control-Expose-Headers"] = "X-Request-Id, Retry-After, WWW-Authenticate"
        headers["Vary"] = "Origin"
    headers["X-Request-Id"] = request_id(request)
    if "content-security-policy" in headers:  # the docs page sets its own policy
        for header, value in API_SECURITY_HEADERS.items():
            headers.setdefault(header, value)
    else:
        headers.update(API_SECURITY_HEADERS)


def _rpc_handler(route: Route) -> Any:
    async def handle(request: Request, **path_params: str) -> HTTPResponse:
        ctx = cast(EdgeContext, request.app.ctx)
        rid = request_id(request)
        cache_key: tuple[object, ...] | None = None
        if route.cache_group and "authorization" not in request.headers:
            cache_key = (route.rpc, tuple(sorted(path_params.items())), tuple(sorted(request.query_args)))
            cached = ctx.cache.get(route.cache_group, cache_key)
            if cached is not None:
                return raw(cached, content_type=JSON)
            generation = ctx.cache.generation(route.cache_group)
        with server_span(request, route.http_method, route.template, rid) as span:
            try:
                message = decode_request(
                    route,
                    body=request.body,
                    content_type=request.content_type or "",
                    path_params=_unescape_path(path_params),
                    query=request.query_args,
                )
                _apply_idempotency_key(request, message)
            except TranscodeError as exc:
                return invalid_argument(exc.message, exc.field)
            metadata = forward_metadata(request, route, ctx, rid)
            timeout = route.timeout_s or ctx.settings.rpc_timeout_s
            try:
                response = await ctx.calls[route.rpc](message, metadata=metadata, timeout=timeout)
            except grpc.aio.AioRpcError as exc:
                code, text, details = status_from_rpc_error(exc)
                span.set_attribute("rpc.grpc.status_code", code.value[0])
                return error_response(code, text, details)
            span.set_attribute("http.response.status_code", 200)
            if route.raw_response:
                body = getattr(response, "data", b"")
                content_type = getattr(response, "content_type", "") or "application/octet-stream"
                return raw(body, content_type=content_type)
            body = _dumps(encode_response(route, response))
            if cache_key is not None:
                ctx.cache.put(route.cache_group, cache_key, body, generation)
            return raw(body, content_type=JSON)

    handle.__name__ = f"rpc_{route.method.containing_service.name}_{route.method.name}"
    return handle


def _unescape_path(path_params: dict[str, str]) -> dict[str, str]:
    """Path variables percent-decoded, as grpc-gateway hands them over (``%35`` is ``5``).

    Sanic matches on the raw path and passes the segments on still encoded (its own ``unquote``
    route option is applied per node of its routing tree, so it depends on the order the routes
    were added). A segment that does not decode to UTF-8 is refused."""
    try:
        return {name: unquote(value, errors="strict") for name, value in path_params.items()}
    except UnicodeDecodeError as exc:
        raise TranscodeError("a path parameter is not percent-encoded UTF-8") from exc


# As server/common/idempotency.py: the longest Idempotency-Key (request_id) taken.
MAX_REQUEST_ID = 200


def _apply_idempotency_key(request: Request, message: Any) -> None:
    key = request.headers.get("idempotency-key")
    if key and "request_id" in message.DESCRIPTOR.fields_by_name and not message.request_id:
        # Refused, not cut: two keys differing past the limit would name one request.
        if len(key) > MAX_REQUEST_ID:
            raise TranscodeError(f"Idempotency-Key: at most {MAX_REQUEST_ID} characters", "request_id")
        message.request_id = key


def _dumps(value: Any) -> bytes:
    return jsonlib.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def error_response(
    code: grpc.StatusCode,
    message: str,
    details: list[any_pb2.Any] | None = None,
    *,
    http_code: int | None = None,
) -> HTTPResponse:
    body = render_error(code, message, details, http_code=http_code)
    status = 500 if body is FALLBACK_BODY else http_code or http_status(code)
    response = raw(body, status=status, content_type=JSON)
    if code == grpc.StatusCode.UNAUTHENTICATED:
        response.headers["WWW-Authenticate"] = 'Bearer realm="smm"'
    retry_after = _retry_after(details or [])
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    return response


def _retry_after(details: list[any_pb2.Any]) -> int | None:
    for detail in details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return max(1, int(info.retry_delay.seconds))
    return None


def invalid_argument(message: str, field: str = "") -> HTTPResponse:
    # The same keys and violation reason as the servers' field errors (server/common/errors.py).
    details = [error_info("INVALID_ARGUMENT", "edge.smm", {"field": field, "fields": field} if field else {})]
    if field:
        violation = any_pb2.Any()
        violation.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=field, description=message, reason="INVALID_FIELD"
                    )
                ]
            )
        )
        details.append(violation)
    return error_response(grpc.StatusCode.INVALID_ARGUMENT, message, details)


# Sanic raises the same PayloadTooLarge for a request line plus headers over its header limit
# (sanic/http/http1.py, http1_request_header) and for a body over REQUEST_MAX_SIZE; only the
# message tells the two apart.
_SANIC_HEADER_LIMIT_MESSAGE = "Request header exceeds the size limit"


def _is_header_limit(exception: Exception) -> bool:
    return isinstance(exception, PayloadTooLarge) and str(exception) == _SANIC_HEADER_LIMIT_MESSAGE


# Sanic's RESPONSE_TIMEOUT (sanic/server/protocols/http_protocol.py, check_timeouts) cancels the
# handler and raises this 503; nothing else in Sanic or the edge raises ServiceUnavailable.
_SANIC_RESPONSE_TIMEOUT_MESSAGE = "Response Timeout"


def _is_response_timeout(exception: Exception) -> bool:
    return isinstance(exception, ServiceUnavailable) and str(exception) == _SANIC_RESPONSE_TIMEOUT_MESSAGE


def _log_response_timeout(request: Request) -> Any:
    """Expected under load, not a bug in the edge: a warning without a traceback."""
    timeout = request.app.config.RESPONSE_TIMEOUT
    log.warning(
        "response timeout after %s s: %s %s (request id %s)",
        timeout,
        request.method,
        request.path[:200],
        request_id(request),
    )
    return timeout


class JsonErrorHandler(ErrorHandler):
    """Renders the edge's own errors (no route, wrong method, bad request, body or headers too
    large, request or response timeout, unknown expectation) in the same AIP-193 shape as errors
    from the gRPC server."""

    def default(self, request: Request, exception: Exception) -> HTTPResponse:
        if isinstance(exception, RequestCancelled):
            # The client hung up and Sanic cancelled the handler: nobody reads this answer (the
            # 499 of grpc-gateway's CANCELLED), and it is no fault of the edge's.
            log.info(
                "client closed the connection first: %s %s (request id %s)",
                request.method,
                request.path[:200],
                request_id(request),
            )
            return error_response(grpc.StatusCode.CANCELLED, "the client closed the request")
        status = getattr(exception, "status_code", 500)
        if is_reseller_path(request.path, request.app.ctx.settings.reseller_v2_alias):
            if _is_response_timeout(exception):
                # As on the JSON API: the edge stopped waiting, and a cancel or refill may have
                # gone through, so the protocol's error says the outcome is unknown.
                _log_response_timeout(request)
                return protocol_error(504)
            if status >= 500:
                log.error("unhandled reseller error", exc_info=exception)
            if status == 413 and _is_header_limit(exception):
                status = 431
            return protocol_error(status)
        if status == 404:
            return error_response(
                grpc.StatusCode.NOT_FOUND,
                "no route matches this path",
                [error_info("ROUTE_NOT_FOUND", "edge.smm", {"path": request.path[:200]})],
            )
        if status == 405:
            return error_response(
                grpc.StatusCode.UNIMPLEMENTED,
                "this method is not allowed on this path",
                [error_info("METHOD_NOT_ALLOWED", "edge.smm", {"method": request.method})],
            )
        if status == 413 and _is_header_limit(exception):
            # 431 (RFC 6585) names the part that is too large; a client shortens its URL or
            # headers, where a 413 would send it looking at a body it may not even have.
            return error_response(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "the request line and headers are too large",
                [error_info("HEADERS_TOO_LARGE", "edge.smm", {"limit": str(Http.HEADER_MAX_SIZE)})],
                http_code=431,
            )
        if status == 413:
            return error_response(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                "the request body is too large",
                [
                    error_info(
                        "BODY_TOO_LARGE", "edge.smm", {"limit": str(request.app.config.REQUEST_MAX_SIZE)}
                    )
                ],
                http_code=413,
            )
        if status == 408:
            # Sanic's REQUEST_TIMEOUT: the request line and headers came too slowly. It stays a
            # 408 (a client may send it again, RFC 9110) rather than a 400 that says "fix it".
            return error_response(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the request was not received in time",
                [
                    error_info(
                        "REQUEST_TIMEOUT",
                        "edge.smm",
                        {"timeout_s": str(request.app.config.REQUEST_TIMEOUT)},
                    )
                ],
                http_code=408,
            )
        if status == 417:
            # An Expect header other than 100-continue (sanic/http/http1.py). Sanic answers before
            # it has a request object, so the header's value is not at hand here.
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the Expect header asks for something other than 100-continue",
                [error_info("EXPECTATION_FAILED", "edge.smm", {"header": "expect"})],
                http_code=417,
            )
        if _is_response_timeout(exception):
            # The handler ran past RESPONSE_TIMEOUT and was cancelled: the edge stopped waiting,
            # as when a gRPC call passes its deadline, so the same 504 DEADLINE_EXCEEDED (not
            # Sanic's 503, which says "safe to retry": a create may have committed meanwhile).
            timeout = _log_response_timeout(request)
            return error_response(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                "the response was not ready in time",
                [error_info("RESPONSE_TIMEOUT", "edge.smm", {"timeout_s": str(timeout)})],
            )
        if 400 <= status < 500:
            return error_response(
                grpc.StatusCode.INVALID_ARGUMENT,
                "the request is malformed",
                [error_info("MALFORMED_REQUEST", "edge.smm", {})],
            )
        log.error("unhandled edge error", exc_info=exception)
        return error_response(grpc.StatusCode.INTERNAL, "internal error")


CORS_ALLOW_HEADERS = "authorization, content-type, idempotency-key, x-request-id"


def _add_preflight_routes(app: EdgeApp, routes: list[Route]) -> None:
    """CORS preflight for every path: 204, with the path's methods when the origin is allowed."""
    methods: dict[str, set[str]] = {}
    for route in routes:
        methods.setdefault(route.sanic_path, set()).add(route.http_method)
    for index, (path, allowed) in enumerate(sorted(methods.items())):
        allow = ", ".join(sorted(allowed))

        async def preflight(request: Request, allow: str = allow, **_: str) -> HTTPResponse:
            response = raw(b"", status=204)
            if request.headers.get("origin") in request.app.ctx.cors_origins:
                response.headers["Access-Control-Allow-Methods"] = allow
                response.headers["Access-Control-Allow-Headers"] = CORS_ALLOW_HEADERS
                response.headers["Access-Control-Max-Age"] = "600"
            return response

        add_route(
            app,
            preflight,
            path,
            methods=["OPTIONS"],
            name=f"preflight{index}",
            strict_slashes=False,
        )


def _add_docs_routes(app: EdgeApp) -> None:
    assets = "/api/v1/docs/assets"

    async def openapi_json(request: Request) -> HTTPResponse:
        return raw(request.app.ctx.openapi_body, content_type=JSON)

    async def docs(request: Request) -> HTTPResponse:
        response = raw(
            docs_page.swagger_ui_html("/api/v1/openapi.json", assets), content_type="text/html; charset=utf-8"
        )
        response.headers["Content-Security-Policy"] = DOCS_CSP
        return response

    async def init_js(request: Request) -> HTTPResponse:
        return raw(
            docs_page.swagger_ui_init_js("/api/v1/openapi.json"),
            content_type="text/javascript; charset=utf-8",
        )

    asset_files = docs_page.swagger_asset_files()

    async def asset(request: Request, name: str) -> HTTPResponse:
        # A lookup by name instead of Sanic's static handler, which resolves the request path on
        # the filesystem and fails with a 500 on a NUL byte (ValueError: embedded null byte).
        path = asset_files.get(unquote(name))
        if path is None:
            raise NotFound("no such docs asset")
        return await file(path, request_headers=request.headers, mime_type=_asset_content_type(path))

    add_route(
        app,
        openapi_json,
        "/api/v1/openapi.json",
        methods=["GET", "HEAD"],
        name="openapi",
    )
    add_route(
        app,
        docs,
        "/api/v1/docs",
        methods=["GET", "HEAD"],
        name="docs",
        strict_slashes=False,
    )
    add_route(app, init_js, f"{assets}/init.js", methods=["GET", "HEAD"], name="docs_init")
    add_route(app, asset, f"{assets}/<name:path>", methods=["GET", "HEAD"], name="docs_assets")


def _asset_content_type(path: Path) -> str:
    content_type = guess_content_type(path)
    if content_type == "application/javascript":
        content_type += "; charset=utf-8"  # as Sanic's static handler says it: the bundles are UTF-8
    return content_type


def run(settings: Settings) -> None:
    from core.logs import setup_logging
    from core.tracing import setup_tracing

    setup_logging("edge", settings.log_level)
    setup_tracing(f"{settings.service_name}-edge")
    host, _, port = settings.edge_addr.rpartition(":")
    app = create_app(settings)
    app.run(host=host or "127.0.0.1", port=int(port), single_process=True, access_log=False, motd=False)
