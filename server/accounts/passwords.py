"""Argon2id password hashing (argon2-cffi), off the event loop, rehashed when parameters change."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_UNKNOWN_ADDRESS_INPUT = "not a real password, only here to spend the same time"
_HASHER = PasswordHasher()  # argon2-cffi's RFC 9106 low-memory profile, Argon2id
# Verified against when the address is unknown, so both answers take the same time.
_DUMMY_HASH = _HASHER.hash(_UNKNOWN_ADDRESS_INPUT)


def use_hasher(hasher: PasswordHasher) -> None:
    """Hash with ``hasher`` from now on (stored hashes of other parameters still verify, and
    ``needs_rehash`` says so). The test suite uses argon2's cheapest parameters: at the production
    cost every registration and sign-in spent 0.15-0.3 s of CPU, a large share of the suite's time."""
    global _HASHER, _DUMMY_HASH
    _HASHER = hasher
    _DUMMY_HASH = hasher.hash(_UNKNOWN_ADDRESS_INPUT)


async def hash_password(password: str) -> str:
    return await asyncio.to_thread(_HASHER.hash, password)


async def verify_password(stored_hash: str | None, password: str) -> bool:
    def verify() -> bool:
        try:
            return _HASHER.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(verify)


def needs_rehash(stored_hash: str) -> bool:
    return _HASHER.check_needs_rehash(stored_hash)
