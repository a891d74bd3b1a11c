"""An upstream id as smm stores and compares it: one rule for what providers send and what staff type.

Providers send ids as JSON numbers or strings, with or without leading zeros ("0023", 23, 23.0);
a service staff link by hand must match the one the provider lists, so digits compare as numbers
and anything else exactly as written.
"""

from __future__ import annotations

from server.common.text import UNSTORABLE

MAX_ID_CHARS = 64


def canonical_upstream_id(text: str) -> str | None:
    """ "0023" and " 23 " -> "23"; "svc-7" as is; blank, spaced, zero or negative, too long -> None."""
    text = text.strip()
    if not text or len(text) > MAX_ID_CHARS or any(c.isspace() for c in text) or UNSTORABLE.search(text):
        return None
    if text.isascii() and text.lstrip("-").isdigit():
        return str(int(text)) if int(text) > 0 else None
    return text
