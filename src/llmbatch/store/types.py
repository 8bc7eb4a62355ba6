"""The store's domain types, in one place: what the store takes and hands out (a request row,
a clash, a result, an open batch, an outcome, a reservation, a budget, a ledger row, ...).
Plain data with at most a derived value; no SQL and no store import, so every store module,
the protocol (base.py) and the engine's parts import them from here."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from llmbatch.usage import UsageRecord

# One request as the importer hands it to the store, in `insert_request` column order
# (ROW_COLUMNS; SQLite binds a row by position, PostgreSQL copies it in that order).
ROW_COLUMNS = (
    "queue",
    "custom_id",
    "import_id",
    "line",
    "provider",
    "endpoint",
    "model",
    "body",
    "body_hash",
    "priority",
    "deadline",
    "text_chars",
    "text_bytes",
    "inputs",
    "created_at",
    "updated_at",
)
Row = tuple[
    str, str, int, int, str, str, str, bytes, bytes, int, float | None, int, int, int, float, float
]

ClashKind = Literal["duplicate", "unchanged", "conflict", "busy"]


@dataclass(frozen=True, slots=True)
class Clash:
    """A row the store did not insert because its custom_id is already in the queue."""

    line: int
    custom_id: str
    kind: ClashKind  # duplicate in this import | same request already queued | other body | import in flight
    other_line: int | None = None
    other_import: int | None = None


@dataclass(frozen=True, slots=True)
class ImportInfo:
    id: int
    queue: str
    source: str
    state: str
    lines: int
    added: int
    unchanged: int
    rejected: int
    error: str | None


@dataclass(frozen=True, slots=True)
class Count:
    queue: str
    provider: str
    model: str
    state: str
    n: int


@dataclass(frozen=True, slots=True)
class ResultRow:
    """One finished request's latest result, in export order (`cursor`, the result id,
    resumes after it); `state` is succeeded, failed or cancelled."""

    cursor: int
    custom_id: str
    state: str
    provider: str
    status_code: int | None
    provider_request_id: str | None
    body: bytes | None
    error_code: str | None
    error_message: str | None
    input_tokens: int | None
    output_tokens: int | None
    attempt_id: int = 0  # the attempt this result answers (the envelope's id derives from it)
    request_id: int = 0
    model: str = ""  # the model the request named
    endpoint: str = ""  # /v1/chat/completions, ..., /v1/messages
    cached_tokens: int | None = None  # cache reads, inside input_tokens
    cache_write_5m_tokens: int | None = None  # Anthropic cache writes, inside input_tokens
    cache_write_1h_tokens: int | None = None
    recorded_at: float = 0.0


@dataclass(frozen=True, slots=True)
class CostGroup:
    """Usage summed over one pricing aggregate (results of one tier, day, queue and model)."""

    provider: str
    model: str
    endpoint: str
    price_tier: int
    day: int  # days since 1970-01-01, UTC
    queue: str
    requests: int
    succeeded: int
    input_tokens: int
    cached_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    flagged: int  # succeeded results whose usage could not be read (not summed)


# -- archives and the webhook outbox (archive.py) ----------------------------------------
@dataclass(frozen=True, slots=True)
class DueArchive:
    batch_id: int
    tries: int


@dataclass(frozen=True, slots=True)
class QueueState:
    """A queue a batch touched: its highest request id and how many are not finished."""

    queue: str
    high: int
    unfinished: int


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    id: int
    event_id: str
    kind: str
    payload: bytes
    tries: int
    created_at: float


# -- the engine's batches and outcomes (batching.py) -------------------------------------
@dataclass(slots=True)
class OpenBatch:
    """A batch not yet fully ingested, as the engine needs it."""

    id: int
    provider: str
    endpoint: str
    model: str | None
    state: str
    provider_batch_id: str | None
    provider_status: str | None
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    request_count: int
    created_at: float
    upload_started_at: float | None
    create_started_at: float | None
    submitted_at: float | None
    errors: list[dict[str, Any]]
    est_tokens: int
    completed_count: int
    failed_count: int
    cancel_requested_at: float | None = None
    cancel_sent_at: float | None = None
    intent_id: int | None = None  # an adopted batch: the intent (batch row) its attempts belong to
    # What the engine counts for this batch (kept here: a cron `run` is a new process each time)
    not_before: float | None = None  # no work on it before this time (a back-off)
    setbacks: int = 0  # transient failures in a row
    download_tries: int = 0  # downloads that did not account for every request
    gone_checks: int = 0  # retrieves that answered 404
    nonce: str | None = None  # what proves its provider batch ours (None: made before 0005)
    proof_wait_until: float | None = None  # waiting for same-size batches to say whose
    poll_at: float = 0.0  # when it is next polled (0: at once)
    poll_every: float = 0.0  # the interval it is polled at (0: not yet polled)

    @property
    def attempts_of(self) -> int:
        """The batch row whose attempts this provider batch carries."""
        return self.intent_id if self.intent_id is not None else self.id


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened to one attempt, decided by the engine, applied by the store."""

    attempt_id: int
    kind: str  # succeeded | failed | retry | requeue | cancelled
    status_code: int | None = None
    provider_request_id: str | None = None
    body: bytes | None = None
    error_code: str | None = None
    error_message: str | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    not_before: float | None = None
    charge_expiry: int = 0  # 1 when an expiry (not the request's fault) sent it back
    charge_rejection: int = 0  # 1 when its whole batch was refused (a create, a file)
    usage: UsageRecord | None = None  # cache and reasoning detail, and why usage is unusable
    price_tier: int = 0  # the request's price-tier key (pricing.ModelPrices.tier)


# A succeeded outcome as a plain tuple, the way ingest hands nearly every outcome over (an
# `Outcome` costs ~2 µs to make, at up to 50,000 a batch). Its fields, by position: attempt id,
# status code, provider request id, body, input and output tokens, cached tokens, 5-minute
# and 1-hour cache writes, reasoning tokens (these four None when the line gave no usage), the
# usage flag (None: priceable) and the price tier: `results.Success` with its tier last.
Succeeded = tuple[
    int,
    int | None,
    str | None,
    bytes | None,
    int | None,
    int | None,
    int | None,
    int | None,
    int | None,
    int | None,
    str | None,
    int,
]


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    attempt_id: int
    request_id: int
    attempts: int  # charged attempts of the request so far
    expiries: int
    rejections: int = 0  # batch-level rejections so far


# -- budgets and reservations (budgets.py) -----------------------------------------------
@dataclass(frozen=True, slots=True)
class Check:
    """A worker's own budget a reservation must also stay under (it may only tighten the
    store's), in 1e-6 USD over UTC days [first, end)."""

    queue: str  # a queue, or '*' for every queue together
    period: str
    limit_micro: int
    first: int
    end: int


@dataclass(frozen=True, slots=True)
class Reservation:
    """The worst case of an intent per queue, the worker's own budgets and its UTC day."""

    day: int
    per_queue: Mapping[str, int]  # queue -> micro-USD (every queue of the batch, 0 allowed)
    checks: Sequence[Check] = ()

    def amount(self, queue: str) -> int:
        if queue == "*":
            return sum(self.per_queue.values())
        return int(self.per_queue.get(queue, 0))


@dataclass(frozen=True, slots=True)
class QueueUsage:
    """Usage of one batch's results in one queue and price tier (for settling)."""

    queue: str
    tier: int
    input: int
    cached: int
    write_5m: int
    write_1h: int
    output: int
    results: int = 0


ALL_QUEUES = "*"  # the queue column of a budget over every queue


@dataclass(slots=True)
class BudgetRow:
    """A budget in the store, with what its current period has committed."""

    queue: str
    period: str
    limit_micro: int
    committed: int = 0
    updated_at: float = 0.0


@dataclass(frozen=True, slots=True)
class PolicyRow:
    """The other budget settings of a queue ('*': every queue) in the store."""

    queue: str
    allow_unpriced: bool | None = None
    assume_context_tokens: int | None = None
    updated_at: float = 0.0


# -- the ledger (ledger.py) --------------------------------------------------------------
TOKENS = ("input", "cached", "output", "reasoning")


@dataclass(frozen=True, slots=True)
class TallyRow:
    """Usage of a provider batch's succeeded result lines of one model and price tier."""

    model: str
    tier: int
    results: int = 0  # lines whose usage was read
    flagged: int = 0  # lines whose usage could not be read (not summed)
    input: int = 0
    cached: int = 0
    write_5m: int = 0
    write_1h: int = 0
    output: int = 0
    reasoning: int = 0


@dataclass(frozen=True, slots=True)
class UsageCheck:
    """What the provider says a batch used, beside what its result lines said."""

    batch_id: int
    provider_batch_id: str | None
    provider: str
    says: tuple[int, int, int, int]  # input, cached, output, reasoning tokens
    counted: tuple[int, int, int, int]
    results: int
    flagged: int
    model: str | None = None  # the model the provider says ran it (the Batch object's)

    @property
    def differs(self) -> bool:
        return self.says != self.counted

    def difference(self) -> str:
        """The fields that differ: "input +120, output -4" (provider minus counted)."""
        parts = [
            f"{name} {s - c:+,}"
            for name, s, c in zip(TOKENS, self.says, self.counted, strict=True)
            if s != c
        ]
        return ", ".join(parts) or "none"


@dataclass(frozen=True, slots=True)
class SpendRow:
    """One spend row: a batch's reservation or charge in one queue."""

    batch_id: int
    queue: str
    day: int
    reserved: int
    spent: int
    worst: int | None
    kind: str  # planned | duplicate
    unpriced: int
    prices: str | None
    settled_at: float | None


@dataclass(frozen=True, slots=True)
class ReceiptGroup:
    """Usage of results of one batch in one pricing aggregate and queue."""

    batch_id: int
    provider: str
    model: str
    endpoint: str
    price_tier: int
    day: int
    queue: str
    requests: int
    succeeded: int
    input_tokens: int
    cached_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    flagged: int


# -- lists and tidying up (manage.py) ----------------------------------------------------
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True, slots=True)
class QueueRow:
    """One queue: its requests per state, and what cost was recorded for it (kept by purge)."""

    name: str
    states: dict[str, int]
    first_enqueued: float | None
    last_change: float | None
    recorded_results: int = 0  # results counted in the cost totals, purged ones included

    @property
    def total(self) -> int:
        return sum(self.states.values())

    @property
    def unfinished(self) -> int:
        return sum(n for s, n in self.states.items() if s not in FINISHED)


@dataclass(frozen=True, slots=True)
class BatchRow:
    """One batch as `llmbatch batches` lists it."""

    id: int
    provider: str
    model: str | None
    state: str
    provider_batch_id: str | None
    provider_status: str | None
    request_count: int
    completed: int
    failed: int
    created_at: float
    submitted_at: float | None
    finished_at: float | None
    ingested_at: float | None
    cancel_requested_at: float | None
    updated_at: float
    intent_id: int | None
    provider_model: str | None = None  # the model the provider says ran it (0011)


@dataclass(frozen=True, slots=True)
class BatchProgress:
    """An open batch: what the provider last said was done, and what is read back already."""

    id: int
    provider: str
    provider_batch_id: str | None
    state: str
    provider_status: str | None
    requests: int
    done_at_provider: int  # completed + failed, as the provider last counted them
    submitted_at: float | None
    seen_at: float  # when those counts were recorded
    read_back: int  # attempts of this batch with an outcome recorded here
    in_scope: int  # its requests in the queue asked about (all of them without a queue)


@dataclass(slots=True)
class PurgePlan:
    """What a purge removes (or, dry, would remove); cost totals and spend are kept."""

    queue: str
    requests: int = 0
    attempts: int = 0
    results: int = 0
    unfinished: int = 0  # a queue with any of these is not purged
    reading_back: int = 0  # finished requests whose batch is still being read back
    done: bool = False
    notes: list[str] = field(default_factory=list)


# -- proof of ownership and the store's home (ownership.py) ------------------------------
@dataclass(frozen=True, slots=True)
class Moved:
    """A store found away from its home with work in flight: batch rows up to `before` are
    frozen until the user says whether it was copied or moved."""

    before: int  # the highest batch row id when the move was found
    home: dict[str, Any]  # where it was
    found: dict[str, Any]  # where it is now
    since: float

    def describe(self) -> str:
        return f"{describe_where(self.home)} -> {describe_where(self.found)}"


@dataclass(frozen=True, slots=True)
class ProofWait:
    """An intent waiting for same-size batches it cannot tell apart to end and be read."""

    batch_id: int
    provider: str
    request_count: int
    until: float


def describe_where(where: dict[str, Any]) -> str:
    if "path" in where:
        return f"{where['path']} (device {where.get('device')}, inode {where.get('inode')})"
    return f"database {where.get('database')} of cluster {where.get('system_identifier')}"


# -- cancels (recovery.py) ---------------------------------------------------------------
@dataclass(slots=True)
class CancelPlan:
    """What a cancel did at once, and what it left for the engine to do."""

    cancelled: int = 0  # waiting requests cancelled at once
    batches: list[int] = field(default_factory=list)  # in-flight batches to cancel at the provider
    in_batches: int = 0  # requests in those batches
    left_running: int = 0  # requests in batches shared with requests outside the scope


# -- what groups learned (setbacks.py) ---------------------------------------------------
@dataclass(frozen=True, slots=True)
class GroupBackoff:
    """What batch-level failures taught the engine about one packing group."""

    group: tuple[str, str, str]  # provider, endpoint, model ('' for a group of several models)
    strikes: int
    cap: int | None  # at most this many requests in its next batch
    quota: int | None  # a learned enqueued-token quota for (provider, model)
    not_before: float  # no new batch of the group before this time


# -- waiting callers (watch.py) ----------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Watched:
    """What one `watch` saw: finished requests (newest result each) and held ones; `high`,
    the highest result id it scanned (the cursor to pass next), and `scanned`, how many."""

    results: list[ResultRow]
    held: list[ResultRow]  # state 'held', error_message the hold reason, recorded_at its time
    high: int = 0
    scanned: int = 0


@dataclass(frozen=True, slots=True)
class Found:
    """A request found by custom_id: its state and, once it has one, its newest result."""

    custom_id: str
    state: str
    reason: str | None
    body_hash: bytes
    provider: str
    endpoint: str
    model: str
    result: ResultRow | None  # None until a result is recorded
