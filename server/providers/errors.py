"""The providers service's errors (domain ``providers.smm``)."""

from __future__ import annotations

from server.common.errors import AlreadyExists, FailedPrecondition, NotFound

DOMAIN = "providers.smm"


def provider_not_found(provider_id: int) -> NotFound:
    return NotFound(
        "provider not found", reason="PROVIDER_NOT_FOUND", domain=DOMAIN, metadata={"id": str(provider_id)}
    )


def provider_name_taken() -> AlreadyExists:
    return AlreadyExists("a provider with this name exists", reason="PROVIDER_NAME_TAKEN", domain=DOMAIN)


def sync_run_not_found(run_id: int) -> NotFound:
    return NotFound(
        "sync run not found", reason="SYNC_RUN_NOT_FOUND", domain=DOMAIN, metadata={"id": str(run_id)}
    )


def no_exchange_rate(currency: str, panel_currency: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"set an exchange rate for {currency} first (the panel sells in {panel_currency})",
        reason="EXCHANGE_RATE_MISSING",
        domain=DOMAIN,
        metadata={"currency": currency, "panel_currency": panel_currency},
    )


def currency_mismatch(configured: str, reported: str) -> FailedPrecondition:
    return FailedPrecondition(
        f"the provider reports its account in {reported}, not {configured} as set up: "
        "correct the provider's currency (and set an exchange rate for it) before syncing",
        reason="PROVIDER_CURRENCY_MISMATCH",
        domain=DOMAIN,
        metadata={"currency": configured, "reported_currency": reported},
    )
