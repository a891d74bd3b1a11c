"""What a staff or user search box means: an id when the text is one, and the text found anywhere
in a name, email or link, literally (its ``%``, ``_`` and ``\\`` are characters, not wildcards)."""

from __future__ import annotations

# Longer digit strings cannot be a BIGINT id (and would overflow the parameter).
_MAX_ID_DIGITS = 17


def search_id(query: str) -> int:
    """The id ``query`` names, or 0 (no row has it) when it is not a plain ASCII number."""
    return int(query) if query.isascii() and query.isdigit() and len(query) <= _MAX_ID_DIGITS else 0


def contains_pattern(text: str) -> str:
    """A LIKE/ILIKE pattern (default escape ``\\``) matching ``text`` anywhere, literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
