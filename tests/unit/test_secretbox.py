"""SecretBox: AES-GCM under named keys, rotation, context binding, and errors that leak nothing."""

from __future__ import annotations

import base64

import pytest

from server.common.secretbox import SecretBox, SecretBoxError, new_key_config


def test_round_trip_and_rotation() -> None:
    old = new_key_config("k1")
    box = SecretBox.from_config(old)
    sealed = box.encrypt("provider-api-key-123", context="provider:7")
    assert sealed.startswith("k1:")
    assert "provider-api-key-123" not in sealed
    assert box.decrypt(sealed, context="provider:7") == "provider-api-key-123"
    assert box.encrypt("same", context="c") != box.encrypt("same", context="c")  # fresh nonce each time

    rotated = SecretBox.from_config(f"{new_key_config('k2')},{old}")
    assert rotated.current_id == "k2"
    assert rotated.decrypt(sealed, context="provider:7") == "provider-api-key-123"
    assert rotated.needs_reencrypt(sealed)
    assert rotated.encrypt("x").startswith("k2:")
    assert not rotated.needs_reencrypt(rotated.encrypt("x"))


def test_a_ciphertext_is_bound_to_its_context_and_key() -> None:
    box = SecretBox.from_config(new_key_config("k1"))
    sealed = box.encrypt("secret", context="provider:7")
    with pytest.raises(SecretBoxError):
        box.decrypt(sealed, context="provider:8")
    tampered = sealed[:-2] + ("A" if sealed[-2] != "A" else "B") + sealed[-1]
    with pytest.raises(SecretBoxError):
        box.decrypt(tampered, context="provider:7")
    other = SecretBox.from_config(new_key_config("k9"))
    with pytest.raises(SecretBoxError, match="no encryption key with id 'k1'"):
        other.decrypt(sealed, context="provider:7")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ("", "is empty"),
        ("nokey", "entry 1 is not id:base64key"),
        ("k1:" + base64.urlsafe_b64encode(b"short").decode(), "must be 32 bytes"),
        ("k1:!!!notbase64!!!", "not base64|must be 32 bytes"),
    ],
)
def test_bad_configuration_is_explained_without_the_key(config: str, message: str) -> None:
    with pytest.raises(SecretBoxError, match=message) as caught:
        SecretBox.from_config(config)
    secret_part = config.partition(":")[2]
    assert not secret_part or secret_part not in str(caught.value)


def test_a_key_id_used_twice_is_refused() -> None:
    key = new_key_config("k1")
    with pytest.raises(SecretBoxError, match="twice"):
        SecretBox.from_config(f"{key},{key}")
    assert "SecretBox" in repr(SecretBox.from_config(key))
    assert key.partition(":")[2] not in repr(SecretBox.from_config(key))
