"""The catalog's errors (domain ``catalog.smm``)."""

from __future__ import annotations

from collections.abc import Sequence

from server.common.errors import AlreadyExists, FailedPrecondition, NotFound
from server.common.money import format_micros

DOMAIN = "catalog.smm"


def category_name_taken() -> AlreadyExists:
    """Names are compared ignoring letter case: "Instagram likes" is the "Instagram Likes" category."""
    return AlreadyExists(
        "a category with this name exists (letter case aside)",
        reason="CATEGORY_NAME_TAKEN",
        domain=DOMAIN,
        metadata={"field": "category.name"},
    )


def unknown_category() -> FailedPrecondition:
    return FailedPrecondition(
        "the category does not exist",
        reason="UNKNOWN_CATEGORY",
        domain=DOMAIN,
        metadata={"field": "category_id"},
    )


def service_not_found(service_id: int) -> NotFound:
    return NotFound(
        f"service {service_id} not found",
        reason="SERVICE_NOT_FOUND",
        domain=DOMAIN,
        metadata={"id": str(service_id)},
    )


def category_not_found(category_id: int) -> NotFound:
    return NotFound(
        f"category {category_id} not found",
        reason="CATEGORY_NOT_FOUND",
        domain=DOMAIN,
        metadata={"id": str(category_id)},
    )


def empty_service_list() -> FailedPrecondition:
    return FailedPrecondition(
        "the provider listed no services; nothing was changed"
        " (disable the provider to take its services off sale)",
        reason="EMPTY_SERVICE_LIST",
        domain=DOMAIN,
    )


def price_below_cost(
    rate_micros: int, cost_micros: int, *, service_ids: Sequence[int] = ()
) -> FailedPrecondition:
    """A price staff set (or keep, accepting a new cost) under what the provider charges: every order
    would lose the difference. ``service_ids``: the services of a bulk change that would."""
    rate, cost = format_micros(rate_micros), format_micros(cost_micros)
    metadata = {"rate": rate, "cost": cost}
    where = ""
    if service_ids:
        metadata["service_ids"] = ",".join(str(i) for i in service_ids[:100])
        more = f" and {len(service_ids) - 1} more" if len(service_ids) > 1 else ""
        where = f" (service {service_ids[0]}{more})"
    return FailedPrecondition(
        f"the price {rate} is below the provider's cost {cost}{where}: set a price that covers it",
        reason="PRICE_BELOW_COST",
        domain=DOMAIN,
        metadata=metadata,
    )
