"""The catalog's errors (domain ``catalog.smm``)."""

from __future__ import annotations

from server.common.errors import AlreadyExists, FailedPrecondition, NotFound

DOMAIN = "catalog.smm"


def category_name_taken() -> AlreadyExists:
    return AlreadyExists("a category with this name exists", reason="CATEGORY_NAME_TAKEN", domain=DOMAIN)


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
