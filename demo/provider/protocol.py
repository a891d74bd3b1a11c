"""The standard SMM panel API as the demo serves it: request parameters in, canonical replies out.

Replies follow PROTOCOL.md §3 to the JSON type: ``service`` and ``order`` numbers, money and counts
as strings, ``refill``/``cancel``/``dripfeed`` booleans in the services list, the single ``refill``
id a string and the multi-form ids numbers. Every error is ``{"error": "<message>"}`` (sent with
HTTP 200 by the app), and a success never carries an ``error`` key. More than 100 ids in one call is
refused with "Too many IDs: at most 100 per request" (PP's wording for it is not known).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from sanic import Request

from demo.provider.catalog import CATALOG, Service, generated_services
from demo.provider.config import MICROS, DemoConfig
from demo.provider.orders import ApiError, Order, OrderBook, Refill, validate_order

__all__ = ["MAX_IDS", "Outcome", "ProviderApi", "format_money", "request_params"]

MAX_IDS = 100
ACTIONS = ("services", "add", "status", "refill", "refill_status", "cancel", "balance")


def format_money(micros: int) -> str:
    """12_500_000 -> "12.50"; 278_190 -> "0.27819" (trailing zeros trimmed to two decimals)."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS)
    digits = f"{fraction:06d}".rstrip("0").ljust(2, "0")
    return f"{sign}{whole}.{digits}"


def _scalar(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def request_params(request: Request) -> dict[str, str] | None:
    """Query parameters, then the body's (form or JSON) over them. None when the body is unreadable."""
    params: dict[str, str] = {name: values[0] for name, values in request.args.items() if values}
    body = request.body or b""
    content_type = (request.content_type or "").lower()
    if "json" in content_type or body.lstrip().startswith(b"{"):
        if not body.strip():
            return params
        try:
            data = json.loads(body)
        except ValueError:
            return None
        if not isinstance(data, dict):
            return None
        for name, value in data.items():
            text = _scalar(value)
            if text is not None:
                params[str(name)] = text
    elif body:
        for name, values in (request.form or {}).items():
            if values:
                params[name] = values[0]
    return params


@dataclass
class Outcome:
    body: object
    changed: list[Order] = field(default_factory=list)  # orders whose state changed (for webhooks)
    action: str = ""


def _error(message: str) -> dict[str, str]:
    return {"error": message}


def _ids(text: str) -> list[str]:
    ids = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not ids:
        raise ApiError("Incorrect order ID")
    if len(ids) > MAX_IDS:
        raise ApiError(f"Too many IDs: at most {MAX_IDS} per request")
    return ids


def _number(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def service_entry(service: Service) -> dict[str, object]:
    """One services entry, in the key order of recent PP pages."""
    return {
        "service": service.id,
        "name": service.name,
        "type": service.type,
        "rate": format_money(service.rate_micros),
        "min": str(service.min),
        "max": str(service.max),
        "dripfeed": service.dripfeed,
        "refill": service.refill,
        "cancel": service.cancel,
        "category": service.category,
    }


class ProviderApi:
    """Dispatches one API call; pure apart from the book it changes. The clock is an argument."""

    def __init__(self, config: DemoConfig, book: OrderBook) -> None:
        self.config = config
        self.book = book
        self.accounts = {key: f"account-{index}" for index, key in enumerate(config.api_keys, start=1)}
        # This instance's offer: the fixed catalog, plus generated ones (benchmarks), changeable by
        # the control API (tests of price changes and services that disappear).
        self.services: dict[int, Service] = {service.id: service for service in CATALOG}
        self.services.update({s.id: s for s in generated_services(config.extra_services)})
        for account in self.accounts.values():
            book.open_account(account, config.starting_balance_micros)

    def find_service(self, value: str | None) -> Service | None:
        text = (value or "").strip()
        return self.services.get(int(text)) if text.isdigit() and len(text) < 12 else None

    def status_entry(self, order: Order) -> dict[str, str]:
        return {
            "charge": format_money(order.charge_micros),
            "start_count": str(order.start_count),
            "status": order.status,
            "remains": str(order.remains),
            "currency": self.config.currency,
        }

    def handle(self, params: Mapping[str, str], now: float) -> Outcome:
        changed = self.book.advance(now)
        action = params.get("action", "").strip().lower()
        account = self.accounts.get(params.get("key", ""))
        if account is None:
            return Outcome(_error("Invalid API key"), changed, action)
        outcome = Outcome({}, changed, action)
        try:
            outcome.body = self._dispatch(action, account, params, now, outcome)
        except ApiError as exc:
            outcome.body = _error(exc.message)
        return outcome

    def _dispatch(
        self, action: str, account: str, params: Mapping[str, str], now: float, outcome: Outcome
    ) -> object:
        book = self.book
        if action == "services":
            return [service_entry(service) for service in self.services.values()]
        if action == "balance":
            return {"balance": format_money(book.balances[account]), "currency": self.config.currency}
        if action == "add":
            service = self.find_service(params.get("service"))
            if service is None:
                raise ApiError("Incorrect service ID")
            order = book.place(account, validate_order(service, params), now)
            return {"order": order.id}
        if action == "status":
            if "orders" in params:
                result: dict[str, object] = {}
                for order_id in _ids(params["orders"]):
                    found = book.order(account, order_id)
                    result[order_id] = self.status_entry(found) if found else _error("Incorrect order ID")
                return result
            found = book.order(account, params.get("order", ""))
            if found is None:
                raise ApiError("Incorrect order ID")
            return self.status_entry(found)
        if action == "refill":
            if "orders" in params:
                return [
                    {"order": _number(order_id), "refill": self._try_refill(account, order_id, now)}
                    for order_id in _ids(params["orders"])
                ]
            return {"refill": str(book.refill(account, params.get("order", ""), now).id)}
        if action == "refill_status":
            if "refills" in params:
                return [
                    {"refill": _number(refill_id), "status": self._refill_state(account, refill_id)}
                    for refill_id in _ids(params["refills"])
                ]
            refill = book.refill_of(account, params.get("refill", ""))
            if refill is None:
                raise ApiError("Refill not found")
            return {"status": refill.status}
        if action == "cancel":
            if "orders" in params:
                return [
                    {"order": _number(order_id), "cancel": self._try_cancel(account, order_id, now, outcome)}
                    for order_id in _ids(params["orders"])
                ]
            outcome.changed.append(book.cancel(account, params.get("order", ""), now))
            return {"cancel": "1"}
        raise ApiError("Incorrect request")

    def _try_refill(self, account: str, order_id: str, now: float) -> int | dict[str, str]:
        try:
            refill: Refill = self.book.refill(account, order_id, now)
        except ApiError as exc:
            return _error(exc.message)
        return refill.id

    def _refill_state(self, account: str, refill_id: str) -> str | dict[str, str]:
        refill = self.book.refill_of(account, refill_id)
        return refill.status if refill is not None else _error("Refill not found")

    def _try_cancel(self, account: str, order_id: str, now: float, outcome: Outcome) -> int | dict[str, str]:
        try:
            outcome.changed.append(self.book.cancel(account, order_id, now))
        except ApiError as exc:
            return _error(exc.message)
        return 1
