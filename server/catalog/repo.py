"""Catalog persistence: named queries from queries.sql, rows as frozen dataclasses."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from psycopg import AsyncConnection

from server.catalog.errors import category_name_taken, unknown_category
from server.catalog.pricing import PricingRule, Rules
from server.common.db import map_db_errors
from server.common.sqlfile import load

QUERIES = load(__file__)
CONSTRAINTS = {
    "categories_name_key": category_name_taken,
    "categories_name_lower_key": category_name_taken,
    "services_category_id_fkey": unknown_category,
}

Conn = AsyncConnection[Any]


@dataclass(frozen=True)
class CategoryRow:
    id: int
    name: str
    sort_order: int
    enabled: bool
    create_time: datetime
    update_time: datetime


@dataclass(frozen=True)
class ServiceRow:
    id: int
    category_id: int
    category_name: str
    category_sort: int
    name: str
    description: str
    type: str
    rate_micros: int
    min_quantity: int
    max_quantity: int
    refill: bool
    refill_days: int
    cancel: bool
    dripfeed: bool
    enabled: bool
    sort_order: int
    create_time: datetime
    update_time: datetime
    average_completion_s: int
    one_active_order_per_link: bool
    on_sale: bool


@dataclass(frozen=True)
class ServiceFields:
    """What an admin sets on a service."""

    category_id: int
    name: str
    description: str
    type: str
    rate_micros: int
    min_quantity: int
    max_quantity: int
    refill: bool
    refill_days: int
    cancel: bool
    dripfeed: bool
    enabled: bool
    sort_order: int
    one_active_order_per_link: bool = False


@dataclass(frozen=True)
class SyncedService:
    """The sync-managed columns of one catalog service linked to a provider."""

    id: int
    upstream_service_id: str
    category_id: int
    name: str
    description: str
    type: str
    min_quantity: int
    max_quantity: int
    refill: bool
    refill_days: int
    cancel: bool
    dripfeed: bool
    upstream_dripfeed: bool
    enabled: bool
    rate_micros: int
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
    disabled_by_sync: bool  # taken off sale by the sync (gone upstream): only then put back on return
    upstream_category: str  # the provider's category name at the last sync


@dataclass(frozen=True)
class PricedService:
    id: int
    category_id: int
    rate_micros: int
    cost_micros: int | None
    manual_price: bool


@dataclass(frozen=True)
class ServicePosition:
    category_sort: int
    category_id: int
    sort: int
    id: int


class CatalogRepo(Protocol):
    async def categories_on_sale(self, conn: Conn) -> list[CategoryRow]: ...
    async def all_categories(self, conn: Conn) -> list[CategoryRow]: ...
    async def services_on_sale(
        self, conn: Conn, *, category_id: int, after: ServicePosition | None, limit: int
    ) -> list[ServiceRow]: ...
    async def service(self, conn: Conn, service_id: int) -> ServiceRow | None: ...
    async def user_discount(self, conn: Conn, user_id: int) -> int: ...
    async def category(self, conn: Conn, category_id: int, *, lock: bool = False) -> CategoryRow | None: ...
    async def insert_category(
        self, conn: Conn, *, name: str, sort_order: int, enabled: bool
    ) -> CategoryRow: ...
    async def update_category(self, conn: Conn, row: CategoryRow) -> CategoryRow: ...
    async def category_name_taken(self, conn: Conn, name: str, *, except_id: int = 0) -> bool: ...
    async def lock_service(self, conn: Conn, service_id: int) -> bool: ...
    async def insert_service(self, conn: Conn, fields: ServiceFields) -> int: ...
    async def update_service(self, conn: Conn, service_id: int, fields: ServiceFields) -> None: ...
    async def mark_admin_edits(
        self, conn: Conn, service_id: int, fields: list[str], manual_price: bool
    ) -> None: ...
    async def clear_disabled_by_sync(self, conn: Conn, service_id: int) -> None: ...
    async def service_cost(self, conn: Conn, service_id: int) -> int | None: ...
    async def reprice_by_rules(self, conn: Conn, service_id: int) -> None: ...


class PostgresCatalogRepo:
    async def categories_on_sale(self, conn: Conn) -> list[CategoryRow]:
        return await QUERIES.all(conn, "list_categories_on_sale", CategoryRow)

    async def all_categories(self, conn: Conn) -> list[CategoryRow]:
        return await QUERIES.all(conn, "list_all_categories", CategoryRow)

    async def services_on_sale(
        self, conn: Conn, *, category_id: int, after: ServicePosition | None, limit: int
    ) -> list[ServiceRow]:
        start = after or ServicePosition(-(2**31), 0, -(2**31), 0)
        return await QUERIES.all(
            conn,
            "list_services_on_sale",
            ServiceRow,
            category_id=category_id,
            after_category_sort=start.category_sort,
            after_category_id=start.category_id,
            after_sort=start.sort,
            after_id=start.id,
            limit=limit,
        )

    async def service(self, conn: Conn, service_id: int) -> ServiceRow | None:
        return (await self.services(conn, [service_id])).get(service_id)

    async def services(self, conn: Conn, service_ids: list[int]) -> dict[int, ServiceRow]:
        """Services by id in one statement; an id with no service is left out."""
        rows = await QUERIES.all(conn, "list_services_by_ids", ServiceRow, ids=service_ids)
        return {row.id: row for row in rows}

    async def user_discount(self, conn: Conn, user_id: int) -> int:
        return int(await QUERIES.scalar(conn, "user_discount", user_id=user_id))

    async def category(self, conn: Conn, category_id: int, *, lock: bool = False) -> CategoryRow | None:
        name = "lock_category" if lock else "get_category"
        return await QUERIES.one(conn, name, CategoryRow, id=category_id)

    async def insert_category(self, conn: Conn, *, name: str, sort_order: int, enabled: bool) -> CategoryRow:
        with map_db_errors(CONSTRAINTS):
            row = await QUERIES.one(
                conn, "insert_category", CategoryRow, name=name, sort_order=sort_order, enabled=enabled
            )
        assert row is not None
        return row

    async def category_name_taken(self, conn: Conn, name: str, *, except_id: int = 0) -> bool:
        return bool(await QUERIES.scalar(conn, "category_name_taken", name=name, id=except_id))

    async def update_category(self, conn: Conn, row: CategoryRow) -> CategoryRow:
        with map_db_errors(CONSTRAINTS):
            updated = await QUERIES.one(
                conn,
                "update_category",
                CategoryRow,
                id=row.id,
                name=row.name,
                sort_order=row.sort_order,
                enabled=row.enabled,
            )
        assert updated is not None
        return updated

    async def lock_service(self, conn: Conn, service_id: int) -> bool:
        return await QUERIES.scalar(conn, "lock_service", id=service_id) is not None

    async def insert_service(self, conn: Conn, fields: ServiceFields) -> int:
        with map_db_errors(CONSTRAINTS):
            service_id = await QUERIES.scalar(conn, "insert_service", **vars(fields))
        return int(service_id)

    async def update_service(self, conn: Conn, service_id: int, fields: ServiceFields) -> None:
        with map_db_errors(CONSTRAINTS):
            await QUERIES.execute(conn, "update_service", id=service_id, **vars(fields))

    async def mark_admin_edits(
        self, conn: Conn, service_id: int, fields: list[str], manual_price: bool
    ) -> None:
        await QUERIES.execute(
            conn, "mark_admin_edits", id=service_id, fields=fields, manual_price=manual_price
        )

    async def clear_disabled_by_sync(self, conn: Conn, service_id: int) -> None:
        await QUERIES.execute(conn, "clear_disabled_by_sync", id=service_id)

    async def service_cost(self, conn: Conn, service_id: int) -> int | None:
        cost = await QUERIES.scalar(conn, "get_service_cost", id=service_id)
        return None if cost is None else int(cost)

    async def reprice_by_rules(self, conn: Conn, service_id: int) -> None:
        """A rule-priced service (known cost, not quarantined, not hand-priced) at what the rules
        say where it is now: staff moving it to another category moves it under that category's rule."""
        rows = await QUERIES.all(conn, "lock_priced_services", PricedService, ids=[service_id])
        for row in rows:
            if row.manual_price or row.cost_micros is None:
                continue
            price = Rules(await self.pricing_rules(conn)).price(row.cost_micros, row.id, row.category_id)
            if price != row.rate_micros:
                await QUERIES.execute(
                    conn, "set_service_rate", id=row.id, rate_micros=price, manual_price=False
                )

    # ------------------------------------------------------------------ provider sync (importer)

    async def lock_synced_services(self, conn: Conn, provider_id: int) -> list[SyncedService]:
        return await QUERIES.all(conn, "lock_synced_services", SyncedService, provider_id=provider_id)

    async def category_ids(self, conn: Conn) -> dict[str, int]:
        async with conn.cursor() as cur:
            await cur.execute(QUERIES.sql("list_category_ids"))
            return {name: category_id for name, category_id in await cur.fetchall()}

    async def ensure_categories(self, conn: Conn, names: list[str]) -> dict[str, int]:
        """The category of each name, created unless one has the name already, letter case aside."""
        await QUERIES.execute_many(conn, "insert_missing_category", [{"name": n} for n in names])
        return {name: int(await QUERIES.scalar(conn, "find_category_id", name=name)) for name in names}

    async def pricing_rules(self, conn: Conn) -> list[PricingRule]:
        return await QUERIES.all(conn, "list_pricing_rules", PricingRule)

    async def insert_synced_services(self, conn: Conn, provider_id: int, rows: list[SyncedService]) -> None:
        columns = (
            "upstream_service_id",
            "category_id",
            "name",
            "description",
            "type",
            "min_quantity",
            "max_quantity",
            "refill",
            "refill_days",
            "cancel",
            "dripfeed",
            "upstream_dripfeed",
            "enabled",
            "rate_micros",
            "provider_rate_micros",
            "provider_currency",
            "exchange_rate",
            "cost_micros",
            "upstream_category",
        )
        params = [{"provider_id": provider_id, **{c: getattr(r, c) for c in columns}} for r in rows]
        with map_db_errors(CONSTRAINTS):
            await QUERIES.execute_many(conn, "insert_synced_service", params)

    async def update_synced_services(self, conn: Conn, rows: list[SyncedService]) -> None:
        skip = {"upstream_service_id", "manual_price", "admin_edited"}
        params = [{k: v for k, v in asdict(r).items() if k not in skip} for r in rows]
        with map_db_errors(CONSTRAINTS):
            await QUERIES.execute_many(conn, "update_synced_service", params)
