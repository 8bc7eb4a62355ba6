"""What one engine tick is told and what it says: the engine's settings (`[engine]`), the
tick's context (`Tick`) and its report. Every part of the engine reads these; none of them
needs the engine itself."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from llmbatch import defaults
from llmbatch.archive import ArchiveSettings
from llmbatch.budget import BudgetSettings
from llmbatch.errors import ConfigError
from llmbatch.retry import RetryPolicy
from llmbatch.store.batching import OpenBatch
from llmbatch.store.ownership import Moved
from llmbatch.webhooks import WebhookSettings


@dataclass
class EngineSettings:
    """How the engine schedules its work (`[engine]`); every default is in defaults.py."""

    poll_interval: float = defaults.POLL_INTERVAL_S
    max_poll_interval: float = defaults.MAX_POLL_INTERVAL_S
    first_poll: float = defaults.FIRST_POLL_S
    retrieve_budget: int = defaults.RETRIEVE_BUDGET
    settle_seconds: float = defaults.SETTLE_S
    max_batch_requests: int | None = None
    delete_files: bool = defaults.DELETE_FILES
    batches_per_hour: int = defaults.BATCHES_PER_HOUR
    quotas: dict[tuple[str, str], int] = field(default_factory=dict)  # (provider, model) -> tokens
    lease_ttl: float = defaults.LEASE_TTL_S
    # How long an upload or a create may take before the client gives up, and what a renewed
    # lease must still have left after it (None: derived from lease_ttl, see defaults.py).
    submit_timeout: float | None = None
    lease_margin: float | None = None
    ingest_chunk: int = defaults.INGEST_CHUNK
    backoff_seconds: float = defaults.BACKOFF_S
    sweep_interval: float = defaults.SWEEP_INTERVAL_S
    max_batch_rejections: int = defaults.MAX_BATCH_REJECTIONS
    max_result_line_bytes: int = defaults.MAX_RESULT_LINE_BYTES
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> provider settings
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    archived: str = defaults.ARCHIVED  # "requeue" or "fail"
    archive: ArchiveSettings | None = None  # `[archive]`: copy each batch's files there
    webhooks: WebhookSettings | None = None  # `[webhooks]`: POST when results are in
    # How long an intent whose create may have acted waits for a running batch of its size to
    # end and say whose it is, before it creates again (a residual double create, counted).
    max_proof_wait: float = defaults.MAX_PROOF_WAIT_S

    def __post_init__(self) -> None:
        if self.archived not in ("requeue", "fail"):
            raise ConfigError(
                f'[engine] archived = {self.archived!r}: it takes "requeue" or "fail"'
            )
        for name in (
            "lease_ttl",
            "submit_timeout",
            "lease_margin",
            "max_result_line_bytes",
            "max_proof_wait",
        ):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"[engine] {name} must be more than 0, got {value!r}")
        if self.max_batch_rejections < 1:
            raise ConfigError(
                f"[engine] max_batch_rejections must be at least 1, got {self.max_batch_rejections}"
            )
        if self.call_timeout + self.renew_margin > self.lease_ttl:
            raise ConfigError(
                f"[engine] submit_timeout ({self.call_timeout:g} s) plus lease_margin "
                f"({self.renew_margin:g} s) must fit in lease_ttl ({self.lease_ttl:g} s): a worker "
                "waiting on a create must still hold its lease when the answer comes, or a "
                "standby could create the batch again; lower submit_timeout or raise lease_ttl"
            )

    @property
    def renew_margin(self) -> float:
        if self.lease_margin is not None:
            return self.lease_margin
        return min(defaults.LEASE_MARGIN_S, self.lease_ttl * defaults.LEASE_MARGIN_SHARE)

    @property
    def send_window(self) -> float:
        """How long after its stamp a create may still be sent (providers/sending.py): the
        lease margin, at most the client timeout. Between the stamp and the request leaving
        there is only a commit and the SDK building the request; a worker held longer may
        have lost its lease. Every second of it is taken from what the settle logic allows
        the provider (a create sent `w` late is found if it acts within `submit_timeout +
        settle_seconds - w`), so it is kept short."""
        return min(self.call_timeout, self.renew_margin)

    @property
    def call_timeout(self) -> float:
        """The client timeout of an upload, a create or a cancel."""
        if self.submit_timeout is not None:
            return self.submit_timeout
        return min(defaults.SUBMIT_TIMEOUT_S, self.lease_ttl - self.renew_margin)


@dataclass
class TickReport:
    """What one tick did (for progress bars, logs and tests)."""

    held_by: str | None = None
    claimed: int = 0  # open batches this worker holds the claims of
    engine_lease: bool = False  # whether it holds the store-wide engine lease
    engine_holder: str | None = None  # the worker that does, when another one does
    packed: int = 0
    intents: int = 0
    submitted: int = 0
    polled: int = 0
    ingested_batches: int = 0
    outcomes: int = 0
    anomalies: int = 0
    archived: int = 0  # batches whose archive was written
    delivered: int = 0  # webhook events delivered
    unreachable: int = 0  # provider calls that failed for a transient reason (outage, 429, 5xx)
    notes: list[str] = field(default_factory=list)


@dataclass
class Tick:
    """One tick's context, made once at its start and handed to every part: its time, the
    worker's fencing token (every write of the tick carries it), the report it fills, the
    pending move of the store (batches made before it wait), and the batches this worker
    holds the claims of (None: every one)."""

    now: float
    token: int
    report: TickReport
    moved: Moved | None = None
    mine: set[int] | None = None
    started: float = field(default_factory=time.perf_counter)

    def at(self) -> float:
        """The tick's time moved on by the seconds it has worked (packing and uploading a
        large batch takes a while): what a schedule made now is counted from, so the first
        poll after a create is not already due when the tick ends."""
        return self.now + (time.perf_counter() - self.started)

    def due(self, b: OpenBatch) -> bool:
        """Whether to work on a batch now: this worker's to work on, not backed off, and not
        made before the store was copied or moved (frozen until the user says which:
        `llmbatch store ...-identity`)."""
        if self.mine is not None and b.id not in self.mine:
            return False
        if self.moved is not None and b.id <= self.moved.before:
            return False
        return b.not_before is None or b.not_before <= self.now
