"""What counts as a six-digit sign-in code (anything else is tried as a recovery code)."""

from __future__ import annotations

import pyotp

from server.accounts.totp import is_totp_code, matching_step


def test_six_ascii_digits_are_a_code() -> None:
    assert is_totp_code("123456")
    assert is_totp_code(" 123456 ")
    assert not is_totp_code("12345")
    assert not is_totp_code("abcdef")
    # "²".isdigit() is true; such a "code" reached hmac.compare_digest, which refuses non-ASCII
    # text with TypeError: a 500 at sign-in.
    assert not is_totp_code("\u00b2" * 6)


def test_the_current_code_matches_its_step() -> None:
    secret = pyotp.random_base32()
    now = 1_800_000_000.0
    assert matching_step(secret, pyotp.TOTP(secret).at(now), now) == int(now // 30)
