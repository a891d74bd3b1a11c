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


def price_of(rate_micros: int, billable: int, discount_bps: int) -> int:
    """An order's price: ``rate per 1000 x billable / 1000 x (1 - discount)``, one rounding, half
    up, to the micro-unit. The catalog shows a user's rate as the price of 1000 by this rule."""
    return mul_div_round(rate_micros * billable, 10_000 - discount_bps, 10_000_000)


def mul_div_round(micros: int, numerator: int, denominator: int) -> int:
    """micros * numerator / denominator, rounded half up (away from zero for halves), in ints."""
    if denominator <= 0:
        raise ValueError("denominator must be positive")
    product = micros * numerator
    quotient, remainder = divmod(abs(product), denominator)
    if 2 * remainder >= denominator:
        quotient += 1
    return quotient if product >= 0 else -quotient


# ---------------------------------------------------------------------------- exchange rates

MAX_RATE_FRACTION_DIGITS = 10
_RATE = re.compile(r"^\d{1,12}(\.\d{1,10})?$", re.ASCII)


def parse_rate(value: str, *, field: str) -> Decimal:
    """ "1.0825" -> Decimal("1.0825"): positive, at most 10 decimals (NUMERIC(24,10) in SQL)."""
    text = value.strip()
    if not _RATE.match(text) or Decimal(text) <= 0:
        raise InvalidArgument.for_field(
            field, f"must be a positive decimal string with at most {MAX_RATE_FRACTION_DIGITS} decimals"
        )
    return Decimal(text)


def format_rate(rate: Decimal) -> str:
    """Decimal("1.08250") -> "1.0825"; Decimal("2") -> "2"."""
    return format(rate.normalize(), "f")


def convert_micros(micros: int, rate: Decimal) -> int:
    """A provider's cost in its currency -> the panel's, at ``rate``, rounded UP to a micro-unit (in
    exact integers): a cost rounded down would let a price fall below what the provider charges."""
    numerator, denominator = rate.as_integer_ratio()
    return -(-micros * numerator // denominator)


def round_up_to(micros: int, step: int) -> int:
    """The smallest multiple of ``step`` that is >= ``micros`` (prices never round below cost)."""
    if step <= 0:
        raise ValueError("step must be positive")
    return -(-micros // step) * step


# ---------------------------------------------------------------------------- percentages

_PERCENT = re.compile(r"^-?\d{1,7}(\.\d{1,2})?$", re.ASCII)


def parse_percent_bps(value: str, *, field: str, minimum_bps: int = 0, maximum_bps: int = 10_000) -> int:
    """ "12.5" -> 1250 basis points; at most 2 decimals, within [minimum_bps, maximum_bps]."""
    text = value.strip()
    if not _PERCENT.match(text):
        raise InvalidArgument.for_field(field, "must be a percentage like 5 or 12.5")
    bps = int(Decimal(text) * 100)
    if not minimum_bps <= bps <= maximum_bps:
        raise InvalidArgument.for_field(
            field, f"must be between {format_bps(minimum_bps)} and {format_bps(maximum_bps)}"
        )
    return bps


def format_bps(bps: int) -> str:
    """1250 -> "12.5"; 500 -> "5"; -1000 -> "-10"."""
    return format((Decimal(bps) / 100).normalize(), "f")
