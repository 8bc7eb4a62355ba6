"""OpenAI and Azure OpenAI batch providers, on the official `openai` SDK.

Keys come from the environment variable the config names (`OPENAI_API_KEY`,
`AZURE_OPENAI_API_KEY` by default); they are handed to the SDK client and nowhere else.
File and batch creation run with `max_retries=0`: the SDK retries POSTs with no idempotency
key, so a 5xx after the batch was created would create a second one. The engine's own
retries reconcile first. Uploads read from an open handle and downloads stream to disk.

Proof of ownership (docs/reliability.md): a batch is ours when its metadata names our store,
the intent and that intent's nonce, or its input file is an upload we recorded; an upload
is ours when its name carries the same three (`llmbatch-<store>-<intent>-<nonce>.jsonl`).
Both are readable from the list at once, so nothing is ever waited for.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import openai

from llmbatch import ownership
from llmbatch.errors import AuthError, ConfigError, RejectedError, TransientError
from llmbatch.providers.base import (
    BatchRef,
    BatchStatus,
    BatchUsage,
    Intent,
    Journal,
    Limits,
    ResultFile,
)
from llmbatch.providers.errors import calling
from llmbatch.providers.openai_format import OUTPUT_EXPIRES_AFTER as OUTPUT_EXPIRES_AFTER
from llmbatch.providers.openai_format import AzureSettings as AzureSettings
from llmbatch.providers.openai_format import OpenAISettings as OpenAISettings
from llmbatch.providers.openai_format import azure_plugin, openai_plugin
from llmbatch.providers.sending import creating, hooks

OPENAI_LIMITS = Limits(max_requests=50_000, max_bytes=200 * 1024 * 1024, max_inputs=50_000)
AZURE_LIMITS = Limits(max_requests=100_000, max_bytes=200 * 1024 * 1024, max_inputs=50_000)
LIST_PAGES = 3  # polling: one list call per tick normally, a few pages at most
# The uploads list, newest first, is read back only to a `since` (a fresh store's first
# intent): its first page is small, as what is looked for is among the newest; the pages
# after it, reached only by a look-back that needs them, take the most the API gives. One
# page of 10,000 (~2.5 MB of JSON and a model each) was read in every sweep of a small job
# on an account that keeps its files (issue 23).
FIRST_FILES_PAGE, FILES_PAGE = 100, 10_000


class OpenAIProvider:
    """OpenAI's Files + Batch API."""

    name = "openai"
    plugin = openai_plugin  # an install whose entry point still names this class
    url_prefix = ""  # line urls are the endpoint as enqueued (/v1/...)

    def __init__(self, settings: OpenAISettings | None = None, **options: Any) -> None:
        self.settings = settings or OpenAISettings(**options)
        self._client: openai.OpenAI | None = None

    # -- clients -------------------------------------------------------------------------
    def _key(self) -> str:
        key = os.environ.get(self.settings.api_key_env, "").strip()
        if not key:
            raise AuthError(
                f"{self.name}: no API key: set the environment variable {self.settings.api_key_env}"
            )
        return key

    def _make_client(self) -> openai.OpenAI:
        base = self.settings.base_url or os.environ.get("OPENAI_BASE_URL") or None
        return openai.OpenAI(
            api_key=self._key(),
            base_url=base,
            timeout=self.settings.timeout,
            max_retries=2,
            http_client=http_client(),
        )

    @property
    def client(self) -> openai.OpenAI:
        if self._client is None:
            self._client = self._make_client()
        return self._client

    @property
    def where(self) -> str:
        return str(self.client.base_url).rstrip("/")

    def _calling(self, what: str) -> AbstractContextManager[None]:
        """Translate SDK errors into ours (see providers/errors.py), naming the call."""
        return calling(openai, self.name, what, lambda: self.where, self.settings.api_key_env)

    # -- the protocol --------------------------------------------------------------------
    def ready(self) -> None:
        self.client  # noqa: B018 (made now: a missing key or endpoint is said before anything is packed)

    def limits(self, endpoint: str, model: str | None) -> Limits:
        return OPENAI_LIMITS

    def group_key(self, endpoint: str, model: str) -> tuple[str, ...]:
        return (self.name, endpoint, model)

    def line_url(self, endpoint: str) -> str:
        return endpoint

    def request_line(self, attempt_id: str, endpoint: str, body: bytes) -> bytes:
        url = self.line_url(endpoint).encode()
        return (
            b'{"custom_id":"'
            + attempt_id.encode()
            + b'","method":"POST","url":"'
            + url
            + b'","body":'
            + body
            + b"}"
        )

    def submit(self, intent: Intent, journal: Journal) -> BatchRef:
        file_id = intent.input_file_id
        if file_id is None:
            journal.uploading()
            file_id = self.upload(intent, journal.call_timeout)
            journal.uploaded(file_id)
        with creating(journal):  # not sent if this worker was held too long (sending.py)
            return self.create(intent, file_id, journal.call_timeout)

    def upload(self, intent: Intent, timeout: float | None = None) -> str:
        client = self.client.with_options(max_retries=0, timeout=timeout or self.settings.timeout)
        with self._calling(f"upload of {intent.file_name}"), open(intent.path, "rb") as fh:
            created = client.files.create(
                file=(intent.file_name, fh, "application/jsonl"), purpose="batch"
            )
            return str(created.id)  # inside: an answer that is not JSON fails here

    def create(self, intent: Intent, file_id: str, timeout: float | None = None) -> BatchRef:
        client = self.client.with_options(max_retries=0, timeout=timeout or self.settings.timeout)
        with self._calling(f"create for {intent.file_name}"):
            batch = client.batches.create(
                input_file_id=file_id,
                endpoint=self.line_url(intent.endpoint),  # type: ignore[arg-type]
                completion_window="24h",
                metadata=intent.metadata,
                **self._expiry(),
            )
            return BatchRef(batch.id, file_id)

    def _expiry(self) -> dict[str, Any]:
        seconds = self.settings.output_expires_after
        if not seconds:
            return {}
        return {"output_expires_after": {"anchor": "created_at", "seconds": seconds}}

    def reconcile(
        self, intents: Sequence[Intent], since: float, recorded: frozenset[str] = frozenset()
    ) -> dict[int, BatchRef]:
        """Match intents to batches by input file id, then by our metadata (store, intent
        and nonce: a copy of the store or another store on this key never matches); then
        uploads by name, which carries the nonce too."""
        if not intents:
            return {}
        by_file = {i.input_file_id: i for i in intents if i.input_file_id}
        by_intent = {str(i.batch_id): i for i in intents}
        found: dict[int, BatchRef] = {}
        with self._calling("list batches"):
            page = self.client.batches.list(limit=100)
            while True:
                for b in page.data:
                    if b.created_at < since or b.id in recorded:
                        continue  # older than any of these intents, or known: not theirs
                    meta = b.metadata or {}
                    hit = by_file.get(b.input_file_id)
                    if hit is None and meta.get(ownership.STORE) == intents[0].store_id:
                        hit = by_intent.get(meta.get(ownership.INTENT, ""))
                        if hit is not None and meta.get(ownership.NONCE) != hit.nonce:
                            hit = None  # the same intent id in another copy of the store
                    if hit is not None and hit.batch_id not in found:
                        found[hit.batch_id] = BatchRef(b.id, b.input_file_id)
                if (
                    len(found) == len(intents)
                    or not page.has_next_page()
                    or (page.data and page.data[-1].created_at < since)
                ):
                    break
                page = page.get_next_page()
        missing = {
            i.file_name: i for i in intents if i.batch_id not in found and not i.input_file_id
        }
        if missing:
            with self._calling("list files"):
                for f in self._uploads_newest_first():
                    if f.created_at < since:
                        break
                    hit = missing.get(f.filename)
                    if hit is not None:
                        found.setdefault(hit.batch_id, BatchRef("", f.id))  # uploaded, not created
        return found

    def list_tagged(
        self, store_id: str, since: float, recorded: frozenset[str] = frozenset()
    ) -> list[BatchStatus]:
        """Batches whose metadata names our store (the caller checks intent and nonce),
        every page back to `since`."""
        out = []
        with self._calling("list batches"):
            page = self.client.batches.list(limit=100)
            while True:
                for b in page.data:
                    if (
                        b.created_at >= since
                        and b.id not in recorded
                        and (b.metadata or {}).get(ownership.STORE) == store_id
                    ):
                        out.append(_status(b))
                if not page.has_next_page() or (page.data and page.data[-1].created_at < since):
                    break
                page = page.get_next_page()
        return out

    def stray_uploads(self, store_id: str, since: float) -> list[tuple[str, int, str | None]]:
        out = []
        with self._calling("list files"):
            for f in self._uploads_newest_first():
                if f.created_at < since:
                    break
                tag = ownership.tag_of_file_name(f.filename or "", store_id)
                if tag is not None:
                    out.append((str(f.id), *tag))
        return out

    def _uploads_newest_first(self) -> Iterator[Any]:
        """The batch uploads, newest first, a page at a time as the caller reads on (the
        first page small: `FIRST_FILES_PAGE`). A page that repeats one already read (a
        service that ignores `after`) ends the list."""
        page = self.client.files.list(purpose="batch", limit=FIRST_FILES_PAGE, order="desc")
        seen: set[str] = set()
        while page.data and page.data[0].id not in seen:
            for f in page.data:
                seen.add(f.id)
                yield f
            if not page.has_next_page():
                return
            page = self.client.files.list(
                purpose="batch", limit=FILES_PAGE, order="desc", after=page.data[-1].id
            )

    def poll(self, batch_ids: Sequence[str], retrieve_budget: int) -> list[BatchStatus]:
        wanted = set(batch_ids)
        seen: dict[str, BatchStatus] = {}
        with self._calling("list batches"):
            page = self.client.batches.list(limit=100)
            for _ in range(LIST_PAGES):
                for b in page.data:
                    if b.id in wanted:
                        seen[b.id] = _status(b)
                if len(seen) == len(wanted) or not page.has_next_page():
                    break
                page = page.get_next_page()
        for batch_id in [b for b in batch_ids if b not in seen][:retrieve_budget]:
            with self._calling(f"retrieve {batch_id}"):
                seen[batch_id] = _status(self.client.batches.retrieve(batch_id))
        return list(seen.values())

    def download(self, status: BatchStatus, folder: Path) -> list[ResultFile]:
        files = []
        for kind, file_id in (("output", status.output_file_id), ("error", status.error_file_id)):
            if not file_id:
                continue
            path = folder / f"{kind}.jsonl"  # never a name from the provider's strings
            with self._calling(f"download of {kind} file {file_id}"):
                expected = int(self.client.files.retrieve(file_id).bytes or 0)
                size = 0
                with (
                    self.client.files.with_streaming_response.content(file_id) as resp,
                    open(path, "wb") as out,
                ):
                    content_type = resp.headers.get("content-type", "")
                    for chunk in resp.iter_bytes(1 << 20):
                        out.write(chunk)
                        size += len(chunk)
            if size != expected:
                what = f"{self.name}: {kind} file {file_id} of batch {status.provider_batch_id}"
                if content_type.startswith("text/html"):
                    how = f"arrived as an HTML page ({size:,} bytes), not the file of {expected:,}"
                elif size > expected:
                    how = f"arrived with {size:,} bytes, more than the {expected:,} it has"
                else:
                    how = f"arrived truncated ({size:,} of {expected:,} bytes)"
                raise TransientError(f"{what} {how}; it will be downloaded again")
            files.append(ResultFile(kind, path, size))
        return files

    def cancel(self, provider_batch_id: str) -> None:
        with self._calling(f"cancel {provider_batch_id}"):
            self.client.batches.cancel(provider_batch_id)

    def delete_files(self, file_ids: Sequence[str]) -> None:
        for file_id in file_ids:
            try:
                with self._calling(f"delete file {file_id}"):
                    self.client.files.delete(file_id)
            except RejectedError:
                pass  # already gone


class AzureProvider(OpenAIProvider):
    """Azure OpenAI global batch: deployments as models, 100,000 lines, no expiry."""

    name = "azure"
    plugin = azure_plugin

    def __init__(self, settings: OpenAISettings | None = None, **options: Any) -> None:
        options.setdefault("api_key_env", "AZURE_OPENAI_API_KEY")
        super().__init__(settings, **options)

    def _make_client(self) -> openai.OpenAI:
        endpoint = self.settings.endpoint or os.environ.get("AZURE_OPENAI_ENDPOINT")
        if not endpoint:
            raise ConfigError(
                "azure: no endpoint: set AZURE_OPENAI_ENDPOINT or providers.azure.endpoint"
            )
        version = self.settings.api_version or os.environ.get("OPENAI_API_VERSION") or "2024-10-21"
        return openai.AzureOpenAI(
            azure_endpoint=endpoint,
            api_key=self._key(),
            api_version=version,
            timeout=self.settings.timeout,
            max_retries=2,
            http_client=http_client(),
        )

    def limits(self, endpoint: str, model: str | None) -> Limits:
        return AZURE_LIMITS

    def line_url(self, endpoint: str) -> str:
        return endpoint.removeprefix("/v1")  # the legacy surface names /chat/completions


def http_client() -> openai.DefaultHttpxClient:
    """The SDK's own HTTP client, with the hook that holds a create to its send window."""
    return openai.DefaultHttpxClient(event_hooks=hooks())


def _status(b: Any) -> BatchStatus:
    counts = b.request_counts
    errors = []
    if b.errors is not None and b.errors.data:
        errors = [{"code": e.code, "message": e.message, "line": e.line} for e in b.errors.data]
    return BatchStatus(
        provider_batch_id=b.id,
        state=str(b.status),
        provider_status=str(b.status),
        total=int(counts.total) if counts else 0,
        completed=int(counts.completed) if counts else 0,
        failed=int(counts.failed) if counts else 0,
        input_file_id=b.input_file_id,
        output_file_id=b.output_file_id or None,
        error_file_id=b.error_file_id or None,
        errors=errors,
        metadata=dict(b.metadata) if b.metadata else None,
        created_at=float(b.created_at),
        usage=_usage(getattr(b, "usage", None)),
        model=getattr(b, "model", None) or None,
    )


def _usage(u: Any) -> BatchUsage | None:
    """The Batch object's `usage`, if the service filled it in (a Batch created before
    2025-09-07, and Azure's, has none)."""
    if u is None:
        return None
    try:
        cached = u.input_tokens_details.cached_tokens if u.input_tokens_details else 0
        reasoning = u.output_tokens_details.reasoning_tokens if u.output_tokens_details else 0
        return BatchUsage(
            int(u.input_tokens), int(cached or 0), int(u.output_tokens), int(reasoning or 0)
        )
    except (AttributeError, TypeError, ValueError):
        return None  # a shape we do not know: no total, rather than a wrong one
