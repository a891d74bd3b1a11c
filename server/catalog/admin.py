"""Staff work on the catalog beyond plain edits: provider mapping and fallbacks, quarantine,
bulk changes, pricing rules (and the repricing they cause), deletes. Every change is audited and
announced (``CatalogChanged``) so every edge drops its cached catalog."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import psycopg
from smm.v1 import events_pb2

from server.catalog.errors import DOMAIN, price_below_cost, service_not_found
from server.catalog.logic import CATEGORY_CHANGED, MAX_SERVICE_NAME, SERVICE_CHANGED
from server.catalog.pricing import PricingRule, Rules, below_cost
from server.catalog.repo import QUERIES, Conn, PostgresCatalogRepo, PricedService, ServiceRow
from server.common import audit
from server.common.db import Pool, map_db_errors
from server.common.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    collect,
)
from server.common.money import MAX_MICROS, MICROS, convert_micros, mul_div_round
from server.common.outbox import add_event
from server.common.search import contains_pattern, search_id
from server.common.upstream_id import MAX_ID_CHARS, canonical_upstream_id

MAX_FALLBACKS = 5
MAX_BULK = 5000
BULK_ACTIONS = ("enable", "disable", "set_rate", "adjust_rate", "use_pricing_rules")
MAX_ROUND_TO_MICROS = 1000 * MICROS  # pricing_rules_round_to_micros_check


@dataclass(frozen=True)
class AdminServiceRow:
    id: int
    provider_id: int | None
    upstream_service_id: str
    provider_rate_micros: int | None
    provider_currency: str
    exchange_rate: Decimal | None
    cost_micros: int | None
    manual_price: bool
    admin_edited: list[str]
    quarantined: bool
    quarantine_reason: str
    pending_provider_rate_micros: int | None
    pending_exchange_rate: Decimal | None
    gone_upstream_time: datetime | None
    upstream_dripfeed: bool


@dataclass(frozen=True)
class Fallback:
    service_id: int
    provider_id: int
    upstream_service_id: str


@dataclass(frozen=True)
class AdminView:
    service: ServiceRow
    admin: AdminServiceRow
    fallbacks: list[Fallback]

    @property
    def id(self) -> int:
        return self.service.id


@dataclass(frozen=True)
class RuleFields:
    category_id: int | None
    service_id: int | None
    markup_bps: int
    fixed_micros: int
    round_to_micros: int


def rule_not_found(rule_id: int) -> NotFound:
    return NotFound(
        "pricing rule not found",
        reason="PRICING_RULE_NOT_FOUND",
        domain=DOMAIN,
        metadata={"id": str(rule_id)},
    )


def _has_orders() -> FailedPrecondition:
    return FailedPrecondition(
        "the service has orders: disable it instead", reason="SERVICE_HAS_ORDERS", domain=DOMAIN
    )


def _category_not_empty() -> FailedPrecondition:
    return FailedPrecondition(
        "the category still has services: move or delete them first",
        reason="CATEGORY_NOT_EMPTY",
        domain=DOMAIN,
    )


def _mapping_taken() -> AlreadyExists:
    return AlreadyExists(
        "another service is already linked to this provider service",
        reason="PROVIDER_SERVICE_TAKEN",
        domain=DOMAIN,
    )


def _scope_taken() -> AlreadyExists:
    return AlreadyExists("a rule for this scope exists", reason="PRICING_RULE_EXISTS", domain=DOMAIN)


def _unknown_scope() -> FailedPrecondition:
    return FailedPrecondition("no such category or service", reason="UNKNOWN_RULE_SCOPE", domain=DOMAIN)


def _round_to_too_large() -> InvalidArgument:
    return InvalidArgument.for_field("pricing_rule.round_to", "must be at most 1000", domain=DOMAIN)


def _validate_rule(round_to_micros: int) -> None:
    if round_to_micros > MAX_ROUND_TO_MICROS:
        raise _round_to_too_large()


CONSTRAINTS = {
    "pricing_rules_round_to_micros_check": _round_to_too_large,
    "services_provider_upstream_key": _mapping_taken,
    "services_category_id_fkey": _category_not_empty,
    "pricing_rules_scope_key": _scope_taken,
    "pricing_rules_category_id_fkey": _unknown_scope,
    "pricing_rules_service_id_fkey": _unknown_scope,
}


class CatalogAdmin:
    def __init__(self, pool: Pool) -> None:
        self._pool = pool
        self._repo = PostgresCatalogRepo()

    # ---------------------------------------------------------------- reading

    async def list_services(
        self,
        *,
        provider_id: int,
        category_id: int,
        quarantined_only: bool,
        enabled: bool | None,
        query: str,
        before_id: int,
        limit: int,
    ) -> list[AdminView]:
        query = query.strip()
        # Matched whole, never cut: no service name is longer than MAX_SERVICE_NAME, so a longer
        # search finds nothing (ILIKE folds case character by character), and it is no id either.
        if len(query) > MAX_SERVICE_NAME:
            return []
        query_id = search_id(query)
        async with self._pool.connection() as conn:
            rows = await QUERIES.all(
                conn,
                "list_admin_services",
                AdminServiceRow,
                provider_id=provider_id,
                category_id=category_id,
                quarantined_only=quarantined_only,
                enabled=enabled,
                query=query,
                query_id=query_id,
                name_pattern=contains_pattern(query),
                before_id=before_id,
                limit=limit,
            )
            return await self._views(conn, rows)

    async def get(self, service_id: int, conn: Conn | None = None) -> AdminView:
        if conn is None:
            async with self._pool.connection() as own:
                return await self.get(service_id, own)
        row = await QUERIES.one(conn, "get_admin_service", AdminServiceRow, id=service_id)
        if row is None:
            raise service_not_found(service_id)
        views = await self._views(conn, [row])
        if not views:  # deleted in between
            raise service_not_found(service_id)
        return views[0]

    async def _views(self, conn: Conn, rows: list[AdminServiceRow]) -> list[AdminView]:
        """Two statements however many rows (a staff page holds up to 1001): the services and
        the fallbacks of every id at once, never one query per row."""
        ids = [r.id for r in rows]
        services = await self._repo.services(conn, ids)
        by_service: dict[int, list[Fallback]] = {}
        for fallback in await QUERIES.all(conn, "list_fallbacks", Fallback, service_ids=ids):
            by_service.setdefault(fallback.service_id, []).append(fallback)
        # A service deleted since its row was read is left out, as if read a moment later.
        return [
            AdminView(services[row.id], row, by_service.get(row.id, [])) for row in rows if row.id in services
        ]

    # ---------------------------------------------------------------- deletes

    async def delete_service(self, service_id: int) -> None:
        try:
            async with self._pool.connection() as conn, conn.transaction():
                if await QUERIES.scalar(conn, "delete_service", id=service_id) is None:
                    raise service_not_found(service_id)
                await audit.record(conn, "service.deleted", target=f"service:{service_id}")
                await add_event(conn, SERVICE_CHANGED, events_pb2.CatalogChanged(service_ids=[service_id]))
        except psycopg.errors.ForeignKeyViolation as exc:  # orders keep their service
            raise _has_orders() from exc

    async def delete_category(self, category_id: int) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            with map_db_errors(CONSTRAINTS):
                deleted = await QUERIES.scalar(conn, "delete_category", id=category_id)
            if deleted is None:
                raise NotFound(
                    "category not found",
                    reason="CATEGORY_NOT_FOUND",
                    domain=DOMAIN,
                    metadata={"id": str(category_id)},
                )
            await audit.record(conn, "category.deleted", target=f"category:{category_id}")
            await add_event(conn, CATEGORY_CHANGED, events_pb2.CatalogChanged(category_ids=[category_id]))

    # ---------------------------------------------------------------- providers of a service

    async def set_providers(
        self, service_id: int, primary: tuple[int, str] | None, fallbacks: list[tuple[int, str]]
    ) -> AdminView:
        violations = []
        if len(fallbacks) > MAX_FALLBACKS:
            violations.append(FieldViolation("fallbacks", f"at most {MAX_FALLBACKS}"))
        # Ids as the provider's list gives them ("0023" is 23), so a hand link matches the sync's.
        given = [*([primary] if primary else []), *fallbacks]
        canonical = [(provider_id, canonical_upstream_id(upstream) or "") for provider_id, upstream in given]
        for index, (provider_id, upstream) in enumerate(canonical):
            name = "provider" if primary and index == 0 else f"fallbacks[{index - (1 if primary else 0)}]"
            if provider_id <= 0 or not upstream:
                violations.append(
                    FieldViolation(
                        name,
                        "needs a provider_id and an upstream_service_id"
                        f" (a positive number or up to {MAX_ID_CHARS} characters without spaces)",
                    )
                )
        if primary:
            primary, fallbacks = canonical[0], canonical[1:]
        else:
            fallbacks = canonical
        if primary and primary in fallbacks:
            violations.append(FieldViolation("fallbacks", "must not repeat the primary provider service"))
        collect(violations, domain=DOMAIN)
        async with self._pool.connection() as conn, conn.transaction():
            before = await self.get(service_id, conn)
            for provider_id, _ in [*([primary] if primary else []), *fallbacks]:
                if not await QUERIES.scalar(conn, "provider_exists", id=provider_id):
                    raise FailedPrecondition(
                        "no such provider",
                        reason="UNKNOWN_PROVIDER",
                        domain=DOMAIN,
                        metadata={"provider_id": str(provider_id)},
                    )
            with map_db_errors(CONSTRAINTS):
                await QUERIES.execute(
                    conn,
                    "set_service_provider",
                    id=service_id,
                    provider_id=primary[0] if primary else None,
                    upstream_service_id=primary[1] if primary else "",
                )
            if primary and primary != (before.admin.provider_id, before.admin.upstream_service_id):
                # The old provider's cost, rate and currency say nothing of the new one's: not sold
                # until a sync of that provider prices it (a cost rise then quarantines as usual).
                await QUERIES.execute(
                    conn,
                    "quarantine_service",
                    id=service_id,
                    reason=f"linked to provider {primary[0]}'s service {primary[1]}: "
                    "not sold until a sync of that provider prices it",
                )
            await QUERIES.execute(conn, "delete_fallbacks", service_id=service_id)
            await QUERIES.execute_many(
                conn,
                "insert_fallback",
                [
                    {
                        "service_id": service_id,
                        "position": i,
                        "provider_id": p,
                        "upstream_service_id": u,
                    }
                    for i, (p, u) in enumerate(fallbacks)
                ],
            )
            after = await self.get(service_id, conn)
            await audit.record(
                conn,
                "service.providers_set",
                target=f"service:{service_id}",
                before=_mapping(before),
                after=_mapping(after),
            )
            await add_event(conn, SERVICE_CHANGED, events_pb2.CatalogChanged(service_ids=[service_id]))
            return after

    # ---------------------------------------------------------------- quarantine

    async def accept_price(self, service_id: int) -> AdminView:
        async with self._pool.connection() as conn, conn.transaction():
            await QUERIES.all(conn, "lock_services_by_id", PricedService, ids=[service_id])
            view = await self.get(service_id, conn)
            pending = view.admin.pending_provider_rate_micros
            if not view.admin.quarantined or pending is None:
                raise FailedPrecondition(
                    "the service is not waiting for a price decision",
                    reason="SERVICE_NOT_QUARANTINED",
                    domain=DOMAIN,
                )
            cost = convert_micros(pending, view.admin.pending_exchange_rate or Decimal(1))
            if view.admin.manual_price and below_cost(view.service.rate_micros, cost):
                # The hand-set price stays: accepting would put the service back on sale at a loss.
                raise price_below_cost(view.service.rate_micros, cost)
            await QUERIES.execute(conn, "accept_pending_price", id=service_id, cost_micros=cost)
            if not view.admin.manual_price:
                rules = Rules(await self._repo.pricing_rules(conn))
                price = rules.price(cost, service_id, view.service.category_id)
                await QUERIES.execute(
                    conn, "set_service_rate", id=service_id, rate_micros=price, manual_price=False
                )
            after = await self.get(service_id, conn)
            await audit.record(
                conn,
                "service.price_accepted",
                target=f"service:{service_id}",
                before={"rate_micros": view.service.rate_micros, "cost_micros": view.admin.cost_micros},
                after={"rate_micros": after.service.rate_micros, "cost_micros": cost},
            )
            await add_event(conn, SERVICE_CHANGED, events_pb2.CatalogChanged(service_ids=[service_id]))
            return after

    # ---------------------------------------------------------------- bulk changes

    async def bulk(
        self, ids: list[int], action: str, *, rate_micros: int | None, percent_bps: int | None
    ) -> int:
        violations = []
        if not 1 <= len(ids) <= MAX_BULK:
            violations.append(FieldViolation("service_ids", f"must list 1 to {MAX_BULK} services"))
        if action not in BULK_ACTIONS:
            violations.append(FieldViolation("action", "must be one of " + ", ".join(BULK_ACTIONS)))
        if action == "set_rate" and rate_micros is None:
            violations.append(FieldViolation("rate", "is required for set_rate"))
        if action == "adjust_rate" and percent_bps is None:
            violations.append(FieldViolation("percent", "is required for adjust_rate"))
        collect(violations, domain=DOMAIN)
        unique = sorted(set(ids))
        async with self._pool.connection() as conn, conn.transaction():
            if action in ("enable", "disable"):
                updated = int(
                    await QUERIES.scalar(conn, "set_services_enabled", ids=unique, enabled=action == "enable")
                )
            else:
                rows = await QUERIES.all(conn, "lock_services_by_id", PricedService, ids=unique)
                rules = Rules(await self._repo.pricing_rules(conn))
                changes = []
                losing: list[tuple[int, int, int]] = []
                for row in rows:
                    new_rate, manual = _bulk_rate(row, action, rate_micros, percent_bps, rules)
                    if manual and below_cost(new_rate, row.cost_micros):
                        assert row.cost_micros is not None
                        losing.append((row.id, new_rate, row.cost_micros))
                    if (new_rate, manual) != (row.rate_micros, row.manual_price):
                        changes.append({"id": row.id, "rate_micros": new_rate, "manual_price": manual})
                if losing:  # all or nothing: staff see which services the price would not cover
                    _, rate, cost = losing[0]
                    raise price_below_cost(rate, cost, service_ids=[i for i, _, _ in losing])
                await QUERIES.execute_many(conn, "set_service_rate", changes)
                updated = len(changes)
            await audit.record(
                conn,
                "service.bulk_updated",
                target=f"services:{len(unique)}",
                after={"action": action, "service_ids": unique[:100], "updated": updated},
            )
            if updated:
                await add_event(conn, SERVICE_CHANGED, events_pb2.CatalogChanged(service_ids=unique[:1000]))
            return updated

    # ---------------------------------------------------------------- pricing rules

    async def rules(self) -> list[PricingRule]:
        async with self._pool.connection() as conn:
            return await self._repo.pricing_rules(conn)

    async def create_rule(self, fields: RuleFields) -> PricingRule:
        if (fields.category_id is None) == (fields.service_id is None):
            collect(
                [FieldViolation("pricing_rule", "set exactly one of category_id and service_id")],
                domain=DOMAIN,
            )
        _validate_rule(fields.round_to_micros)
        async with self._pool.connection() as conn, conn.transaction():
            await QUERIES.execute(conn, "lock_pricing_rules")
            with map_db_errors(CONSTRAINTS):
                rule = await QUERIES.one(conn, "insert_pricing_rule", PricingRule, **vars(fields))
            assert rule is not None
            await self._after_rule_change(conn, "pricing_rule.created", rule.id, None, rule)
            return rule

    async def update_rule(self, rule_id: int, changes: dict[str, int]) -> PricingRule:
        async with self._pool.connection() as conn, conn.transaction():
            await QUERIES.execute(conn, "lock_pricing_rules")
            current = await QUERIES.one(conn, "get_pricing_rule", PricingRule, id=rule_id)
            if current is None:
                raise rule_not_found(rule_id)
            merged = {
                k: changes.get(k, getattr(current, k))
                for k in ("markup_bps", "fixed_micros", "round_to_micros")
            }
            _validate_rule(merged["round_to_micros"])
            with map_db_errors(CONSTRAINTS):
                rule = await QUERIES.one(conn, "update_pricing_rule", PricingRule, id=rule_id, **merged)
            assert rule is not None
            await self._after_rule_change(conn, "pricing_rule.updated", rule_id, current, rule)
            return rule

    async def delete_rule(self, rule_id: int) -> None:
        async with self._pool.connection() as conn, conn.transaction():
            await QUERIES.execute(conn, "lock_pricing_rules")
            current = await QUERIES.one(conn, "get_pricing_rule", PricingRule, id=rule_id)
            if current is None:
                raise rule_not_found(rule_id)
            if await QUERIES.scalar(conn, "delete_pricing_rule", id=rule_id) is None:
                raise FailedPrecondition(
                    "the default rule can be changed, not deleted", reason="DEFAULT_RULE", domain=DOMAIN
                )
            await self._after_rule_change(conn, "pricing_rule.deleted", rule_id, current, None)

    async def _after_rule_change(
        self, conn: Conn, action: str, rule_id: int, before: PricingRule | None, after: PricingRule | None
    ) -> None:
        repriced = await reprice(conn, self._repo)
        await audit.record(
            conn,
            action,
            target=f"pricing_rule:{rule_id}",
            before=_rule(before),
            after={**(_rule(after) or {}), "repriced_services": len(repriced)},
        )
        if repriced:
            await add_event(conn, SERVICE_CHANGED, events_pb2.CatalogChanged(service_ids=repriced[:1000]))


async def reprice(conn: Conn, repo: PostgresCatalogRepo) -> list[int]:
    """Sets every rule-priced service to what the rules now say; returns the ids that changed."""
    rules = Rules(await repo.pricing_rules(conn))
    rows = await QUERIES.all(conn, "lock_priced_services", PricedService, ids=[])
    changes = []
    for row in rows:
        if row.manual_price or row.cost_micros is None:
            continue
        price = rules.price(row.cost_micros, row.id, row.category_id)
        if price != row.rate_micros:
            changes.append({"id": row.id, "rate_micros": price, "manual_price": False})
    await QUERIES.execute_many(conn, "set_service_rate", changes)
    return [c["id"] for c in changes]


def _bulk_rate(
    row: PricedService, action: str, rate_micros: int | None, percent_bps: int | None, rules: Rules
) -> tuple[int, bool]:
    if action == "set_rate":
        assert rate_micros is not None
        return rate_micros, True
    if action == "adjust_rate":
        assert percent_bps is not None
        adjusted = row.rate_micros + mul_div_round(row.rate_micros, percent_bps, 10_000)
        return max(0, min(adjusted, MAX_MICROS)), True
    if row.cost_micros is None:  # no cost known: nothing for the rules to work from
        return row.rate_micros, False
    return rules.price(row.cost_micros, row.id, row.category_id), False


def _mapping(view: AdminView) -> dict[str, object]:
    return {
        "provider_id": view.admin.provider_id,
        "upstream_service_id": view.admin.upstream_service_id,
        "fallbacks": [[f.provider_id, f.upstream_service_id] for f in view.fallbacks],
    }


def _rule(rule: PricingRule | None) -> dict[str, object] | None:
    if rule is None:
        return None
    return {"category_id": rule.category_id, "service_id": rule.service_id, "markup_bps": rule.markup_bps,
            "fixed_micros": rule.fixed_micros, "round_to_micros": rule.round_to_micros}  # fmt: skip


async def refresh_completion_times(conn: Conn) -> str:
    """The hourly job: each service's average completion time from its recent orders."""
    changed = await QUERIES.execute(conn, "refresh_completion_times")
    if changed:
        await add_event(conn, SERVICE_CHANGED, events_pb2.CatalogChanged())
    return f"average completion time updated on {changed} service(s)"
