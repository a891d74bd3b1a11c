"""A short-lived, bounded in-process cache of live API keys, keyed by the key's hash.

Resolving a key on every call cost a pool check-out and a query per request (issue #6). A key
found live is kept for ``ttl_s`` seconds (``SMM_API_KEY_CACHE_S``; 0 turns the cache off) and at
most ``max_entries`` keys; unknown keys are never cached, so guessing cannot fill it.

Staleness is bounded, and nil where the change happens: every change that can end or narrow a
key's use (revoke, rotate, a user's status, role, email, verification or two-factor) calls
``forget_user`` in the process that made it, after its transaction commits; another server copy
keeps its entry until the TTL runs out (docs/DECISIONS.md). A key's own expiry (the end of a
rotation's grace period) is checked on every use, cached or not. ``forget_user`` also moves a
generation counter, so a lookup that read the database before the change cannot put its stale
answer back afterwards.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from server.accounts.repo import LiveApiKey


@dataclass(frozen=True)
class _Entry:
    live: LiveApiKey
    fresh_until: float  # monotonic seconds


class ApiKeyCache:
    def __init__(
        self,
        ttl_s: float,
        *,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.ttl_s = ttl_s
        self._max = max_entries
        self._clock = clock
        self._wall = wall
        self._entries: dict[bytes, _Entry] = {}
        self.generation = 0

    def get(self, token_hash: bytes) -> LiveApiKey | None:
        """The cached live key, or None (not cached, or cached too long ago)."""
        entry = self._entries.get(token_hash)
        if entry is None:
            return None
        if self._clock() >= entry.fresh_until:
            del self._entries[token_hash]
            return None
        return entry.live

    def put(self, token_hash: bytes, live: LiveApiKey, generation: int) -> None:
        """Keep ``live``, read from the database while ``generation`` was current."""
        if self.ttl_s <= 0 or generation != self.generation:
            return
        if len(self._entries) >= self._max:
            del self._entries[next(iter(self._entries))]  # the oldest insertion
        self._entries[token_hash] = _Entry(live, self._clock() + self.ttl_s)

    def expired(self, live: LiveApiKey) -> bool:
        """Whether the key's own expiry (a rotated key's grace period) has passed."""
        return live.expire_time is not None and live.expire_time.timestamp() <= self._wall()

    def forget_user(self, user_id: int) -> None:
        """Drop every key of the user (call it once the change has committed)."""
        self.generation += 1
        for token_hash in [h for h, e in self._entries.items() if e.live.user_id == user_id]:
            del self._entries[token_hash]

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
