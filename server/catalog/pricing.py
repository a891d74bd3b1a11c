"""Pricing rules: our price per 1000 from the provider's cost, and which rule applies.

price = round_up(cost + cost x markup + fixed, round_to). The most specific rule wins: the
service's own, else its category's, else the default (the rule with neither id). Rounding is up,
so a price never falls below cost plus markup.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from server.common.money import round_up_to

BPS = 10_000


@dataclass(frozen=True)
class PricingRule:
    id: int
    category_id: int | None
    service_id: int | None
    markup_bps: int
    fixed_micros: int
    round_to_micros: int
    update_time: datetime


class Rules:
    """The rules in force, indexed for lookups during a sync of thousands of services."""

    def __init__(self, rules: list[PricingRule]) -> None:
        self.default = next((r for r in rules if r.category_id is None and r.service_id is None), None)
        self.by_service = {r.service_id: r for r in rules if r.service_id is not None}
        self.by_category = {r.category_id: r for r in rules if r.category_id is not None}

    def rule_for(self, service_id: int | None, category_id: int) -> PricingRule | None:
        if service_id is not None and service_id in self.by_service:
            return self.by_service[service_id]
        return self.by_category.get(category_id, self.default)

    def price(self, cost_micros: int, service_id: int | None, category_id: int) -> int:
        return price_for(cost_micros, self.rule_for(service_id, category_id))


def price_for(cost_micros: int, rule: PricingRule | None) -> int:
    """One rounding, up, of the exact cost + markup + fixed (in 1/10,000 of a micro-unit): rounding
    the markup on its own first (half up) could land a price below cost plus markup."""
    if rule is None:  # no default rule: sell at cost rather than guess a markup
        return cost_micros
    exact_bps = cost_micros * (BPS + rule.markup_bps) + rule.fixed_micros * BPS
    return round_up_to(exact_bps, rule.round_to_micros * BPS) // BPS


def below_cost(rate_micros: int, cost_micros: int | None) -> bool:
    """Whether a price set by hand would sell under the provider's known cost (never allowed: the
    rules price at or above it, and a cost rising above a hand-set price quarantines)."""
    return cost_micros is not None and rate_micros < cost_micros
