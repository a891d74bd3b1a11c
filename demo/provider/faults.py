"""Faults on demand: the next N matching API requests misbehave in a chosen way.

Kinds:

- ``latency``: wait ``delay_s``, then answer normally;
- ``timeout``: hold the reply for ``DemoConfig.timeout_fault_s`` (longer than any client waits);
- ``http500``: HTTP ``status`` (default 500) with an HTML error page;
- ``error_body``: HTTP 200 ``{"error": message}``;
- ``malformed_json``: HTTP 200, ``application/json``, a truncated JSON document;
- ``html``: HTTP 200, ``text/html``, a gateway/challenge page;
- ``unknown_remains``: the normal answer with every status's ``remains`` as ``"Unknown"`` (as some
  panels answer): the status without how much is left.
- ``status_word``: the normal answer with every status's ``status`` replaced by ``message`` (a
  provider's word smm's state machine may not allow from where the order is, like "Processing"
  for a running subscription). With ``order_ids``, a list answer changes only those orders' entries
  (so one order of several reads oddly); a single answer is changed whatever its order.

``delay_s`` also delays any other kind before it applies (a refusal after a slow call).

``process`` says whether the request's effect happens before the fault replaces the reply. It
defaults to true for timeout, http500, malformed_json and html (the order exists upstream but the
client cannot know: the dangerous case) and to false for error_body (a definite rejection: nothing
happened). Faults are consumed in the order they were added.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["FAULT_KINDS", "Fault", "FaultBook", "parse_fault"]

FAULT_KINDS = (
    "latency",
    "timeout",
    "http500",
    "error_body",
    "malformed_json",
    "html",
    "unknown_remains",
    "status_word",
)


@dataclass
class Fault:
    kind: str
    remaining: int = 1
    actions: frozenset[str] | None = None  # None: every action
    delay_s: float = 0.0
    message: str = "Service temporarily unavailable"
    status: int = 500
    process: bool = True
    # status_word and unknown_remains in a list answer: only these orders' entries (None: every one).
    order_ids: frozenset[str] | None = None

    def matches(self, action: str) -> bool:
        return self.remaining > 0 and (self.actions is None or action in self.actions)

    def as_dict(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "count": self.remaining,
            "actions": sorted(self.actions) if self.actions is not None else None,
            "delay_s": self.delay_s,
            "message": self.message,
            "status": self.status,
            "process": self.process,
            "order_ids": sorted(self.order_ids) if self.order_ids is not None else None,
        }


def parse_fault(spec: Mapping[str, object]) -> Fault:
    """A fault from the control route's JSON; raises ValueError with a readable message."""
    kind = spec.get("kind")
    if kind not in FAULT_KINDS:
        raise ValueError(f"kind must be one of {', '.join(FAULT_KINDS)}")
    count = spec.get("count", 1)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise ValueError("count must be a positive integer")
    actions = spec.get("actions")
    if actions is not None and (
        not isinstance(actions, list) or not all(isinstance(a, str) for a in actions)
    ):
        raise ValueError("actions must be a list of action names")
    delay = spec.get("delay_s", 0.0)
    if not isinstance(delay, int | float) or isinstance(delay, bool) or delay < 0:
        raise ValueError("delay_s must be a non-negative number")
    message = spec.get("message", "Service temporarily unavailable")
    status = spec.get("status", 500)
    if not isinstance(message, str) or not isinstance(status, int) or not 100 <= status <= 599:
        raise ValueError("message must be a string and status an HTTP status code")
    process = spec.get("process", kind != "error_body")
    if not isinstance(process, bool):
        raise ValueError("process must be a boolean")
    order_ids = spec.get("order_ids")
    if order_ids is not None and (
        not isinstance(order_ids, list) or not all(isinstance(i, str) for i in order_ids)
    ):
        raise ValueError("order_ids must be a list of order ids as strings")
    return Fault(
        kind=str(kind),
        remaining=count,
        actions=frozenset(actions) if actions is not None else None,
        delay_s=float(delay),
        message=message,
        status=status,
        process=process,
        order_ids=frozenset(order_ids) if order_ids is not None else None,
    )


class FaultBook:
    """Pending faults and the count of API requests per action (faulted or not)."""

    def __init__(self) -> None:
        self.faults: list[Fault] = []
        self.requests: Counter[str] = Counter()

    def add(self, fault: Fault) -> None:
        self.faults.append(fault)

    def clear(self) -> None:
        self.faults.clear()

    def take(self, action: str) -> Fault | None:
        """Count the request and consume one use of the first fault matching ``action``."""
        self.requests[action] += 1
        for fault in self.faults:
            if fault.matches(action):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self.faults.remove(fault)
                return fault
        return None
