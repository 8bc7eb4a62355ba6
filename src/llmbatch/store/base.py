"""The Store protocol: the handful of verbs llmbatch needs from a database.

Two real implementations share one contract test suite: SQLite (the default, one file) and
PostgreSQL (many workers on many machines). Everything set-based and dialect-neutral lives in
`sqlstore.SqlStore`; each backend adds only its connection, transactions and bulk load.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

# One request as the importer hands it to the store, in `insert_request` column order:
# queue, custom_id, import_id, line, provider, endpoint, model, body, body_hash, priority,
# deadline, text_chars, text_bytes, inputs, created_at, updated_at.
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
    """One terminal outcome, in export order (`cursor` resumes after it)."""

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
        """Mark the import failed and delete its rows (in short transactions)."""

    def clean_dead_imports(self) -> list[int]:
        """Abort imports whose process died, and finish deleting rows of failed ones."""

    def get_import(self, import_id: int) -> ImportInfo:
        """One import's bookkeeping."""

    def counts(self, queue: str | None = None) -> list[Count]:
        """Requests per queue × provider × model × state."""

    def request_detail(self, custom_id: str, queue: str | None = None) -> list[dict[str, Any]]:
        """Each request with this custom_id (one per queue), with its attempts and result."""

    def iter_results(
        self, queue: str | None = None, state: str | None = None, after: int = 0, page: int = 5000
    ) -> Iterator[ResultRow]:
        """Terminal outcomes in the order they were recorded, streamed page by page."""

    def recent_events(self, n: int = 20) -> list[dict[str, Any]]:
        """The newest entries of the event log."""
