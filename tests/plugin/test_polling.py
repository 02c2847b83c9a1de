"""The one polling helper every wait uses (pytest_vexfs.polling)."""

from __future__ import annotations

import time

from pytest_vexfs.polling import deadline_in, expired, poll, remaining


def test_poll_stops_at_the_deadline_and_runs_the_else_branch() -> None:
    start = time.monotonic()
    attempts = 0
    for attempts in poll(deadline_in(0.3), 0.05):  # noqa: B007 - the count is the point
        pass
    else:
        timed_out = True
    elapsed = time.monotonic() - start
    assert timed_out and 0.3 <= elapsed < 0.6
    assert 4 <= attempts <= 7  # one attempt per interval, no busy loop


def test_poll_makes_one_attempt_even_when_already_late() -> None:
    assert list(poll(deadline_in(-1.0), 10.0)) == [0]  # no sleep of 10 s past the deadline


def test_poll_never_sleeps_past_the_deadline() -> None:
    start = time.monotonic()
    assert len(list(poll(deadline_in(0.1), 5.0))) == 2  # the second look is at the deadline, not 5 s later
    assert time.monotonic() - start < 0.5


def test_remaining_has_a_floor_and_expired_flips() -> None:
    deadline = deadline_in(0.05)
    assert 0 < remaining(deadline) <= 0.05 and not expired(deadline)
    time.sleep(0.06)
    assert remaining(deadline) == 0.0 and remaining(deadline, 1.0) == 1.0 and expired(deadline)
