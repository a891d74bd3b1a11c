"""Money: decimal strings at the API, integer micro-units (1e-6) everywhere else.

The only module that parses, formats or rounds money. No floats: ``Decimal`` for parsing and
``int`` arithmetic afterwards.
"""

from __future__ import annotations

import re
from decimal import Decimal

from server.common.errors import InvalidArgument

MICROS = 1_000_000
MAX_FRACTION_DIGITS = 6
# A billion units: larger than any real wallet or order, and 9 million of them still fit in BIGINT.
MAX_MICROS = 10**9 * MICROS
_AMOUNT = re.compile(r"^-?\d{1,15}(\.\d{1,6})?$", re.ASCII)


def parse_micros(value: str, *, field: str, allow_negative: bool = False, allow_zero: bool = True) -> int:
    """ "12.50" -> 12_500_000. Refuses floats' spellings (exponents), >6 decimals and junk."""
    text = value.strip()
    if not _AMOUNT.match(text):
        raise InvalidArgument.for_field(
            field, f"must be a decimal string with at most {MAX_FRACTION_DIGITS} decimals, like 12.50"
        )
    micros = int(Decimal(text) * MICROS)
    if micros < 0 and not allow_negative:
        raise InvalidArgument.for_field(field, "must not be negative")
    if micros == 0 and not allow_zero:
        raise InvalidArgument.for_field(field, "must not be zero")
    if abs(micros) > MAX_MICROS:
        raise InvalidArgument.for_field(field, "is too large")
    return micros


def format_micros(micros: int, *, min_fraction_digits: int = 2) -> str:
    """12_500_000 -> "12.50"; 278_190 -> "0.27819". Trailing zeros trimmed to at least 2 digits."""
    sign = "-" if micros < 0 else ""
    whole, fraction = divmod(abs(micros), MICROS)
    digits = f"{fraction:06d}".rstrip("0")
    if len(digits) < min_fraction_digits:
        digits = digits.ljust(min_fraction_digits, "0")
    return f"{sign}{whole}.{digits}" if digits else f"{sign}{whole}"


def mul_div_round(micros: int, numerator: int, denominator: int) -> int:
    """micros * numerator / denominator, rounded half up (away from zero for halves), in ints."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    product = micros * numerator
    quotient, remainder = divmod(abs(product), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return quotient if product >= 0 else -quotient
