"""Lenient parsing of standard-protocol replies (PROTOCOL.md §3, §6). Pure functions, no I/O.

Providers in the wild send numbers as strings or numbers, capitalised keys, extra keys, errors as
``{"error": ...}`` with 200 or 4xx, HTML pages and garbage. ``classify`` turns an HTTP reply into a
parsed ``Body``, a definite ``Rejected`` or an ``Unknown``; the ``parse_*`` functions turn a body into
values and raise ``ParseError`` when the shape is not what the action returns (the caller makes that
an ``Unknown``: a 200 that lacks the expected keys is never taken as a rejection).

Order status words (case, spaces, ``_`` and ``-`` ignored) map onto the six PP words:

=============== ===========================================================================
Pending         pending, awaiting, queued, waiting
In progress     in progress, inprogress, progress, active, running, started, paused
                (``Active``/``Paused`` are SmartPanel subscription states: not finished)
Processing      processing
Completed       completed, complete, done, finished, success, delivered, expired
                (an expired subscription has ended)

``Active``, ``Paused`` and ``Expired`` are also kept as ``UpstreamStatus.subscription_word``: for a
subscription they are states of their own (paused; expired, which releases what was not delivered).
Partial         partial, partially completed, partial completed, partially refunded
Canceled        canceled, cancelled, cancel, refunded, refund, refunds, canceled and refunded
=============== ===========================================================================

Anything else (``Failed``, ``Error``, ``Unknown`` …) is *unrecognised*: a single ``status`` reply
becomes ``Unknown`` and the id is left out of a multi-status result, so no final decision (refund,
completion) is ever taken on a word we do not understand; the order stays in its last known state
and the exchange log shows the word. Such a reply raises ``UnrecognisedWord``, a ``ParseError`` that
marks an answer of the action's shape (a word in its place, as a string): the provider answered, so
the call is neither retried nor counted against the circuit, unlike an answer of an unknown shape.

Refill states: Pending ← pending, awaiting, queued, waiting; In progress ← in progress, processing,
progress; Completed ← completed, complete, done, success, finished, processed, partial; Rejected ←
rejected, canceled, cancelled, failed, fail, error, refused, declined (a refill that will not happen
costs nobody money, so the failure words may be final here).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_HALF_UP, Decimal, InvalidOperation
from typing import TypeAlias, TypeVar
from urllib.parse import quote, quote_plus

from server.common.money import MAX_MICROS, MICROS
from server.common.text import storable
from server.common.upstream_id import canonical_upstream_id
from server.providers.adapters.base import (
    SERVICE_TYPES,
    Balance,
    OrderStatus,
    RefillState,
    Rejected,
    Unknown,
    UpstreamService,
    UpstreamStatus,
)

__all__ = [
    "MAX_BODY_CHARS",
    "Body",
    "ParseError",
    "UnrecognisedWord",
    "classify",
    "error_message",
    "load_json",
    "normalise_keys",
    "normalise_refill_state",
    "normalise_status",
    "normalise_type",
    "parse_add",
    "parse_balance",
    "parse_cancel",
    "parse_refill",
    "parse_refill_status",
    "parse_refill_statuses",
    "parse_refills",
    "parse_services",
    "parse_status",
    "parse_statuses",
    "redact",
    "to_bool",
    "to_id",
    "to_int",
    "to_micros",
]

MAX_BODY_CHARS = 2000
MAX_DEPTH = 32  # a standard reply nests 3 levels; the helpers below recurse per level
MAX_MESSAGE_CHARS = 500
REDACTED = "[redacted]"
_MICROS = Decimal(MICROS)
_THOUSANDS = re.compile(r"^-?\d{1,3}(,\d{3})+$")
_NO_VALUE = {"", "unknown", "n/a", "na", "none", "null", "-", "?"}
_TRUE = {"true", "1", "yes", "y", "on", "success", "ok"}
_FALSE = {"false", "0", "no", "n", "off", ""}
_MAX_ABS = Decimal(2**63)  # counts are stored as BIGINT: a larger one is junk, not a count
_V = TypeVar("_V")
_One: TypeAlias = Callable[[object], _V]


class ParseError(ValueError):
    """The reply does not have the shape the action returns."""

    @property
    def reason(self) -> str:
        return str(self.args[0]) if self.args else "unexpected reply"


class UnrecognisedWord(ParseError):
    """The reply has the action's shape, but its status word is not one smm knows."""


@dataclass(frozen=True)
class Body:
    """A parsed JSON reply that carried no top-level error."""

    data: object


# --- words -------------------------------------------------------------------------------------------


def _word(value: str) -> str:
    return " ".join(value.replace("_", " ").replace("-", " ").split()).lower()


_TYPES = {_word(t): t for t in SERVICE_TYPES} | {"subscription": "Subscriptions"}

_STATUS_WORDS: dict[OrderStatus, tuple[str, ...]] = {
    OrderStatus.PENDING: ("pending", "awaiting", "queued", "waiting"),
    OrderStatus.IN_PROGRESS: (
        "in progress",
        "inprogress",
        "progress",
        "active",
        "running",
        "started",
        "paused",
    ),
    OrderStatus.PROCESSING: ("processing",),
    OrderStatus.COMPLETED: ("completed", "complete", "done", "finished", "success", "delivered", "expired"),
    OrderStatus.PARTIAL: ("partial", "partially completed", "partial completed", "partially refunded"),
    OrderStatus.CANCELED: (
        "canceled",
        "cancelled",
        "cancel",
        "refunded",
        "refund",
        "refunds",
        "canceled and refunded",
    ),
}
_STATUSES = {word: status for status, words in _STATUS_WORDS.items() for word in words}
# Subscription words (PROTOCOL.md §4) kept besides the six: see ``UpstreamStatus.subscription_word``.
_SUBSCRIPTION_WORDS = {"active": "Active", "paused": "Paused", "expired": "Expired"}

_REFILL_WORDS: dict[RefillState, tuple[str, ...]] = {
    RefillState.PENDING: ("pending", "awaiting", "queued", "waiting"),
    RefillState.IN_PROGRESS: ("in progress", "inprogress", "processing", "progress"),
    RefillState.COMPLETED: ("completed", "complete", "done", "success", "finished", "processed", "partial"),
    RefillState.REJECTED: (
        "rejected",
        "canceled",
        "cancelled",
        "failed",
        "fail",
        "error",
        "refused",
        "declined",
    ),
}
_REFILL_STATES = {word: state for state, words in _REFILL_WORDS.items() for word in words}


def normalise_type(value: object) -> str:
    """A service type in the canonical PP spelling, case-insensitively; unknown types kept as given."""
    if value is None:
        return "Default"
    text = str(value).strip()
    if not text:
        return "Default"
    return _TYPES.get(_word(text), text)


def normalise_status(value: object) -> OrderStatus | None:
    """One of the six PP statuses, or None when the word is not recognised (see the module docstring)."""
    if not isinstance(value, str):
        return None
    return _STATUSES.get(_word(value))


def normalise_refill_state(value: object) -> RefillState | None:
    if not isinstance(value, str):
        return None
    return _REFILL_STATES.get(_word(value))


# --- scalars -----------------------------------------------------------------------------------------


def _decimal(value: object) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):  # only if a caller parsed JSON without parse_float=Decimal
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip()
        if _THOUSANDS.match(text):
            text = text.replace(",", "")
        if text.lower() in _NO_VALUE:
            return None
        try:
            number = Decimal(text)
        except InvalidOperation:
            return None
    else:
        return None
    # Finite and of a sane size: no count, id or amount is that large, and a huge exponent would
    # otherwise cost memory (int()) or raise (quantize()). ``copy_abs``, not ``abs``: ``abs`` rounds
    # in the decimal context and raises ``decimal.Overflow`` for 1e999999999.
    return number if number.is_finite() and number.copy_abs() < _MAX_ABS else None


def to_int(value: object) -> int | None:
    """``"157"``, ``157``, ``"157.0"``, ``"1,234"`` -> int; ``"Unknown"``, ``""``, junk, fractions -> None."""
    number = _decimal(value)
    if number is None or number != number.to_integral_value():
        return None
    return int(number)


def to_micros(value: object, *, rounding: str = ROUND_HALF_UP) -> int | None:
    """A decimal amount (string or number) -> int micro-units, rounded half up (a rate: ``rounding=
    ROUND_CEILING``, so a cost finer than a micro-unit is never rounded below it); None if not a number."""
    number = _decimal(value)
    if number is None:
        return None
    micros = int((number * _MICROS).quantize(Decimal(1), rounding=rounding))
    if abs(micros) > MAX_MICROS:
        return None
    return micros


def to_bool(value: object) -> bool:
    """true/"true"/1/"1"/"yes" -> True; anything else (missing, false, 0, junk) -> False."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return value == 1
    if isinstance(value, str):
        return value.strip().lower() in _TRUE
    return False


def to_id(value: object) -> str | None:
    """An upstream id as a string: 23501, "23501", 23501.0 -> "23501"; non-positive, blank or junk -> None."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | Decimal | float):
        number = _decimal(value)
        if number is None or number != number.to_integral_value() or number <= 0:
            return None
        return str(int(number))
    if isinstance(value, str):
        return canonical_upstream_id(value)
    return None


def normalise_keys(entry: Mapping[str, object]) -> dict[str, object]:
    """Keys lowercased with spaces and ``-`` as ``_``: lunasmm's "Start_Count" -> "start_count"."""
    return {"_".join(str(k).replace("-", " ").split()).lower(): v for k, v in entry.items()}


# --- transport-level classification --------------------------------------------------------------


def redact(text: str, secret: str) -> str:
    """``text`` without ``secret``, also in its URL-encoded and JSON-escaped spellings (PHP's
    json_encode, behind most panels, writes ``/`` as ``\\/``; parsing would turn it back)."""
    if not secret:
        return text
    plain = {secret, quote_plus(secret), quote(secret, safe="")}
    escaped = {json.dumps(s)[1:-1] for s in plain} | {json.dumps(s, ensure_ascii=False)[1:-1] for s in plain}
    for spelling in sorted(plain | escaped | {e.replace("/", "\\/") for e in escaped}, key=len, reverse=True):
        if spelling:
            text = text.replace(spelling, REDACTED)
    return text


def load_json(text: str) -> object:
    """JSON with decimals as ``Decimal`` (never float). Raises ParseError on HTML, garbage, empty."""
    stripped = text.lstrip("\ufeff").strip()
    if not stripped:
        raise ParseError("empty body")
    if stripped.startswith("<"):
        raise ParseError("HTML page instead of JSON")

    def no_constants(name: str) -> object:
        raise ValueError(name)

    try:
        data = json.loads(stripped, parse_float=Decimal, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; deep nesting
        raise ParseError("malformed JSON") from exc
    if _too_deep(data):
        raise ParseError(f"JSON nested deeper than {MAX_DEPTH} levels")
    return data


def _too_deep(data: object) -> bool:
    """Whether arrays and objects nest deeper than ``MAX_DEPTH`` (json takes about 1,000 levels;
    ``error_message`` and friends would raise ``RecursionError`` on a few hundred). Iterative."""
    stack: list[tuple[object, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is None:
            continue
        if depth > MAX_DEPTH:
            return True
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return False


def error_message(value: object) -> str | None:
    """The text of an ``error`` value, or None when the value means "no error" (null, false, "")."""
    if value is None or value is False or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, str):
        text = value.strip()
    elif isinstance(value, Mapping):
        keys = normalise_keys(value)
        inner = keys.get("message", keys.get("error", keys.get("msg")))
        text = error_message(inner) or json.dumps(value, default=str, ensure_ascii=False)
    elif isinstance(value, list):
        text = "; ".join(m for m in (error_message(v) for v in value) if m)
    else:
        text = str(value)
    return storable(text)[:MAX_MESSAGE_CHARS] or "error"  # it goes into notes and logs: no NUL


def _top_level_error(data: object, *, keys: tuple[str, ...]) -> str | None:
    if not isinstance(data, Mapping):
        return None
    entry = normalise_keys(data)
    for key in keys:
        if key in entry:
            message = error_message(entry[key])
            if message is not None:
                return message
    return None


def classify(http_status: int, text: str) -> Body | Rejected | Unknown:
    """Accepted body, definite rejection or unknown, from the HTTP status and the body text.

    2xx + JSON ``{"error": "..."}`` -> Rejected (Unknown if an ``order`` id comes with it); 4xx + JSON
    ``error`` (or ``message``) -> Rejected;
    429 -> Unknown(sent=False) (not processed, RFC 6585); every other status, HTML, garbage -> Unknown.
    """
    if http_status == 429:
        return Unknown("HTTP 429 Too Many Requests", sent=False)
    if 200 <= http_status < 300:
        try:
            data = load_json(text)
        except ParseError as exc:
            return Unknown(f"HTTP {http_status}: {exc.reason}")
        message = _top_level_error(data, keys=("error",))
        if message is None:
            return Body(data)
        if isinstance(data, Mapping) and to_id(normalise_keys(data).get("order")) is not None:
            # An order id next to an error: the order may exist, so this is no rejection.
            return Unknown(f"HTTP {http_status}: an order id and an error in one reply: {message}")
        return Rejected(message)
    if 400 <= http_status < 500:
        try:
            data = load_json(text)
        except ParseError:
            return Unknown(f"HTTP {http_status} without a JSON error")
        message = _top_level_error(data, keys=("error", "message"))
        if message is not None:
            return Rejected(message)
        return Unknown(f"HTTP {http_status} without a JSON error")
    return Unknown(f"HTTP {http_status}")


# --- actions ---------------------------------------------------------------------------------------


def _entry(data: object, what: str) -> dict[str, object]:
    if not isinstance(data, Mapping):
        raise ParseError(f"{what}: expected a JSON object")
    return normalise_keys(data)


def _text(value: object) -> str:
    if value is None:
        return ""
    return storable(str(value)).strip()


def _service(raw: object) -> UpstreamService:
    entry = _entry(raw, "service")
    service_id = to_id(entry.get("service", entry.get("id", entry.get("service_id"))))
    if service_id is None:
        raise ParseError("service without an id")
    name = _text(entry.get("name"))
    # Up: "0.0000004" per 1000 is a cost of 0.000001, never 0 (a service sold for nothing).
    rate = to_micros(entry.get("rate", entry.get("price")), rounding=ROUND_CEILING)
    low, high = to_int(entry.get("min")), to_int(entry.get("max"))
    # An entry with an id is listed, even when smm cannot use it: it is kept with the reason, so the
    # sync skips it (quarantining a service linked to it) rather than taking the service for gone.
    problem = ""
    if not name:
        problem = "no name"
    elif rate is None or rate < 0:
        problem = "bad rate"
    elif low is None or high is None or low < 0 or high < low:
        problem = "bad min/max"
    average = entry.get("average_time")
    return UpstreamService(
        service_id=service_id,
        name=name,
        type=normalise_type(entry.get("type")),
        category=_text(entry.get("category")),
        rate_micros=0 if problem else rate or 0,
        min=0 if problem else low or 0,
        max=0 if problem else high or 0,
        problem=problem,
        refill=to_bool(entry.get("refill")),
        cancel=to_bool(entry.get("cancel")),
        dripfeed=to_bool(entry.get("dripfeed")),
        description=_text(entry.get("desc", entry.get("description"))),
        average_time=None if average is None or _text(average) == "" else _text(average),
    )


def parse_services(data: object) -> tuple[list[UpstreamService], list[str]]:
    """The services array -> (services, problems). Bad entries are skipped and described in problems;
    duplicates keep the first. A list whose every entry is bad raises ParseError."""
    items = data
    if isinstance(data, Mapping):
        wrapped = normalise_keys(data)
        items = wrapped.get("services", wrapped.get("data"))
    if not isinstance(items, list):
        raise ParseError("services: expected a JSON array")
    services: list[UpstreamService] = []
    problems: list[str] = []
    seen: set[str] = set()
    for raw in items:
        try:
            service = _service(raw)
        except ParseError as exc:
            problems.append(exc.reason)
            continue
        if service.service_id in seen:
            problems.append(f"service {service.service_id}: duplicate id")
            continue
        seen.add(service.service_id)
        if service.problem:
            problems.append(f"service {service.service_id}: {service.problem}")
        services.append(service)
    if items and not any(not s.problem for s in services):
        raise ParseError("services: no valid entry")
    return services, problems


def parse_add(data: object) -> str:
    """``{"order": 23501}``, ``{"order": "23501"}``, ``{"status": "success", "order": 151}`` -> "23501"."""
    entry = _entry(data, "add")
    order_id = to_id(entry.get("order", entry.get("order_id")))
    if order_id is None:
        raise ParseError("add: no order id in the reply")
    return order_id


def _status_entry(raw: object) -> UpstreamStatus | Rejected:
    if isinstance(raw, str):  # SmartPanel: "Incorrect order ID" in place of an object
        return Rejected(raw.strip()[:MAX_MESSAGE_CHARS] or "error")
    entry = _entry(raw, "status")
    message = error_message(entry.get("error"))
    if message is not None:
        return Rejected(message)
    if "status" not in entry:
        raise ParseError("status: no status in the reply")
    status = normalise_status(entry["status"])
    if status is None:
        raise _unrecognised("status: unrecognised status", entry["status"])
    currency = _text(entry.get("currency"))
    return UpstreamStatus(
        status=status,
        charge_micros=to_micros(entry.get("charge")),
        start_count=to_int(entry.get("start_count")),
        remains=to_int(entry.get("remains")),
        currency=currency or None,
        subscription_word=_SUBSCRIPTION_WORDS.get(_word(str(entry["status"]))),
    )


def parse_status(data: object) -> UpstreamStatus:
    """A single ``status`` reply (top-level errors were handled by ``classify``)."""
    result = _status_entry(data)
    if isinstance(result, Rejected):
        raise ParseError(f"status: {result.message}")
    return result


def _unrecognised(what: str, value: object) -> ParseError:
    """An odd word (a non-blank string) is an ``UnrecognisedWord``; null, a number, "" are no word."""
    if isinstance(value, str) and value.strip():
        return UnrecognisedWord(f"{what} {value[:60]!r}")
    return ParseError(f"{what} {str(value)[:60]!r}")


def _per_id(
    data: object, ids: list[str], id_key: str, single_keys: tuple[str, ...]
) -> Iterable[tuple[str, object]]:
    """(id, entry) pairs from a list of objects carrying ``id_key``, an object keyed by id, or, for one
    requested id, a single object with one of ``single_keys``."""
    if isinstance(data, list):
        for raw in data:
            if isinstance(raw, Mapping):
                entry = normalise_keys(raw)
                entry_id = to_id(entry.get(id_key))
                if entry_id is not None:
                    yield entry_id, entry
        return
    if not isinstance(data, Mapping):
        raise ParseError("expected a JSON object or array")
    entry = normalise_keys(data)
    if len(ids) == 1 and ids[0] not in data and any(k in entry for k in single_keys):
        yield ids[0], entry
        return
    for key, value in data.items():
        entry_id = to_id(key)
        if entry_id is not None:
            yield entry_id, value


def _collect(
    pairs: Iterable[tuple[str, object]], ids: list[str], what: str, parse_one: _One[_V]
) -> dict[str, _V]:
    wanted = set(ids)
    out: dict[str, _V] = {}
    odd: UnrecognisedWord | None = None
    for entry_id, raw in pairs:
        if entry_id not in wanted or entry_id in out:
            continue
        try:
            out[entry_id] = parse_one(raw)
        except UnrecognisedWord as exc:
            odd = odd or exc  # unknown for this id: left out
        except ParseError:
            continue  # unknown for this id: left out
    if ids and not out:
        if odd is not None:  # answered in the action's shape, only in words smm does not know
            raise UnrecognisedWord(f"{what}: no entry with a known word: {odd.reason}")
        raise ParseError(f"{what}: no entry for the requested ids")
    return out


def parse_statuses(data: object, ids: list[str]) -> dict[str, UpstreamStatus | Rejected]:
    """Multi-status: an object keyed by id, or Kauandouglas's list of entries with "order".

    Unknown ids (``{"error": ...}`` or a bare string) are Rejected; unrecognised entries are left out."""
    return _collect(_per_id(data, ids, "order", ("status",)), ids, "status", _status_entry)


def _refill_id(value: object) -> str | Rejected:
    if isinstance(value, Mapping):
        message = error_message(normalise_keys(value).get("error"))
        if message is not None:
            return Rejected(message)
        raise ParseError("refill: unexpected object")
    refill_id = to_id(value)
    if refill_id is not None:
        return refill_id
    if isinstance(value, str) and value.strip():
        return Rejected(value.strip()[:MAX_MESSAGE_CHARS])
    raise ParseError("refill: no refill id")


def parse_refill(data: object) -> str | Rejected:
    """``{"refill": "1"}``, ``{"success": "...", "refill": 12345}``; ``{"status": "success", ...}`` without
    an id -> "" (accepted, not trackable)."""
    entry = _entry(data, "refill")
    if "refill" in entry and entry["refill"] not in (None, "", True):
        return _refill_id(entry["refill"])
    if to_bool(entry.get("status")) or "success" in entry or entry.get("refill") is True:
        return ""
    raise ParseError("refill: no refill id in the reply")


def _refill_entry(raw: object) -> str | Rejected:
    if isinstance(raw, Mapping):
        entry = normalise_keys(raw)
        if "refill" in entry:
            return _refill_id(entry["refill"])
        message = error_message(entry.get("error"))
        if message is not None:
            return Rejected(message)
        raise ParseError("refill: no refill id")
    return _refill_id(raw)


def parse_refills(data: object, ids: list[str]) -> dict[str, str | Rejected]:
    """``[{"order": 1, "refill": 1}, {"order": 3, "refill": {"error": "..."}}]``
    -> ``{"1": "1", "3": Rejected(...)}``."""
    return _collect(_per_id(data, ids, "order", ("refill",)), ids, "refill", _refill_entry)


def _refill_state(raw: object) -> RefillState | Rejected:
    if isinstance(raw, str):
        state = normalise_refill_state(raw)
        if state is None:
            raise _unrecognised("refill_status: unrecognised state", raw)
        return state
    entry = _entry(raw, "refill_status")
    message = error_message(entry.get("error"))
    if message is not None:
        return Rejected(message)
    if "status" not in entry:
        raise ParseError("refill_status: no status")
    value = entry["status"]
    if isinstance(value, Mapping):  # {"status": {"error": "Refill not found"}}
        message = error_message(normalise_keys(value).get("error"))
        if message is not None:
            return Rejected(message)
        raise ParseError("refill_status: unexpected status object")
    state = normalise_refill_state(value)
    if state is None:
        raise _unrecognised("refill_status: unrecognised state", value)
    return state


def parse_refill_status(data: object) -> RefillState | Rejected:
    """A single ``refill_status`` reply: ``{"status": "Completed"}``."""
    try:
        return _refill_state(data)
    except UnrecognisedWord:
        if isinstance(data, str):  # a bare string is an entry's form, not a reply's: no answer
            raise ParseError(f"refill_status: a bare string {data[:60]!r} in place of the object") from None
        raise


def parse_refill_statuses(data: object, ids: list[str]) -> dict[str, RefillState | Rejected]:
    """``[{"refill": 1, "status": "Completed"}, {"refill": 3, "status": {"error": "Refill not found"}}]``."""
    return _collect(_per_id(data, ids, "refill", ("status",)), ids, "refill_status", _refill_state)


def _cancel_value(value: object) -> bool | Rejected:
    if isinstance(value, Mapping):
        message = error_message(normalise_keys(value).get("error"))
        if message is not None:
            return Rejected(message)
        raise ParseError("cancel: unexpected object")
    if isinstance(value, bool):
        return value
    if isinstance(value, int | Decimal):
        return value == 1
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE:
            return True
        if word in _FALSE:
            return False
        return Rejected(value.strip()[:MAX_MESSAGE_CHARS])
    raise ParseError("cancel: unexpected value")


def _cancel_entry(raw: object) -> bool | Rejected:
    if isinstance(raw, Mapping):
        entry = normalise_keys(raw)
        if "cancel" in entry:
            return _cancel_value(entry["cancel"])
        message = error_message(entry.get("error"))
        if message is not None:
            return Rejected(message)
        if "success" in entry:  # smmserver.life: {"success": "..."}
            return True
        raise ParseError("cancel: no cancel value")
    return _cancel_value(raw)


def parse_cancel(data: object, ids: list[str]) -> dict[str, bool | Rejected]:
    """``[{"order": 9, "cancel": {"error": "..."}}, {"order": 2, "cancel": 1}]``; for one id also
    ``{"cancel": "1"}`` or ``{"success": "..."}``. 1/"1"/true/"success" -> True."""
    return _collect(_per_id(data, ids, "order", ("cancel", "success")), ids, "cancel", _cancel_entry)


def parse_balance(data: object) -> Balance:
    """``{"balance": "100.84292", "currency": "USD"}`` (or a number, or with ``"status": "success"``)."""
    entry = _entry(data, "balance")
    amount = to_micros(entry.get("balance"))
    if amount is None:
        raise ParseError("balance: no balance in the reply")
    return Balance(amount_micros=amount, currency=_text(entry.get("currency")).upper())
