"""The state machines of requests, attempts and batches, as one pure transition table.

A request moves ``queued → packed → submitted → succeeded | failed | retry_wait → queued``;
``queued | retry_wait → held → queued`` while a budget or quota holds it back; a queued request
that no batch of its provider can hold fails where it is (``queued → failed``); any state that
is not terminal may become ``cancelled``. A packed or submitted request may also go back to
``queued`` without using an attempt (its batch expired, was cancelled by someone else, or its
intent was abandoned before anything was sent); a packed request whose batch the provider
refused `max_batch_rejections` times fails (``packed → failed``).
"""

from __future__ import annotations

from typing import Final

from llmbatch.errors import IllegalTransition

QUEUED: Final = "queued"
PACKED: Final = "packed"
SUBMITTED: Final = "submitted"
SUCCEEDED: Final = "succeeded"
FAILED: Final = "failed"
RETRY_WAIT: Final = "retry_wait"
HELD: Final = "held"
CANCELLED: Final = "cancelled"

REQUEST_STATES: Final = (QUEUED, PACKED, SUBMITTED, SUCCEEDED, FAILED, RETRY_WAIT, HELD, CANCELLED)
TERMINAL: Final = frozenset({SUCCEEDED, FAILED, CANCELLED})

REQUEST_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    QUEUED: frozenset({PACKED, HELD, FAILED, CANCELLED}),
    PACKED: frozenset({SUBMITTED, QUEUED, FAILED, CANCELLED}),
    SUBMITTED: frozenset({SUCCEEDED, FAILED, RETRY_WAIT, QUEUED, CANCELLED}),
    RETRY_WAIT: frozenset({QUEUED, HELD, CANCELLED}),
    HELD: frozenset({QUEUED, CANCELLED}),
    SUCCEEDED: frozenset(),
    FAILED: frozenset(),
    CANCELLED: frozenset(),
}
# A person may send failed requests again (`llmbatch retry`): the one way out of a terminal
# state, and never the engine's (tests/unit/test_state_sql.py holds the SQL to both).
REOPENED: Final = frozenset({(FAILED, QUEUED)})

# Provider-side batch life, normalised across providers.
BATCH_STATES: Final = (
    "packing",  # intent being written; nothing sent yet
    "submitting",  # intent committed; upload/create in progress
    "validating",
    "in_progress",
    "finalizing",
    "completed",
    "failed",
    "expired",
    "cancelling",
    "cancelled",
    "ingested",  # every line read and recorded; nothing left to do
)
# A batch only moves forward: polls see a provider's batch now and then, so any later state
# may follow an earlier one (validating -> completed between two polls); an ended batch may
# still change its word (a refresh that brings its files can say cancelled, not completed),
# never go back to running; closing (`ingested`: nothing left to do) ends every state, an
# intent abandoned before it was sent included; nothing leaves `ingested`.
# The store moves a batch through this table only (store/batching.py `_move_batch`).
ENDED_BATCH: Final = frozenset({"completed", "failed", "expired", "cancelled"})
_CLOSED: Final = frozenset({"ingested"})
BATCH_TRANSITIONS: Final[dict[str, frozenset[str]]] = {
    "packing": frozenset({"submitting", "cancelled"}) | _CLOSED,
    "submitting": frozenset({"validating", "in_progress", "finalizing", "cancelling"})
    | ENDED_BATCH
    | _CLOSED,
    "validating": frozenset({"in_progress", "finalizing", "cancelling"}) | ENDED_BATCH | _CLOSED,
    "in_progress": frozenset({"finalizing", "cancelling"}) | ENDED_BATCH | _CLOSED,
    "finalizing": frozenset({"cancelling"}) | ENDED_BATCH | _CLOSED,
    "cancelling": ENDED_BATCH | _CLOSED,
    **{ended: (ENDED_BATCH - {ended}) | _CLOSED for ended in sorted(ENDED_BATCH)},
    "ingested": frozenset(),
}


def check_request(old: str, new: str) -> str:
    """Return `new` if a request may move from `old` to it; raise IllegalTransition if not."""
    if new not in REQUEST_TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition("request", old, new)
    return new


def check_batch(old: str, new: str) -> str:
    """Return `new` if a batch may move from `old` to it (or stay); raise if not."""
    if old != new and new not in BATCH_TRANSITIONS.get(old, frozenset()):
        raise IllegalTransition("batch", old, new)
    return new


def sources_of(new: str) -> frozenset[str]:
    """Every request state from which `new` may be reached (for set-based SQL updates)."""
    return frozenset(old for old, targets in REQUEST_TRANSITIONS.items() if new in targets)
