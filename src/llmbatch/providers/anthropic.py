"""Anthropic Message Batches, on the official `anthropic` SDK.

Requests travel inline in the create call (there are no files): each batch line is
`{"custom_id": <attempt id>, "params": <Messages API body>}`. The create body is streamed from
the packed JSONL file through the SDK's `post(..., content=<iterator>)`, so a 32 MB batch is
never parsed into Python objects (the SDK's `batches.create` would build it all in memory).
Results are streamed from `results_url` to disk as raw JSONL.

How it proves a batch ours (the protocol is in docs/reliability.md): batches carry no
metadata, so the proof is in each request's custom id, `<store>-<nonce>-<attempt>`, which
only the results show — once the batch has ended. An ended batch's first result line is
read (that line only, and never twice: the caller remembers batches judged foreign) and
names the intent whose nonce it carries and whose attempt span holds the attempt, or none.
A running batch cannot prove anything: an intent whose create may have acted unrecorded,
with a running unrecorded batch of its size created since it, waits (`pending`) until that
batch ends and is read; it is never adopted on its size.

Archived results (29 days after a batch ends) cannot be read: `download` raises ResultsGone
and the engine requeues or fails the batch's waiting requests (`[engine] archived`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import orjson
from anthropic.types.messages import MessageBatch

from llmbatch import defaults, ownership
from llmbatch.errors import AuthError, RejectedError, TransientError
from llmbatch.providers.anthropic_format import anthropic_plugin
from llmbatch.providers.base import (
    BatchRef,
    BatchStatus,
    Intent,
    Journal,
    Limits,
    ResultFile,
    ResultsGone,
)
from llmbatch.providers.errors import calling, scrub
from llmbatch.providers.sending import creating, hooks

MAX_REQUESTS = 100_000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024  # the service takes 256 MB; the worker's RSS would not
LIST_LIMIT = 100
LIST_PAGES = 3  # polling only: the sweep and reconcile page back to the time they need
CHUNK = 1 << 20
FIRST_CUSTOM_ID = re.compile(rb'\s*\{\s*"custom_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')


@dataclass(frozen=True, slots=True)
class AnthropicSettings:
    """Where to reach the service. The key is read from `api_key_env` when a client is made."""

    api_key_env: str = "ANTHROPIC_API_KEY"
    base_url: str | None = None  # default: ANTHROPIC_BASE_URL, else the SDK's default
    timeout: float = defaults.PROVIDER_TIMEOUT_S
    max_bytes: int = DEFAULT_MAX_BYTES
    max_requests: int = MAX_REQUESTS
    clock_skew: float = defaults.CLOCK_SKEW_S  # seconds


class AnthropicProvider:
    """Anthropic's Message Batches API (one batch may mix models)."""

    name = "anthropic"
    plugin = anthropic_plugin  # an install whose entry point still names this class

    def __init__(self, settings: AnthropicSettings | None = None, **options: Any) -> None:
        self.settings = settings or AnthropicSettings(**options)
        self._client: anthropic.Anthropic | None = None
        self._foreign: set[str] = set()  # batches whose results showed they are not ours
        self._first_ids: dict[str, str | None] = {}  # batch -> custom_id of its first line

    # -- clients -------------------------------------------------------------------------
    def _key(self) -> str:
        key = os.environ.get(self.settings.api_key_env, "").strip()
        if not key:
            raise AuthError(
                f"{self.name}: no API key: set the environment variable {self.settings.api_key_env}"
            )
        return key

    @property
    def client(self) -> anthropic.Anthropic:
        if self._client is None:
            base = self.settings.base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
            self._client = anthropic.Anthropic(
                api_key=self._key(),
                base_url=base,
                timeout=self.settings.timeout,
                max_retries=2,
                # the hook that holds a create to its send window (sending.py)
                http_client=anthropic.DefaultHttpxClient(event_hooks=hooks()),
            )
        return self._client

    @property
    def where(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def _calling(self, what: str) -> AbstractContextManager[None]:
        """Translate SDK errors into ours (see providers/errors.py), naming the call."""
        return calling(anthropic, self.name, what, lambda: self.where, self.settings.api_key_env)

    # -- the protocol --------------------------------------------------------------------
    def ready(self) -> None:
        self.client  # noqa: B018 (made now: a missing key or endpoint is said before anything is packed)

    def limits(self, endpoint: str, model: str | None) -> Limits:
        return Limits(max_requests=self.settings.max_requests, max_bytes=self.settings.max_bytes)

    def group_key(self, endpoint: str, model: str) -> tuple[str, ...]:
        return (self.name, endpoint)  # one Message Batch may hold several models

    def request_line(self, attempt_id: str, endpoint: str, body: bytes) -> bytes:
        return b'{"custom_id":"' + attempt_id.encode() + b'","params":' + body + b"}"

    def submit(self, intent: Intent, journal: Journal) -> BatchRef:
        client = self.client.with_options(max_retries=0, timeout=journal.call_timeout)
        with creating(journal), self._calling(f"create for intent {intent.batch_id}"):
            batch = client.post(
                "/v1/messages/batches",
                cast_to=MessageBatch,
                content=_create_body(intent.path),
                options={"headers": {"content-type": "application/json"}},
            )
            return BatchRef(batch.id)  # inside: an answer that is not JSON fails here

    def reconcile(
        self, intents: Sequence[Intent], since: float, recorded: frozenset[str] = frozenset()
    ) -> dict[int, BatchRef]:
        """Match intents to unrecorded batches created since `since` (minus `clock_skew`)
        by proof only: an ended candidate's first result line names its intent (its nonce,
        its attempt span). An intent with no proven batch but a running candidate of its
        size is `pending`: that candidate may be its own and says so once it has ended."""
        if not intents:
            return {}
        start = min(since, min(i.created_at for i in intents)) - self.settings.clock_skew
        sizes = {i.request_count for i in intents}
        candidates = [
            b
            for b in self._list_since(start)
            if b.id not in recorded and b.id not in self._foreign and _total(b) in sizes
        ]
        owners = {
            b.id: self._owner(b, intents)
            for b in candidates
            if b.processing_status == "ended" and b.results_url and not b.archived_at
        }
        matched = match_by_proof(
            [(i.batch_id, i.request_count) for i in intents],
            [(b.id, _total(b), b.created_at.timestamp()) for b in candidates],
            owners,
        )
        by_id = {b.id: b for b in candidates}
        return {
            intent: BatchRef(primary, duplicates=tuple(_status(by_id[d]) for d in extra))
            if primary
            else BatchRef("", pending=True)
            for intent, (primary, extra) in matched.items()
        }

    def _owner(self, b: MessageBatch, intents: Sequence[Intent]) -> int | None:
        """The intent whose nonce and attempt the first result line of an ended batch
        carries, if any (intents from before 0005, with no nonce: their attempt alone)."""
        if b.id not in self._first_ids:
            try:
                self._first_ids[b.id] = self._first_custom_id(b.id)
            except RejectedError:
                self._first_ids[b.id] = None
        if not intents:
            return None
        tag = ownership.tag_of_custom_id(self._first_ids[b.id], intents[0].store_id)
        if tag is None:
            self._foreign.add(b.id)
            return None
        attempt, nonce = int(tag[ownership.ATTEMPT]), tag.get(ownership.NONCE)
        owners = [
            i.batch_id
            for i in intents
            if i.nonce == nonce
            and i.attempt_span is not None
            and i.attempt_span[0] <= attempt <= i.attempt_span[1]
        ]
        return owners[0] if len(owners) == 1 else None

    def list_tagged(
        self, store_id: str, since: float, recorded: frozenset[str] = frozenset()
    ) -> list[BatchStatus]:
        """Ended, unrecorded batches, each with the tag its first result line carries
        (empty: none of our store's). Only that line is read (the stream is closed after
        it); the caller remembers the batches found foreign, so each is read once. Batches
        still running are looked at by a later sweep."""
        out = []
        for b in self._list_since(since):
            if b.id in recorded or b.id in self._foreign or b.processing_status != "ended":
                continue
            custom_id = None
            if b.archived_at is None and b.results_url:
                try:
                    custom_id = self._first_custom_id(b.id)
                except RejectedError:  # archived or deleted meanwhile: nothing to read
                    custom_id = None
            tag = ownership.tag_of_custom_id(custom_id, store_id)
            if tag is None:
                self._foreign.add(b.id)
            status = _status(b)
            status.metadata = tag or {}
            out.append(status)
        return out

    def stray_uploads(self, store_id: str, since: float) -> list[tuple[str, int, str | None]]:
        return []  # no uploads: requests travel inline

    def poll(self, batch_ids: Sequence[str], retrieve_budget: int) -> list[BatchStatus]:
        wanted = set(batch_ids)
        seen: dict[str, BatchStatus] = {}
        with self._calling("list batches"):
            page = self.client.messages.batches.list(limit=LIST_LIMIT)
            for _ in range(LIST_PAGES):
                for b in page.data:
                    if b.id in wanted:
                        seen[b.id] = _status(b)
                if len(seen) == len(wanted) or not page.has_next_page():
                    break
                page = page.get_next_page()
        for batch_id in [b for b in batch_ids if b not in seen][:retrieve_budget]:
            with self._calling(f"retrieve {batch_id}"):
                seen[batch_id] = _status(self.client.messages.batches.retrieve(batch_id))
        return list(seen.values())

    def download(self, status: BatchStatus, folder: Path) -> list[ResultFile]:
        batch_id = status.provider_batch_id
        path = folder / "output.jsonl"  # never a name from the provider's strings
        size, last = 0, b""
        try:
            with (
                self._calling(f"results of {batch_id}"),
                self.client.messages.batches.with_streaming_response.results(batch_id) as resp,
                open(path, "wb") as out,
            ):
                expected = resp.headers.get("content-length")
                for chunk in resp.iter_bytes(CHUNK):
                    out.write(chunk)
                    size += len(chunk)
                    last = (last + chunk)[-CHUNK:]
        except (RejectedError, anthropic.AnthropicError) as exc:
            self._raise_if_archived(batch_id)
            if isinstance(exc, RejectedError):
                raise
            said = scrub(f"{self.name}: results of {batch_id}: {exc}", self.settings.api_key_env)
            raise RejectedError(said) from None
        tail = last.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
        truncated = expected is not None and size != int(expected)
        if not truncated and tail.strip():
            try:
                orjson.loads(tail)
            except orjson.JSONDecodeError:
                truncated = True
        if truncated:
            raise TransientError(
                f"{self.name}: results of batch {batch_id} arrived truncated ({size:,} bytes); "
                "they will be downloaded again"
            )
        return [ResultFile("output", path, size)]

    def cancel(self, provider_batch_id: str) -> None:
        with self._calling(f"cancel {provider_batch_id}"):
            self.client.messages.batches.cancel(provider_batch_id)

    def delete_files(self, file_ids: Sequence[str]) -> None:
        """Delete ended batches (poll reports a batch's own id as its output file)."""
        for batch_id in file_ids:
            try:
                with self._calling(f"delete batch {batch_id}"):
                    self.client.messages.batches.delete(batch_id)
            except RejectedError:
                pass  # already gone, or not ended (then the provider keeps it 29 days)

    # -- helpers -------------------------------------------------------------------------
    def _raise_if_archived(self, batch_id: str) -> None:
        """After results could not be read: ResultsGone if the batch says they are archived."""
        with self._calling(f"retrieve {batch_id}"):
            b = self.client.messages.batches.retrieve(batch_id)
        if b.archived_at is not None:
            raise ResultsGone(
                f"{self.name}: the results of batch {batch_id} were archived at "
                f"{b.archived_at.isoformat()} before they were read"
            )

    def _first_custom_id(self, batch_id: str) -> str | None:
        """The custom_id of a batch's first result line, reading no further than that line."""
        head = b""
        with (
            self._calling(f"results of {batch_id}"),
            self.client.messages.batches.with_streaming_response.results(batch_id) as resp,
        ):
            for chunk in resp.iter_bytes(1 << 14):
                head += chunk
                if b"\n" in head or len(head) > CHUNK:
                    break
        line = head.split(b"\n", 1)[0]
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:  # a first line longer than we read: custom_id leads it
            found = FIRST_CUSTOM_ID.match(line)
            return found.group(1).decode() if found else None
        custom_id = obj.get("custom_id") if isinstance(obj, dict) else None
        return custom_id if isinstance(custom_id, str) else None

    def _list_since(self, start: float) -> Iterator[MessageBatch]:
        """Batches newest first, every page back to `start`."""
        with self._calling("list batches"):
            page = self.client.messages.batches.list(limit=LIST_LIMIT)
            while True:
                for b in page.data:
                    if b.created_at.timestamp() >= start:
                        yield b
                if (
                    not page.has_next_page()
                    or not page.data
                    or page.data[-1].created_at.timestamp() < start
                ):
                    return
                page = page.get_next_page()


def match_by_proof(
    intents: Sequence[tuple[int, int]],
    batches: Sequence[tuple[str, int, float]],
    owners: Mapping[str, int | None],
) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Intent id -> (its batch, the duplicates) from (intent id, request count), (batch id,
    request count, created at) and what ended batches proved (`owners`: batch -> intent, or
    None when it is not one of these intents').

    A proven batch goes to its intent (the oldest as its batch, later ones as duplicates).
    An intent with none, while a batch of its size has not ended (not in `owners`), gets
    ("", ()): pending, ask again once that batch has ended. Others are left out: nothing of
    theirs exists."""
    sizes = dict(intents)
    out: dict[int, tuple[str, tuple[str, ...]]] = {}
    running: set[int] = set()
    for batch_id, total, _created in sorted(batches, key=lambda b: (b[2], b[0])):
        if batch_id not in owners:
            running.add(total)
            continue
        owner = owners[batch_id]
        if owner is None or sizes.get(owner) != total:
            continue  # not one of these intents' batches
        primary, extra = out.get(owner, (batch_id, ()))
        out[owner] = (primary, extra + ((batch_id,) if primary != batch_id else ()))
    for intent, count in intents:
        if intent not in out and count in running:
            out[intent] = ("", ())
    return out


def _create_body(path: Path) -> Iterator[bytes]:
    """`{"requests": [<line>, ...]}` from a JSONL file, about a megabyte per piece: a piece
    per line would cost one socket write (and an h11 event) per request."""
    parts, size, sep = [b'{"requests":['], 0, b""
    with open(path, "rb") as fh:
        for raw in fh:
            line = raw.strip()
            if not line:
                continue
            parts += (sep, line)
            sep = b","
            size += len(line)
            if size >= CHUNK:
                yield b"".join(parts)
                parts, size = [], 0
    parts.append(b"]}")
    yield b"".join(parts)


def _total(b: MessageBatch) -> int:
    c = b.request_counts
    return int(c.processing + c.succeeded + c.errored + c.canceled + c.expired)


def _status(b: MessageBatch) -> BatchStatus:
    c = b.request_counts
    if b.processing_status == "in_progress":
        state = "in_progress"
    elif b.processing_status == "canceling":
        state = "cancelling"
    elif c.canceled:
        state = "cancelled"
    elif c.expired:
        state = "expired"
    else:
        state = "completed"
    ended = b.processing_status == "ended"
    return BatchStatus(
        provider_batch_id=b.id,
        state=state,
        provider_status=str(b.processing_status),
        total=_total(b),
        completed=int(c.succeeded),
        failed=int(c.errored + c.canceled + c.expired),
        # The batch stands in for its output file, so the engine's clean-up deletes it.
        output_file_id=b.id if ended and b.results_url else None,
        created_at=b.created_at.timestamp(),
    )
