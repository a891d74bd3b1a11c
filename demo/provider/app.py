"""The demo provider's Sanic app: the standard API at ``/api/v2`` plus a control API for tests.

Routes:

- ``GET|POST /api/v2`` (and ``/api/v2/``, never redirected): the standard protocol, parameters from
  the query string, a form body or a JSON body; errors are HTTP 200 ``{"error": "..."}``.
- ``POST /control/faults`` (JSON, see ``faults.py``), ``DELETE /control/faults``;
- ``GET /control/orders``: every order, to check what exists upstream;
- ``GET /control/stats``: API requests per action, pending faults, webhook counts;
- ``POST /control/balance`` ``{"key": "<api key>", "balance": "1.50"}``: set an account's balance;
- ``PUT /control/services/<id>`` (JSON fields) and ``DELETE /control/services/<id>``: change, add or
  remove an offered service (price changes, services gone upstream).

Control routes want ``X-Control-Token`` when ``DemoConfig.control_token`` is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from decimal import Decimal, InvalidOperation
from typing import cast

import httpx
from sanic import HTTPResponse, Request, Sanic
from sanic.config import Config

from demo.provider.catalog import Service
from demo.provider.config import MICROS, DemoConfig
from demo.provider.faults import Fault, FaultBook, parse_fault
from demo.provider.orders import Order, OrderBook
from demo.provider.protocol import Outcome, ProviderApi, format_money, request_params
from demo.provider.webhooks import WebhookSender

__all__ = ["DemoApp", "DemoContext", "create_demo_app"]

JSON = "application/json; charset=utf-8"
HTML = "text/html; charset=utf-8"
ERROR_PAGE = (
    "<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head>"
    "<body><h1>Internal Server Error</h1></body></html>"
)
GATEWAY_PAGE = (
    "<!DOCTYPE html><html><head><title>Just a moment...</title></head>"
    "<body><h1>502 Bad Gateway</h1><p>The upstream panel did not answer.</p></body></html>"
)


@dataclass
class DemoContext:
    config: DemoConfig
    book: OrderBook
    api: ProviderApi
    faults: FaultBook
    clock: Callable[[], float]
    http: httpx.AsyncClient | None = None
    webhooks: WebhookSender | None = None
    ticker: asyncio.Task[None] | None = None

    def notify(self, orders: list[Order]) -> None:
        if self.webhooks is not None:
            for order in orders:
                self.webhooks.enqueue(order)


DemoApp = Sanic[Config, DemoContext]


def create_demo_app(
    config: DemoConfig, name: str = "smm-demo-provider", *, clock: Callable[[], float] = time.monotonic
) -> DemoApp:
    book = OrderBook(config.step_s, reject_duplicate_links=config.reject_duplicate_links)
    ctx = DemoContext(
        config=config, book=book, api=ProviderApi(config, book), faults=FaultBook(), clock=clock
    )
    app: DemoApp = Sanic(name, ctx=ctx, configure_logging=False)
    app.config.FALLBACK_ERROR_FORMAT = "json"
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = 1.0
    app.add_route(_api, "/api/v2", methods=["GET", "POST"], name="api", strict_slashes=False)
    app.add_route(_add_fault, "/control/faults", methods=["POST"], name="add_fault")
    app.add_route(_clear_faults, "/control/faults", methods=["DELETE"], name="clear_faults")
    app.add_route(_orders, "/control/orders", methods=["GET"], name="orders")
    app.add_route(_stats, "/control/stats", methods=["GET"], name="stats")
    app.add_route(_set_balance, "/control/balance", methods=["POST"], name="set_balance")
    app.add_route(_put_service, "/control/services/<service_id:int>", methods=["PUT"], name="put_service")
    app.add_route(
        _delete_service, "/control/services/<service_id:int>", methods=["DELETE"], name="delete_service"
    )
    app.before_server_start(_start)
    app.after_server_stop(_stop)
    return app


def _ctx(request: Request) -> DemoContext:
    return cast(DemoContext, request.app.ctx)


def _json(body: object, status: int = 200) -> HTTPResponse:
    text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
    return HTTPResponse(text.encode(), status=status, content_type=JSON)


async def _api(request: Request) -> HTTPResponse:
    ctx = _ctx(request)
    params = request_params(request)
    if params is None:
        return _json({"error": "Incorrect request"})
    fault = ctx.faults.take(params.get("action", "").strip().lower())
    if fault is not None and fault.delay_s:  # any fault may come late: a refusal after a slow call
        await asyncio.sleep(fault.delay_s)
    if fault is not None and fault.kind == "latency":
        fault = None
    outcome: Outcome | None = None
    if fault is None or fault.process:
        outcome = ctx.api.handle(params, ctx.clock())
        ctx.notify(outcome.changed)
    if fault is None:
        assert outcome is not None
        return _json(outcome.body)
    return await _faulty(ctx, fault, outcome)


async def _faulty(ctx: DemoContext, fault: Fault, outcome: Outcome | None) -> HTTPResponse:
    body = outcome.body if outcome is not None else {"error": fault.message}
    if fault.kind == "timeout":
        await asyncio.sleep(ctx.config.timeout_fault_s)
        return _json(body)
    if fault.kind == "http500":
        return HTTPResponse(ERROR_PAGE, status=fault.status, content_type=HTML)
    if fault.kind == "error_body":
        return _json({"error": fault.message})
    if fault.kind == "unknown_remains":  # as some panels answer: the status, but not how much is left
        return _json(_statuses_with(body, fault.order_ids, remains="Unknown"))
    if fault.kind == "status_word":
        return _json(_statuses_with(body, fault.order_ids, status=fault.message))
    if fault.kind == "malformed_json":
        text = json.dumps(body, separators=(",", ":"))
        return HTTPResponse(text[: max(1, len(text) // 2)], content_type=JSON)
    return HTTPResponse(GATEWAY_PAGE, content_type=HTML)  # "html"


def _statuses_with(body: object, only: frozenset[str] | None, **fields: str) -> object:
    """The answer with ``fields`` replaced in every order status it holds (one, or those of a list
    answer keyed by the order ids in ``only``; None: all)."""
    if isinstance(body, dict) and "status" in body and "remains" in body:
        return {**body, **fields}
    if isinstance(body, dict):
        return {
            key: _statuses_with(value, None, **fields) if only is None or key in only else value
            for key, value in body.items()
        }
    return body


def _forbidden(request: Request) -> HTTPResponse | None:
    token = _ctx(request).config.control_token
    if token is None:
        return None
    given = request.headers.get("x-control-token", "")
    if hmac.compare_digest(given.encode(), token.encode()):
        return None
    return _json({"error": "Forbidden"}, status=403)


async def _add_fault(request: Request) -> HTTPResponse:
    if (refused := _forbidden(request)) is not None:
        return refused
    try:
        spec = json.loads(request.body or b"{}")
        if not isinstance(spec, dict):
            raise ValueError("expected a JSON object")
        fault = parse_fault(spec)
    except ValueError as exc:
        return _json({"error": str(exc)}, status=400)
    _ctx(request).faults.add(fault)
    return _json({"fault": fault.as_dict()}, status=201)


async def _clear_faults(request: Request) -> HTTPResponse:
    if (refused := _forbidden(request)) is not None:
        return refused
    _ctx(request).faults.clear()
    return HTTPResponse(status=204)


async def _orders(request: Request) -> HTTPResponse:
    if (refused := _forbidden(request)) is not None:
        return refused
    ctx = _ctx(request)
    ctx.notify(ctx.book.advance(ctx.clock()))
    orders = [
        {
            "order": order.id,
            "account": order.account,
            "service": order.service.id,
            "type": order.service.type,
            "link": order.link,
            "quantity": order.quantity,
            "runs": order.runs,
            "interval": order.interval,
            "charge": format_money(order.charge_micros),
            "status": order.status,
            "start_count": order.start_count,
            "remains": order.remains,
            "details": dict(order.details),
        }
        for order in ctx.book.orders.values()
    ]
    refills = [
        {"refill": refill.id, "order": refill.order_id, "account": refill.account, "status": refill.status}
        for refill in ctx.book.refills.values()
    ]
    return _json({"orders": orders, "refills": refills})


async def _stats(request: Request) -> HTTPResponse:
    if (refused := _forbidden(request)) is not None:
        return refused
    ctx = _ctx(request)
    webhooks = ctx.webhooks
    return _json(
        {
            "requests": dict(ctx.faults.requests),
            "faults": [fault.as_dict() for fault in ctx.faults.faults],
            "webhooks": {
                "delivered": webhooks.delivered if webhooks else 0,
                "failed": webhooks.failed if webhooks else 0,
            },
        }
    )


async def _set_balance(request: Request) -> HTTPResponse:
    if (refused := _forbidden(request)) is not None:
        return refused
    ctx = _ctx(request)
    try:
        spec = json.loads(request.body or b"{}")
        account = ctx.api.accounts[spec["key"]]
        micros = int(Decimal(str(spec["balance"])) * MICROS)
    except (ValueError, KeyError, TypeError, InvalidOperation):
        return _json({"error": 'expected {"key": <api key>, "balance": "<decimal>"}'}, status=400)
    ctx.book.balances[account] = micros
    return _json({"balance": format_money(micros), "currency": ctx.config.currency})


async def _put_service(request: Request, service_id: int) -> HTTPResponse:
    """Adds or changes one offered service: ``{"name", "rate", "min", "max", "type", "category",
    "refill", "cancel", "dripfeed"}``, any subset (a new service needs name, rate, min and max)."""
    if (refused := _forbidden(request)) is not None:
        return refused
    ctx = _ctx(request)
    try:
        spec = json.loads(request.body or b"{}")
        current = ctx.api.services.get(service_id) or Service(service_id, "", "Default", "Other", 0, 1, 1)
        changes: dict[str, object] = {}
        for name in ("name", "type", "category"):
            if name in spec:
                changes[name] = str(spec[name])
        for name in ("min", "max"):
            if name in spec:
                changes[name] = int(spec[name])
        for name in ("refill", "cancel", "dripfeed"):
            if name in spec:
                changes[name] = bool(spec[name])
        if "rate" in spec:
            changes["rate_micros"] = int(Decimal(str(spec["rate"])) * MICROS)
        updated = replace(current, **changes)  # type: ignore[arg-type]
    except (ValueError, TypeError, InvalidOperation):
        return _json({"error": "expected a JSON object of service fields"}, status=400)
    if not updated.name or updated.min < 1 or updated.max < updated.min:
        return _json({"error": "a service needs a name and 1 <= min <= max"}, status=400)
    ctx.api.services[service_id] = updated
    return _json({"service": service_id})


async def _delete_service(request: Request, service_id: int) -> HTTPResponse:
    if (refused := _forbidden(request)) is not None:
        return refused
    removed = _ctx(request).api.services.pop(service_id, None)
    return _json({"removed": removed is not None}, status=200 if removed else 404)


async def _start(app: DemoApp) -> None:
    ctx = app.ctx
    config = ctx.config
    if config.webhook_url and config.webhook_secret:
        ctx.http = httpx.AsyncClient()
        ctx.webhooks = WebhookSender(config.webhook_url, config.webhook_secret, ctx.http)
        ctx.webhooks.start()
        ctx.ticker = asyncio.create_task(_tick(ctx), name="demo-ticker")


async def _tick(ctx: DemoContext) -> None:
    """With webhooks on, orders move without being asked about, so changes are pushed promptly."""
    interval = min(ctx.config.step_s / 2, 0.5)
    while True:
        await asyncio.sleep(interval)
        ctx.notify(ctx.book.advance(ctx.clock()))


async def _stop(app: DemoApp) -> None:
    ctx = app.ctx
    if ctx.ticker is not None:
        ctx.ticker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await ctx.ticker
        ctx.ticker = None
    if ctx.webhooks is not None:
        await ctx.webhooks.stop()
    if ctx.http is not None:
        await ctx.http.aclose()
        ctx.http = None
