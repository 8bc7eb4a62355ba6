"""The transport of an OpenAI-compatible service, on the official `openai` SDK.

The files and the SDK's error handling are OpenAI's (openai.py); batch objects are read as
plain JSON rather than the SDK's `Batch`, because services answer in their own words: a
create wrapped in `{"job": ...}`, upper-case states, a list that is a bare array, RFC 3339
times, `model_id` for `model`. `_read` turns any of these into one `BatchStatus`.

Proof of ownership (docs/reliability.md): as OpenAI's where the service keeps metadata; where
it does not, a batch is ours when its input file is an upload whose name carries our store,
intent and nonce (`llmbatch-<store>-<intent>-<nonce>.jsonl`), read from the file list.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

import openai

from llmbatch import ownership
from llmbatch.errors import TransientError
from llmbatch.providers.base import BatchRef, BatchStatus, BatchUsage, Intent, Limits
from llmbatch.providers.compatible import Service, service_of
from llmbatch.providers.openai import LIST_PAGES, OpenAIProvider, OpenAISettings, http_client

STATES = frozenset(
    {
        "validating",
        "in_progress",
        "finalizing",
        "completed",
        "failed",
        "expired",
        "cancelling",
        "cancelled",
    }
)
# Other words services use for the same states.
SYNONYMS = {"progress": "in_progress", "queued": "validating", "canceled": "cancelled"}
Json = dict[str, Any]


class CompatibleProvider(OpenAIProvider):
    """One OpenAI-shaped service, with the differences of its `Service`."""

    def __init__(self, name: str, **options: Any) -> None:
        self.service: Service = service_of(name, options)
        s = self.service
        super().__init__(
            OpenAISettings(
                api_key_env=s.api_key_env,
                base_url=s.base_url,
                timeout=float(options.get("timeout") or 600.0),
                output_expires_after=s.output_expires_after or 0,
            )
        )
        self.name = name

    def _make_client(self) -> openai.OpenAI:
        # the service's own URL, never OPENAI_BASE_URL: that one points at OpenAI's stand-in
        return openai.OpenAI(
            api_key=self._key(),
            base_url=self.settings.base_url,
            timeout=self.settings.timeout,
            max_retries=2,
            http_client=http_client(),
        )

    def limits(self, endpoint: str, model: str | None) -> Limits:
        s = self.service
        return Limits(s.max_requests, s.max_bytes, None, min_requests=s.min_requests)

    def request_line(self, attempt_id: str, endpoint: str, body: bytes) -> bytes:
        if self.service.line_shape == "custom_id_body":
            return b'{"custom_id":"' + attempt_id.encode() + b'","body":' + body + b"}"
        return super().request_line(attempt_id, endpoint, body)

    # -- submit --------------------------------------------------------------------------
    def upload(self, intent: Intent, timeout: float | None = None) -> str:
        client = self.client.with_options(max_retries=0, timeout=timeout or self.settings.timeout)
        with self._calling(f"upload of {intent.file_name}"), open(intent.path, "rb") as fh:
            created = client.files.create(
                file=(intent.file_name, fh, "application/jsonl"),
                purpose=self.service.file_purpose,  # type: ignore[arg-type]
            )
            return str(created.id)

    def create(self, intent: Intent, file_id: str, timeout: float | None = None) -> BatchRef:
        s = self.service
        body: Json = {
            "input_file_id": file_id,
            "endpoint": intent.endpoint,
            "completion_window": s.completion_window,
        }
        if s.keeps_metadata:
            body["metadata"] = intent.metadata
        body.update(self._expiry())
        client = self.client.with_options(max_retries=0, timeout=timeout or self.settings.timeout)
        with self._calling(f"create for {intent.file_name}"):
            got = client.post("/batches", body=body, cast_to=object)
        return BatchRef(self._read(got).provider_batch_id, file_id)

    # -- reading -------------------------------------------------------------------------
    def _read(self, obj: Any) -> BatchStatus:
        try:
            return read_batch(obj)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise TransientError(
                f"{self.name}: {self.where} answered with something that is not a batch"
            ) from None

    def _pages(self, since: float | None = None) -> Iterator[list[BatchStatus]]:
        """Pages of batches, newest first where the service pages; a bare array is one page
        in whatever order it comes."""
        after: str | None = None
        while True:
            params: Json = {"limit": 100}
            if after:
                params["after"] = after
            with self._calling("list batches"):
                got = self.client.get("/batches", cast_to=object, options={"params": params})
            if isinstance(got, list):
                yield [self._read(b) for b in got]
                return
            if not isinstance(got, dict) or not isinstance(got.get("data"), list):
                raise TransientError(f"{self.name}: {self.where} answered a list call oddly")
            page = [self._read(b) for b in got["data"]]
            yield page
            if not got.get("has_more") or not page:
                return
            last = page[-1]
            if since is not None and last.created_at is not None and last.created_at < since:
                return
            after = last.provider_batch_id

    def _since(self, since: float) -> Iterator[BatchStatus]:
        for page in self._pages(since):
            for b in page:
                if b.created_at is None or b.created_at >= since:
                    yield b

    def _uploads(self, since: float) -> list[Json]:
        """Our purpose's files created since `since`."""
        params = {"purpose": self.service.file_purpose, "limit": 10000, "order": "desc"}
        with self._calling("list files"):
            got = self.client.get("/files", cast_to=object, options={"params": params})
        data = got if isinstance(got, list) else got.get("data") if isinstance(got, dict) else None
        return [
            f
            for f in data or []
            if isinstance(f, dict) and (_epoch(f.get("created_at")) or since) >= since
        ]

    def _tags(self, store_id: str, since: float) -> dict[str, dict[str, str]]:
        """Input file id -> the tag its upload's name carries (for a service that drops
        metadata, the only place a batch's tag survives)."""
        out = {}
        for f in self._uploads(since):
            tag = ownership.tag_of_file_name(str(f.get("filename") or ""), store_id)
            if tag is not None:
                out[str(f["id"])] = ownership.metadata(store_id, *tag)
        return out

    # -- the protocol --------------------------------------------------------------------
    def reconcile(
        self, intents: Sequence[Intent], since: float, recorded: frozenset[str] = frozenset()
    ) -> dict[int, BatchRef]:
        """By input file id, then by our metadata (store, intent, nonce), then uploads by
        name: as OpenAI's, over the service's own list."""
        if not intents:
            return {}
        by_file = {i.input_file_id: i for i in intents if i.input_file_id}
        by_intent = {str(i.batch_id): i for i in intents}
        by_name = {i.file_name: i for i in intents}
        batches = list(self._since(since))
        uploads = self._uploads(since)
        names = {str(f["id"]): str(f.get("filename") or "") for f in uploads}
        found: dict[int, BatchRef] = {}
        for b in batches:
            if b.provider_batch_id in recorded:
                continue
            meta = b.metadata or {}
            file_id = b.input_file_id or ""
            hit = by_file.get(file_id) or by_name.get(names.get(file_id, ""))
            if hit is None and meta.get(ownership.STORE) == intents[0].store_id:
                hit = by_intent.get(meta.get(ownership.INTENT, ""))
                if hit is not None and meta.get(ownership.NONCE) != hit.nonce:
                    hit = None
            if hit is not None and hit.batch_id not in found:
                found[hit.batch_id] = BatchRef(b.provider_batch_id, b.input_file_id)
        for f in uploads:
            hit = by_name.get(str(f.get("filename") or ""))
            if hit is not None and not hit.input_file_id:
                found.setdefault(hit.batch_id, BatchRef("", str(f["id"])))
        return found

    def list_tagged(
        self, store_id: str, since: float, recorded: frozenset[str] = frozenset()
    ) -> list[BatchStatus]:
        tags = {} if self.service.keeps_metadata else self._tags(store_id, since)
        out = []
        for b in self._since(since):
            if b.provider_batch_id in recorded:
                continue
            if not (b.metadata or {}).get(ownership.STORE) and b.input_file_id in tags:
                b.metadata = tags[b.input_file_id or ""]
            store = (b.metadata or {}).get(ownership.STORE)
            # where the service drops metadata, a batch whose upload is gone (cleaned up
            # after its intent's own batch was ingested) carries no tag: the caller may still
            # prove it ours by its input file, or judge it foreign
            if store == store_id or (store is None and not self.service.keeps_metadata):
                out.append(b)
        return out

    def stray_uploads(self, store_id: str, since: float) -> list[tuple[str, int, str | None]]:
        out = []
        for f in self._uploads(since):
            tag = ownership.tag_of_file_name(str(f.get("filename") or ""), store_id)
            if tag is not None:
                out.append((str(f["id"]), *tag))
        return out

    def poll(self, batch_ids: Sequence[str], retrieve_budget: int) -> list[BatchStatus]:
        wanted = set(batch_ids)
        seen: dict[str, BatchStatus] = {}
        for n, page in enumerate(self._pages()):
            seen.update((b.provider_batch_id, b) for b in page if b.provider_batch_id in wanted)
            if len(seen) == len(wanted) or n + 1 >= LIST_PAGES:
                break
        for batch_id in [b for b in batch_ids if b not in seen][:retrieve_budget]:
            with self._calling(f"retrieve {batch_id}"):
                got = self.client.get(f"/batches/{batch_id}", cast_to=object)
            seen[batch_id] = self._read(got)
        return list(seen.values())

    def cancel(self, provider_batch_id: str) -> None:
        with self._calling(f"cancel {provider_batch_id}"):
            self.client.post(f"/batches/{provider_batch_id}/cancel", cast_to=object)


def read_batch(obj: Any) -> BatchStatus:
    """A service's batch object, in whichever of the known dialects, as a BatchStatus."""
    if isinstance(obj.get("job"), dict):
        obj = obj["job"]
    word = str(obj["status"])
    state = word.lower()
    state = SYNONYMS.get(state, state)
    if state not in STATES:
        state = "in_progress"  # a word we do not know: still running, as far as we can tell
    counts = obj.get("request_counts") or {}
    errors: list[dict[str, Any]] = []
    data = (obj.get("errors") or {}).get("data") if isinstance(obj.get("errors"), dict) else None
    for e in data or []:
        errors.append({"code": e.get("code"), "message": e.get("message"), "line": e.get("line")})
    if not errors and state == "failed" and isinstance(obj.get("error"), str):
        errors.append({"code": "failed", "message": obj["error"], "line": None})
    meta = obj.get("metadata")
    return BatchStatus(
        provider_batch_id=str(obj["id"]),
        state=state,
        provider_status=word,
        total=int(counts.get("total") or 0),
        completed=int(counts.get("completed") or 0),
        failed=int(counts.get("failed") or 0),
        input_file_id=obj.get("input_file_id"),
        output_file_id=obj.get("output_file_id") or None,
        error_file_id=obj.get("error_file_id") or None,
        errors=errors,
        metadata={str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else None,
        created_at=_epoch(obj.get("created_at")),
        usage=_usage(obj.get("usage")),
        model=obj.get("model") or obj.get("model_id") or None,
    )


def _epoch(value: Any) -> float | None:
    """Seconds since the epoch from a number or an RFC 3339 string."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and value:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    return None


def _usage(u: Any) -> BatchUsage | None:
    if not isinstance(u, dict) or "input_tokens" not in u:
        return None
    try:
        cached = (u.get("input_tokens_details") or {}).get("cached_tokens") or 0
        reasoning = (u.get("output_tokens_details") or {}).get("reasoning_tokens") or 0
        return BatchUsage(
            int(u["input_tokens"]), int(cached), int(u["output_tokens"]), int(reasoning)
        )
    except (TypeError, ValueError, KeyError, AttributeError):
        return None
