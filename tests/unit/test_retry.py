"""`retry.decide`: the retry policy as a pure function of the error and the counters."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.retry import REQUEUE_CODES, RETRYABLE_TYPES, Decision, RetryPolicy, decide

POLICY = RetryPolicy(max_attempts=3, max_expiries=5, base_seconds=30, max_seconds=3600, jitter=0.25)
NOW = 1_000_000.0


def d(
    status: int | None = None,
    kind: str | None = None,
    attempts: int = 0,
    expiries: int = 0,
    **kw: Any,
) -> Decision:
    return decide(
        POLICY,
        status_code=status,
        error_type=kind,
        attempts=attempts,
        expiries=expiries,
        now=NOW,
        **kw,
    )


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_retryable_statuses_are_retried_later(status: int) -> None:
    got = d(status)
    assert got.kind == "retry" and got.not_before is not None
    assert NOW + 30 * 0.75 <= got.not_before <= NOW + 30 * 1.25
    assert got.reason == "retry 2 of 3"


@pytest.mark.parametrize("kind", sorted(RETRYABLE_TYPES))
def test_retryable_types_are_retried(kind: str) -> None:
    assert d(None, kind).kind == "retry"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413, 422])
def test_other_client_errors_fail_at_once(status: int) -> None:
    got = d(status, "invalid_request_error")
    assert (got.kind, got.not_before, got.reason) == ("failed", None, "not retryable")


def test_unknown_errors_fail() -> None:
    assert d(None, None).kind == "failed"
    assert d(400, "invalid_request_error").kind == "failed"


def test_a_result_that_never_arrived_is_not_the_requests_fault() -> None:
    assert d(None, "missing_result", attempts=2).kind == "requeue"


def test_gives_up_after_max_attempts() -> None:
    assert d(500, attempts=1).kind == "retry"
    got = d(500, attempts=2)
    assert got.kind == "failed" and "3 attempts" in got.reason


@pytest.mark.parametrize("code", sorted(REQUEUE_CODES))
def test_expiry_and_cancel_requeue_without_charging_until_too_many(code: str) -> None:
    assert d(None, code, attempts=99, expiries=3).kind == "requeue"  # attempts do not count
    got = d(None, code, expiries=4)
    assert got.kind == "failed" and "5 times" in got.reason


def test_backoff_doubles_and_is_capped() -> None:
    flat = RetryPolicy(max_attempts=100, base_seconds=10, max_seconds=100, jitter=0.0)
    delays = [
        decide(flat, status_code=500, error_type=None, attempts=n, expiries=0, now=0.0).not_before
        for n in range(6)
    ]
    assert delays == [10, 20, 40, 80, 100, 100]


def test_retry_after_is_a_floor() -> None:
    got = d(429, retry_after=500.0)
    assert got.not_before is not None and got.not_before >= NOW + 500
    short = d(429, retry_after=1.0, rng=random.Random(1))
    assert short.not_before == d(429, rng=random.Random(1)).not_before


@given(
    status=st.none() | st.integers(100, 599),
    kind=st.none()
    | st.sampled_from([*RETRYABLE_TYPES, *REQUEUE_CODES, "invalid_request_error", "x"]),
    attempts=st.integers(0, 10),
    expiries=st.integers(0, 10),
    retry_after=st.none() | st.floats(0, 10_000),
    seed=st.integers(0, 2**32),
)
def test_every_decision_is_well_formed(
    status: int | None,
    kind: str | None,
    attempts: int,
    expiries: int,
    retry_after: float | None,
    seed: int,
) -> None:
    got = d(status, kind, attempts, expiries, retry_after=retry_after, rng=random.Random(seed))
    assert got.kind in ("retry", "failed", "requeue")
    assert (got.not_before is not None) == (got.kind == "retry")
    if got.kind == "retry":
        assert attempts + 1 < POLICY.max_attempts
        low = min(POLICY.base_seconds * 2**attempts, POLICY.max_seconds) * (1 - POLICY.jitter)
        high = POLICY.max_seconds * (1 + POLICY.jitter)
        assert got.not_before is not None
        assert NOW + low <= got.not_before <= NOW + max(high, retry_after or 0)
        assert retry_after is None or got.not_before >= NOW + retry_after
    if kind in REQUEUE_CODES:
        assert got.kind == ("requeue" if expiries + 1 < POLICY.max_expiries else "failed")
    # the same inputs and seed decide the same
    assert got == d(
        status, kind, attempts, expiries, retry_after=retry_after, rng=random.Random(seed)
    )
