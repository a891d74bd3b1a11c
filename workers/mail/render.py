"""Email templates: one message name + a context + the panel's brand -> subject, text and HTML.

The templates are Jinja2 files in ``workers/mail/templates/``: ``base.html.j2`` and ``base.txt.j2``
(the layout: the panel's name in its colour, the greeting, the footer, the unsubscribe link) and
``<name>.html.j2`` / ``<name>.txt.j2`` per message, with shared pieces in ``_macros.*.j2``. The
HTML is autoescaped, the text is not; a variable missing from the context raises
``jinja2.UndefinedError`` (``StrictUndefined``), and so does ``None`` printed anywhere.

Every word comes from the message catalogue (``workers/mail/catalogue/``, see its docstring)
through ``t(key, **params)``, available in every template; ``{name}`` placeholders are filled
with ``str(value)``. The subject is the catalogue's ``<name>.subject`` filled from the context,
inside ``layout.subject`` (``"{panel_name}: {subject}"``), with control characters and line
breaks replaced by spaces so that no value can add a header.

Values are shown as given: money arrives as a string ("12.50") with its ``currency`` code and is
never formatted here; ids and quantities may be ints or strings; dates arrive preformatted
(``expires``, ``created``, ``paid``). Our own URLs (``link`` of the account messages,
``order_url``, ``wallet_url``, ``admin_url``, the brand's ``web_url``, ``unsubscribe_url``) go into
``href`` and must be http(s) (:class:`UnsafeURLError` otherwise); the ``link`` of an order is the
customer's target and is shown as text, never as a link.

Context keys per template (all required, all strings unless said):

- ``verify_email``, ``password_reset``, ``email_change``: ``name`` (may be ""), ``link``,
  ``expires``. ``email_change`` goes to the new address.
- ``email_change_notice`` (to the old address, no link): ``name``, ``new_email``.
- ``api_key_created``: ``name``, ``key_name``, ``key_prefix`` (the public prefix, never the
  secret), ``created``.
- ``order_placed``: ``name``, ``order_id``, ``service_name``, ``link``, ``quantity``, ``price``,
  ``currency``, ``order_url``.
- ``order_completed``: ``name``, ``order_id``, ``service_name``, ``link``, ``quantity``,
  ``charged``, ``currency``, ``order_url``.
- ``order_partial``: ``name``, ``order_id``, ``service_name``, ``link``, ``quantity``,
  ``remains``, ``charged``, ``released``, ``currency``, ``order_url``.
- ``order_canceled``: ``name``, ``order_id``, ``service_name``, ``link``, ``quantity``,
  ``released``, ``currency``, ``order_url``.
- ``refill_done``: ``name``, ``order_id``, ``refill_id``, ``service_name``, ``link``,
  ``order_url``.
- ``low_balance``: ``name``, ``balance``, ``threshold``, ``currency``, ``wallet_url``.
- ``balance_adjusted``: ``name``, ``amount`` (signed as the caller wants it shown: "-5.00"),
  ``reason``, ``balance`` (the new balance), ``currency``, ``wallet_url``.
- ``payment_receipt``: ``name``, ``payment_id``, ``amount``, ``currency``, ``method``, ``paid``,
  ``balance``, ``wallet_url``.
- ``admin_alert``: ``title``, ``lines`` (a list of strings), ``admin_url``.

The names ``t``, ``brand``, ``subject``, ``lang``, ``transactional`` and ``unsubscribe_url`` are
the renderer's and cannot be context keys. ``SAMPLES`` holds one complete context per template
(``smm email preview NAME``, the tests).

Transactional messages (``TRANSACTIONAL``) never carry an unsubscribe link, even when an
``unsubscribe_url`` is passed; the others show it when one is given.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

import jinja2

from workers.mail.catalogue import message, resolve_locale

DEFAULT_COLOR = "#2563eb"
TEMPLATE_DIR = Path(__file__).parent / "templates"

TEMPLATES: tuple[str, ...] = (
    "verify_email",
    "password_reset",
    "email_change",
    "email_change_notice",
    "api_key_created",
    "order_placed",
    "order_completed",
    "order_partial",
    "order_canceled",
    "refill_done",
    "low_balance",
    "balance_adjusted",
    "payment_receipt",
    "admin_alert",
)

TRANSACTIONAL: frozenset[str] = frozenset(
    {
        "verify_email",
        "password_reset",
        "email_change",
        "email_change_notice",
        "api_key_created",
        "admin_alert",
        "payment_receipt",
    }
)

RESERVED: frozenset[str] = frozenset({"t", "brand", "subject", "lang", "transactional", "unsubscribe_url"})

# The catalogue keys that the code (not a template) uses: the subjects and their frame.
SUBJECT_FRAME = "layout.subject"


def subject_key(name: str) -> str:
    return f"{name}.subject"


_HEX_COLOR = re.compile(r"#[0-9a-fA-F]{6}")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SAFE_SCHEMES = frozenset({"http", "https"})
# Bidirectional embeddings, overrides and isolates: invisible, and they can reorder what a reader sees.
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


class UnsafeURLError(ValueError):
    """A URL meant for an ``href`` is not an http(s) URL, or holds whitespace or control characters."""


class MissingParameterError(jinja2.UndefinedError):
    """A catalogue text names a ``{placeholder}`` that the call (or the context) did not give."""


# What ``render`` raises for a message it cannot render: an unknown template (``LookupError``), a
# context value missing (``jinja2.UndefinedError``, ``MissingParameterError``), reserved
# (``ValueError``) or None (``TypeError``), an URL that is not http(s) (``UnsafeURLError``, a
# ``ValueError``), a broken template (``jinja2.TemplateError``). Each depends only on the message,
# the templates and the settings, so the same attempt fails the same way: workers never retry them.
# (The messages never hold a link's query: ``UnsafeURLError`` cuts it off.)
# The text renderer (``workers/texts/render.py``) raises the same kinds, so the SMS worker treats
# them the same way, with this tuple and ``render_error``.
RENDER_ERRORS: tuple[type[Exception], ...] = (jinja2.TemplateError, LookupError, ValueError, TypeError)


def render_error(exc: Exception) -> str:
    """How a render error is recorded on its message and named in the dead letter's reason."""
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class Brand:
    """The panel as its emails show it. A ``primary_color`` that is not ``#rrggbb`` becomes the default."""

    panel_name: str
    primary_color: str
    web_url: str
    support_email: str = ""

    def __post_init__(self) -> None:
        color = self.primary_color.strip()
        object.__setattr__(
            self, "primary_color", color.lower() if _HEX_COLOR.fullmatch(color) else DEFAULT_COLOR
        )

    @property
    def on_primary_color(self) -> str:
        """Black or white, whichever reads better on the primary colour (WCAG relative luminance)."""

        def linear(channel: str) -> float:
            c = int(channel, 16) / 255
            return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

        hexa = self.primary_color
        r, g, b = (linear(hexa[i : i + 2]) for i in (1, 3, 5))
        luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
        # Contrast with white: 1.05 / (L + 0.05); with black: (L + 0.05) / 0.05.
        return "#ffffff" if 1.05 / (luminance + 0.05) >= (luminance + 0.05) / 0.05 else "#111111"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(
    name: str,
    context: Mapping[str, object],
    brand: Brand,
    *,
    locale: str = "en",
    unsubscribe_url: str = "",
) -> Rendered:
    """Render message ``name``; see the module docstring for the context it needs."""
    if name not in TEMPLATES:
        raise LookupError(f"no email template {name!r}")
    clash = RESERVED & context.keys()
    if clash:
        raise ValueError(f"context keys reserved by the renderer: {sorted(clash)}")
    empty = sorted(key for key, value in context.items() if value is None)
    if empty:
        raise TypeError(f"None in an email context: {empty}")
    lang = resolve_locale(locale)
    t = _translator(lang)
    transactional = name in TRANSACTIONAL
    subject = clean_header(
        t(SUBJECT_FRAME, panel_name=brand.panel_name, subject=t(subject_key(name), **context))
    )
    variables: dict[str, object] = {
        **context,
        "t": t,
        "brand": brand,
        "subject": subject,
        "lang": lang,
        "transactional": transactional,
        "unsubscribe_url": "" if transactional else unsubscribe_url,
    }
    text = _ENV.get_template(f"{name}.txt.j2").render(variables)
    html = _ENV.get_template(f"{name}.html.j2").render(variables)
    return Rendered(subject=subject, text=_tidy(text), html=_tidy(html))


def clean_header(value: str) -> str:
    """One line: control characters and line or paragraph separators become spaces, runs of spaces one."""
    chars = []
    for c in value:
        if c in _BIDI:
            continue
        chars.append(" " if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c)
    return " ".join("".join(chars).split())


def _translator(locale: str) -> Callable[..., str]:
    def t(key: str, /, **params: object) -> str:
        return interpolate(message(locale, key), params, key=key)

    return t


def interpolate(text: str, params: Mapping[str, object], *, key: str = "") -> str:
    """Fill the ``{placeholders}`` of a catalogue text; a missing or undefined value raises."""
    for value in params.values():
        if isinstance(value, jinja2.Undefined):
            value._fail_with_undefined_error()

    def fill(match: re.Match[str]) -> str:
        placeholder = match.group(1)
        if placeholder not in params:
            raise MissingParameterError(f"message {key!r} needs {{{placeholder}}}, which was not given")
        return _printable(params[placeholder])

    return _PLACEHOLDER.sub(fill, text)


def _printable(value: object) -> str:
    if value is None:
        raise TypeError("None in an email: the context has a value missing")
    return str(value)


def _not_none(value: object) -> object:
    if value is None:
        raise TypeError("None in an email: the context has a value missing")
    return value


def _href(url: object) -> str:
    """An URL for an ``href``, checked: http(s) only, no whitespace or control characters."""
    text = _printable(url)
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text):
        raise UnsafeURLError(f"an URL holds whitespace or control characters: {_without_query(text)!r}")
    parts = urlsplit(text)
    if parts.scheme.lower() not in _SAFE_SCHEMES or not parts.netloc:
        raise UnsafeURLError(f"not an absolute http(s) URL: {_without_query(text)!r}")
    return text


def _without_query(url: str) -> str:
    """An URL for an error message: its query and fragment may hold a live single-use token (the
    account links), and the error goes to logs and dead-letter reasons."""
    cut = min((i for i in (url.find("?"), url.find("#")) if i >= 0), default=len(url))
    return url[:cut] + ("?..." if cut < len(url) else "")


def _mailto(address: object) -> str:
    text = _printable(address)
    if any(c.isspace() or unicodedata.category(c) in ("Cc", "Cf") for c in text) or "@" not in text:
        raise UnsafeURLError(f"not an email address: {text!r}")
    return "mailto:" + quote(text, safe="@+.")


def _tidy(rendered: str) -> str:
    """No trailing spaces (but the "-- " signature line), one blank line at most in a row, a final newline."""
    lines = [line if line == "-- " else line.rstrip() for line in rendered.strip().splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)) + "\n"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=jinja2.select_autoescape(
            enabled_extensions=("html.j2",), disabled_extensions=("txt.j2",), default=True
        ),
        undefined=jinja2.StrictUndefined,
        finalize=_not_none,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
        auto_reload=False,
    )
    env.filters["href"] = _href
    env.filters["mailto"] = _mailto
    return env


_ENV = _environment()


SAMPLES: dict[str, dict[str, object]] = {
    "verify_email": {
        "name": "Alex",
        "link": "https://panel.example/verify?token=3f9c2a7d",
        "expires": "2026-03-01 12:00 UTC",
    },
    "password_reset": {
        "name": "Alex",
        "link": "https://panel.example/reset?token=8b1e4c0f",
        "expires": "2026-03-01 12:00 UTC",
    },
    "email_change": {
        "name": "Alex",
        "link": "https://panel.example/email/confirm?token=c47a91e2",
        "expires": "2026-03-02 09:30 UTC",
    },
    "email_change_notice": {"name": "Alex", "new_email": "alex.new@example.com"},
    "api_key_created": {
        "name": "Alex",
        "key_name": "Reseller bot",
        "key_prefix": "smm_live_4kq9",
        "created": "2026-03-01 10:15 UTC",
    },
    "order_placed": {
        "name": "Alex",
        "order_id": 1042,
        "service_name": "Instagram Followers [Real, 30-day refill]",
        "link": "https://instagram.com/example",
        "quantity": 1000,
        "price": "12.50",
        "currency": "USD",
        "order_url": "https://panel.example/orders/1042",
    },
    "order_completed": {
        "name": "Alex",
        "order_id": 1042,
        "service_name": "Instagram Followers [Real, 30-day refill]",
        "link": "https://instagram.com/example",
        "quantity": 1000,
        "charged": "12.50",
        "currency": "USD",
        "order_url": "https://panel.example/orders/1042",
    },
    "order_partial": {
        "name": "Alex",
        "order_id": 1043,
        "service_name": "YouTube Views [Fast]",
        "link": "https://youtube.com/watch?v=dQw4w9WgXcQ",
        "quantity": 5000,
        "remains": 1200,
        "charged": "3.80",
        "released": "1.20",
        "currency": "USD",
        "order_url": "https://panel.example/orders/1043",
    },
    "order_canceled": {
        "name": "Alex",
        "order_id": 1044,
        "service_name": "TikTok Likes",
        "link": "https://tiktok.com/@example/video/1",
        "quantity": 500,
        "released": "2.00",
        "currency": "USD",
        "order_url": "https://panel.example/orders/1044",
    },
    "refill_done": {
        "name": "Alex",
        "order_id": 1042,
        "refill_id": 77,
        "service_name": "Instagram Followers [Real, 30-day refill]",
        "link": "https://instagram.com/example",
        "order_url": "https://panel.example/orders/1042",
    },
    "low_balance": {
        "name": "Alex",
        "balance": "3.20",
        "threshold": "5.00",
        "currency": "USD",
        "wallet_url": "https://panel.example/wallet",
    },
    "balance_adjusted": {
        "name": "Alex",
        "amount": "+10.00",
        "reason": "Compensation for order #1043",
        "balance": "13.20",
        "currency": "USD",
        "wallet_url": "https://panel.example/wallet",
    },
    "payment_receipt": {
        "name": "Alex",
        "payment_id": "pay_8812",
        "amount": "50.00",
        "currency": "USD",
        "method": "Card (Stripe)",
        "paid": "2026-03-01 10:20 UTC",
        "balance": "63.20",
        "wallet_url": "https://panel.example/wallet",
    },
    "admin_alert": {
        "title": "3 things need attention",
        "lines": [
            "Order #1045 needs review: the provider answered with an unknown status",
            "Provider FastFollowers failed 5 checks in a row",
            "2 events in the dead-letter queue email-account",
        ],
        "admin_url": "https://panel.example/admin",
    },
}
