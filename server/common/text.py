"""What PostgreSQL text (and UTF-8) cannot hold: NUL and lone surrogates. Text from outside (a
provider's reply) loses them, so one bad character never fails a whole sync; ids with them are
unusable (``server/common/upstream_id.py``)."""

from __future__ import annotations

import re
import unicodedata

UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> str:
    return UNSTORABLE.sub("", text)


def canonical_email(text: str) -> str:
    """An address as it is stored and looked up: trimmed, in Unicode NFC. "é" typed as one
    character or as "e" and a combining accent (as some keyboards and macOS file names give it) is
    one mailbox, so one account, one sign-in and one rate-limit budget, not two."""
    return unicodedata.normalize("NFC", text.strip())


def display_name_problem(text: str) -> str | None:
    """Why a name staff type (a category's, a service's) cannot be shown on one line, or None: a
    control character (a bell, a line break, a tab) or nothing visible at all (only spaces and
    format characters such as a zero-width space). Such a name broke the catalog's one-line rows
    and emails, or showed customers a blank entry."""
    if any(unicodedata.category(ch) == "Cc" for ch in text):
        return "must not contain control characters (line breaks, tabs, ...)"
    if all(ch.isspace() or unicodedata.category(ch) == "Cf" for ch in text):
        return "must contain a visible character"
    return None
