"""The standard SMM panel API (../shared/PROTOCOL.md) at ``/api/v1/reseller``, for the panels,
bots and scripts that already speak it, authenticated by our users' API keys (the ``key``
parameter) and served by the same gRPC services as everything else.

Its conventions are the protocol's, not the rest of /api/v1's: one path (with or without a
trailing slash, never a redirect; ``/api/v2`` too when ``SMM_RESELLER_V2_ALIAS`` is on), GET or
POST, form-encoded, JSON or query parameters; HTTP 200 always; errors as ``{"error": "..."}`` and
never an ``error`` key on success; money and counts as strings, order ids as integers where the
canonical shapes have them. smm's order states map onto the six standard words in ``STATUS``;
error messages come from the (reason, field) of the gRPC error through ``_message``.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any, cast
from urllib.parse import parse_qsl

import grpc
from google.rpc import error_details_pb2
from sanic import HTTPResponse, Request
from smm.v1 import catalog_service_pb2 as cpb
from smm.v1 import orders_service_pb2 as opb
from smm.v1 import wallet_service_pb2 as wpb

from edge.context import EdgeContext
from edge.errors import status_from_rpc_error
from edge.headers import CLIENT_IP_KEY, INTERNAL_TOKEN_KEY, REQUEST_ID_HEADER, client_ip, request_id
from edge.routing import add_route
from edge.spans import server_span

log = logging.getLogger(__name__)
JSON = "application/json; charset=utf-8"
MAX_IDS = 100
SOURCE_KEY = "x-smm-source"
CREATE_ORDER = "/smm.v1.OrdersService/CreateOrder"
# An ``add`` attempt that ends with one of these may have placed the order (the deadline passed, or
# the connection went, after the server had the request): it is tried again under the same
# idempotency key, which answers the order the first attempt placed, if it did, instead of a second.
AMBIGUOUS = frozenset(
    {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED}
)
ADD_RETRY_PAUSES_S = (0.1, 0.5)  # before the second and the third (last) attempt
# The attempts of one ``add`` share a budget that ends this long before the edge's response timeout
# (half of it when that is under 2 s), so the edge, not Sanic, answers: the order or the refusal,
# or TIMED_OUT. Sanic starts its clock when the request's last bytes arrive, just before the handler.
ADD_BUDGET_MARGIN_S = 1.0
# The edge stopped waiting, so the request may have been carried out: an ``add`` whose attempts all
# ended without an answer, and any reseller call cut off by the response timeout. Not "Incorrect
# request", which tells the client to fix what it sent and send it again (a second order).
TIMED_OUT = "Request timed out: it may still have taken effect, check your orders before sending it again"

# smm's states -> the six standard words (PROTOCOL.md §4), in one place.
STATUS: dict[int, str] = {
    opb.ORDER_STATUS_PENDING: "Pending",
    opb.ORDER_STATUS_SUBMITTING: "Pending",
    opb.ORDER_STATUS_NEEDS_REVIEW: "Pending",
    opb.ORDER_STATUS_IN_PROGRESS: "In progress",
    opb.ORDER_STATUS_ACTIVE: "In progress",
    opb.ORDER_STATUS_PAUSED: "In progress",
    opb.ORDER_STATUS_PROCESSING: "Processing",
    opb.ORDER_STATUS_COMPLETED: "Completed",
    opb.ORDER_STATUS_EXPIRED: "Completed",
    opb.ORDER_STATUS_PARTIAL: "Partial",
    opb.ORDER_STATUS_CANCELED: "Canceled",
    opb.ORDER_STATUS_FAILED: "Canceled",
}
FINAL = {
    opb.ORDER_STATUS_COMPLETED,
    opb.ORDER_STATUS_EXPIRED,
    opb.ORDER_STATUS_PARTIAL,
    opb.ORDER_STATUS_CANCELED,
    opb.ORDER_STATUS_FAILED,
}


def _released_any(amount: str) -> bool:
    """Whether a decimal money string (``"0.00"``, ``"0.117"``) is above zero."""
    return any(c in "123456789" for c in amount)


REFILL_STATUS = {
    "pending": "Pending",
    "in_progress": "In progress",
    "completed": "Completed",
    "rejected": "Rejected",
}
TYPE_NAMES = {
    "DEFAULT": "Default",
    "PACKAGE": "Package",
    "SEO": "SEO",
    "CUSTOM_COMMENTS": "Custom Comments",
    "CUSTOM_COMMENTS_PACKAGE": "Custom Comments Package",
    "MENTIONS": "Mentions",
    "MENTIONS_WITH_HASHTAGS": "Mentions with Hashtags",
    "MENTIONS_CUSTOM_LIST": "Mentions Custom List",
    "MENTIONS_HASHTAG": "Mentions Hashtag",
    "MENTIONS_USER_FOLLOWERS": "Mentions User Followers",
    "MENTIONS_MEDIA_LIKERS": "Mentions Media Likers",
    "COMMENT_LIKES": "Comment Likes",
    "COMMENT_REPLIES": "Comment Replies",
    "POLL": "Poll",
    "INVITES_FROM_GROUPS": "Invites from Groups",
    "SUBSCRIPTIONS": "Subscriptions",
    "WEB_TRAFFIC": "Web Traffic",
}
# reason -> the wording clients in the wild compare against (PROTOCOL.md §5).
MESSAGES = {
    "INVALID_CREDENTIAL": "Invalid API key",
    "SIGN_IN_REQUIRED": "Invalid API key",
    "ACCOUNT_SUSPENDED": "Your account has been suspended.",
    "IP_NOT_ALLOWED": "This API key may not be used from this IP address",
    "RATE_LIMITED": "Too many requests, please slow down",
    "INSUFFICIENT_FUNDS": "Not enough funds on balance",
    "SERVICE_NOT_ON_SALE": "Incorrect service ID",
    "ORDER_NOT_FOUND": "Incorrect order ID",
    # The edge sends the key as a bearer token; the server refuses a malformed one before it is a key.
    "BAD_AUTHORIZATION_HEADER": "Invalid API key",
}
_BETWEEN = re.compile(r"between ([0-9]+) and ([0-9]+)")
# validate_order's drip-feed rule: "quantity x runs (50000) must be at most 10000".
_AT_MOST = re.compile(r"must be at most ([0-9]+)$")
# ASCII digits only: str.isdigit() also accepts "²" or "٣", which int() then refuses (a 500).
# 18 digits always fit int64; 15 keep any integer parameter far from int64's limits.
_ID = re.compile(r"[0-9]{1,18}")
_WHOLE_NUMBER = re.compile(r"-?[0-9]{1,15}")
# What gRPC metadata can carry in the bearer token (printable ASCII, no space), and short enough
# for its size limit: our keys are 49 characters, sessions' tokens alike.
_KEY_CHARACTERS = re.compile(r"[!-~]{1,512}")
_SURROGATE = re.compile("[\ud800-\udfff]")
ID_LISTS = ("orders", "refills")
# PHP's array syntax for them, ``orders[]`` or ``orders[0]`` (read by ``_php_params``), and the
# index PHP takes as an integer key (a decimal integer without leading zeros, within int64).
_PHP_ID_LIST = re.compile("(" + "|".join(ID_LISTS) + r")\[([^\[\]]*)\]")
_PHP_INT_KEY = re.compile(r"0|-?[1-9][0-9]{0,17}")
INT_FIELDS = ("quantity", "runs", "interval", "min", "max", "posts", "old_posts", "delay")
TEXT_FIELDS = (
    "link",
    "comments",
    "usernames",
    "hashtags",
    "hashtag",
    "username",
    "media",
    "keywords",
    "answer_number",
    "groups",
    "expiry",
    "country",
    "device",
    "type_of_traffic",
    "google_keyword",
    "referring_url",
)


class ResellerError(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def paths(v2_alias: bool) -> tuple[str, ...]:
    return ("/api/v1/reseller", "/api/v2") if v2_alias else ("/api/v1/reseller",)


def _reply(body: object) -> HTTPResponse:
    return HTTPResponse(
        json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode(), content_type=JSON
    )


def _error(message: str) -> dict[str, str]:
    return {"error": message}


def request_params(request: Request) -> dict[str, str]:
    """Query parameters, then the body's (form or JSON) over them, as PHP's $_REQUEST does."""
    params = _php_params(request.query_args)
    body = request.body or b""
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if body.strip():
        if content_type == "application/json" or body.lstrip()[:1] == b"{":
            try:
                parsed = json.loads(body)
            except (ValueError, RecursionError):
                parsed = None
            if isinstance(parsed, dict):
                # null is how JSON clients leave an optional parameter out, not the text "null".
                params.update(
                    {
                        _storable(str(k)): _id_list_text(v) if k in ID_LISTS else _text(v)
                        for k, v in parsed.items()
                        if v is not None
                    }
                )
        else:
            params.update(_php_params(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)))
    return params


def _php_params(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """One source's name=value pairs as PHP reads them, where the id lists may come as arrays:
    ``orders[]=1&orders[]=2`` (scripts) or ``orders[0]=1&orders[1]=2`` (http_build_query of an
    array) is the list "1,2". As in PHP, a repeated index keeps its place and takes the later
    value, ``[]`` takes the next index, and a later plain ``orders`` replaces the array (and an
    array a plain value). The list's length is capped where it is read (``_id_list``)."""
    params: dict[str, str | dict[int | str, str]] = {}
    next_index: dict[str, int] = {}
    for name, value in pairs:
        array = _PHP_ID_LIST.fullmatch(name)
        if array is None:
            params[name] = value
            continue
        base, index = array.group(1), array.group(2)
        entries = params.get(base)
        if not isinstance(entries, dict):
            entries = params[base] = {}
            next_index[base] = 0
        key: int | str
        if index == "":
            key = next_index[base]
        elif _PHP_INT_KEY.fullmatch(index):
            key = int(index)
        else:
            key = index
        if isinstance(key, int):
            next_index[base] = max(next_index[base], key + 1)
        entries[key] = value
    return {k: v if isinstance(v, str) else ",".join(v.values()) for k, v in params.items()}


def _text(value: object) -> str:
    if isinstance(value, str):
        return _storable(value)
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))  # a client that holds numbers as floats sends 100 as 100.0
    return json.dumps(value)


def _id_list_text(value: object) -> str:
    """``orders`` / ``refills``: a JSON client's list ([1, 2]) reads as the protocol's "1,2"."""
    if isinstance(value, list) and all(isinstance(v, str | int) and not isinstance(v, bool) for v in value):
        return ",".join(_text(v) for v in value)
    return _text(value)


def _storable(text: str) -> str:
    """JSON may carry a lone surrogate ("\\ud800"), which no UTF-8 encoder takes (the reply then
    failed: a 500). It becomes U+FFFD, as undecodable bytes in a form body do."""
    return _SURROGATE.sub("\ufffd", text)


def protocol_error(status: int) -> HTTPResponse:
    """The edge's own errors (body too large, wrong method, a crash) on a reseller path, in the
    protocol's shape: HTTP 200 with {"error": "..."}, which existing clients read; a non-2xx
    status or another body loses the message in most of them."""
    messages = {
        413: "Request is too large",
        431: "Request is too large",
        500: "Internal error",
        504: TIMED_OUT,  # the response timeout
    }
    return _reply(_error(messages.get(status, "Incorrect request")))


class RefusedBodyLog(logging.Filter):
    """Sanic logs a 2xx answer that left the request's body unread at ERROR. On a reseller path
    that is a refusal (wrong method, body over the limit) answered 200 as the protocol wants: info,
    not an error anyone can fill the log with. Everywhere else the record keeps its level."""

    # Both paths: without the /api/v2 alias that path is a 404, which Sanic does not log so.
    _paths = ("/api/v1/reseller", "/api/v2")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.levelno >= logging.ERROR and message.endswith("body not consumed."):
            # "<Request: PUT /api/v1/reseller> body not consumed."
            path = message.removeprefix("<Request: ").partition(">")[0].partition(" ")[2].partition("?")[0]
            if (path.rstrip("/") or "/") in self._paths:
                record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def is_reseller_path(path: str, v2_alias: bool) -> bool:
    return (path.rstrip("/") or "/") in paths(v2_alias)


def _message(error: grpc.aio.AioRpcError, params: Mapping[str, str] | None = None) -> str:
    _, text, details = status_from_rpc_error(error)
    reason, fields = "", []
    for detail in details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields = [(v.field, v.description) for v in bad.field_violations]
    if reason in MESSAGES:
        return MESSAGES[reason]
    if fields:
        field, description = fields[0]
        if field == "link":
            return "Incorrect link"
        if field in ("service", "service_id"):
            return "Incorrect service ID"
        if field == "quantity" and (bounds := _BETWEEN.search(description)):
            asked = _whole_number((params or {}).get("quantity", ""))
            low, high = bounds.group(1), bounds.group(2)
            if asked is not None and asked > int(high):
                return f"Quantity more than maximum {high}"
            return f"Quantity less than minimal {low}"
        if field == "quantity" and (ceiling := _AT_MOST.search(description)):
            return f"Quantity more than maximum {ceiling.group(1)}"
        return f"{field.capitalize()} {description}"
    return text or "Incorrect request"


def _whole_number(text: str) -> int | None:
    text = text.strip()
    return int(text) if _WHOLE_NUMBER.fullmatch(text) else None


def _parse_id(text: str) -> int | None:
    """The id the client wrote, or None when it is not one (the caller answers "Incorrect ... ID")."""
    text = text.strip()
    return int(text) if _ID.fullmatch(text) else None


def _id_list(value: str) -> list[tuple[str, int | None]]:
    """Each id of a comma-separated list as written, with its value (None when it is not an id)."""
    written = [part.strip() for part in value.split(",") if part.strip()]
    if len(written) > MAX_IDS:
        raise ResellerError(f"Too many IDs: at most {MAX_IDS} per request")
    return [(text, _parse_id(text)) for text in written]


def _as_given(text: str, parsed: int | None) -> int | str:
    """An id echoed in a list answer: an integer, as the canonical shapes have it, or the client's
    own text when it is not an id (so the client can still match the entry to what it sent)."""
    return text if parsed is None else parsed


class Reseller:
    def __init__(self, ctx: EdgeContext) -> None:
        self._ctx = ctx

    def _call(self, rpc: str) -> Callable[..., Awaitable[Any]]:
        return cast(Callable[..., Awaitable[Any]], self._ctx.calls[rpc])

    async def handle(self, request: Request) -> HTTPResponse:
        params = request_params(request)
        key = params.get("key", "").strip()
        action = params.get("action", "").strip().lower()
        # Our keys are printable ASCII; dropping other characters to fit the metadata could leave an
        # empty token (a malformed header, not a wrong key) or someone else's key.
        if not _KEY_CHARACTERS.fullmatch(key):
            return _reply(_error("Invalid API key"))
        metadata = (
            (INTERNAL_TOKEN_KEY, self._ctx.settings.internal_token.get_secret_value()),
            (REQUEST_ID_HEADER, request_id(request)),
            (CLIENT_IP_KEY, client_ip(request, self._ctx)),
            ("authorization", f"Bearer {key}"),
            (SOURCE_KEY, "reseller"),
        )
        actions: dict[str, Callable[[Mapping[str, str], tuple[tuple[str, str], ...]], Awaitable[object]]] = {
            "services": self._services,
            "add": functools.partial(
                self._add,
                idempotency_key=_idempotency_key(request),
                deadline=_add_deadline(request),
            ),
            "status": self._status,
            "refill": self._refill,
            "refill_status": self._refill_status,
            "cancel": self._cancel,
            "balance": self._balance,
        }
        handler = actions.get(action)
        if handler is None:
            return _reply(_error("Incorrect request"))
        try:
            return _reply(await handler(params, metadata))
        except ResellerError as exc:
            return _reply(_error(exc.message))
        except grpc.aio.AioRpcError as exc:
            return _reply(_error(_message(exc, params)))

    async def _services(self, params: Mapping[str, str], metadata: Any) -> object:
        listed: list[dict[str, object]] = []
        token = ""
        while True:
            page = await self._call("/smm.v1.CatalogService/ListServices")(
                cpb.ListServicesRequest(page_size=5000, page_token=token), metadata=metadata, timeout=30
            )
            for s in page.services:
                type_name = cpb.ServiceType.Name(s.type).removeprefix("SERVICE_TYPE_")
                listed.append(
                    {
                        "service": s.id,
                        "name": s.name,
                        "type": TYPE_NAMES.get(type_name, "Default"),
                        "category": s.category_name,
                        # What this caller pays (their discount applied), as panels show it; a
                        # server from before caller_rate leaves it empty.
                        "rate": s.caller_rate or s.rate,
                        "min": str(s.min_quantity),
                        "max": str(s.max_quantity),
                        "dripfeed": s.dripfeed,
                        "refill": s.refill,
                        "cancel": s.cancel,
                    }
                )
            token = page.next_page_token
            if not token:
                return listed

    async def _add(
        self, params: Mapping[str, str], metadata: Any, *, idempotency_key: str, deadline: float
    ) -> object:
        service_id = _parse_id(params.get("service", ""))
        if service_id is None:
            raise ResellerError("Incorrect service ID")
        request = opb.CreateOrderRequest(service_id=service_id)
        for name in INT_FIELDS:
            value = params.get(name, "").strip()
            if value:
                number = _whole_number(value)
                if number is None:
                    raise ResellerError(f"Incorrect {name}")
                try:
                    setattr(request, name, number)
                except ValueError:  # beyond an int32 field's range (runs, interval, posts, ...)
                    raise ResellerError(f"Incorrect {name}") from None
        for name in TEXT_FIELDS:
            if name in params:
                setattr(request, name, params[name])
        request.request_id = idempotency_key
        order = await self._create_order(request, metadata, deadline)
        return {"order": order.id}

    async def _create_order(
        self, request: opb.CreateOrderRequest, metadata: Any, deadline: float
    ) -> opb.Order:
        """CreateOrder, tried again (same request, same key, a fresh deadline) while an attempt ends
        without telling whether it placed the order. A retry that finds the first attempt still
        running waits for it (the orders' unique key on (user, idempotency key)) and answers its
        order; if the first was cut off before it committed, the retry places the one order.

        Every attempt ends by ``deadline`` (the loop's clock), and another starts only while time
        is left after its pause: when none is, or the last attempt also ends without an answer,
        the client is told the outcome is unknown (TIMED_OUT), not that the order failed."""
        call = self._call(CREATE_ORDER)
        loop = asyncio.get_running_loop()
        timeout = self._ctx.settings.reseller_add_timeout_s
        pauses = iter(ADD_RETRY_PAUSES_S)
        attempts = 0
        while True:
            attempts += 1
            try:
                left = deadline - loop.time()
                return cast(opb.Order, await call(request, metadata=metadata, timeout=min(timeout, left)))
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in AMBIGUOUS:
                    raise  # a definite answer (no funds, a bad link, ...): the client's
                pause = next(pauses, None)
                if pause is None or deadline - loop.time() - pause <= 0:
                    log.warning(
                        "reseller add: no answer after %d attempts, the order may exist (request id %s)",
                        attempts,
                        dict(metadata).get(REQUEST_ID_HEADER, ""),
                    )
                    raise ResellerError(TIMED_OUT) from exc
            await asyncio.sleep(pause)

    async def _orders(self, ids: list[int | None], metadata: Any) -> dict[int, Any]:
        wanted = [i for i in ids if i is not None and i > 0]
        if not wanted:
            return {}
        found = await self._call("/smm.v1.OrdersService/BatchGetOrders")(
            opb.BatchGetOrdersRequest(ids=wanted), metadata=metadata, timeout=30
        )
        return {o.id: o for o in found.orders}

    @staticmethod
    def _status_entry(order: Any) -> dict[str, str]:
        # A final order's charge is what it cost ("0.00" for a canceled or failed one, which the
        # server reports with its whole quantity as remains); an open one's, what is held for it.
        charge = order.charged if order.status in FINAL else order.price
        status = STATUS.get(order.status, "Pending")
        if order.status == opb.ORDER_STATUS_EXPIRED and _released_any(order.released):
            # Part of the subscription was not delivered and its share was released: the word a
            # client refunds by (as for a partial order), not "Completed" (delivered in full).
            status = "Partial"
        return {
            "charge": charge,
            "start_count": str(order.start_count),
            "status": status,
            "remains": str(order.remains if order.status != opb.ORDER_STATUS_COMPLETED else 0),
            "currency": order.currency,
        }

    async def _status(self, params: Mapping[str, str], metadata: Any) -> object:
        if "orders" in params:
            listed = _id_list(params["orders"])
            found = await self._orders([order_id for _, order_id in listed], metadata)
            result: dict[str, object] = {}
            for text, order_id in listed:
                order = found.get(order_id) if order_id is not None else None
                result[text] = self._status_entry(order) if order else _error("Incorrect order ID")
            return result
        order_id = _parse_id(params.get("order", ""))
        found = await self._orders([order_id], metadata)
        order = found.get(order_id) if order_id is not None else None
        if order is None:
            raise ResellerError("Incorrect order ID")
        return self._status_entry(order)

    async def _one(self, rpc: str, request: Any, metadata: Any) -> Any:
        try:
            return await self._call(rpc)(request, metadata=metadata, timeout=60)
        except grpc.aio.AioRpcError as exc:
            return _error(_message(exc))

    async def _each_order(
        self, rpc: str, make_request: Callable[..., Any], listed: list[tuple[str, int | None]], metadata: Any
    ) -> list[Any]:
        """One reply per listed order, in order; an id that is not one never reaches the server."""

        async def one(order_id: int | None) -> Any:
            if order_id is None:
                return _error("Incorrect order ID")
            return await self._one(rpc, make_request(id=order_id), metadata)

        return list(await asyncio.gather(*(one(order_id) for _, order_id in listed)))

    async def _refill(self, params: Mapping[str, str], metadata: Any) -> object:
        rpc = "/smm.v1.OrdersService/RefillOrder"
        if "orders" in params:
            listed = _id_list(params["orders"])
            replies = await self._each_order(rpc, opb.RefillOrderRequest, listed, metadata)
            return [
                {"order": _as_given(text, order_id), "refill": r if isinstance(r, dict) else r.id}
                for (text, order_id), r in zip(listed, replies, strict=True)
            ]
        order_id = _parse_id(params.get("order", ""))
        if order_id is None:
            raise ResellerError("Incorrect order ID")
        refill = await self._call(rpc)(opb.RefillOrderRequest(id=order_id), metadata=metadata, timeout=60)
        return {"refill": str(refill.id)}

    async def _refill_status(self, params: Mapping[str, str], metadata: Any) -> object:
        rpc = "/smm.v1.OrdersService/BatchGetRefills"
        if "refills" in params:
            listed = _id_list(params["refills"])
            wanted = [i for _, i in listed if i is not None and i > 0]
            found = await self._call(rpc)(
                opb.BatchGetRefillsRequest(ids=wanted), metadata=metadata, timeout=30
            )
            by_id = {r.id: r for r in found.refills}
            return [
                {
                    "refill": _as_given(text, i),
                    "status": REFILL_STATUS[by_id[i].status] if i in by_id else _error("Refill not found"),
                }
                for text, i in listed
            ]
        refill_id = _parse_id(params.get("refill", ""))
        if refill_id is None:
            raise ResellerError("Refill not found")
        found = await self._call(rpc)(
            opb.BatchGetRefillsRequest(ids=[refill_id]), metadata=metadata, timeout=30
        )
        if not found.refills:
            raise ResellerError("Refill not found")
        return {"status": REFILL_STATUS[found.refills[0].status]}

    async def _cancel(self, params: Mapping[str, str], metadata: Any) -> object:
        rpc = "/smm.v1.OrdersService/CancelOrder"
        if "orders" in params:
            listed = _id_list(params["orders"])
            replies = await self._each_order(rpc, opb.CancelOrderRequest, listed, metadata)
            return [
                {"order": _as_given(text, order_id), "cancel": r if isinstance(r, dict) else _cancel_value(r)}
                for (text, order_id), r in zip(listed, replies, strict=True)
            ]
        order_id = _parse_id(params.get("order", ""))
        if order_id is None:
            raise ResellerError("Incorrect order ID")
        reply = await self._one(rpc, opb.CancelOrderRequest(id=order_id), metadata)
        if isinstance(reply, dict):
            raise ResellerError(reply["error"])
        value = _cancel_value(reply)
        if isinstance(value, dict):
            raise ResellerError(value["error"])
        return {"cancel": "1"}

    async def _balance(self, params: Mapping[str, str], metadata: Any) -> object:
        balance = await self._call("/smm.v1.WalletService/GetBalance")(
            wpb.GetBalanceRequest(), metadata=metadata, timeout=30
        )
        return {"balance": balance.available, "currency": balance.currency}


def _add_deadline(request: Request) -> float:
    """When the attempts of an ``add`` must end (the loop's clock): ADD_BUDGET_MARGIN_S before the
    response timeout Sanic applies to this request."""
    response_timeout = float(request.app.config.RESPONSE_TIMEOUT)
    budget = response_timeout - min(ADD_BUDGET_MARGIN_S, response_timeout / 2)
    return asyncio.get_running_loop().time() + budget


def _idempotency_key(request: Request) -> str:
    """The client's ``Idempotency-Key`` header, as the JSON API takes it (the protocol has none),
    else a key of the edge's own for this HTTP request: its retries share it, a new request does not."""
    # Not cut: the server refuses one over its limit (two cut keys would name one order).
    return request.headers.get("idempotency-key", "") or f"reseller:{secrets.token_hex(16)}"


def _cancel_value(order: Any) -> int | dict[str, str]:
    """The provider's own words stay with staff (a customer's order never carries them)."""
    if order.cancel_state == "rejected":
        return _error("Order cannot be cancelled")
    if order.status == opb.ORDER_STATUS_COMPLETED:
        # It completed while the cancel was out: charged in full, so nothing was canceled (the
        # words of a cancel of an order that had already completed).
        return _error("Order is already completed")
    return 1


def add_reseller_routes(app: Any, ctx: EdgeContext) -> None:
    reseller = Reseller(ctx)
    sanic_errors = logging.getLogger("sanic.error")
    if not any(isinstance(f, RefusedBodyLog) for f in sanic_errors.filters):
        sanic_errors.addFilter(RefusedBodyLog())

    def traced(path: str) -> Callable[[Request], Awaitable[HTTPResponse]]:
        # A SERVER span per call, as every other route has, so all the RPCs of one action (a
        # cancel of several orders is one per order) are one trace under the caller's.
        async def handle(request: Request) -> HTTPResponse:
            with server_span(request, request.method, path, request_id(request)) as span:
                response = await reseller.handle(request)
                span.set_attribute("http.response.status_code", response.status)
                return response

        return handle

    for index, path in enumerate(paths(ctx.settings.reseller_v2_alias)):
        add_route(
            app, traced(path), path, methods=["GET", "POST"], name=f"reseller{index}", strict_slashes=False
        )
