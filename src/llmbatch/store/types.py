"""The store's domain types: what a request, a clash, a count or a result row is, as the
store hands them out. Plain data, no behaviour; every other store module imports from here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

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
