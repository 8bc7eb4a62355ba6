"""The retry policy: a pure function of an error and the request's counters.

| error                                                        | decision                      |
|--------------------------------------------------------------|-------------------------------|
| 408, 409, 429, 5xx; `rate_limit_error`, `overloaded_error`,  | retry after base·2^n ± jitter |
| `api_error`, `server_error`, `timeout`                        | (or retry-after), up to max   |
| any other 4xx; `invalid_request_error`                        | fail at once                  |
| `batch_expired`, `batch_cancelled` by someone else, a result | requeue, no attempt charged    |
| line that never arrived readable (`missing_result`), a batch | (up to `max_expiries`)         |
| gone at the provider (`batch_gone`)                          |                               |
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from llmbatch import defaults

RETRYABLE_STATUS = frozenset({408, 409, 429})
RETRYABLE_TYPES = frozenset(
    {
        "rate_limit_error",
        "overloaded_error",
        "api_error",
        "server_error",
        "timeout",
        "rate_limit_exceeded",
    }
)
# Not the request's fault: it goes back to the queue without using an attempt.
REQUEUE_CODES = frozenset({"batch_expired", "batch_cancelled", "missing_result", "batch_gone"})


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_attempts: int = defaults.MAX_ATTEMPTS
    max_expiries: int = defaults.MAX_EXPIRIES
    base_seconds: float = defaults.RETRY_BASE_S
    max_seconds: float = defaults.RETRY_MAX_S
    jitter: float = defaults.RETRY_JITTER


@dataclass(frozen=True, slots=True)
class Decision:
    kind: str  # retry | failed | requeue
    not_before: float | None = None
    reason: str = ""


def decide(
    policy: RetryPolicy,
    *,
    status_code: int | None,
    error_type: str | None,
    attempts: int,
    expiries: int,
    now: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> Decision:
    """What to do with a request whose attempt ended in an error.

    `attempts` counts the request's charged attempts before this one.
    """
    if error_type in REQUEUE_CODES:
        if expiries + 1 >= policy.max_expiries:
            return Decision("failed", reason=f"{error_type} {expiries + 1} times")
        return Decision("requeue", reason=f"requeued after {error_type}")
    retryable = (
        status_code is not None and (status_code >= 500 or status_code in RETRYABLE_STATUS)
    ) or error_type in RETRYABLE_TYPES
    if not retryable:
        return Decision("failed", reason="not retryable")
    if attempts + 1 >= policy.max_attempts:
        return Decision("failed", reason=f"gave up after {attempts + 1} attempts")
    delay = min(policy.base_seconds * 2**attempts, policy.max_seconds)
    delay *= 1 + (rng or random).uniform(-policy.jitter, policy.jitter)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return Decision(
        "retry", not_before=now + delay, reason=f"retry {attempts + 2} of {policy.max_attempts}"
    )
