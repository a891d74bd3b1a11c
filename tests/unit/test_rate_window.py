"""The sliding-window estimate of the exact rate-limit buckets, and the Retry-After its refusals
carry: waiting that long (and calling nothing meanwhile) is enough for the next call, and a second
less is not."""

from __future__ import annotations

import math

import pytest

from server.common.ratelimit import WINDOW_S, estimate, seconds_until_allowed


def passes_after(previous: int, current: int, limit: int, elapsed_s: float, wait_s: float) -> bool:
    """Whether one more call ``wait_s`` from now passes, with nothing else counted meanwhile."""
    at = elapsed_s + wait_s
    if at < WINDOW_S:
        return estimate(previous, current + 1, at) <= limit
    if at < 2 * WINDOW_S:  # the next window: this one's hits are its previous
        return estimate(current, 1, at - WINDOW_S) <= limit
    return estimate(0, 1, 0) <= limit


def test_the_estimate_weighs_the_previous_window_by_what_is_left_of_it() -> None:
    assert estimate(4, 1, 0) == 5
    assert estimate(4, 1, 30) == 3
    assert estimate(4, 1, 45) == 2
    assert estimate(0, 3, 59.5) == 3


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 10])
def test_retry_after_is_the_first_second_the_next_call_passes(limit: int) -> None:
    checked = 0
    for previous in range(3 * limit + 2):
        for current in range(1, 3 * limit + 2):
            for elapsed in (x / 2 for x in range(2 * WINDOW_S)):
                if estimate(previous, current, elapsed) <= limit:
                    continue  # not refused
                retry_after = max(1, math.ceil(seconds_until_allowed(previous, current, limit, elapsed)))
                assert passes_after(previous, current, limit, elapsed, retry_after), (
                    previous, current, limit, elapsed, retry_after,
                )  # fmt: skip
                if retry_after > 1:
                    assert not passes_after(previous, current, limit, elapsed, retry_after - 1), (
                        previous, current, limit, elapsed, retry_after,
                    )  # fmt: skip
                checked += 1
    assert checked > 0
