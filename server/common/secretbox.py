"""Secrets at rest (provider API keys, TOTP seeds): AES-256-GCM under a key named by an id.

``SMM_ENCRYPTION_KEYS`` holds ``id:base64key`` pairs separated by commas; the first encrypts, all
decrypt, so an operator rotates by putting a new key first and re-encrypting at leisure
(``needs_reencrypt``). A ciphertext is ``<key id>:<base64url(nonce || ciphertext+tag)>``; the key id
and an optional context string (e.g. ``provider:7``) are bound as associated data, so a ciphertext
copied to another row or decrypted under another key id fails instead of yielding a wrong secret.
"""

from __future__ import annotations

import base64
import binascii
import os
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class SecretBoxError(Exception):
    """A configuration or ciphertext problem; the message never contains secret material."""


@dataclass(frozen=True)
class SecretBox:
    keys: dict[str, bytes] = field(repr=False)
    current_id: str

    @classmethod
    def from_config(cls, value: str) -> SecretBox:
        keys: dict[str, bytes] = {}
        first = ""
        for index, part in enumerate(p.strip() for p in value.split(",") if p.strip()):
            key_id, sep, encoded = part.partition(":")
            if not sep or not key_id or ":" in encoded:
                raise SecretBoxError(f"SMM_ENCRYPTION_KEYS entry {index + 1} is not id:base64key")
            try:
                raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            except (binascii.Error, ValueError) as exc:
                raise SecretBoxError(f"SMM_ENCRYPTION_KEYS key {key_id!r} is not base64") from exc
            if len(raw) != 32:
                raise SecretBoxError(f"SMM_ENCRYPTION_KEYS key {key_id!r} must be 32 bytes")
            if key_id in keys:
                raise SecretBoxError(f"SMM_ENCRYPTION_KEYS names key {key_id!r} twice")
            keys[key_id] = raw
            first = first or key_id
        if not keys:
            raise SecretBoxError("SMM_ENCRYPTION_KEYS is empty")
        return cls(keys, first)

    def encrypt(self, plaintext: str, *, context: str = "") -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = AESGCM(self.keys[self.current_id]).encrypt(
            nonce, plaintext.encode(), _aad(self.current_id, context)
        )
        return f"{self.current_id}:{base64.urlsafe_b64encode(nonce + sealed).decode().rstrip('=')}"

    def decrypt(self, ciphertext: str, *, context: str = "") -> str:
        key_id, _, encoded = ciphertext.partition(":")
        key = self.keys.get(key_id)
        if key is None:
            raise SecretBoxError(f"no encryption key with id {key_id!r} is configured")
        try:
            raw = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
            return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], _aad(key_id, context)).decode()
        except (binascii.Error, ValueError, InvalidTag) as exc:
            raise SecretBoxError(f"a secret under key {key_id!r} cannot be decrypted") from exc

    def needs_reencrypt(self, ciphertext: str) -> bool:
        return ciphertext.partition(":")[0] != self.current_id


def new_key_config(key_id: str) -> str:
    return f"{key_id}:{base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip('=')}"


def _aad(key_id: str, context: str) -> bytes:
    return f"smm:{key_id}:{context}".encode()
