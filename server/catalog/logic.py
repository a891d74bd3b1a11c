"""Catalog rules: what may be sold, validation of admin edits, and the unit of work of each write."""

from __future__ import annotations

from dataclasses import dataclass, replace

from smm.v1 import events_pb2

from server.catalog.errors import (
    DOMAIN,
    category_name_taken,
    category_not_found,
    price_below_cost,
    service_not_found,
)
from server.catalog.pricing import below_cost
from server.catalog.repo import CatalogRepo, CategoryRow, ServiceFields, ServicePosition, ServiceRow
from server.common import idempotency
from server.common.db import Pool
from server.common.errors import FieldViolation, collect
from server.common.outbox import add_event
from server.common.service_types import SERVICE_TYPES
from server.common.text import display_name_problem

MAX_QUANTITY = 10**12
MAX_SERVICE_NAME = 300  # services_name_check
SERVICE_CHANGED = "smm.catalog.service.changed"
# Fields a provider sync also sets: once staff edit them, the sync leaves them alone.
ADMIN_EDITABLE = {
    "name": "name",
    "description": "description",
    "category_id": "category",
    "dripfeed": "dripfeed",
}
CATEGORY_CHANGED = "smm.catalog.category.changed"


@dataclass(frozen=True)
class ServicePage:
    services: list[ServiceRow]
    next_position: ServicePosition | None


def category_key(name: str) -> str:
    """What two category names must share to be one category: letter case does not count, so
    customers never see "Instagram Likes" and "Instagram likes" side by side. The same as
    ``lower(name)`` in SQL (``categories_name_lower_key``) for the letters names use."""
    return name.strip().lower()


def validate_category(name: str, *, typed: bool = True) -> None:
    """``typed``: the name comes from staff now (not a name a sync stored before)."""
    violations = []
    if not 1 <= len(name.strip()) <= 200:
        violations.append(FieldViolation("category.name", "must be 1 to 200 characters"))
    elif typed and (problem := display_name_problem(name.strip())):
        violations.append(FieldViolation("category.name", problem))
    collect(violations, domain=DOMAIN)


def validate_service(fields: ServiceFields, *, name_typed: bool = True) -> None:
    """``name_typed``: the name comes from staff now (not one a sync stored before)."""
    violations: list[FieldViolation] = []
    if not 1 <= len(fields.name.strip()) <= MAX_SERVICE_NAME:
        violations.append(FieldViolation("service.name", f"must be 1 to {MAX_SERVICE_NAME} characters"))
    elif name_typed and (problem := display_name_problem(fields.name.strip())):
        violations.append(FieldViolation("service.name", problem))
    if len(fields.description) > 10_000:
        violations.append(FieldViolation("service.description", "must be at most 10000 characters"))
    if fields.type not in SERVICE_TYPES:
        violations.append(FieldViolation("service.type", "must be a service type"))
    if fields.category_id <= 0:
        violations.append(FieldViolation("service.category_id", "is required"))
    if not 1 <= fields.min_quantity <= MAX_QUANTITY:
        violations.append(FieldViolation("service.min_quantity", "must be at least 1"))
    if not fields.min_quantity <= fields.max_quantity <= MAX_QUANTITY:
        violations.append(FieldViolation("service.max_quantity", "must be at least min_quantity"))
    # Refill on needs a window: with 0 days every refill is already too late.
    if fields.refill and not 1 <= fields.refill_days <= 3650:
        violations.append(FieldViolation("service.refill_days", "must be 1 to 3650 when refill is on"))
    if fields.refill_days and not fields.refill:
        violations.append(FieldViolation("service.refill_days", "must be 0 when refill is off"))
    collect(violations, domain=DOMAIN)


class CatalogLogic:
    def __init__(self, pool: Pool, repo: CatalogRepo) -> None:
        self._pool = pool
        self._repo = repo

    async def categories_on_sale(self) -> list[CategoryRow]:
        async with self._pool.connection() as conn:
            return await self._repo.categories_on_sale(conn)

    async def all_categories(self) -> list[CategoryRow]:
        """Staff's list: a disabled or empty category must be found to be enabled or deleted."""
        async with self._pool.connection() as conn:
            return await self._repo.all_categories(conn)

    async def services_on_sale(
        self, *, category_id: int, after: ServicePosition | None, page_size: int
    ) -> ServicePage:
        async with self._pool.connection() as conn:
            rows = await self._repo.services_on_sale(
                conn, category_id=category_id, after=after, limit=page_size + 1
            )
        if len(rows) <= page_size:
            return ServicePage(rows, None)
        rows = rows[:page_size]
        last = rows[-1]
        return ServicePage(
            rows, ServicePosition(last.category_sort, last.category_id, last.sort_order, last.id)
        )

    async def discount_bps(self, user_id: int | None) -> int:
        """The discount a user's orders get (0 for callers who are not a user)."""
        if user_id is None:
            return 0
        async with self._pool.connection() as conn:
            return await self._repo.user_discount(conn, user_id)

    async def service_on_sale(self, service_id: int) -> ServiceRow:
        async with self._pool.connection() as conn:
            row = await self._repo.service(conn, service_id)
        if row is None or not row.on_sale:
            raise service_not_found(service_id)
        return row

    async def create_category(
        self, *, name: str, sort_order: int, enabled: bool, key: idempotency.RequestKey | None
    ) -> CategoryRow:
        validate_category(name)
        async with self._pool.connection() as conn, conn.transaction():
            if key and (stored := await idempotency.claim(conn, key)) is not None:
                found = await self._repo.category(conn, int(stored))
                assert found is not None
                return found
            if await self._repo.category_name_taken(conn, name.strip()):
                raise category_name_taken()
            row = await self._repo.insert_category(
                conn, name=name.strip(), sort_order=sort_order, enabled=enabled
            )
            await add_event(conn, CATEGORY_CHANGED, events_pb2.CatalogChanged(category_ids=[row.id]))
            if key:
                await idempotency.remember(conn, key, str(row.id).encode())
            return row

    async def update_category(self, category_id: int, changes: dict[str, object]) -> CategoryRow:
        async with self._pool.connection() as conn, conn.transaction():
            current = await self._repo.category(conn, category_id, lock=True)
            if current is None:
                raise category_not_found(category_id)
            merged = replace(current, **changes)  # type: ignore[arg-type]
            validate_category(merged.name, typed="name" in changes)
            if "name" in changes and await self._repo.category_name_taken(
                conn, merged.name.strip(), except_id=category_id
            ):
                raise category_name_taken()
            row = await self._repo.update_category(conn, replace(merged, name=merged.name.strip()))
            await add_event(conn, CATEGORY_CHANGED, events_pb2.CatalogChanged(category_ids=[row.id]))
            return row

    async def create_service(
        self, fields: ServiceFields, *, key: idempotency.RequestKey | None
    ) -> ServiceRow:
        validate_service(fields)
        async with self._pool.connection() as conn, conn.transaction():
            if key and (stored := await idempotency.claim(conn, key)) is not None:
                service_id = int(stored)
            else:
                service_id = await self._repo.insert_service(conn, fields)
                # Everything on a service staff created is theirs: once it is linked to a provider,
                # a sync keeps its name, description, category, drip-feed offer and price.
                await self._repo.mark_admin_edits(
                    conn, service_id, sorted(ADMIN_EDITABLE.values()), manual_price=True
                )
                await add_event(conn, SERVICE_CHANGED, events_pb2.CatalogChanged(service_ids=[service_id]))
                if key:
                    await idempotency.remember(conn, key, str(service_id).encode())
            row = await self._repo.service(conn, service_id)
        assert row is not None
        return row

    async def update_service(self, service_id: int, changes: dict[str, object]) -> ServiceRow:
        async with self._pool.connection() as conn, conn.transaction():
            if not await self._repo.lock_service(conn, service_id):
                raise service_not_found(service_id)
            current = await self._repo.service(conn, service_id)
            assert current is not None
            fields = ServiceFields(
                **{name: getattr(current, name) for name in ServiceFields.__dataclass_fields__}
            )
            if changes.get("refill") is False and "refill_days" not in changes:
                # Refill off has no window: a refill switch need not send the days as well.
                changes = {**changes, "refill_days": 0}
            merged = replace(fields, **changes)  # type: ignore[arg-type]
            validate_service(merged, name_typed="name" in changes)
            manual = "rate_micros" in changes and changes["rate_micros"] != current.rate_micros
            if manual:
                cost = await self._repo.service_cost(conn, service_id)
                if below_cost(merged.rate_micros, cost):
                    assert cost is not None
                    raise price_below_cost(merged.rate_micros, cost)
            await self._repo.update_service(conn, service_id, merged)
            edited = sorted(ADMIN_EDITABLE[k] for k in changes if k in ADMIN_EDITABLE)
            if edited or manual:
                await self._repo.mark_admin_edits(conn, service_id, edited, manual)
            if merged.category_id != current.category_id and not manual:
                # Under the new category's pricing rule at once, not at the next sync.
                await self._repo.reprice_by_rules(conn, service_id)
            if "enabled" in changes:
                await self._repo.clear_disabled_by_sync(conn, service_id)
            await add_event(conn, SERVICE_CHANGED, events_pb2.CatalogChanged(service_ids=[service_id]))
            row = await self._repo.service(conn, service_id)
        assert row is not None
        return row
