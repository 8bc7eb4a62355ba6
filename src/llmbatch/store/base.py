"""The Store protocol: the handful of verbs llmbatch needs from a database.

Two real implementations share one contract test suite: SQLite (the default, one file) and
PostgreSQL (many workers on many machines). Everything set-based and dialect-neutral lives in
`sqlstore.SqlStore`; each backend adds only its connection, transactions and bulk load.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any, Literal, Protocol

from llmbatch.store.claims import Claim, WorkerRow
from llmbatch.store.observe import Observed, Turnaround
from llmbatch.store.types import (
    AttemptInfo,
    BatchProgress,
    BatchRow,
    BudgetRow,
    CancelPlan,
    Clash,
    CostGroup,
    DueArchive,
    Found,
    GroupBackoff,
    ImportInfo,
    Moved,
    OpenBatch,
    OutboxEvent,
    Outcome,
    PolicyRow,
    ProofWait,
    PurgePlan,
    QueueRow,
    QueueState,
    QueueUsage,
    ReceiptGroup,
    Reservation,
    ResultRow,
    Row,
    SpendRow,
    Succeeded,
    TallyRow,
    UsageCheck,
    Watched,
)
from llmbatch.store.types import Count as Count  # where callers found it before types.py


class Store(Protocol):
    """Durable home of every request from enqueue until its result is read."""

    store_id: str  # random, made at first use; namespaces every id sent to a provider
    location: str  # where the data lives, for messages (never includes a password)

    def close(self) -> None:
        """Release the connection."""

    def begin_import(self, queue: str, source: str) -> int:
        """Open an import; its rows stay invisible until `commit_import`."""

    def load_rows(self, import_id: int, queue: str, rows: Sequence[Row]) -> list[Clash]:
        """Write one chunk of an import in its own short transaction; report clashes."""

    def commit_import(
        self, import_id: int, *, lines: int, added: int, unchanged: int, rejected: int
    ) -> None:
        """Make the whole import visible with one small update."""

    def abort_import(self, import_id: int, error: str) -> None:
        """Mark a loading import failed and delete its rows (in short transactions); an
        import that committed meanwhile keeps every row."""

    def clean_dead_imports(self) -> list[int]:
        """Abort imports whose process died, and finish deleting rows of failed ones."""

    def get_import(self, import_id: int) -> ImportInfo:
        """One import's bookkeeping."""

    def counts(self, queue: str | None = None) -> list[Count]:
        """Requests per queue × provider × model × state."""

    def request_detail(self, custom_id: str, queue: str | None = None) -> list[dict[str, Any]]:
        """Each request with this custom_id (one per queue), with its attempts and result."""

    def iter_results(
        self,
        queue: str | None = None,
        state: str | None = None,
        after: int = 0,
        page: int = 5000,
        *,
        order: str = "recorded",
        upto: int | None = None,
    ) -> Iterator[ResultRow]:
        """The latest result of every finished request (succeeded, failed or cancelled)
        recorded in (after, upto], in recorded order or input order, streamed."""

    def results_high(self) -> int:
        """The newest result id: what an export started now reads up to (its cursor)."""

    def queues(self) -> list[QueueRow]:
        """Every queue with requests, and every purged one whose costs are still recorded."""

    def has_requests(self, queue: str) -> bool:
        """Whether `queue` holds a request (of a committed import): one probe of its index,
        where `queues` counts every request of every queue."""

    def batches(
        self, queue: str | None = None, *, open_only: bool = False, limit: int = 50
    ) -> list[BatchRow]:
        """Batches newest first, all or the open ones, of one queue or every queue."""

    def batch_progress(self, queue: str | None = None) -> list[BatchProgress]:
        """Open batches holding requests of `queue`: done at the provider, read back here."""

    def retry_failed(self, request_ids: Sequence[int], now: float, *, dry_run: bool = False) -> int:
        """Failed requests among these go back to the queue with fresh attempts; how many
        (with `dry_run`, how many would)."""

    def purge_queue(self, queue: str, *, dry_run: bool = False) -> PurgePlan:
        """Delete a finished queue's requests, attempts and results; keep costs and spend."""

    def usage_summary(self, queue: str | None = None) -> list[tuple[str, str, int, int, int, int]]:
        """(provider, model, results, input tokens, output tokens, succeeded) per model."""

    def cost_groups(self, since: float, until: float, queue: str | None = None) -> list[CostGroup]:
        """Usage of results recorded in [since, until) per pricing aggregate."""

    def batch_overview(self, recent: int = 5, queue: str | None = None) -> list[dict[str, Any]]:
        """Every batch still open, and the most recently finished ones (of `queue`'s requests)."""

    def deadline_risk(
        self, now: float, horizon: float, queue: str | None = None
    ) -> tuple[int, int]:
        """(missed, at risk) unfinished requests with a deadline."""

    def recent_events(self, n: int = 20) -> list[dict[str, Any]]:
        """The newest entries of the event log."""

    # -- the batch engine (implemented in batching.py) ---------------------------------------
    def acquire_lease(self, name: str, holder: str, ttl: float, now: float) -> int | None:
        """Take or renew a lease; returns its fencing token, or None if another holds it."""

    def release_lease(self, name: str, holder: str) -> None:
        """Give a lease up so another worker may take it at once."""

    def break_lease(self, name: str, holder: str) -> None:
        """End a lease whose holder is known to be dead."""

    def lease_holder(self, name: str, now: float) -> str | None:
        """Who holds a live lease, if anyone."""

    # -- workers sharing the work (implemented in claims.py) ---------------------------------
    def register_worker(self, holder: str, queues: Sequence[str] | None, now: float) -> int:
        """This worker's token (drawn the first time), with the queues it serves."""

    def worker_seen(self, token: int, now: float, done: dict[str, int] | None = None) -> None:
        """The worker ticked at `now` and did this much more."""

    def workers(self, since: float) -> list[WorkerRow]:
        """Workers seen since a time, oldest first."""

    def forget_workers(self, before: float) -> None:
        """Forget workers not seen since `before` that hold nothing."""

    def renew_claims(self, holder: str, token: int, ttl: float, now: float) -> set[str]:
        """Renew every lease and claim a worker holds; the names renewed."""

    def claims(self) -> list[Claim]:
        """Every lease and claim, live or not."""

    def release_claims(self, holder: str) -> None:
        """Give up every lease and claim a worker holds."""

    def open_batch_queues(self) -> dict[int, str | None]:
        """The queue of each open batch packed for one queue (None: several)."""

    def release_due_retries(self, now: float, token: int) -> int:
        """Move `retry_wait` requests whose time has come back to `queued`."""

    def ready_groups(self, queues: Sequence[str] | None = None) -> list[tuple[str, str, str, int]]:
        """(provider, endpoint, model, count) of queued, visible requests (of these queues)."""

    def candidates(
        self,
        provider: str,
        endpoint: str,
        model: str | None,
        page: int = 5000,
        queues: Sequence[str] | None = None,
    ) -> Iterator[tuple[int, int, int, int, bytes]]:
        """(request id, body bytes, embedding inputs, text bytes, body) of a model's ready
        requests (None: every model's), of these queues (None: every one), in packing order,
        streamed."""

    def create_intent(
        self,
        group: tuple[str, str, str | None],
        request_ids: Sequence[int],
        input_bytes: int,
        est_tokens: int,
        now: float,
        token: int,
        reserve: Reservation | None = None,
        *,
        queue: str | None = None,
        holder: str | None = None,
    ) -> int | None:
        """Durably commit an intent (a batch and its attempts in line order; the model None
        when it mixes several); its id. With
        `reserve`, its worst case is checked against the budgets and reserved in the same
        transaction (OverBudget if a racing reservation took the room)."""

    def batch_lines(self, batch_id: int, page: int = 2000) -> Iterator[tuple[int, str, bytes]]:
        """(attempt id, endpoint, body) of an intent in line order, streamed."""

    def batch_line_requests(self, batch_id: int) -> list[tuple[int, int]]:
        """(attempt id, request id) of an intent's lines, in line order."""

    def mark(self, what: str, batch_id: int, now: float, token: int) -> None:
        """Durably note that an upload or a create starts at `now` (the engine's clock, read
        as the call starts)."""

    def record_upload(self, batch_id: int, file_id: str, now: float, token: int) -> None:
        """Durably record an uploaded input file."""

    def record_submitted(
        self, batch_id: int, provider_batch_id: str, file_id: str | None, now: float, token: int
    ) -> None:
        """Durably record a created provider batch; its requests become `submitted`."""

    def open_batches(self) -> list[OpenBatch]:
        """Every batch not yet fully ingested."""

    def update_batch(self, batch_id: int, status: Any, now: float, token: int) -> None:
        """Store what a poll saw of a batch."""

    def defer(self, batch_id: int, not_before: float, token: int) -> None:
        """Leave a batch alone until `not_before` (a wait, not a failure)."""

    def count_setback(
        self,
        batch_id: int,
        counter: str,
        not_before: float | None,
        now: float,
        token: int,
        kind: str,
        detail: str,
    ) -> None:
        """Add one to a batch's `setbacks`, `download_tries` or `gone_checks`, set when it may
        be worked on again, and log why, in one transaction."""

    def attempt_info(self, batch_id: int, attempt_ids: Sequence[int]) -> dict[int, AttemptInfo]:
        """Attempts of this batch, among these, still waiting for an outcome."""

    def apply_outcomes(
        self, batch_id: int, outcomes: Sequence[Outcome | Succeeded], now: float, token: int
    ) -> int:
        """Record outcomes of waiting attempts (idempotent); how many were new. A success may
        come as a `Succeeded` tuple (ingest's, for speed)."""

    def attempts_not_in_batch(self, batch_id: int, attempt_ids: Sequence[int]) -> list[int]:
        """The ids among these that are not attempts of this batch (anomalies)."""

    def unfinished_attempts(self, batch_id: int) -> list[tuple[int, int, int]]:
        """(attempt id, request id, line) of this batch's attempts with no outcome yet."""

    def mark_ingested(
        self, batch_id: int, now: float, token: int, detail: str | None = None
    ) -> None:
        """Every line of the batch is recorded; nothing is left to do for it."""

    def note(self, kind: str, batch_id: int | None, detail: str) -> None:
        """Append an event (anomaly, warning) to the log."""

    def note_many(self, kind: str, batch_id: int | None, details: Sequence[str]) -> None:
        """Append several events of one kind in one transaction."""

    def group_backoffs(self) -> list[GroupBackoff]:
        """What batch-level failures taught the engine, per packing group."""

    def set_group_backoff(self, backoff: GroupBackoff, token: int) -> None:
        """Record a group's strikes, smaller cap, learned quota and pause."""

    def clear_group_backoff(self, group: tuple[str, str, str], token: int) -> None:
        """Forget a group's back-off (a batch of it completed)."""

    def schedule_polls(self, batch_ids: list[int], at: float, every: float, token: int) -> None:
        """Poll these batches next at `at`, at an interval of `every` seconds (one statement)."""

    def next_run(self, name: str) -> float:
        """When the store-wide step `name` (`sweep`) runs next (0.0: it never ran)."""

    def set_next_run(self, name: str, at: float, token: int) -> None:
        """Say when the store-wide step `name` runs next."""

    def fail_unsendable(
        self, request_id: int, reason: str, now: float, token: int, claim: str = "engine"
    ) -> bool:
        """A queued request no batch can hold fails with `reason`; False if it had moved on."""

    def batches_created_since(self, provider: str, since: float) -> int:
        """Batches created at a provider since a time (the hourly creation limit)."""

    def tokens_in_flight(self, provider: str, model: str) -> int:
        """Estimated tokens enqueued at a provider for a model (the enqueued-token quota)."""

    def unfinished_count(self, queue: str | None = None) -> int:
        """Requests not yet succeeded, failed or cancelled."""

    def has_unfinished(self, queue: str | None = None) -> bool:
        """Whether any request is not yet succeeded, failed or cancelled."""

    def scope_request_ids(
        self, queue: str | None, custom_ids: Sequence[str], batch: str | None
    ) -> list[int]:
        """Ids of the requests a cancel names: a queue, custom ids, a batch (local or provider id)."""

    def request_cancel(self, request_ids: Sequence[int], now: float) -> CancelPlan:
        """Cancel waiting requests; mark in-flight batches wholly in scope for cancelling."""

    def mark_cancel_sent(self, batch_id: int, now: float, token: int) -> None:
        """The provider was asked to cancel this batch."""

    def known_ids(self, provider: str) -> tuple[set[str], set[str]]:
        """(provider batch ids, input file ids) recorded for a provider."""

    def file_owners(self, provider: str) -> dict[str, int]:
        """Input file id -> the intent whose upload it is, of the batches this store sent
        from an upload at a provider (a batch made from one is that intent's)."""

    def attempt_span(self, batch_id: int) -> tuple[int, int] | None:
        """The lowest and highest attempt id of a batch row (an intent), if it has any."""

    def batch_of_attempt(self, attempt_id: int) -> int | None:
        """The batch row (intent) an attempt was packed into, if the attempt exists."""

    def adopt_batch(
        self, provider: str, status: Any, intent_id: int | None, now: float, token: int
    ) -> int | None:
        """Record a batch proven ours (ownership.py) that the store did not know."""

    # -- proof of ownership and the store's home (implemented in ownership.py) ---------------
    def nonce_of(self, batch_id: int) -> str | Literal[False] | None:
        """The nonce an intent's batches carry (None: before 0005; False: no such row)."""

    def judged_ids(self, provider: str) -> set[str]:
        """Provider batches already read and found not ours."""

    def first_intent_at(self, provider: str) -> float | None:
        """When the store first committed an intent for a provider (None: never): no batch
        the provider made before then can be ours."""

    def judge_foreign(self, provider: str, batch_ids: Iterable[str], now: float) -> None:
        """Remember provider batches found not ours, so none is read again."""

    def residual_double_create(self, batch_id: int, detail: str) -> None:
        """An intent stops waiting for proof and creates again: said and counted."""

    def residual_double_creates(self) -> int:
        """How many intents stopped waiting for proof and created again."""

    def set_proof_wait(self, batch_id: int, until: float | None) -> None:
        """An intent waits for same-size batches to say whose they are, until `until`."""

    def proof_waits(self) -> list[ProofWait]:
        """Intents waiting for proof, and until when they may wait."""

    def moved(self) -> Moved | None:
        """A copy or move found at open and not yet named by the user, if any."""

    def resolve_move(self, kind: str, now: float) -> None:
        """Close a pending move ("new": a copy, "keep": a move or restore): here is home."""

    def open_before(self, before: int) -> list[tuple[int, int | None]]:
        """(batch row, its intent) of open batches up to row `before`."""

    # -- budgets ---------------------------------------------------------------------------
    def budget_lines(self, request_ids: Sequence[int]) -> list[tuple[int, str, int, bytes]]:
        """(request id, queue, text bytes, body) of these requests, in the order given."""

    def committed(self, queue: str, first: int, end: int) -> int:
        """1e-6 USD spent or reserved by a queue ('*': all) over UTC days [first, end)."""

    def hold(
        self, request_ids: Sequence[int], reason: str, now: float, token: int, claim: str = "engine"
    ) -> int:
        """Queued requests wait as `held` with a reason; how many."""

    def release_held(self, now: float, token: int) -> int:
        """Every held request goes back to `queued`; how many."""

    def held_count(self, queue: str | None = None) -> int:
        """Requests held (by a budget)."""

    def held_reasons(self) -> list[tuple[str, int]]:
        """(reason, requests) of held requests, the newest reason first."""

    def batch_usage(self, batch_id: int) -> list[QueueUsage] | None:
        """Usage of a batch's results per queue and tier; None if it reserved nothing."""

    def settle(
        self,
        batch_id: int,
        spent: Mapping[str, int],
        now: float,
        token: int,
        unpriced: Mapping[str, int] | None = None,
        prices: str | None = None,
    ) -> None:
        """Release a batch's reservation to its actual cost per queue (idempotent);
        `unpriced` counts the results per queue whose cost is not known."""

    def flagged_results(self, batch_id: int) -> list[tuple[int, str]]:
        """(request id, queue) of a batch's succeeded results whose usage could not be read."""

    def spend_queues(self, batch_id: int) -> dict[str, int]:
        """The queues a batch's spend rows charge, with their worst case."""

    def budget_overview(self, now: float) -> list[BudgetRow]:
        """The store's budgets, with their current period's committed spend."""

    def stored_budgets(self) -> tuple[list[BudgetRow], list[PolicyRow]]:
        """The store's budgets and budget settings, as every worker must enforce them."""

    def set_budget(self, queue: str, period: str, limit_micro: int, now: float) -> int | None:
        """Set a budget in the store ('*': every queue); the limit it replaces, if any."""

    def set_policy(
        self,
        queue: str,
        now: float,
        *,
        allow_unpriced: bool | None = None,
        assume_context_tokens: int | None = None,
    ) -> PolicyRow:
        """Change a queue's budget settings in the store (None leaves one as it is)."""

    def clear_budgets(self, queue: str, period: str | None = None) -> int:
        """Remove a queue's budgets of one period (None: all, and its settings); how many."""

    def seed_budgets(
        self, rows: Sequence[BudgetRow], policies: Sequence[PolicyRow], now: float
    ) -> bool:
        """Write a worker's own budgets into a store that has none; False if it has some."""

    # -- the ledger (store/ledger.py) --------------------------------------------------------
    def record_tally(
        self, batch_id: int, rows: Sequence[TallyRow], now: float, token: int
    ) -> UsageCheck | None:
        """Record what a batch's result lines said it used; the check against the
        provider's own total, if it gave one (noted as an anomaly when they differ)."""

    def batch_tally(self, batch_id: int) -> list[TallyRow]:
        """What a batch's result lines said it used, per model and tier."""

    def record_provider_usage(
        self, batch_id: int, usage: Any, now: float, token: int, model: str | None = None
    ) -> None:
        """What the provider says a batch used (input, cached, output, reasoning tokens)."""

    def usage_checks(
        self,
        batch_id: int | None = None,
        *,
        every: bool = False,
        limit: int = 20,
        ingested: bool = True,
    ) -> list[UsageCheck]:
        """Batches whose provider gave a total beside what we counted, newest first (only
        those that differ unless `every`)."""

    def find_batch(self, ref: str) -> dict[str, Any] | None:
        """A batch by local id or provider batch id, with its duplicates."""

    def batch_spend(self, batch_id: int) -> list[SpendRow]:
        """A batch's spend rows (reservation, settlement, kind) per queue."""

    def unplanned_spend(self, first: int, end: int, queue: str | None = None) -> list[SpendRow]:
        """Spend over UTC days [first, end) no budget planned or could not fully price."""

    def receipt_groups(
        self, first: int, end: int, *, batch_id: int | None = None, queue: str | None = None
    ) -> list[ReceiptGroup]:
        """Usage of results per batch, pricing aggregate and queue, over UTC days recorded."""

    # -- callers waiting on their requests (implemented in watch.py) -----------------------
    def watch(self, queue: str, after: int, held_after: float, limit: int = 5000) -> Watched:
        """One statement for every waiting call of a queue: among the next `limit` results
        after result id `after`, the newest of each finished request of the queue; requests
        held since `held_after`; the highest id scanned."""

    def lookup(self, queue: str, custom_ids: Sequence[str]) -> dict[str, Found]:
        """Requests of a queue by custom_id, each with its state and newest result."""

    def queue_requests(
        self, queue: str, states: Sequence[str], page: int = 2000
    ) -> Iterator[tuple[str, str, str, str, bytes]]:
        """(custom_id, provider, endpoint, model, body) of a queue's requests in `states`."""

    # -- what /metrics and the dashboard read (implemented in observe.py) ------------------
    def observe(self, now: float, horizon: float) -> Observed:
        """Requests (with deadlines missed or before `horizon`), open batches, events, cost
        totals and the lease, in one read."""

    def turnaround(self, after: int, upto: int) -> Turnaround:
        """Enqueue-to-result times of the results with ids in (after, upto], per bucket."""

    def batch_events(self, batch_id: int) -> list[dict[str, Any]]:
        """A batch's entries in the event log, oldest first: its timeline."""

    def recent_failures(self, n: int = 10, window: int = 20_000) -> list[dict[str, Any]]:
        """The newest failed results among the last `window`, newest first (no bodies)."""

    # -- archives and the webhook outbox (implemented in archive.py) -----------------------
    def archive_add(self, batch_id: int, now: float) -> None:
        """Ask for a batch's files to be archived (once; asking again is harmless)."""

    def archive_due(self, now: float, n: int = 20) -> list[DueArchive]:
        """Archives to write now, of batches already ingested."""

    def archive_done(self, batch_id: int, now: float, location: str, from_store: bool) -> None:
        """An archive written: its location, and whether it came from the store."""

    def archive_failed(self, batch_id: int, not_before: float, error: str) -> None:
        """An archive that failed: one more try, the next at `not_before`."""

    def archive_batch(self, batch_id: int) -> dict[str, Any] | None:
        """What an archive or a webhook needs of a batch (ids, files, counts)."""

    def archive_waiting(self, n: int = 20) -> list[tuple[int, int, float, str | None]]:
        """(batch id, tries, next try, last error) of archives not yet written."""

    def batch_attempt_map(self, batch_id: int) -> Iterator[tuple[int, str, str]]:
        """(attempt id, queue, custom_id) of every attempt a batch carried, streamed."""

    def batch_custom_ids(self, batch_id: int, first: int, last: int) -> list[tuple[int, str]]:
        """(attempt id, custom_id) of the attempts a batch carried from `first` to `last`."""

    def batch_result_rows(self, batch_id: int) -> Iterator[ResultRow]:
        """The results recorded for a batch's attempts, in attempt order, streamed."""

    def batch_result_count(self, batch_id: int) -> int:
        """How many results are recorded for a batch's attempts."""

    def batch_queues(self, batch_id: int) -> list[QueueState]:
        """The queues a batch's requests belong to, with how many are not finished."""

    def queue_summary(self, queue: str) -> dict[str, int]:
        """A queue's requests by state."""

    def outbox_add(
        self, event_id: str, kind: str, batch_id: int | None, payload: bytes, now: float
    ) -> None:
        """Add a webhook event to deliver (once per event id)."""

    def outbox_due(self, now: float, n: int = 50) -> list[OutboxEvent]:
        """Webhook events to deliver now, oldest first."""

    def outbox_delivered(self, id: int, now: float) -> None:
        """An event its receiver took (2xx)."""

    def outbox_failed(self, id: int, not_before: float, error: str) -> None:
        """An event not delivered: one more try, the next at `not_before`."""

    def outbox_waiting(self) -> tuple[int, float | None]:
        """How many events are not delivered yet, and the soonest next try."""
