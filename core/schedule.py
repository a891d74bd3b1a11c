"""The periodic jobs, declared in one place: name and period.

The scheduler publishes one ``smm.schedule.<job>`` tick per period; the maintenance worker turns
each tick into ``SystemService.RunJob``; the server maps the name to what the job does
(``server/system/jobs.py``). Later issues add provider sync, order status polling and ledger
verification here.
"""

from __future__ import annotations

from dataclasses import dataclass

HOUR_S = 3600


@dataclass(frozen=True)
class Job:
    name: str
    period_s: int

    def period_start(self, now_s: float) -> int:
        return int(now_s // self.period_s) * self.period_s


JOBS: tuple[Job, ...] = (
    Job("outbox-purge", HOUR_S),
    Job("rate-limit-purge", 600),
    # Operational rows past their retention (server/system/retention.py, docs/DEPLOYMENT.md).
    Job("retention-purge", HOUR_S),
    # Queues a sync of every enabled provider; the provider-sync worker runs them.
    Job("provider-sync", HOUR_S),
    # Asks providers about orders that are due a look (the dispatch worker runs the poll), and
    # reports orders (and open refills) stuck for too long.
    Job("order-poll", 30),
    # Checks every ledger invariant; a broken one raises an alert event.
    Job("ledger-verify", HOUR_S),
    # Each service's average completion time, from its recent completed orders.
    Job("service-stats", HOUR_S),
)


def job(name: str) -> Job:
    for candidate in JOBS:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
