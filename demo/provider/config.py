"""The demo provider's settings."""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["MICROS", "DemoConfig"]

MICROS = 1_000_000


@dataclass(frozen=True)
class DemoConfig:
    """How the demo provider behaves.

    ``step_s`` is the time between two status steps of an order or refill (Pending -> In progress ->
    … -> final). ``timeout_fault_s`` is how long a "timeout" fault holds the reply: longer than any
    client's timeout. With ``webhook_url`` and ``webhook_secret`` set, every order state change is
    POSTed there, signed (``X-Smm-Signature``).
    """

    api_keys: tuple[str, ...] = ("demo-key",)
    currency: str = "USD"
    starting_balance_micros: int = 1_000 * MICROS
    step_s: float = 5.0
    timeout_fault_s: float = 60.0
    control_token: str | None = field(default=None, repr=False)
    webhook_url: str | None = None
    webhook_secret: str | None = field(default=None, repr=False)
    reject_duplicate_links: bool = False  # PP's "You have active order with this link…"
    extra_services: int = 0  # generated services on top of the fixed catalog (benchmarks)

    def __post_init__(self) -> None:
        if not self.api_keys:
            raise ValueError("at least one API key is required")
        if self.step_s <= 0 or self.timeout_fault_s < 0:
            raise ValueError("step_s must be positive and timeout_fault_s not negative")
        if bool(self.webhook_url) != bool(self.webhook_secret):
            raise ValueError("webhook_url and webhook_secret go together")
