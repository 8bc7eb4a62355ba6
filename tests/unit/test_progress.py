"""The one ETA estimator (pure, over observed counts) and the progress snapshot it is fed."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.progress import Observation, Tracker, batch_eta, estimate
from llmbatch.store.manage import BatchProgress


def test_a_steady_rate_gives_the_remaining_time() -> None:
    seen = [Observation(1000.0, 0), Observation(1100.0, 100)]
    eta = estimate(seen, 400)
    assert eta is not None
    assert eta.rate == pytest.approx(1.0) and eta.seconds == pytest.approx(300.0)
    assert eta.at == pytest.approx(1400.0)


def test_nothing_moved_or_nothing_left_has_no_eta() -> None:
    assert estimate([], 10) is None
    assert estimate([Observation(0, 3)], 10) is None  # one point: no rate
    assert estimate([Observation(0, 3), Observation(60, 3)], 10) is None  # stalled
    assert estimate([Observation(0, 3), Observation(60, 10)], 10) is None  # done


def test_the_rate_is_taken_over_the_recent_window_only() -> None:
    # fast long ago, slow lately: the estimate follows the recent rate
    seen = [
        Observation(0, 0),
        Observation(100, 900),
        Observation(5000, 910),
        Observation(6000, 920),
    ]
    eta = estimate(seen, 1000, window=1800)
    assert eta is not None and eta.rate == pytest.approx(10 / 1000)


@given(
    rate=st.floats(min_value=0.01, max_value=1000),
    start=st.floats(min_value=0, max_value=1e9),
    steps=st.lists(st.floats(min_value=1, max_value=600), min_size=1, max_size=20),
    left=st.integers(min_value=1, max_value=10**6),
)
def test_linear_progress_is_estimated_exactly(
    rate: float, start: float, steps: list[float], left: int
) -> None:
    at, seen = start, [Observation(start, 0)]
    for dt in steps:
        at += dt
        seen.append(Observation(at, int((at - start) * rate)))
    done = seen[-1].done
    eta = estimate(seen, done + left, window=float("inf"))
    if done == 0:
        assert eta is None
        return
    assert eta is not None
    measured = done / (at - start)
    assert eta.seconds == pytest.approx(left / measured, rel=1e-6)
    assert eta.seconds >= 0 and eta.at >= at


@given(
    done=st.integers(min_value=1, max_value=1000),
    more=st.integers(min_value=1, max_value=1000),
    left=st.integers(min_value=1, max_value=1000),
)
def test_more_left_never_means_sooner(done: int, more: int, left: int) -> None:
    seen = [Observation(0, 0), Observation(100, done)]
    a, b = estimate(seen, done + left), estimate(seen, done + left + more)
    assert a is not None and b is not None and b.seconds > a.seconds


def test_a_batch_eta_comes_from_the_provider_counts_since_submission() -> None:
    b = BatchProgress(
        id=1,
        provider="openai",
        provider_batch_id="batch_1",
        state="in_progress",
        provider_status="in_progress",
        requests=900,
        done_at_provider=300,
        submitted_at=1000.0,
        seen_at=1600.0,
        read_back=0,
        in_scope=900,
    )
    eta = batch_eta(b)
    assert eta is not None and eta.seconds == pytest.approx(1200.0)
    assert batch_eta(dataclasses.replace(b, done_at_provider=0)) is None


def test_the_tracker_forgets_what_is_older_than_its_window() -> None:
    from llmbatch.progress import Snapshot

    t = Tracker(window=100)
    for i in range(50):
        t.observe(Snapshot(total=1000, read_back=0, at_provider=i * 10, batches=()), now=i * 10.0)
    assert len(t.seen) <= 12
    eta = t.observe(Snapshot(1000, 0, 500, ()), now=500.0)
    assert eta is not None and eta.rate == pytest.approx(1.0)
