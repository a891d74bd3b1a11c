"""Money strings <-> micros, and signed page tokens (AIP-158)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable
from typing import Any

import pytest

from server.common.errors import InvalidArgument
from server.common.money import MAX_MICROS, MICROS, format_micros, mul_div_round, parse_micros
from server.common.pagetoken import PageTokenCodec, page_size

# --- parse_micros --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "micros"),
    [
        ("12.50", 12_500_000),
        ("12.5", 12_500_000),
        ("12", 12_000_000),
        ("0.27819", 278_190),
        ("0.000001", 1),
        ("0.90", 900_000),
        ("0", 0),
        ("0.000000", 0),
        ("007.10", 7_100_000),
        (" 3.5 ", 3_500_000),
        ("999999.999999", 999_999_999_999),
        ("1000000000", MAX_MICROS),  # the largest amount allowed
    ],
)
def test_parse_micros_valid(text: str, micros: int) -> None:
    assert parse_micros(text, field="rate") == micros


@pytest.mark.parametrize(
    "text",
    [
        "1e5",
        "1E5",
        "1.1234567",
        "abc",
        "",
        "   ",
        "1.",
        ".5",
        "+1",
        "1,50",
        "1 000",
        "0x10",
        "NaN",
        "Infinity",
        "12.50 USD",
        "$12.50",
        "--1",
        "1.2.3",
        "1234567890123456",  # 16 integer digits
        "\uff11\uff12.50",  # full-width digits
        "\u0661\u0662",  # Arabic-Indic digits
    ],
)
def test_parse_micros_rejects_malformed(text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_micros(text, field="rate")
    assert caught.value.violations[0].field == "rate"
    assert "decimal string" in caught.value.violations[0].description
    assert caught.value.metadata == {"field": "rate", "fields": "rate"}


@pytest.mark.parametrize(
    ("text", "kwargs", "description"),
    [
        ("-1", {}, "must not be negative"),
        ("-0.000001", {}, "must not be negative"),
        ("0", {"allow_zero": False}, "must not be zero"),
        ("0.000000", {"allow_zero": False}, "must not be zero"),
        ("-0", {"allow_zero": False, "allow_negative": True}, "must not be zero"),
        ("1000000000.000001", {}, "is too large"),
        ("999999999999999", {}, "is too large"),
        ("-1000000000.000001", {"allow_negative": True}, "is too large"),
    ],
)
def test_parse_micros_rejects_out_of_policy(text: str, kwargs: dict[str, bool], description: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        parse_micros(text, field="amount", **kwargs)
    violation = caught.value.violations[0]
    assert (violation.field, violation.description) == ("amount", description)
    assert caught.value.message == f"amount: {description}"


@pytest.mark.parametrize(
    ("text", "kwargs", "micros"),
    [
        ("-1.50", {"allow_negative": True}, -1_500_000),
        ("-0.000001", {"allow_negative": True}, -1),
        ("-1000000000", {"allow_negative": True}, -MAX_MICROS),
        ("0.000001", {"allow_zero": False}, 1),
        ("-0", {}, 0),
    ],
)
def test_parse_micros_policy_allows(text: str, kwargs: dict[str, bool], micros: int) -> None:
    assert parse_micros(text, field="amount", **kwargs) == micros


# --- format_micros -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "text"),
    [
        (12_500_000, "12.50"),
        (278_190, "0.27819"),
        (0, "0.00"),
        (1, "0.000001"),
        (10, "0.00001"),
        (900_000, "0.90"),
        (1_000_000, "1.00"),
        (1_230_000, "1.23"),
        (1_234_000, "1.234"),
        (100_000_000, "100.00"),
        (MAX_MICROS, "1000000000.00"),
        (-1_500_000, "-1.50"),
        (-500_000, "-0.50"),
        (-1, "-0.000001"),
        (-278_190, "-0.27819"),
    ],
)
def test_format_micros(micros: int, text: str) -> None:
    assert format_micros(micros) == text


@pytest.mark.parametrize(
    ("micros", "minimum", "text"),
    [
        (5_000_000, 0, "5"),
        (5_500_000, 0, "5.5"),
        (5_000_000, 1, "5.0"),
        (5_000_000, 6, "5.000000"),
        (-5_000_000, 0, "-5"),
    ],
)
def test_format_micros_min_fraction_digits(micros: int, minimum: int, text: str) -> None:
    assert format_micros(micros, min_fraction_digits=minimum) == text


@pytest.mark.parametrize(
    "micros", [0, 1, 9, 278_190, 12_500_000, 999_999_999_999, MAX_MICROS, -1, -12_345_678]
)
def test_format_then_parse_round_trips(micros: int) -> None:
    assert parse_micros(format_micros(micros), field="x", allow_negative=True) == micros


# --- mul_div_round -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("micros", "numerator", "denominator", "expected"),
    [
        (900_000, 1500, 1000, 1_350_000),  # rate 0.90 per 1000, quantity 1500
        (1_000_000, 1, 3, 333_333),  # 333333.33 -> down
        (2_000_000, 1, 3, 666_667),  # 666666.67 -> up
        (5, 1, 2, 3),  # 2.5 -> half up
        (1, 1, 2, 1),  # 0.5 -> half up
        (1, 1, 3, 0),  # 0.33 -> down
        (3, 1, 2, 2),  # 1.5 -> up
        (-5, 1, 2, -3),  # -2.5 -> half away from zero
        (-1, 1, 2, -1),  # -0.5 -> half away from zero
        (-1, 1, 3, 0),  # -0.33 -> towards zero
        (7, -1, 2, -4),  # negative numerator
        (0, 123, 7, 0),
        (12_345, 1000, 1000, 12_345),  # exact
        (MAX_MICROS, 1_000_000_000, 1000, MAX_MICROS * 1_000_000),  # largest amounts stay exact
        (MAX_MICROS - 1, 1, 3, (MAX_MICROS - 1) // 3),  # 333...333.0 exactly
    ],
)
def test_mul_div_round(micros: int, numerator: int, denominator: int, expected: int) -> None:
    result = mul_div_round(micros, numerator, denominator)
    assert result == expected
    assert isinstance(result, int)


@pytest.mark.parametrize("denominator", [0, -1, -1000])
def test_mul_div_round_rejects_non_positive_denominators(denominator: int) -> None:
    with pytest.raises(ValueError, match="denominator must be positive"):
        mul_div_round(MICROS, 1, denominator)


# --- page tokens ---------------------------------------------------------------------------------

SECRET = b"unit-test-secret"
FILTERS = {"category_id": 3, "state": "enabled"}
POSITION = {"sort": 10, "id": 42}


@pytest.fixture
def codec() -> PageTokenCodec:
    return PageTokenCodec(SECRET)


def _assert_page_token_refused(caught: pytest.ExceptionInfo[InvalidArgument], description: str) -> None:
    violation = caught.value.violations[0]
    assert violation.field == "page_token"
    assert violation.description == description


@pytest.mark.parametrize(
    ("position", "filters"),
    [
        (POSITION, FILTERS),
        ({}, {}),
        ({"after": "2024-01-01T00:00:00Z", "id": 9_007_199_254_740_993}, None),
        ({"name": "Ünïcødé"}, ["a", 1]),
        (POSITION, {"state": "enabled", "category_id": 3}),  # key order does not matter
    ],
)
def test_page_token_round_trip(codec: PageTokenCodec, position: dict[str, object], filters: object) -> None:
    token = codec.encode(position, filters=filters)
    assert not set(token) & set("=+/")  # URL safe, unpadded
    assert codec.decode(token, filters=filters) == position


def test_page_token_is_opaque_but_stable(codec: PageTokenCodec) -> None:
    assert codec.encode(POSITION, filters=FILTERS) == codec.encode(POSITION, filters=FILTERS)
    assert codec.encode(POSITION, filters=FILTERS) != codec.encode({"sort": 10, "id": 43}, filters=FILTERS)


def _resign(token: str, secret: bytes, mutate: Callable[[dict[str, Any]], None]) -> str:
    """Decode a token, change its payload and sign it again with ``secret``."""
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    payload = json.loads(raw[16:])
    mutate(payload)
    body = json.dumps(payload, separators=(",", ":")).encode()
    signature = hmac.new(secret, body, hashlib.sha256).digest()[:16]
    return base64.urlsafe_b64encode(signature + body).decode().rstrip("=")


def test_tampered_position_is_refused(codec: PageTokenCodec) -> None:
    token = codec.encode(POSITION, filters=FILTERS)
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    forged = raw.replace(b'"id":42', b'"id":41')
    assert forged != raw
    tampered = base64.urlsafe_b64encode(forged).decode().rstrip("=")
    with pytest.raises(InvalidArgument) as caught:
        codec.decode(tampered, filters=FILTERS)
    _assert_page_token_refused(caught, "is not a valid page token")


def test_token_signed_with_another_secret_is_refused(codec: PageTokenCodec) -> None:
    token = PageTokenCodec(b"another-secret").encode(POSITION, filters=FILTERS)
    with pytest.raises(InvalidArgument) as caught:
        codec.decode(token, filters=FILTERS)
    _assert_page_token_refused(caught, "is not a valid page token")


def test_validly_signed_token_without_a_position_object_is_refused(codec: PageTokenCodec) -> None:
    def drop_position(payload: dict[str, Any]) -> None:
        payload["p"] = [1, 2]

    token = _resign(codec.encode(POSITION, filters=FILTERS), SECRET, drop_position)
    with pytest.raises(InvalidArgument) as caught:
        codec.decode(token, filters=FILTERS)
    _assert_page_token_refused(caught, "is not a valid page token")


@pytest.mark.parametrize(
    "other",
    [
        {"category_id": 4, "state": "enabled"},
        {"category_id": 3},
        {},
        None,
        {"category_id": "3", "state": "enabled"},
    ],
)
def test_token_for_other_filters_is_refused(codec: PageTokenCodec, other: object) -> None:
    token = codec.encode(POSITION, filters=FILTERS)
    with pytest.raises(InvalidArgument) as caught:
        codec.decode(token, filters=other)
    _assert_page_token_refused(caught, "was issued for other filters")


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "!!!!",
        "a",
        "é",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        base64.urlsafe_b64encode(b"x" * 16 + b"not json").decode(),
        base64.urlsafe_b64encode(json.dumps({"p": {}, "f": ""}).encode()).decode(),
    ],
)
def test_garbage_tokens_are_refused(codec: PageTokenCodec, garbage: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        codec.decode(garbage, filters=FILTERS)
    _assert_page_token_refused(caught, "is not a valid page token")


def test_codec_requires_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        PageTokenCodec(b"")


@pytest.mark.parametrize(
    ("requested", "expected"),
    [(0, 100), (1, 1), (50, 50), (1000, 1000), (1001, 1000), (10**9, 1000)],
)
def test_page_size(requested: int, expected: int) -> None:
    assert page_size(requested, default=100, maximum=1000) == expected


@pytest.mark.parametrize("requested", [-1, -1000])
def test_negative_page_size_is_refused(requested: int) -> None:
    with pytest.raises(InvalidArgument) as caught:
        page_size(requested, default=100, maximum=1000)
    assert caught.value.violations[0].field == "page_size"
    assert caught.value.violations[0].description == "must not be negative"
