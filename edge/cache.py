"""Response cache for read routes whose results change only through events.

Routes name a cache group in their proto options (``cache_group: "catalog"``). Each edge copy
subscribes to the group's subjects on NATS and drops the group on every event, so no copy serves
a catalog older than the last change it heard of. Without a NATS connection the cache is off:
the edge cannot know when entries go stale, so it asks the server every time.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass

from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from core.events import Namespace

log = logging.getLogger(__name__)

# The subjects whose events invalidate each group.
GROUP_SUBJECTS: dict[str, str] = {"catalog": "smm.catalog.>"}
MAX_ENTRIES = 2000
# A backstop only: invalidation events are what keep entries fresh.
TTL_S = 300.0


@dataclass(frozen=True)
class Entry:
    body: bytes
    stored_at: float


class ResponseCache:
    def __init__(self) -> None:
        self._entries: dict[str, OrderedDict[tuple[object, ...], Entry]] = {}
        self._generation: dict[str, int] = {}
        self.enabled = False
        self.hits = 0
        self.invalidations = 0

    def generation(self, group: str) -> int:
        return self._generation.get(group, 0)

    def get(self, group: str, key: tuple[object, ...]) -> bytes | None:
        if not self.enabled:
            return None
        entries = self._entries.get(group)
        entry = entries.get(key) if entries else None
        if entry is None:
            return None
        if time.monotonic() - entry.stored_at > TTL_S:
            del entries[key]  # type: ignore[union-attr]
            return None
        self.hits += 1
        return entry.body

    def put(self, group: str, key: tuple[object, ...], body: bytes, generation: int) -> None:
        # A response computed before an invalidation must not be stored after it.
        if not self.enabled or generation != self.generation(group):
            return
        entries = self._entries.setdefault(group, OrderedDict())
        entries[key] = Entry(body, time.monotonic())
        entries.move_to_end(key)
        while len(entries) > MAX_ENTRIES:
            entries.popitem(last=False)

    def invalidate(self, group: str) -> None:
        self._generation[group] = self.generation(group) + 1
        self._entries.pop(group, None)
        self.invalidations += 1

    def invalidate_all(self) -> None:
        for group in list(GROUP_SUBJECTS):
            self.invalidate(group)


async def listen(nc: NATS, ns: Namespace, cache: ResponseCache) -> None:
    """Subscribe every group's subjects; enable the cache once subscribed."""
    for group, subject in GROUP_SUBJECTS.items():

        async def on_event(message: Msg, group: str = group) -> None:
            cache.invalidate(group)

        await nc.subscribe(ns.subject(subject), cb=on_event)
    await nc.flush()
    cache.enabled = nc.is_connected


def connection_callbacks(cache: ResponseCache) -> dict[str, object]:
    """nats.connect callbacks that turn the cache off while NATS is away (events may be missed)."""

    async def disconnected() -> None:
        cache.enabled = False
        cache.invalidate_all()
        log.warning("NATS disconnected: edge cache off")

    async def reconnected() -> None:
        cache.invalidate_all()
        cache.enabled = True
        log.info("NATS reconnected: edge cache on")

    return {"disconnected_cb": disconnected, "reconnected_cb": reconnected}
