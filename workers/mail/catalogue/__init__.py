"""Message catalogues: every user-facing string of the emails, one catalogue per locale.

A catalogue is a Python module in this package, named after its locale (``en.py``, later
``pt_br.py``...), that defines ``MESSAGES: dict[str, str]``: a flat map from a dotted key
(``"<template>.<phrase>"``, ``"order.<label>"``, ``"common.<phrase>"``, ``"layout.<phrase>"``) to the
text. Python rather than JSON or TOML so that a catalogue ships inside the package without any
package-data rule, is checked by mypy and ruff, and is loaded without a parser.

Texts are plain text, never HTML: the HTML templates escape them like any other value. A text
may name parameters in braces, ``"Hello {name},"``; the braces take only an identifier, and there
is no escape for a literal brace (no text needs one).

English is the reference: every key exists in it. Another locale may leave a key out, and that
key falls back to English; a key that English lacks is an error (:class:`MissingMessageError`).
An unknown locale falls back to English as a whole.

To add a locale: copy ``en.py`` to ``<locale>.py`` (lower case, ``_`` for the region), translate
the values, keep the keys and the ``{placeholders}``, and add it to ``CATALOGUES`` below.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

from workers.mail.catalogue import en

DEFAULT_LOCALE = "en"

CATALOGUES: Mapping[str, Mapping[str, str]] = MappingProxyType({"en": MappingProxyType(en.MESSAGES)})


class MissingMessageError(LookupError):
    """A template asked for a key that the catalogue (English included) does not have."""


def resolve_locale(locale: str) -> str:
    """The shipped locale that serves ``locale``: ``"pt-BR"`` -> ``pt_br``, else ``pt``, else English."""
    wanted = locale.strip().lower().replace("-", "_")
    for candidate in (wanted, wanted.split("_", 1)[0]):
        if candidate in CATALOGUES:
            return candidate
    return DEFAULT_LOCALE


def message(locale: str, key: str) -> str:
    """The text of ``key`` in ``locale`` (a resolved locale), else in English."""
    for catalogue in (CATALOGUES.get(locale, {}), CATALOGUES[DEFAULT_LOCALE]):
        text = catalogue.get(key)
        if text is not None:
            return text
    raise MissingMessageError(f"no message {key!r} in the {locale!r} or {DEFAULT_LOCALE!r} catalogue")
