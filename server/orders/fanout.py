"""The shape of every step of the poll tick: per provider, side by side, bounded, isolated.

A provider that is slow or does not answer (three tries of up to two minutes for a read) must not
hold up the other providers' orders, runs, refills or lost orders; an item whose handling raises (an
unexpected reply, a row the ledger refuses) must stop neither the rest of its batch nor the other
providers, nor come first again on every tick: it is logged and handed back to be postponed. The
steps themselves run side by side too (``isolated`` each), so one step's slow provider or failure
holds up no other step.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")
# Providers asked at the same time by one step (each has its own concurrency and rate limits besides).
POLL_PROVIDERS_AT_ONCE = 8


def by_provider(items: Iterable[T], provider_of: Callable[[T], int]) -> dict[int, list[T]]:
    """Items grouped by provider, each group in the order given (the most overdue first)."""
    groups: dict[int, list[T]] = {}
    for item in items:
        groups.setdefault(provider_of(item), []).append(item)
    return groups


async def per_provider(
    groups: Mapping[int, Sequence[T]],
    work: Callable[[int, Sequence[T]], Awaitable[int]],
    *,
    what: str,
    on_failure: Callable[[int, Sequence[T]], Awaitable[None]] | None = None,
) -> int:
    """``work`` for each provider's items, at most ``POLL_PROVIDERS_AT_ONCE`` providers at a time;
    the sum of what it returned. A provider whose ``work`` raises is logged, its items are handed to
    ``on_failure`` (to be postponed), and it counts 0."""
    slots = asyncio.Semaphore(POLL_PROVIDERS_AT_ONCE)

    async def one(provider_id: int, items: Sequence[T]) -> int:
        async with slots:
            try:
                return await work(provider_id, items)
            except Exception:
                log.exception("could not %s at provider %s", what, provider_id)
                if on_failure is not None:
                    await quietly(on_failure(provider_id, items), f"postpone what {what} left")
                return 0

    counts = await asyncio.gather(*(one(p, items) for p, items in groups.items()))
    return sum(counts)


async def each(
    items: Iterable[T],
    work: Callable[[T], Awaitable[int]],
    *,
    what: Callable[[T], str],
    on_failure: Callable[[T], Awaitable[None]] | None = None,
) -> int:
    """``work`` for each item in turn; the sum of what it returned. An item whose ``work`` raises is
    logged (``what(item)`` says what could not be done), handed to ``on_failure``, and counts 0."""
    total = 0
    for item in items:
        try:
            total += await work(item)
        except Exception:
            log.exception("could not %s", what(item))
            if on_failure is not None:
                await quietly(on_failure(item), f"postpone after: {what(item)}")
    return total


async def isolated(step: str, work: Awaitable[R], default: R) -> R:
    """One step of the tick: its failure is logged and counts ``default``; the others go on."""
    try:
        return await work
    except Exception:
        log.exception("the poll step %s failed", step)
        return default


async def quietly(work: Awaitable[None], what: str) -> None:
    """Postponing is best effort (the database may be what failed): the item then comes again."""
    try:
        await work
    except Exception:
        log.exception("could not %s", what)
