"""Anthropic Message Batches, on the official `anthropic` SDK.

Requests travel inline in the create call (there are no files): each batch line is
`{"custom_id": <attempt id>, "params": <Messages API body>}`. The create body is streamed from
the packed JSONL file through the SDK's `post(..., content=<iterator>)`, so a 32 MB batch is
never parsed into Python objects (the SDK's `batches.create` would build it all in memory).
Results are streamed from `results_url` to disk as raw JSONL.

Exactly once without metadata. Anthropic batches carry no metadata, so a batch cannot say
which intent it belongs to until its results (whose custom ids are our attempt ids) exist.
The protocol:

1. The intent (its attempts in line order) is committed durably before anything is sent;
   `create_started_at` is committed just before the create (`journal.creating()`).
2. The batch is created with `max_retries=0` (the SDK would retry a POST with no idempotency
   key and could create a second batch); its id is committed at once.
3. After any interruption the next attempt reconciles: it lists batches created since the
   intent (minus `clock_skew` seconds), drops those the store has recorded, and matches
   every unrecorded intent that may have been created at once. A candidate that has ended
   says whose it is: the first line of its results names one of our attempts, which lies in
   one intent's attempt span (or in none: not theirs). Running candidates are matched by
   total request count, oldest candidate to oldest intent; if a size has fewer running
   candidates than intents, any could be any intent's, so those intents wait until the
   candidates end and say. Candidates left over are duplicates (a create repeated after
   the settle delay): they are adopted as further batches of the intent, and as attempt ids
   are globally unique their results land on the right requests (answered ones skipped).
4. With no candidate the engine waits `settle_seconds` (the list may lag) and creates again.
5. The sweep (`list_tagged`) reads the first result line of each ended batch the store does
   not know, once per process, and adopts those whose custom ids carry our store's
   attempt-id prefix: a batch that appeared in the list only after a re-create, or one a
   restored database forgot, is still recorded and ingested.

Residual risk: a created batch that stays invisible in the list for longer than the settle
delay, with our record of it lost, is created twice; both are paid, no request is lost or
answered twice, and the sweep adopts the first once it has ended
(tests/e2e/test_anthropic_exactly_once.py reproduces and reports it). A foreign batch
(another tool on the same key) of exactly the same size, created in the window and still
running, can be adopted by mistake: its results carry no ids of ours, so the batch is ingested with
anomalies and our requests go back to the queue uncharged, while the batch we did create is
found later by the sweep. The price of telling equal sizes apart: where a size has fewer
running candidates than unrecorded intents, those intents wait for the candidates to end
(minutes; at worst the 24 h window) before the one whose create was lost is created again.

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

MAX_REQUESTS = 100_000
DEFAULT_MAX_BYTES = 32 * 1024 * 1024  # the service takes 256 MB; the worker's RSS would not
LIST_LIMIT = 100
LIST_PAGES = 3
CHUNK = 1 << 20
FIRST_CUSTOM_ID = re.compile(rb'\s*\{\s*"custom_id"\s*:\s*"([A-Za-z0-9_-]{1,64})"')


@dataclass(frozen=True, slots=True)
class AnthropicSettings:
    """Where to reach the service. The key is read from `api_key_env` when a client is made."""

    api_key_env: str = "ANTHROPIC_API_KEY"
    base_url: str | None = None  # default: ANTHROPIC_BASE_URL, else the SDK's default
    timeout: float = 600.0
    max_bytes: int = DEFAULT_MAX_BYTES
    max_requests: int = MAX_REQUESTS
    clock_skew: float = 300.0  # seconds: how far the provider's clock may be behind ours


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
                api_key=self._key(), base_url=base, timeout=self.settings.timeout, max_retries=2
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
        journal.creating()
        client = self.client.with_options(max_retries=0, timeout=journal.call_timeout)
        with self._calling(f"create for intent {intent.batch_id}"):
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
        """Match intents to unrecorded batches created since `since` (see `match_by_count`).

        A candidate that has ended says whose it is: the first line of its results names an
        attempt, which falls in one intent's `attempt_span` or in none of them (then it is
        not theirs). Candidates still running, and every candidate when an intent comes
        without its span, are matched by request count."""
        if not intents:
            return {}
        start = min(since, min(i.created_at for i in intents)) - self.settings.clock_skew
        sizes = {i.request_count for i in intents}
        candidates = {
            b.id: b
            for b in self._list_since(start, pages=10)
            if b.id not in recorded and _total(b) in sizes
        }
        spans = all(i.attempt_span is not None for i in intents)  # else by count alone
        owners = {
            b.id: self._owner(b, intents)
            for b in candidates.values()
            if spans and b.processing_status == "ended" and b.results_url and not b.archived_at
        }
        matched = match_by_count(
            [(i.batch_id, i.request_count) for i in intents],
            [(b.id, _total(b), b.created_at.timestamp()) for b in candidates.values()],
            owners,
        )
        return {
            intent: BatchRef(primary, duplicates=tuple(_status(candidates[d]) for d in extra))
            if primary
            else BatchRef("", pending=True)
            for intent, (primary, extra) in matched.items()
        }

    def _owner(self, b: MessageBatch, intents: Sequence[Intent]) -> int | None:
        """The intent whose attempt the first result line of an ended batch names, if any."""
        if b.id not in self._first_ids:
            try:
                self._first_ids[b.id] = self._first_custom_id(b.id)
            except RejectedError:
                self._first_ids[b.id] = None
        custom_id = self._first_ids[b.id] or ""
        prefix, _sep, number = custom_id.rpartition("-")
        if not number.isdigit() or not intents or prefix != intents[0].store_id:
            return None
        attempt = int(number)
        owners = [
            i.batch_id
            for i in intents
            if i.attempt_span is not None and i.attempt_span[0] <= attempt <= i.attempt_span[1]
        ]
        return owners[0] if len(owners) == 1 else None

    def list_tagged(
        self, store_id: str, since: float, recorded: frozenset[str] = frozenset()
    ) -> list[BatchStatus]:
        """Ended, unrecorded batches whose results carry our attempt ids.

        Batches carry no metadata, so the first result line of each ended batch not yet
        known tells: its custom_id is `<store_id>-<attempt>` or it is not ours. Only that
        line is read (the stream is closed after it), and a batch found foreign is
        remembered, so each is read at most once per process. Batches still running are
        looked at by a later sweep."""
        prefix, out = store_id + "-", []
        for b in self._list_since(since, pages=10):
            if b.id in recorded or b.id in self._foreign or b.processing_status != "ended":
                continue
            if b.archived_at is not None or not b.results_url:
                self._foreign.add(b.id)  # nothing to read, ever
                continue
            try:
                custom_id = self._first_custom_id(b.id)
            except RejectedError:  # archived or deleted meanwhile: nothing to read
                self._foreign.add(b.id)
                continue
            attempt = custom_id.removeprefix(prefix) if custom_id else ""
            if custom_id is None or not custom_id.startswith(prefix) or not attempt.isdigit():
                self._foreign.add(b.id)
                continue
            status = _status(b)
            status.metadata = {"llmbatch_store": store_id, "llmbatch_attempt": attempt}
            out.append(status)
        return out

    def stray_uploads(self, store_id: str, since: float) -> list[tuple[str, int]]:
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

    def _list_since(self, start: float, pages: int) -> Iterator[MessageBatch]:
        with self._calling("list batches"):
            page = self.client.messages.batches.list(limit=LIST_LIMIT)
            for _ in range(pages):
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


def match_by_count(
    intents: Sequence[tuple[int, int]],
    batches: Sequence[tuple[str, int, float]],
    owners: Mapping[str, int | None] | None = None,
) -> dict[int, tuple[str, tuple[str, ...]]]:
    """Intent id -> (its batch, the duplicates) from (intent id, request count) and
    (batch id, request count, created at).

    A batch in `owners` has said whose it is (its first result line): it goes to that intent
    (the oldest as its batch, later ones as duplicates), or to none if None. The others are
    matched by count: per count, intents in id order take that count's batches oldest
    first, and batches left over go to every intent of that count as duplicates. When a
    count has fewer such batches than intents still unmatched, any of them may be any
    intent's: those intents get ("", ()) — pending, ask again once the batches have ended."""
    owners = owners or {}
    sizes = dict(intents)
    out: dict[int, tuple[str, tuple[str, ...]]] = {}
    unknown: dict[int, list[str]] = {}
    for batch_id, total, _created in sorted(batches, key=lambda b: (b[2], b[0])):
        if batch_id not in owners:
            unknown.setdefault(total, []).append(batch_id)
            continue
        owner = owners[batch_id]
        if owner is None or sizes.get(owner) != total:
            continue  # not one of these intents' batches
        primary, extra = out.get(owner, (batch_id, ()))
        out[owner] = (primary, extra + ((batch_id,) if primary != batch_id else ()))
    by_intents: dict[int, list[int]] = {}
    for intent, count in sorted(intents):
        if intent not in out:
            by_intents.setdefault(count, []).append(intent)
    for count, group in by_intents.items():
        ordered = unknown.get(count, [])
        if not ordered:
            continue
        if len(ordered) < len(group):
            out.update(dict.fromkeys(group, ("", ())))
            continue
        extra = tuple(ordered[len(group) :])
        for intent, batch_id in zip(group, ordered, strict=False):
            out[intent] = (batch_id, extra)
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
