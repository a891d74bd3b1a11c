"""Admin alerts that come in bursts: at most one per kind and channel each interval.

A provider that times out sends every order placed meanwhile to review, and one that cannot be
reached gets every order event dead-lettered once the dispatch worker's retries run out: an alert
each would bury the admins (and their phone bill) under hundreds just when they have to act. So
the first alert of a kind goes out at once and opens a window of ``SMM_ADMIN_ALERT_INTERVAL_S``;
the alerts of that kind planned within it are recorded ``quieted`` (a row per admin, as a
suppressed one: never sent, seen in the admin's history) and counted, and the first one after it
goes out saying how many were held back. Every alert sent says until when the next ones are held
back and where staff see them all. Nothing is lost: an alert only points at what waits for staff
(the orders in review, the dead letters), and that stays there until they act.

The decision is taken in the planning's transaction, under the window's row lock, and a
redelivered event follows how it was first planned: a held-back alert is counted once and never
sent later, a sent one is never held back. Alerts that are already one per burst (stuck orders,
the ledger check) are not gated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import AsyncConnection

from server.common.sqlfile import load

QUERIES = load(__file__)
QUIETED = "quieted"


@dataclass(frozen=True)
class Burst:
    """A kind of alert that comes in bursts, and where staff see everything it points at."""

    kind: str
    where: str


@dataclass(frozen=True)
class Gate:
    quiet: bool
    # Added to the alert's lines when it goes out.
    lines: tuple[str, ...] = ()

    def context(self, context: dict[str, Any]) -> dict[str, Any]:
        return {**context, "lines": [*context["lines"], *self.lines]} if self.lines else context


@dataclass(frozen=True)
class Window:
    open_time: datetime
    held_back: int
    now: datetime


def review_burst(provider_id: int | None) -> Burst:
    """One kind per provider: one provider's outage holds back no alert about another's orders."""
    if provider_id is None:
        return Burst("review", "every order in review is listed in the admin's orders (status needs review)")
    return Burst(
        f"review:{provider_id}",
        f"this provider's orders in review are listed in the admin's orders (status needs review,"
        f" provider {provider_id})",
    )


def dead_letter_burst(durable: str) -> Burst:
    return Burst(f"dlq:{durable}", f"`smm dlq list --durable {durable}` lists every one")


def _clock(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


async def gate(
    conn: AsyncConnection[Any], channel: str, event_key: str, burst: Burst | None, interval_s: int
) -> Gate:
    """Whether this event's admin alert on ``channel`` is held back, and what it adds if not."""
    if burst is None or interval_s <= 0:
        return Gate(quiet=False)
    first = await QUERIES.scalar(conn, f"{channel}_alert_status", event_id=event_key)
    if first is not None:  # a redelivery: as it was first planned
        return Gate(quiet=first == QUIETED)
    await QUERIES.execute(conn, "ensure_alert_window", channel=channel, kind=burst.kind)
    window = await QUERIES.one(conn, "lock_alert_window", Window, channel=channel, kind=burst.kind)
    assert window is not None
    interval = timedelta(seconds=interval_s)
    if window.now < window.open_time + interval:
        await QUERIES.execute(conn, "hold_back_alert", channel=channel, kind=burst.kind)
        return Gate(quiet=True)
    await QUERIES.execute(conn, "reopen_alert_window", channel=channel, kind=burst.kind)
    lines = []
    if window.held_back:
        lines.append(
            f"{window.held_back} more alert(s) like this were held back since {_clock(window.open_time)}."
        )
    lines.append(
        f"More like this are held back until {_clock(window.now + interval)} (then counted in the next"
        f" one): {burst.where}."
    )
    return Gate(quiet=False, lines=tuple(lines))
