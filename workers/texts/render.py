"""Text message templates: one message name + a context + the panel's name -> the body.

The templates are plain-text Jinja2 files in ``workers/texts/templates/`` (``<name>.txt.j2``).
Every word comes from the message catalogue shared with the emails (``workers/mail/catalogue/``,
keys ``sms.*``) through ``t(key, **params)``; the panel's name is ``panel_name``. A variable
missing from the context raises (``StrictUndefined``), and so does ``None``.

User input cannot shape a message: before rendering, every string in the context (and every
string in a list) loses its control characters, line and paragraph separators and
bidirectional overrides, and is cut to ``MAX_VALUE`` characters; only the templates place line
breaks. The body is cut to ``MAX_BODY`` characters (three GSM-7 segments), ending in "...".

Context keys per template (all required, all strings unless said):

- ``phone_verification``: ``name`` (may be ""), ``code``, ``minutes`` (how long it works).
- ``order_completed``: ``order_id``, ``service_name``, ``charged``, ``currency``.
- ``order_partial``: ``order_id``, ``service_name``, ``remains``, ``released``, ``currency``.
- ``order_canceled``: ``order_id``, ``service_name``, ``released``, ``currency``.
- ``api_key_created``: ``key_name``, ``key_prefix`` (never the secret).
- ``security_notice``: ``change`` (one of ``SECURITY_CHANGES``), ``time``.
- ``admin_alert``: ``title``, ``lines`` (a list of strings; the first ``ALERT_LINES`` are shown).

Other keys are allowed and ignored (the planner sends the email context). ``SAMPLES`` holds one
complete context per template (``smm sms preview NAME``, the tests).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from pathlib import Path

import jinja2

from workers.mail.catalogue import message, resolve_locale
from workers.mail.render import interpolate

TEMPLATE_DIR = Path(__file__).parent / "templates"
MAX_BODY = 480
MAX_VALUE = 80
ALERT_LINES = 3
ELLIPSIS = "..."  # GSM-7: a "…" would make the whole text UCS-2 (70 characters a segment)

TEMPLATES: tuple[str, ...] = (
    "phone_verification",
    "order_completed",
    "order_partial",
    "order_canceled",
    "api_key_created",
    "security_notice",
    "admin_alert",
)
SECURITY_CHANGES: tuple[str, ...] = (
    "password_changed",
    "password_reset",
    "email_changed",
    "two_factor_enabled",
    "two_factor_disabled",
)
RESERVED: frozenset[str] = frozenset({"t", "panel_name"})
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f")


def one_line(value: str, limit: int = MAX_VALUE) -> str:
    """Control characters and separators become spaces, runs of spaces one; cut to ``limit``."""
    chars = []
    for c in value:
        if c in _BIDI:
            continue
        chars.append(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c)
    text = " ".join("".join(chars).split())
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def clean_context(context: Mapping[str, object]) -> dict[str, object]:
    cleaned: dict[str, object] = {}
    for key, value in context.items():
        if value is None:
            raise TypeError(f"None in a text message context: {key}")
        if isinstance(value, str):
            cleaned[key] = one_line(value)
        elif isinstance(value, list | tuple):
            cleaned[key] = [one_line(str(item)) for item in value]
        elif isinstance(value, bool | int | float):
            cleaned[key] = one_line(str(value))
        else:
            raise TypeError(f"a text message context holds strings, numbers and lists: {key}")
    return cleaned


def render(name: str, context: Mapping[str, object], *, panel_name: str, locale: str = "en") -> str:
    """The body of text message ``name``; see the module docstring for the context it needs."""
    if name not in TEMPLATES:
        raise LookupError(f"no text message template {name!r}")
    clash = RESERVED & context.keys()
    if clash:
        raise ValueError(f"context keys reserved by the renderer: {sorted(clash)}")
    variables: dict[str, object] = {
        **clean_context(context),
        "t": _translator(resolve_locale(locale)),
        "panel_name": one_line(panel_name, 40),
    }
    body = _ENV.get_template(f"{name}.txt.j2").render(variables)
    return fit(body)


def fit(body: str) -> str:
    """No blank runs or trailing spaces; at most ``MAX_BODY`` characters."""
    lines = [line.strip() for line in body.strip().splitlines()]
    text = re.sub(r"\n{2,}", "\n", "\n".join(lines))
    return text if len(text) <= MAX_BODY else text[: MAX_BODY - len(ELLIPSIS)].rstrip() + ELLIPSIS


def _translator(locale: str) -> Callable[..., str]:
    def t(key: str, /, **params: object) -> str:
        return interpolate(message(locale, key), params, key=key)

    return t


def _environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=False,  # noqa: S701 - plain text for SMS, never HTML
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )


_ENV = _environment()

SAMPLES: dict[str, dict[str, object]] = {
    "phone_verification": {"name": "Alex", "code": "482913", "minutes": 10},
    "order_completed": {
        "order_id": 1042,
        "service_name": "Instagram Followers [Real, 30-day refill]",
        "charged": "12.50",
        "currency": "USD",
    },
    "order_partial": {
        "order_id": 1043,
        "service_name": "YouTube Views [Fast]",
        "remains": 1200,
        "released": "1.20",
        "currency": "USD",
    },
    "order_canceled": {
        "order_id": 1044,
        "service_name": "TikTok Likes",
        "released": "2.00",
        "currency": "USD",
    },
    "api_key_created": {"key_name": "Reseller bot", "key_prefix": "smm_k_4kq9"},
    "security_notice": {"change": "password_changed", "time": "2026-03-01 10:15 UTC"},
    "admin_alert": {
        "title": "An order needs review",
        "lines": [
            "Order 1045: the provider's answer is unknown",
            "Provider FastFollowers failed 5 checks in a row",
            "2 events in the dead-letter queue email-account",
            "A fourth line, not shown",
        ],
    },
}
