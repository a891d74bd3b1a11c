"""Catalog prices from the provider's cost (server/catalog/pricing.py; docs/DECISIONS.md: "Price
rounding is up to a multiple of round_to ... a price never falls below cost plus markup")."""

from __future__ import annotations

from datetime import UTC, datetime
from fractions import Fraction

from hypothesis import given
from hypothesis import strategies as st

from server.catalog.pricing import PricingRule, price_for


def rule(markup_bps: int, fixed_micros: int = 0, round_to_micros: int = 100) -> PricingRule:
    return PricingRule(
        1, None, None, markup_bps, fixed_micros, round_to_micros, datetime(2030, 1, 1, tzinfo=UTC)
    )


def test_a_markup_with_a_fraction_of_a_micro_rounds_up_not_half_up() -> None:
    """The default rule (30 %, to 0.0001): cost 0.000077 + 30 % = 0.0001001 per 1000. The markup was
    rounded half up on its own (23.1 -> 23 micros) before the rounding up, so the price came out
    0.0001, below cost plus markup."""
    assert price_for(77, rule(3000)) == 200
    assert price_for(1_000_077, rule(3000)) == 1_300_200
    assert price_for(3, rule(1, round_to_micros=1)) == 4  # 3.0003 micros, to the micro: 4


def test_exact_prices_are_not_rounded_further() -> None:
    assert price_for(100, rule(0)) == 100
    assert price_for(1_000_000, rule(3000)) == 1_300_000
    assert price_for(1_000_000, rule(2500, fixed_micros=50_000, round_to_micros=10_000)) == 1_300_000


@given(
    cost=st.integers(0, 10**15),
    markup=st.integers(0, 10_000_000),
    fixed=st.integers(0, 10**15),
    step=st.integers(1, 10**9),
)
def test_the_price_is_the_smallest_multiple_of_round_to_at_or_above_cost_plus_markup(
    cost: int, markup: int, fixed: int, step: int
) -> None:
    exact = cost + Fraction(cost * markup, 10_000) + fixed
    price = price_for(cost, rule(markup, fixed, step))
    assert price % step == 0
    assert price - step < exact <= price
