"""Polling waits with deadlines: the one way this package waits for something to happen.

A deadline is a point on the monotonic clock (``time.monotonic()``), so it survives being passed down
through several waits of one boot or one stop. ``poll`` is the loop every wait uses::

    for _ in poll(deadline, 0.05):
        if machine.is_running():
            break
    else:
        raise VMBootError("...")

It always makes one attempt (a wait that starts late still looks once), sleeps ``interval`` between
attempts and never sleeps past the deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator


def deadline_in(seconds: float) -> float:
    """The deadline ``seconds`` from now."""
    return time.monotonic() + seconds


def remaining(deadline: float, floor: float = 0.0) -> float:
    """Seconds left until ``deadline``, at least ``floor`` (a timeout for the next blocking call)."""
    return max(floor, deadline - time.monotonic())


def expired(deadline: float) -> bool:
    """True once ``deadline`` has passed."""
    return time.monotonic() > deadline


def poll(deadline: float, interval: float) -> Iterator[int]:
    """Yield attempt numbers 0, 1, ... until ``deadline`` passes, sleeping ``interval`` between them.

    The loop's ``else`` branch runs when time ran out without a ``break``."""
    attempt = 0
    while True:
        yield attempt
        attempt += 1
        left = deadline - time.monotonic()
        if left <= 0:
            return
        time.sleep(min(interval, left))
