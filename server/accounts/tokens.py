"""The one hash under which every bearer secret (session token, API key) is stored."""

from __future__ import annotations

import hashlib


def token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()
