"""The in-process API key cache: bounded in time and size, forgets a user at once, and never lets a
lookup that began before a change put its stale answer back."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from server.accounts.keycache import ApiKeyCache
from server.accounts.repo import LiveApiKey


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def live(key_id: int, user_id: int, expire_time: datetime | None = None) -> LiveApiKey:
    return LiveApiKey(
        key_id=key_id,
        allowed_ips=[],
        expire_time=expire_time,
        user_id=user_id,
        email=f"u{user_id}@example.com",
        role="user",
        email_verified=True,
        totp_enabled=False,
    )


def test_an_entry_lives_for_the_ttl_only() -> None:
    clock = Clock()
    cache = ApiKeyCache(5.0, clock=clock)
    cache.put(b"h1", live(1, 10), cache.generation)
    assert cache.get(b"h1") == live(1, 10)
    clock.now += 4.9
    assert cache.get(b"h1") is not None
    clock.now += 0.2
    assert cache.get(b"h1") is None
    assert len(cache) == 0


def test_a_ttl_of_zero_caches_nothing() -> None:
    cache = ApiKeyCache(0)
    cache.put(b"h1", live(1, 10), cache.generation)
    assert cache.get(b"h1") is None


def test_forget_user_drops_only_that_users_keys() -> None:
    cache = ApiKeyCache(5.0)
    cache.put(b"a1", live(1, 10), cache.generation)
    cache.put(b"a2", live(2, 10), cache.generation)
    cache.put(b"b1", live(3, 20), cache.generation)
    cache.forget_user(10)
    assert cache.get(b"a1") is None
    assert cache.get(b"a2") is None
    assert cache.get(b"b1") == live(3, 20)


def test_a_lookup_that_began_before_a_change_is_not_cached() -> None:
    cache = ApiKeyCache(5.0)
    began = cache.generation  # the database read starts ...
    cache.forget_user(10)  # ... a revocation commits meanwhile ...
    cache.put(b"a1", live(1, 10), began)  # ... and the (stale) answer arrives
    assert cache.get(b"a1") is None
    cache.put(b"a1", live(1, 10), cache.generation)  # a lookup after the change may be cached
    assert cache.get(b"a1") is not None


def test_the_oldest_entry_goes_when_full() -> None:
    cache = ApiKeyCache(5.0, max_entries=2)
    for n in range(3):
        cache.put(f"h{n}".encode(), live(n, n), cache.generation)
    assert len(cache) == 2
    assert cache.get(b"h0") is None
    assert cache.get(b"h2") is not None


def test_a_keys_own_expiry_is_checked_on_every_use() -> None:
    wall = Clock()
    wall.now = datetime(2026, 1, 1, tzinfo=UTC).timestamp()
    cache = ApiKeyCache(5.0, wall=wall)
    ends = datetime.fromtimestamp(wall.now, UTC) + timedelta(seconds=1)
    assert not cache.expired(live(1, 10, ends))
    wall.now += 1
    assert cache.expired(live(1, 10, ends))
    assert not cache.expired(live(1, 10))
