"""The Provider protocol: the one seam every batch API implements.

OpenAI, Azure and Anthropic; built-ins register through the `llmbatch.providers`
entry point group exactly as an outside package would. A provider never touches the store:
the engine hands it an `Intent` (a packed batch file and who we are) and records what it
returns.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from llmbatch import ownership
from llmbatch.errors import RejectedError


class ResultsGone(RejectedError):
    """The provider no longer holds a batch's results (Anthropic archives them 29 days after
    the batch ended): they can never be read, so its unanswered requests are decided now."""


@dataclass(frozen=True, slots=True)
class Limits:
    """What one provider batch may hold (the engine keeps a margin below these)."""

    max_requests: int
    max_bytes: int
    max_inputs: int | None = None  # embedding inputs per batch
    min_requests: int = 1  # a service that refuses smaller batches (the engine waits for more)


@dataclass(frozen=True, slots=True)
class Intent:
    """A packed batch that must be sent exactly once."""

    batch_id: int  # our local id
    store_id: str
    endpoint: str
    model: str | None
    path: Path  # the JSONL file, one line per attempt, custom_id = attempt id
    request_count: int
    created_at: float
    input_file_id: str | None = None  # set once an upload is recorded
    attempt_span: tuple[int, int] | None = None  # its lowest and highest attempt id
    nonce: str | None = None  # what proves its batch ours (ownership.py; None: before 0005)
    # Running, unrecorded batches of its size created since it, that cannot prove whose they
    # are yet, are waited for (reconcile answers `pending`), never adopted on their size.

    @property
    def file_name(self) -> str:
        return ownership.file_name(self.store_id, self.batch_id, self.nonce)

    @property
    def metadata(self) -> dict[str, str]:
        return ownership.metadata(self.store_id, self.batch_id, self.nonce)


@dataclass(frozen=True, slots=True)
class BatchRef:
    """A provider batch (or, with an empty id, only an upload) made for an intent."""

    provider_batch_id: str
    input_file_id: str | None = None
    # Other unrecorded batches that match the intent as well as this one (a provider that
    # matches by request count cannot tell them apart): the engine adopts them too, and
    # their results land on the right attempts because attempt ids are globally unique.
    duplicates: tuple[BatchStatus, ...] = field(default=(), compare=False)
    # No batch yet, but one that may be this intent's has not ended (so its results cannot
    # say whose it is): ask again later rather than create.
    pending: bool = False


@dataclass(frozen=True, slots=True)
class BatchUsage:
    """What a provider says a whole batch used (OpenAI's Batch object `usage`, filled for
    batches created after 2025-09-07; Anthropic and Azure give none)."""

    input: int
    cached: int
    output: int
    reasoning: int


@dataclass(slots=True)
class BatchStatus:
    """A provider batch as last seen, normalised (`state` uses llmbatch's batch states)."""

    provider_batch_id: str
    state: str  # validating | in_progress | finalizing | completed | failed | expired | cancelling | cancelled
    provider_status: str
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_file_id: str | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    # validation errors: code, message, line
    errors: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, str] | None = None
    created_at: float | None = None
    usage: BatchUsage | None = None  # the provider's own total, where it gives one
    model: str | None = None  # the model the provider says the batch ran, where it says

    @property
    def ended(self) -> bool:
        return self.state in ("completed", "failed", "expired", "cancelled")


@dataclass(frozen=True, slots=True)
class ResultFile:
    """A downloaded output or error file, verified complete, on local disk."""

    kind: str  # "output" | "error"
    path: Path
    size: int


class Journal(Protocol):
    """The engine's durable record of a submission in progress (see submission.py)."""

    # The client timeout for the upload and the create (seconds): the engine's lease is
    # renewed before each and outlasts this, so no standby can take over mid-call.
    call_timeout: float

    def uploading(self) -> None:
        """About to upload: after this, a crash means an upload may exist."""

    def uploaded(self, file_id: str) -> None:
        """The upload succeeded: remember its id before anything else."""

    def creating(self) -> None:
        """About to create the batch: after this, a crash means it may exist."""

    def sending(self) -> None:
        """Right before the create's request leaves (providers/sending.py calls it): raise
        if it may no longer be sent, its worker held too long since `creating`."""


class Provider(Protocol):
    """A batch API. Every call may raise ProviderError; none may log or return a key."""

    name: str

    def ready(self) -> None:
        """Raise AuthError (or ConfigError) if no call can be made — no key, no endpoint — so
        the engine says so before it commits an intent, not after."""

    def limits(self, endpoint: str, model: str | None) -> Limits:
        """The per-batch limits for this endpoint and model."""

    def group_key(self, endpoint: str, model: str) -> tuple[str, ...]:
        """What may share a batch (OpenAI: endpoint and model; Anthropic: the endpoint, so
        one batch may mix models). The engine packs by it."""

    def request_line(self, attempt_id: str, endpoint: str, body: bytes) -> bytes:
        """One line of a batch input file for this provider (without the newline)."""

    def submit(self, intent: Intent, journal: Journal) -> BatchRef:
        """Send an intent, telling the journal before each step that may spend money."""

    def reconcile(
        self, intents: Sequence[Intent], since: float, recorded: frozenset[str] = frozenset()
    ) -> dict[int, BatchRef]:
        """Find provider batches (or uploads) already made for these intents, never one of
        the `recorded` provider batch ids (those the store already knows)."""

    def list_tagged(
        self, store_id: str, since: float, recorded: frozenset[str] = frozenset()
    ) -> list[BatchStatus]:
        """Batches created since `since` (every page back to it), not among `recorded`, that
        the provider could judge: `metadata` is the tag each carries (ownership.py: store,
        intent or attempt, nonce), or empty for a batch read and found to carry none. The
        caller decides what is proven ours and remembers the rest."""

    def stray_uploads(self, store_id: str, since: float) -> list[tuple[str, int, str | None]]:
        """(file id, intent id, nonce) of uploads named as ours (ownership.file_name) since
        `since`."""

    def poll(self, batch_ids: Sequence[str], retrieve_budget: int) -> list[BatchStatus]:
        """Statuses of in-flight batches: one list call, then a few direct retrieves."""

    def download(self, status: BatchStatus, folder: Path) -> list[ResultFile]:
        """Stream the output and error files to `folder`; raise if one is truncated."""

    def cancel(self, provider_batch_id: str) -> None:
        """Ask the provider to cancel a batch."""

    def delete_files(self, file_ids: Sequence[str]) -> None:
        """Delete files we no longer need (input, output, error)."""


def read_lines(files: Sequence[ResultFile]) -> Iterator[tuple[str, bytes]]:
    """(kind, line) for every non-blank line of the downloaded files, streamed."""
    for f in files:
        with open(f.path, "rb") as fh:
            for raw in fh:
                line = raw.rstrip(b"\r\n")
                if line.strip():
                    yield f.kind, line
