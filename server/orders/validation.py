"""New-order validation: what a client may order, what it costs and what goes upstream.

Pure (no I/O). ``validate_order`` checks an ``OrderInput`` against the service's ``ServiceTerms`` and
returns a ``ValidOrder``, or raises one INVALID_ARGUMENT (domain ``orders.smm``) that names every bad
field at once, in ``OrderInput`` field order, one violation per field. The parameters of each type
are PROTOCOL.md §3.2's; the rules below are smm's where the protocol is silent.

Every type
- Parameters a type does not use are ignored, not refused (PROTOCOL.md checklist 8: tolerate extras),
  and never sent upstream. ``upstream`` holds exactly the parameters the type uses, named as in
  PROTOCOL.md, values as strings (lists joined with ``\\n``).
- An unsupported ``terms.type`` (the catalog quarantines those, so only a bug gets here) is a
  violation on ``service``.
- Text is trimmed. A single-line text field (``username``, ``hashtag``, ``google_keyword``, ...)
  holds 1 to 1,000 characters and no control characters (no line breaks either).
- A list field (``comments``, ``usernames``, ``hashtags``, ``keywords``, ``groups``) is split on
  ``\\r\\n`` or ``\\n``; lines are trimmed and empty lines dropped. At least 1 and at most 10,000
  lines, each at most 500 characters, with no control characters except tab (PostgreSQL text
  cannot even store NUL).

link
- Required by every type except SUBSCRIPTIONS, which ignores it (``ValidOrder.link`` is ``""``).
- At most 2,048 bytes in UTF-8, not characters (an entry of the index on orders (user_id, link)
  holds at most 2,704 bytes; 2,048 CJK characters are 6,144), no whitespace, control (C0, C1)
  or invisible format characters (zero-width, bidi overrides), an ``http``/``https`` URL
  (``urllib.parse.urlsplit``) whose host is ``localhost`` or a dotted name with no empty label
  (IPv6 literals are refused), and if it has a port, ASCII digits naming 1 to 65535 (``host:``
  with an empty port and port 0 are refused). ``media`` (MENTIONS_MEDIA_LIKERS)
  and ``referring_url`` (WEB_TRAFFIC) follow the same rules.

quantity and billing (``billable`` is the units the price covers: price = rate x billable / 1000)
- DEFAULT, SEO, MENTIONS, MENTIONS_WITH_HASHTAGS, MENTIONS_HASHTAG, MENTIONS_USER_FOLLOWERS,
  MENTIONS_MEDIA_LIKERS, COMMENT_LIKES, POLL, INVITES_FROM_GROUPS, WEB_TRAFFIC: ``quantity`` is
  required, within the service's [min, max] (also never below 1 nor above 10**12, whatever the
  terms say). billable = quantity x runs.
- PACKAGE, CUSTOM_COMMENTS_PACKAGE: no quantity (one sent is ignored); billable = 1000, so the
  price is the rate, once. ``ValidOrder.quantity`` is 0.
- CUSTOM_COMMENTS, COMMENT_REPLIES: quantity = number of ``comments`` lines; MENTIONS_CUSTOM_LIST:
  quantity = number of ``usernames`` lines. A ``quantity`` the client also sent must equal that
  count (else a violation on the list field); the count must be within [min, max] (a violation on
  the list field). Upstream gets the list, not a quantity. billable = the count.
- SUBSCRIPTIONS: see below. ``ValidOrder.quantity`` is 0.
- billable never exceeds 10**12, so every amount derived from it stays exact in int64 math.

drip-feed (``runs``/``interval``)
- Allowed only on the quantity types of the first bullet above and only when ``terms.dripfeed``;
  otherwise each of ``runs``/``interval`` that was sent is refused with "this service does not
  support drip-feed".
- Both or neither: one without the other is a violation on the missing one. ``runs`` in 2..1,000
  (iplusview's >= 2; the cap keeps a parent order's children bounded). ``interval`` in 1..1,440
  minutes (one run a day at most; PP's limits are unknown and SmartPanel's short list is too narrow).
- ``quantity`` is per run and within [min, max]; the total quantity x runs must not exceed max
  (SmartPanel's rule), reported on ``quantity``. Without drip-feed, runs = 1 and interval = 0.
- Upstream gets ``runs``/``interval`` only when the provider runs the drip-feed
  (``terms.dripfeed_upstream``); otherwise smm sends ``runs`` orders of ``quantity`` itself.

type-specific fields
- SEO ``keywords``; MENTIONS ``usernames``; MENTIONS_WITH_HASHTAGS ``usernames`` + ``hashtags``;
  MENTIONS_HASHTAG ``hashtag``; MENTIONS_USER_FOLLOWERS ``username``; MENTIONS_MEDIA_LIKERS ``media``
  (a URL); COMMENT_LIKES ``username``; COMMENT_REPLIES ``username`` + ``comments``;
  CUSTOM_COMMENTS(_PACKAGE) ``comments``; INVITES_FROM_GROUPS ``groups``: all required.
- POLL ``answer_number``: required, a positive whole number of at most 9 digits; sent without
  leading zeros.
- WEB_TRAFFIC: ``country`` a 2-letter code (ASCII letters; not checked against ISO 3166), sent
  upper-cased; ``device`` "1".."5"; ``type_of_traffic`` "1".."3"; ``google_keyword`` required
  (and sent) only when type_of_traffic is 1, ``referring_url`` (a URL) only when it is 2.

SUBSCRIPTIONS
- ``username`` required; ``min`` and ``max`` required, each within the service's [min, max], and
  min <= max (a violation on ``max``).
- ``posts`` 1..10,000. The protocol allows leaving it out (unlimited), but a wallet hold needs a
  bound: such a subscription is placed for ``terms.default_posts`` posts (the deployment's
  ``SMM_SUBSCRIPTION_DEFAULT_POSTS``), sent upstream as ``posts`` so the provider stops there too;
  when that is 0, ``posts`` is required. ``old_posts`` is optional, 0..posts. smm's choice: the protocol says
  ``posts`` limits new posts and ``old_posts`` adds existing ones, so the worst case, and the hold,
  is billable = max x (posts + old_posts), which must not exceed 10**12 (a violation on ``posts``).
- ``delay`` in {0, 5, 10, 15, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540,
  600} minutes; 0 (unset) means none and is sent as "0".
- ``expiry`` optional, ``d/m/Y`` (day and month with 1 or 2 digits, a 4-digit year), a real date
  not before ``today``; sent as ``dd/mm/YYYY``.
- Upstream: username, min, max, posts, delay, plus old_posts and expiry only when given.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, fields
from datetime import date
from urllib.parse import urlsplit

from server.common.errors import FieldViolation, collect
from server.common.service_types import QUANTITY_TYPES, SERVICE_TYPES

__all__ = [
    "DOMAIN",
    "OrderInput",
    "ServiceTerms",
    "ValidOrder",
    "sizing_field",
    "validate_order",
]

DOMAIN = "orders.smm"

PACKAGE_TYPES = frozenset({"PACKAGE", "CUSTOM_COMMENTS_PACKAGE"})
# Types whose quantity is the number of lines of a list field.
COUNTED_BY = {
    "CUSTOM_COMMENTS": "comments",
    "COMMENT_REPLIES": "comments",
    "MENTIONS_CUSTOM_LIST": "usernames",
}

MAX_QUANTITY = 10**12
MAX_BILLABLE = 10**12
PACKAGE_BILLABLE = 1000
MAX_URL = 2048  # bytes in UTF-8
MAX_TEXT = 1000
MAX_LINE = 500
MAX_LINES = 10_000
MIN_RUNS, MAX_RUNS = 2, 1000
MIN_INTERVAL, MAX_INTERVAL = 1, 1440
MAX_POSTS = 10_000
DELAYS = (0, 5, 10, 15, 30, 60, 90, 120, 150, 180, 210, 240, 270, 300, 360, 420, 480, 540, 600)
DEVICES = frozenset({"1", "2", "3", "4", "5"})
TRAFFIC_TYPES = frozenset({"1", "2", "3"})

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_IN_LINE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_NEWLINE = re.compile(r"\r?\n")
_DIGITS = re.compile(r"[0-9]{1,9}")
_COUNTRY = re.compile(r"[A-Za-z]{2}")
_DMY = re.compile(r"([0-9]{1,2})/([0-9]{1,2})/([0-9]{4})")


@dataclass(frozen=True)
class ServiceTerms:
    type: str  # our spelling: DEFAULT, PACKAGE, ..., WEB_TRAFFIC
    min_quantity: int
    max_quantity: int
    dripfeed: bool  # the service allows drip-feed (runs/interval)
    # The provider runs the drip-feed itself; when False smm sends each run as its own order.
    dripfeed_upstream: bool = True
    # The posts of a subscription placed without ``posts`` (the protocol's "unlimited"); 0: refused.
    default_posts: int = 0


@dataclass(frozen=True)
class OrderInput:
    """The order as the client sent it; unset = ``""`` or 0."""

    link: str = ""
    quantity: int = 0
    runs: int = 0
    interval: int = 0  # minutes between runs
    comments: str = ""  # one per line (\n or \r\n)
    usernames: str = ""  # one per line
    hashtags: str = ""  # one per line
    hashtag: str = ""
    username: str = ""
    media: str = ""
    keywords: str = ""  # one per line
    answer_number: str = ""
    groups: str = ""  # one per line
    min: int = 0  # subscriptions
    max: int = 0
    posts: int = 0
    old_posts: int = 0
    delay: int = 0  # minutes
    expiry: str = ""  # d/m/Y
    country: str = ""  # web traffic
    device: str = ""
    type_of_traffic: str = ""
    google_keyword: str = ""
    referring_url: str = ""


@dataclass(frozen=True)
class ValidOrder:
    link: str  # trimmed; "" for subscriptions
    quantity: int  # per run, as sent upstream ("quantity"); 0 when the type sends none
    runs: int  # 1 unless drip-feed
    interval: int  # 0 unless drip-feed
    billable: int  # units the price covers: price = rate_per_1000 x billable / 1000
    upstream: dict[str, str]  # every `add` parameter besides key/action/service (PROTOCOL.md §3.2)


# The fields each type needs besides link, quantity and drip-feed, in PROTOCOL.md's order.
# SUBSCRIPTIONS and WEB_TRAFFIC have their own functions below.
_LINES, _TEXT, _URL, _NUMBER = "lines", "text", "url", "number"
EXTRAS: dict[str, tuple[tuple[str, str], ...]] = {
    "DEFAULT": (),
    "PACKAGE": (),
    "SEO": (("keywords", _LINES),),
    "CUSTOM_COMMENTS": (("comments", _LINES),),
    "CUSTOM_COMMENTS_PACKAGE": (("comments", _LINES),),
    "MENTIONS": (("usernames", _LINES),),
    "MENTIONS_WITH_HASHTAGS": (("usernames", _LINES), ("hashtags", _LINES)),
    "MENTIONS_CUSTOM_LIST": (("usernames", _LINES),),
    "MENTIONS_HASHTAG": (("hashtag", _TEXT),),
    "MENTIONS_USER_FOLLOWERS": (("username", _TEXT),),
    "MENTIONS_MEDIA_LIKERS": (("media", _URL),),
    "COMMENT_LIKES": (("username", _TEXT),),
    "COMMENT_REPLIES": (("username", _TEXT), ("comments", _LINES)),
    "POLL": (("answer_number", _NUMBER),),
    "INVITES_FROM_GROUPS": (("groups", _LINES),),
    "WEB_TRAFFIC": (),
}
_FIELD_ORDER = {f.name: i for i, f in enumerate(fields(OrderInput))}


def validate_order(terms: ServiceTerms, order: OrderInput, *, today: date) -> ValidOrder:
    """The order as it will be billed and sent upstream; INVALID_ARGUMENT listing every bad field."""
    check = _Check()
    if terms.type not in SERVICE_TYPES:
        check.bad("service", f"has a type that cannot be ordered ({terms.type})")
        check.raise_if_bad()
    if terms.type == "SUBSCRIPTIONS":
        return _subscription(check, terms, order, today)

    link = check.url("link", order.link)
    upstream: dict[str, str] = {"link": link}
    quantity = billable = 0
    runs, interval = _dripfeed(check, terms, order)

    if terms.type in QUANTITY_TYPES:
        lo, hi = _bounds(terms)
        q = check.in_range("quantity", order.quantity, lo, hi, required=True)
        if q is not None:
            quantity = q
            if q * runs > hi:
                check.bad("quantity", f"quantity x runs ({q * runs}) must be at most {hi}")
        upstream["quantity"] = str(quantity)
        billable = quantity * runs

    for name, kind in EXTRAS[terms.type]:
        value = _extra(check, name, kind, _text_of(order, name))
        if name == COUNTED_BY.get(terms.type):
            quantity = billable = _count(check, terms, order, name, value)
        upstream[name] = value

    if terms.type in PACKAGE_TYPES:
        billable = PACKAGE_BILLABLE
    if terms.type == "WEB_TRAFFIC":
        upstream.update(_web_traffic(check, order))
    if runs > 1 and terms.dripfeed_upstream:
        upstream["runs"] = str(runs)
        upstream["interval"] = str(interval)

    check.raise_if_bad()
    return ValidOrder(
        link=link, quantity=quantity, runs=runs, interval=interval, billable=billable, upstream=upstream
    )


def sizing_field(service_type: str) -> str:
    """The field the client sizes an order of this type with (billable follows from it): the one
    to name when the order as a whole is too large."""
    if service_type == "SUBSCRIPTIONS":
        return "posts"  # as the billable ceiling above: max x (posts + old_posts)
    if service_type in PACKAGE_TYPES:
        return "service"  # one package: nothing the client sized
    return COUNTED_BY.get(service_type, "quantity")


# --- parts ---------------------------------------------------------------------------------------


def _bounds(terms: ServiceTerms) -> tuple[int, int]:
    return max(1, terms.min_quantity), min(terms.max_quantity, MAX_QUANTITY)


def _text_of(order: OrderInput, name: str) -> str:
    value = getattr(order, name)
    assert isinstance(value, str)
    return value


def _dripfeed(check: _Check, terms: ServiceTerms, order: OrderInput) -> tuple[int, int]:
    """(runs, interval): (1, 0) without drip-feed."""
    if not order.runs and not order.interval:
        return 1, 0
    if not (terms.dripfeed and terms.type in QUANTITY_TYPES):
        for name, value in (("runs", order.runs), ("interval", order.interval)):
            if value:
                check.bad(name, "this service does not support drip-feed")
        return 1, 0
    runs = check.in_range("runs", order.runs, MIN_RUNS, MAX_RUNS, required=True, why="with interval")
    interval = check.in_range(
        "interval", order.interval, MIN_INTERVAL, MAX_INTERVAL, required=True, why="with runs"
    )
    if runs is None or interval is None:
        return 1, 0
    return runs, interval


def _extra(check: _Check, name: str, kind: str, raw: str) -> str:
    """A type-specific field, cleaned for upstream ("" when bad)."""
    if kind == _LINES:
        return "\n".join(check.lines(name, raw))
    if kind == _TEXT:
        return check.text(name, raw)
    if kind == _URL:
        return check.url(name, raw)
    number = raw.strip()
    if not number:
        check.bad(name, "is required")
    elif not _DIGITS.fullmatch(number) or int(number) == 0:
        check.bad(name, "must be a positive whole number")
    else:
        return str(int(number))
    return ""


def _count(check: _Check, terms: ServiceTerms, order: OrderInput, name: str, value: str) -> int:
    """The quantity of a type counted by the lines of ``name`` (0 when bad)."""
    if check.has(name):
        return 0
    count = value.count("\n") + 1
    lo, hi = _bounds(terms)
    if order.quantity and order.quantity != count:
        check.bad(name, f"must have as many lines as the quantity ({order.quantity})")
    elif not lo <= count <= hi:
        check.bad(name, f"must have between {lo} and {hi} lines (it has {count})")
    else:
        return count
    return 0


def _web_traffic(check: _Check, order: OrderInput) -> dict[str, str]:
    out: dict[str, str] = {}
    country = order.country.strip()
    if not country:
        check.bad("country", "is required")
    elif not _COUNTRY.fullmatch(country):
        check.bad("country", "must be a 2-letter country code")
    out["country"] = country.upper()
    out["device"] = check.choice("device", order.device, DEVICES, "must be 1 to 5")
    traffic = check.choice("type_of_traffic", order.type_of_traffic, TRAFFIC_TYPES, "must be 1 to 3")
    out["type_of_traffic"] = traffic
    if traffic == "1":
        out["google_keyword"] = check.text("google_keyword", order.google_keyword)
    elif traffic == "2":
        out["referring_url"] = check.url("referring_url", order.referring_url)
    return out


def _subscription(check: _Check, terms: ServiceTerms, order: OrderInput, today: date) -> ValidOrder:
    _dripfeed(check, terms, order)  # refuses runs/interval
    username = check.text("username", order.username)
    lo, hi = _bounds(terms)
    low = check.in_range("min", order.min, lo, hi, required=True)
    high = check.in_range("max", order.max, lo, hi, required=True)
    if low is not None and high is not None and low > high:
        check.bad("max", f"must be at least min ({low})")
    posts_given = order.posts or terms.default_posts
    posts = check.in_range("posts", posts_given, 1, MAX_POSTS, required=True)
    old_posts = check.in_range("old_posts", order.old_posts, 0, posts or MAX_POSTS, required=False)
    if (
        posts is not None
        and old_posts is not None
        and high is not None
        and high * (posts + old_posts) > MAX_BILLABLE
    ):
        check.bad("posts", f"max x (posts + old_posts) must be at most {MAX_BILLABLE}")
    if order.delay not in DELAYS:
        check.bad("delay", "must be one of " + ", ".join(map(str, DELAYS)) + " minutes")
    expiry = _expiry(check, order.expiry, today)
    check.raise_if_bad()
    assert low is not None
    assert high is not None
    assert posts is not None
    assert old_posts is not None

    upstream = {
        "username": username,
        "min": str(low),
        "max": str(high),
        "posts": str(posts),
        "delay": str(order.delay),
    }
    if old_posts:
        upstream["old_posts"] = str(old_posts)
    if expiry:
        upstream["expiry"] = expiry
    return ValidOrder(
        link="", quantity=0, runs=1, interval=0, billable=high * (posts + old_posts), upstream=upstream
    )


def _expiry(check: _Check, raw: str, today: date) -> str:
    """``dd/mm/YYYY``, or "" when not given (or bad)."""
    text = raw.strip()
    if not text:
        return ""
    match = _DMY.fullmatch(text)
    if not match:
        check.bad("expiry", "must be a date as d/m/Y, like 31/12/2030")
        return ""
    day, month, year = (int(part) for part in match.groups())
    try:
        when = date(year, month, day)
    except ValueError:
        check.bad("expiry", "is not a real date")
        return ""
    if when < today:
        check.bad("expiry", f"must not be before today ({today:%d/%m/%Y})")
        return ""
    return f"{when:%d/%m/%Y}"


# --- field checks --------------------------------------------------------------------------------


class _Check:
    """Collects violations; each check returns the cleaned value (a harmless default when bad)."""

    def __init__(self) -> None:
        self.violations: list[FieldViolation] = []

    def bad(self, field: str, description: str) -> None:
        self.violations.append(FieldViolation(field, description))

    def has(self, field: str) -> bool:
        return any(v.field == field for v in self.violations)

    def raise_if_bad(self) -> None:
        ordered = sorted(self.violations, key=lambda v: _FIELD_ORDER.get(v.field, -1))
        collect(ordered, domain=DOMAIN)

    def in_range(
        self, field: str, value: int, lo: int, hi: int, *, required: bool, why: str = ""
    ) -> int | None:
        if not value and required:
            self.bad(field, f"is required {why}" if why else "is required")
            return None
        if not lo <= value <= hi:
            self.bad(field, f"must be between {lo} and {hi}")
            return None
        return value

    def choice(self, field: str, raw: str, allowed: frozenset[str], description: str) -> str:
        value = raw.strip()
        if not value:
            self.bad(field, "is required")
        elif value not in allowed:
            self.bad(field, description)
        return value

    def text(self, field: str, raw: str) -> str:
        value = raw.strip()
        if not value:
            self.bad(field, "is required")
        elif len(value) > MAX_TEXT:
            self.bad(field, f"must be at most {MAX_TEXT} characters")
        elif _CONTROL.search(value):
            self.bad(field, "must be one line without control characters")
        return value

    def lines(self, field: str, raw: str) -> list[str]:
        numbered = [(n, line.strip()) for n, line in enumerate(_NEWLINE.split(raw), start=1)]
        kept = [(n, line) for n, line in numbered if line]
        if not kept:
            self.bad(field, "is required")
            return []
        if len(kept) > MAX_LINES:
            self.bad(field, f"must have at most {MAX_LINES} lines")
            return []
        for n, line in kept:
            if len(line) > MAX_LINE:
                self.bad(field, f"line {n} is longer than {MAX_LINE} characters")
                return []
            if _CONTROL_IN_LINE.search(line):
                self.bad(field, f"line {n} contains control characters")
                return []
        return [line for _, line in kept]

    def url(self, field: str, raw: str) -> str:
        value = raw.strip()
        problem = _url_problem(value)
        if problem is not None:
            self.bad(field, problem)
        return value


def _url_problem(text: str) -> str | None:
    if not text:
        return "is required"
    if len(text.encode("utf-8", "surrogatepass")) > MAX_URL:
        return f"must be at most {MAX_URL} bytes (UTF-8)"
    # Format characters (Cf: zero-width, bidi overrides, BOM) are invisible: the link would read
    # differently to staff and the provider than where it goes.
    if any(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in text):
        return "must not contain spaces or control characters"
    not_url = "must be an http or https URL, like https://example.com/post"
    try:
        parts = urlsplit(text)
        host = parts.hostname or ""
    except ValueError:
        return not_url
    if parts.scheme.lower() not in ("http", "https") or not _host_ok(host) or not _port_ok(parts.netloc):
        return not_url
    return None


def _port_ok(netloc: str) -> bool:
    """No port, or ASCII digits naming 1..65535. ``urlsplit`` reads ``host:`` as no port and
    takes port 0 (and, depending on the Python release, ``+443`` or ``4_43``)."""
    host_port = netloc.rpartition("@")[2]
    _, colon, port = host_port.rpartition(":")
    if not colon:
        return True
    return port.isascii() and port.isdigit() and 0 < int(port) <= 65535


def _host_ok(host: str) -> bool:
    if host == "localhost":
        return True
    name = host.removesuffix(".")
    return "." in name and all(name.split("."))
