"""The orders service's errors (domain ``orders.smm``)."""

from __future__ import annotations

from server.common.errors import FailedPrecondition, NotFound

DOMAIN = "orders.smm"


def order_not_found(order_id: int) -> NotFound:
    # The same answer for another user's order as for a missing one.
    return NotFound(
        "order not found", reason="ORDER_NOT_FOUND", domain=DOMAIN, metadata={"id": str(order_id)}
    )


def service_not_on_sale(service_id: int) -> FailedPrecondition:
    return FailedPrecondition(
        "this service is not on sale",
        reason="SERVICE_NOT_ON_SALE",
        domain=DOMAIN,
        metadata={"service_id": str(service_id)},
    )


def active_order_for_link() -> FailedPrecondition:
    return FailedPrecondition(
        "You have active order with this link. Please wait until order being completed.",
        reason="ACTIVE_ORDER_FOR_LINK",
        domain=DOMAIN,
    )


def idempotency_key_reused() -> FailedPrecondition:
    return FailedPrecondition(
        "this Idempotency-Key was already used for a different order",
        reason="REQUEST_ID_REUSED",
        domain=DOMAIN,
    )
