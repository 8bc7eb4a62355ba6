"""Gemini batch mode (the Developer API), on the official `google-genai` SDK (`llmbatch[gemini]`).

A small batch travels inline in the create call (each line's request with its key in the
InlinedRequest's `metadata`); a larger one is uploaded through the Files API (resumable,
read from disk chunk by chunk) and named in the create. Inline results come back inside the
batch, so inline is kept to `inline_max_bytes` (1 MiB): list pages carry them too. Reads
(list, get, the inline create) go through the SDK's own client as raw REST calls, because its
models drop `batchStats` and the Operation's `error`, and re-typing a native body would not
give it back byte for byte. The SDK retries nothing by default, which is what create needs.

How it proves a batch ours (the protocol is in docs/reliability.md): the Developer API keeps
no metadata, so a batch's `displayName` carries the tag, `llmbatch-<store>-<intent>-<nonce>`,
and an upload's `displayName` the same with `.jsonl`; both are read from the list at once, so
nothing is waited for. Result keys are our attempt ids (`<store>-<nonce>-<attempt>`), which
ingest checks line by line. Results are mapped by key, never by position.

Uploads live 48 h: a create whose recorded upload is gone or about to expire uploads the
file again first.

A create is sent only within its send window after it was journaled (providers/sending.py,
an HTTP request hook shared with the other providers): a worker frozen between its lease
check and the bytes leaving does not send it when it wakes.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import orjson

from llmbatch import defaults, ownership
from llmbatch.errors import AuthError, ConfigError, ProviderError, RejectedError, TransientError
from llmbatch.providers.base import (
    BatchRef,
    BatchStatus,
    Intent,
    Journal,
    Limits,
    ResultFile,
)
from llmbatch.providers.errors import retry_after, scrub, transport_errors
from llmbatch.providers.gemini_format import gemini_plugin
from llmbatch.providers.sending import creating, hooks

try:
    from google import genai
    from google.genai import errors as genai_errors
    from google.genai import types as genai_types
except ImportError:  # pragma: no cover - the extra is installed in the tests
    raise ConfigError(
        "provider 'gemini' needs the google-genai package: pip install 'llmbatch[gemini]'"
    ) from None

MAX_REQUESTS = 100_000
DEFAULT_MAX_BYTES = 200 * 1024 * 1024  # the service takes 2 GB files; one pack stays small
INLINE_MAX_BYTES = 1024 * 1024  # inline results travel in every list page: keep them small
PAGE_SIZE = 100
LIST_PAGES = 3  # polling only: reconcile and the sweep page back to the time they need
UPLOAD_MARGIN = 3600.0  # an upload with less life than this left is uploaded again
CHUNK = 1 << 20
STATES = {
    "PENDING": "validating",
    "QUEUED": "validating",
    "RUNNING": "in_progress",
    "SUCCEEDED": "completed",
    "PARTIALLY_SUCCEEDED": "completed",
    "FAILED": "failed",
    "CANCELLING": "cancelling",
    "CANCELLED": "cancelled",
    "EXPIRED": "expired",
    "PAUSED": "in_progress",
    "UPDATING": "in_progress",
}
ENDED = frozenset({"completed", "failed", "cancelled", "expired"})
KEY_ENVS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")

Json = dict[str, Any]


@dataclass(frozen=True, slots=True)
class GeminiSettings:
    """Where to reach the service. The key is read from `api_key_env` (by default
    GEMINI_API_KEY, else GOOGLE_API_KEY) when a client is made."""

    api_key_env: str = "GEMINI_API_KEY"
    base_url: str | None = None  # default: GOOGLE_GEMINI_BASE_URL, else the SDK's default
    api_version: str = "v1beta"
    timeout: float = defaults.PROVIDER_TIMEOUT_S
    max_bytes: int = DEFAULT_MAX_BYTES
    max_requests: int = MAX_REQUESTS
    inline_max_bytes: int = INLINE_MAX_BYTES  # 0: always upload a file
    clock_skew: float = defaults.CLOCK_SKEW_S  # seconds


def display_name(store_id: str, intent: int, nonce: str | None) -> str:
    """A batch's `displayName`: its upload's name without `.jsonl`."""
    return ownership.file_name(store_id, intent, nonce).removesuffix(".jsonl")


def tag_of_display_name(name: object, store_id: str) -> dict[str, str] | None:
    """The tag (store, intent, nonce) a batch's displayName carries, if it is our store's."""
    if not isinstance(name, str):
        return None
    found = ownership.tag_of_file_name(name + ".jsonl", store_id)
    if found is None:
        return None
    intent, nonce = found
    return ownership.metadata(store_id, intent, nonce)


class GeminiProvider:
    """Gemini's Files + Batch API (one model a batch)."""

    name = "gemini"
    plugin = gemini_plugin

    def __init__(self, settings: GeminiSettings | None = None, **options: Any) -> None:
        self.settings = settings or GeminiSettings(**options)
        self._client: genai.Client | None = None
        self._key_env = self.settings.api_key_env

    # -- clients -------------------------------------------------------------------------
    def _key(self) -> str:
        envs = [self.settings.api_key_env]
        if self.settings.api_key_env == KEY_ENVS[0]:
            envs.append(KEY_ENVS[1])
        for env in envs:
            key = os.environ.get(env, "").strip()
            if key:
                self._key_env = env
                return key
        raise AuthError(
            f"{self.name}: no API key: set the environment variable {' or '.join(envs)}"
        )

    @property
    def base(self) -> str:
        return (
            self.settings.base_url
            or os.environ.get("GOOGLE_GEMINI_BASE_URL")
            or "https://generativelanguage.googleapis.com"
        ).rstrip("/")

    @property
    def client(self) -> genai.Client:
        if self._client is None:
            self._client = genai.Client(
                api_key=self._key(),
                http_options={
                    "base_url": self.base,
                    "api_version": self.settings.api_version,
                    "timeout": int(self.settings.timeout * 1000),
                    "client_args": {"event_hooks": hooks()},  # the send window (sending.py)
                },
            )
        return self._client

    def _options(self, timeout: float | None = None) -> genai_types.HttpOptions:
        return genai_types.HttpOptions(timeout=int((timeout or self.settings.timeout) * 1000))

    @contextmanager
    def _calling(self, what: str) -> Iterator[None]:
        """Translate the SDK's errors into ours, naming the call, never the key."""
        try:
            with _mapped(self.name, what, self.base, self._key_env):
                yield
        except ProviderError as exc:
            exc.args = (self._scrub(str(exc)), *exc.args[1:])
            raise

    def _scrub(self, text: str) -> str:
        for env in {self.settings.api_key_env, *KEY_ENVS}:
            text = scrub(text, env)
        return text

    def _rest(self, method: str, path: str, body: Json | None = None, **query: Any) -> Json:
        """One REST call through the SDK's client; the answer's JSON as sent."""
        if query:
            path += "?" + urlencode({k: v for k, v in query.items() if v is not None})
        timeout = body.pop("_timeout", None) if body else None
        answer = self.client._api_client.request(
            method, path, body or {}, http_options=self._options(timeout)
        )
        try:
            got = orjson.loads(answer.body or "{}")
        except orjson.JSONDecodeError:
            raise TransientError(
                f"{self.name}: {path}: {self.base} answered with a page that is not JSON "
                "(a proxy or a login portal in the way?)"
            ) from None
        if not isinstance(got, dict):
            raise TransientError(f"{self.name}: {path}: the answer is not a JSON object")
        return got

    # -- the protocol --------------------------------------------------------------------
    def ready(self) -> None:
        self.client  # noqa: B018 (made now: a missing key is said before anything is packed)

    def limits(self, endpoint: str, model: str | None) -> Limits:
        return Limits(max_requests=self.settings.max_requests, max_bytes=self.settings.max_bytes)

    def group_key(self, endpoint: str, model: str) -> tuple[str, ...]:
        return (self.name, endpoint, model)  # a batch is created on one model

    def request_line(self, attempt_id: str, endpoint: str, body: bytes) -> bytes:
        return b'{"key":"' + attempt_id.encode() + b'","request":' + body + b"}"

    def submit(self, intent: Intent, journal: Journal) -> BatchRef:
        name = display_name(intent.store_id, intent.batch_id, intent.nonce)
        model = intent.model or ""
        file_id = intent.input_file_id
        size = intent.path.stat().st_size if intent.path.is_file() else None
        if file_id is None and size is not None and size <= self.settings.inline_max_bytes:
            self.client  # noqa: B018 (a missing key is said before the journal is told)
            body = {**_inline_body(intent.path, name), "_timeout": journal.call_timeout}
            with (
                creating(journal),
                self._calling(f"create for intent {intent.batch_id}"),
            ):
                op = self._rest("post", f"models/{model}:batchGenerateContent", body)
            return BatchRef(_batch_name(op))
        if file_id is not None and not self._upload_alive(file_id):
            if size is None:
                raise RejectedError(
                    f"{self.name}: the upload {file_id} of intent {intent.batch_id} has expired "
                    "(uploads are kept 48 hours) and its file is gone; its requests are sent again"
                )
            file_id = None  # expired: uploaded again
        if file_id is None:
            journal.uploading()
            file_id = self.upload(intent, journal.call_timeout)
            journal.uploaded(file_id)
        with creating(journal), self._calling(f"create for {intent.file_name}"):
            job = self.client.batches.create(
                model=model,
                src=file_id,
                config=genai_types.CreateBatchJobConfig(
                    display_name=name, http_options=self._options(journal.call_timeout)
                ),
            )
            return BatchRef(str(job.name).removeprefix("batches/"), file_id)

    def upload(self, intent: Intent, timeout: float | None = None) -> str:
        config = genai_types.UploadFileConfig(
            mime_type="application/jsonl",
            display_name=intent.file_name,
            http_options=self._options(timeout),
        )
        with self._calling(f"upload of {intent.file_name}"):
            got = self.client.files.upload(file=str(intent.path), config=config)
            if not got.name:
                raise TransientError(f"{self.name}: upload of {intent.file_name}: no file name")
            return str(got.name)

    def _upload_alive(self, file_id: str) -> bool:
        """Whether a recorded upload can still be named in a create (uploads live 48 h)."""
        try:
            with self._calling(f"get {file_id}"):
                got = self._rest("get", file_id)
        except (RejectedError, AuthError):
            return False  # 403/404: expired or deleted
        expires = _timestamp(got.get("expirationTime"))
        return expires is None or expires - time.time() > UPLOAD_MARGIN

    def reconcile(
        self, intents: Sequence[Intent], since: float, recorded: frozenset[str] = frozenset()
    ) -> dict[int, BatchRef]:
        """Match intents to batches by the tag in their displayName (store, intent, nonce),
        or by the upload they name; then uploads by their displayName."""
        if not intents:
            return {}
        start = min(since, min(i.created_at for i in intents)) - self.settings.clock_skew
        store_id = intents[0].store_id
        by_file = {i.input_file_id: i for i in intents if i.input_file_id}
        by_intent = {str(i.batch_id): i for i in intents}
        found: dict[int, BatchRef] = {}
        made: set[int] = set()  # intents with a batch the store already records
        for op in self._list_since(start):
            meta = op.get("metadata") or {}
            source = (meta.get("inputConfig") or {}).get("fileName")
            hit = by_file.get(source) if source else None
            tag = tag_of_display_name(meta.get("displayName"), store_id)
            if hit is None and tag is not None:
                hit = by_intent.get(tag[ownership.INTENT])
                if hit is not None and tag.get(ownership.NONCE) != hit.nonce:
                    hit = None  # the same intent id in another copy of the store
            if hit is None:
                continue
            if _batch_name(op) in recorded:
                made.add(hit.batch_id)
            elif hit.batch_id not in found:
                found[hit.batch_id] = BatchRef(_batch_name(op), source)
        missing = {
            i.file_name: i
            for i in intents
            if i.batch_id not in found and i.batch_id not in made and not i.input_file_id
        }
        if missing:
            for f in self._files_since(start):
                hit = missing.get(f.get("displayName", ""))
                if hit is not None:
                    found.setdefault(hit.batch_id, BatchRef("", str(f["name"])))
        return found

    def list_tagged(
        self, store_id: str, since: float, recorded: frozenset[str] = frozenset()
    ) -> list[BatchStatus]:
        """Batches whose displayName names our store (the caller checks intent and nonce),
        every page back to `since`."""
        out = []
        for op in self._list_since(since):
            tag = tag_of_display_name((op.get("metadata") or {}).get("displayName"), store_id)
            if tag is not None and _batch_name(op) not in recorded:
                status = _status(op)
                status.metadata = tag
                out.append(status)
        return out

    def stray_uploads(self, store_id: str, since: float) -> list[tuple[str, int, str | None]]:
        out = []
        for f in self._files_since(since):
            tag = ownership.tag_of_file_name(f.get("displayName") or "", store_id)
            if tag is not None:
                out.append((str(f["name"]), *tag))
        return out

    def poll(self, batch_ids: Sequence[str], retrieve_budget: int) -> list[BatchStatus]:
        wanted = set(batch_ids)
        seen: dict[str, BatchStatus] = {}
        token = None
        with self._calling("list batches"):
            for _ in range(LIST_PAGES):
                page = self._rest("get", "batches", pageSize=PAGE_SIZE, pageToken=token)
                for op in page.get("operations") or ():
                    if _batch_name(op) in wanted:
                        seen[_batch_name(op)] = _status(op)
                token = page.get("nextPageToken")
                if len(seen) == len(wanted) or not token:
                    break
        for batch_id in [b for b in batch_ids if b not in seen][:retrieve_budget]:
            with self._calling(f"get {batch_id}"):
                seen[batch_id] = _status(self._rest("get", batch_path(batch_id)))
        return list(seen.values())

    def download(self, status: BatchStatus, folder: Path) -> list[ResultFile]:
        source = status.output_file_id
        if not source:
            return []  # cancelled or expired before any request ran
        path = folder / "output.jsonl"  # never a name from the provider's strings
        if source.startswith("batches/"):
            return [self._inline_results(source, path)]
        with self._calling(f"results file {source} of {status.provider_batch_id}"):
            expected = _int(self._rest("get", source).get("sizeBytes"))
            self.client.files.download(file=source, destination=str(path))
        size = path.stat().st_size
        if expected is not None and size != expected:
            raise TransientError(
                f"{self.name}: results file {source} of batch {status.provider_batch_id} arrived "
                f"with {size:,} of {expected:,} bytes; it will be downloaded again"
            )
        return [ResultFile("output", path, size)]

    def _inline_results(self, batch_id: str, path: Path) -> ResultFile:
        """An inline batch's responses, one `{"key", "response" | "error"}` line each, the
        key taken from each response's metadata (responses may come in any order)."""
        with self._calling(f"results of {batch_id}"):
            op = self._rest("get", batch_id)
        output = (op.get("metadata") or {}).get("output") or {}
        inlined = output.get("inlinedResponses") or {}
        responses = inlined.get("inlinedResponses") if isinstance(inlined, dict) else inlined
        size = 0
        with open(path, "wb") as out:
            for r in responses if isinstance(responses, list) else ():
                if not isinstance(r, dict):
                    continue
                line: Json = {}
                meta = r.get("metadata")
                if isinstance(meta, dict) and "key" in meta:
                    line["key"] = meta["key"]
                for field in ("response", "error"):
                    if field in r:
                        line[field] = r[field]
                raw = orjson.dumps(line) + b"\n"
                out.write(raw)
                size += len(raw)
        return ResultFile("output", path, size)

    def cancel(self, provider_batch_id: str) -> None:
        with self._calling(f"cancel {provider_batch_id}"):
            self.client.batches.cancel(name=batch_path(provider_batch_id))

    def delete_files(self, file_ids: Sequence[str]) -> None:
        """Delete uploads, results files and ended batches (poll names an ended batch as its
        own error file, so the engine's clean-up deletes it and list pages stay light)."""
        for file_id in file_ids:
            try:
                with self._calling(f"delete {file_id}"):
                    if file_id.startswith("batches/"):
                        self.client.batches.delete(name=file_id)
                    else:
                        self.client.files.delete(name=file_id)
            except (RejectedError, AuthError):
                pass  # already gone (an expired file answers 403)

    # -- helpers -------------------------------------------------------------------------
    def _list_since(self, start: float) -> Iterator[Json]:
        """Batches created since `start`, every page back to it."""
        with self._calling("list batches"):
            yield from _since(self._rest, "batches", "operations", start)

    def _files_since(self, start: float) -> Iterator[Json]:
        """Uploads created since `start`, every page back to it."""
        with self._calling("list files"):
            yield from _since(self._rest, "files", "files", start)


def _since(rest: Any, path: str, field: str, start: float) -> Iterator[Json]:
    """Objects of a list created since `start`. Google does not document the lists' order:
    paging stops early only at a page that runs newest first and ends before `start`."""
    token = None
    while True:
        page = rest("get", path, pageSize=PAGE_SIZE, pageToken=token)
        objs = [o for o in page.get(field) or () if isinstance(o, dict)]
        times = []
        for o in objs:
            created = _timestamp((o.get("metadata") or o).get("createTime"))
            times.append(created)
            if created is None or created >= start:
                yield o
        token = page.get("nextPageToken")
        known = [t for t in times if t is not None]
        newest_first = len(known) == len(times) and all(
            a >= b for a, b in itertools.pairwise(known)
        )
        if not token or not objs or (newest_first and known and known[-1] < start):
            return


@contextmanager
def _mapped(provider: str, what: str, where: str, key_env: str) -> Iterator[None]:
    try:
        yield
    except genai_errors.APIError as exc:
        code, status = int(exc.code or 0), str(exc.status or "")
        reason = _reason(exc.details)
        if code in (401, 403) or reason in ("API_KEY_INVALID", "API_KEY_SERVICE_BLOCKED"):
            raise AuthError(
                f"{provider}: {what} refused at {where} (HTTP {code} {status}): check the key "
                f"in ${key_env} and its permissions"
            ) from None
        said = f"{provider}: {what}: HTTP {code} {status}: {str(exc.message or '')[:300]}"
        if code == 429 and _retry_delay(exc.details) is None and "create" in what:
            # A full queue (enqueued tokens) answers 429 at create, after the upload: no
            # fault of the requests; the group backs off and sends smaller batches.
            raise RejectedError(
                f"{said} (token_limit_exceeded: the model's batch queue is full)"
            ) from None
        if code in (408, 429) or code >= 500:
            wait = _retry_delay(exc.details) or retry_after(exc.response)
            raise TransientError(said, wait) from None
        raise RejectedError(said) from None
    except transport_errors() as exc:
        raise TransientError(
            f"{provider}: {what}: the connection to {where} broke: {type(exc).__name__}"
        ) from None


def _details(body: object) -> list[Json]:
    err = body.get("error", body) if isinstance(body, dict) else None
    found = err.get("details") if isinstance(err, dict) else None
    return [d for d in found if isinstance(d, dict)] if isinstance(found, list) else []


def _reason(body: object) -> str | None:
    for d in _details(body):
        if str(d.get("@type", "")).endswith("ErrorInfo") and d.get("reason"):
            return str(d["reason"])
    return None


def _retry_delay(body: object) -> float | None:
    for d in _details(body):
        if str(d.get("@type", "")).endswith("RetryInfo"):
            delay = str(d.get("retryDelay", "")).removesuffix("s")
            try:
                return float(delay)
            except ValueError:
                return None
    return None


def _inline_body(path: Path, name: str) -> Json:
    """The create body of an inline batch: each line's request, its key in the metadata."""
    requests = []
    with open(path, "rb") as fh:
        for raw in fh:
            if raw.strip():
                line = orjson.loads(raw)
                requests.append({"request": line["request"], "metadata": {"key": line["key"]}})
    return {"batch": {"displayName": name, "inputConfig": {"requests": {"requests": requests}}}}


def _batch_name(op: Json) -> str:
    """A batch's id as the store keeps it: its name without `batches/`."""
    name = op.get("name") or (op.get("metadata") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise TransientError("gemini: a batch without a name in the answer")
    return name.removeprefix("batches/")


def batch_path(batch_id: str) -> str:
    return batch_id if batch_id.startswith("batches/") else "batches/" + batch_id


def _int(v: object) -> int | None:
    try:
        return int(str(v)) if v is not None else None
    except ValueError:
        return None


def _timestamp(v: object) -> float | None:
    if not isinstance(v, str) or not v:
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _status(op: Json) -> BatchStatus:
    meta = op.get("metadata") or {}
    word = str(meta.get("state") or "")
    state = STATES.get(word.removeprefix("BATCH_STATE_").removeprefix("JOB_STATE_"), "in_progress")
    stats = meta.get("batchStats") or {}
    total = _int(stats.get("requestCount")) or 0
    ok = _int(stats.get("successfulRequestCount")) or 0
    failed = _int(stats.get("failedRequestCount")) or 0
    name = _batch_name(op)
    output = meta.get("output") or {}
    out_file = output.get("responsesFile")
    ended = state in ENDED
    if ended and not out_file and output.get("inlinedResponses"):
        out_file = batch_path(name)  # inline results: read from the batch itself
    errors = []
    error = op.get("error")
    if state == "failed" and isinstance(error, dict):
        errors = [
            {
                "code": str(error.get("status") or error.get("code") or "failed"),
                "message": str(error.get("message") or "the batch failed"),
                "line": None,
            }
        ]
    return BatchStatus(
        provider_batch_id=name,
        state=state,
        provider_status=word,
        total=total,
        completed=ok,
        failed=failed,
        input_file_id=(meta.get("inputConfig") or {}).get("fileName"),
        output_file_id=out_file or None,
        # The batch stands in for an error file, so the engine's clean-up deletes it.
        error_file_id=batch_path(name) if ended and out_file != batch_path(name) else None,
        errors=errors,
        created_at=_timestamp(meta.get("createTime")),
    )
