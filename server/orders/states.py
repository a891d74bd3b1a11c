"""The order state machine: every status and every allowed move, in one place.

    pending ──▶ submitting ──▶ in_progress ──▶ processing ──▶ completed | partial | canceled
       │            │  ▲            │                              (final; funds settled/released)
       │            │  └─ (not sent: back to pending)
       │            ├──▶ failed (no provider took it; released in full)
       │            └──▶ needs_review (the provider's answer was lost; never resubmitted blindly)
       └──▶ canceled (before it went out)
    needs_review ──▶ in_progress (found upstream) | pending (certainly not placed) | failed | canceled
    drip-feed smm sends itself (``dripfeed.py``): pending ──▶ in_progress when the first run is out;
       pending | in_progress ──▶ needs_review when a run's answer was lost; the runs have their own
       states (RUN_TRANSITIONS) and the order finishes once, when the last run ends
    subscriptions: in_progress ──▶ active ⇄ paused ──▶ completed | expired | canceled

Money: a final status settles what was delivered and releases the rest, exactly once (ledger keys
``order:<id>:settle`` and ``order:<id>:release``).
"""

from __future__ import annotations

from server.common.errors import FailedPrecondition

PENDING = "pending"
SUBMITTING = "submitting"
IN_PROGRESS = "in_progress"
PROCESSING = "processing"
COMPLETED = "completed"
PARTIAL = "partial"
CANCELED = "canceled"
FAILED = "failed"
NEEDS_REVIEW = "needs_review"
ACTIVE = "active"
PAUSED = "paused"
EXPIRED = "expired"

FINAL = frozenset({COMPLETED, PARTIAL, CANCELED, FAILED, EXPIRED})
# States in which an order is with a provider and gets polled.
TRACKED = frozenset({IN_PROGRESS, PROCESSING, ACTIVE, PAUSED})

TRANSITIONS: dict[str, frozenset[str]] = {
    PENDING: frozenset({SUBMITTING, CANCELED, FAILED, IN_PROGRESS, NEEDS_REVIEW}),
    SUBMITTING: frozenset({IN_PROGRESS, PENDING, FAILED, NEEDS_REVIEW}),
    IN_PROGRESS: frozenset({PROCESSING, COMPLETED, PARTIAL, CANCELED, ACTIVE, PAUSED, EXPIRED, NEEDS_REVIEW}),
    PROCESSING: frozenset({IN_PROGRESS, COMPLETED, PARTIAL, CANCELED}),
    NEEDS_REVIEW: frozenset({IN_PROGRESS, PENDING, FAILED, CANCELED}),
    ACTIVE: frozenset({PAUSED, COMPLETED, EXPIRED, CANCELED}),
    PAUSED: frozenset({ACTIVE, COMPLETED, EXPIRED, CANCELED}),
    COMPLETED: frozenset(),
    PARTIAL: frozenset(),
    CANCELED: frozenset(),
    FAILED: frozenset(),
    EXPIRED: frozenset(),
}
ALL = frozenset(TRANSITIONS)


# The runs of a drip-feed smm sends itself: each is an upstream order of its own.
SCHEDULED = "scheduled"
RUN_TRANSITIONS: dict[str, frozenset[str]] = {
    SCHEDULED: frozenset({SUBMITTING, FAILED, CANCELED}),
    SUBMITTING: frozenset({IN_PROGRESS, SCHEDULED, FAILED, NEEDS_REVIEW}),
    IN_PROGRESS: frozenset({PROCESSING, COMPLETED, PARTIAL, CANCELED}),
    PROCESSING: frozenset({IN_PROGRESS, COMPLETED, PARTIAL, CANCELED}),
    NEEDS_REVIEW: frozenset({IN_PROGRESS, SCHEDULED, FAILED}),
    COMPLETED: frozenset(),
    PARTIAL: frozenset(),
    CANCELED: frozenset(),
    FAILED: frozenset(),
}
RUN_OPEN = frozenset({SCHEDULED, SUBMITTING, IN_PROGRESS, PROCESSING, NEEDS_REVIEW})


def can_move(current: str, target: str) -> bool:
    # Staying put is no move, except for a final order: finishing it again would split its money
    # a second time (a settle or release under a key the first finish did not use).
    return (target == current and current not in FINAL) or target in TRANSITIONS[current]


def check_move(current: str, target: str) -> None:
    if not can_move(current, target):
        raise FailedPrecondition(
            f"an order cannot go from {current} to {target}",
            reason="ORDER_STATE_CONFLICT",
            domain="orders.smm",
            metadata={"from": current, "to": target},
        )


# The provider's six words (and subscription words) -> ours, for a tracked order.
UPSTREAM: dict[str, str] = {
    "Pending": IN_PROGRESS,
    "In progress": IN_PROGRESS,
    "Processing": PROCESSING,
    "Completed": COMPLETED,
    "Partial": PARTIAL,
    "Canceled": CANCELED,
    # A subscription word for an order that is not a subscription: what it means for an order.
    "Active": IN_PROGRESS,
    "Paused": IN_PROGRESS,
    "Expired": COMPLETED,
}
# ... and for a subscription, where they differ: running, paused, or ended with part perhaps not
# delivered (an expired or partial end releases the share of what remains).
UPSTREAM_SUBSCRIPTION: dict[str, str] = {
    "Pending": ACTIVE,
    "In progress": ACTIVE,
    # Running too: processing has no move to active, paused or expired (it is an order's state).
    "Processing": ACTIVE,
    "Active": ACTIVE,
    "Paused": PAUSED,
    "Partial": EXPIRED,
    "Expired": EXPIRED,
}
