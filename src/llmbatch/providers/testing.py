"""A test double beside the seam, as httpx ships `MockTransport`: an in-process provider on a
virtual clock, so engine logic can be tested at unit speed without HTTP or an emulator.

    clock = VirtualClock()
    memory = MemoryProvider(clock=clock, latency=60)
    engine = Engine(store, providers={"openai": memory}, clock=clock)
    engine.tick(clock()); clock.advance(61); engine.tick(clock())

`MemoryProvider` keeps uploads and batches in dicts, speaks the OpenAI batch shape by default
(`request_line`, `respond`: override both for another shape, as tests/data/plugin_provider
does), finishes a batch `latency` virtual seconds after its create, and proves ownership the
way the OpenAI transport does (input file id, then the intent's metadata, then upload names).
Faults are queued per verb (`fail`), including a create that fails after doing the work. It
is a double, not the contract: the emulator-backed suites say what the real services do.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from llmbatch import ownership
from llmbatch.providers.base import (
    BatchRef,
    BatchStatus,
    Intent,
    Journal,
    Limits,
    ResultFile,
)

VERBS = ("upload", "create", "list", "poll", "download", "cancel", "delete")


class VirtualClock:
    """A clock tests move by hand: call it for the time, `advance` it to let time pass."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@dataclass
class MemoryBatch:
    """One batch as the double holds it."""

    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str]
    lines: list[dict[str, Any]]
    created_at: float
    state: str = "in_progress"
    output_file_id: str | None = None
    error_file_id: str | None = None


@dataclass
class _Fault:
    error: Exception
    after: bool  # the call does its work, then fails (the answer is lost)


@dataclass
class MemoryProvider:
    """An in-process provider (see the module docstring). `calls` counts each verb."""

    name: str = "openai"
    clock: Callable[[], float] = field(default_factory=VirtualClock)
    latency: float = 0.0  # virtual seconds from create to completed
    max_requests: int = 50_000
    max_bytes: int = 200 * 1024 * 1024
    files: dict[str, tuple[str, bytes, float]] = field(default_factory=dict)
    batches: dict[str, MemoryBatch] = field(default_factory=dict)
    calls: Counter[str] = field(default_factory=Counter)
    _faults: dict[str, list[_Fault]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    # -- driving it ------------------------------------------------------------------------
    def fail(self, verb: str, error: Exception, *, times: int = 1, after: bool = False) -> None:
        """The next `times` calls of `verb` raise `error` (after doing their work if `after`)."""
        if verb not in VERBS:
            raise ValueError(f"verb must be one of {', '.join(VERBS)}, not {verb!r}")
        self._faults.setdefault(verb, []).extend(_Fault(error, after) for _ in range(times))

    def respond(self, line: dict[str, Any]) -> dict[str, Any]:
        """The result line for one input line (OpenAI's output shape: an echoed chat answer)."""
        body = line.get("body") or {}
        messages = body.get("messages") or [{}]
        text = str(messages[-1].get("content", "")) if isinstance(messages[-1], dict) else ""
        prompt, completion = max(1, len(text) // 4), 3
        answer = {
            "id": f"chatcmpl-{line['custom_id']}",
            "object": "chat.completion",
            "model": body.get("model"),
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "stop",
                    "message": {"role": "assistant", "content": f"echo: {text}"},
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
        return {
            "id": f"batch_req_{line['custom_id']}",
            "custom_id": line["custom_id"],
            "response": {
                "status_code": 200,
                "request_id": f"req_{line['custom_id']}",
                "body": answer,
            },
            "error": None,
        }

    # -- the Provider protocol ---------------------------------------------------------------
    def ready(self) -> None:
        pass

    def limits(self, endpoint: str, model: str | None) -> Limits:
        return Limits(self.max_requests, self.max_bytes, max_inputs=self.max_requests)

    def group_key(self, endpoint: str, model: str) -> tuple[str, ...]:
        return (self.name, endpoint, model)

    def request_line(self, attempt_id: str, endpoint: str, body: bytes) -> bytes:
        head = {"custom_id": attempt_id, "method": "POST", "url": endpoint}
        return orjson.dumps(head)[:-1] + b',"body":' + body + b"}"

    def submit(self, intent: Intent, journal: Journal) -> BatchRef:
        file_id = intent.input_file_id
        if file_id is None:
            journal.uploading()
            file_id = str(self._call("upload", lambda: self._upload(intent)))
            journal.uploaded(file_id)
        journal.creating()
        journal.sending()  # right before the create would leave (providers/sending.py)
        ref: BatchRef = self._call("create", lambda: self._create(intent, file_id))
        return ref

    def reconcile(
        self, intents: Sequence[Intent], since: float, recorded: frozenset[str] = frozenset()
    ) -> dict[int, BatchRef]:
        self._call("list", lambda: None)
        by_file = {i.input_file_id: i for i in intents if i.input_file_id}
        by_intent = {str(i.batch_id): i for i in intents}
        found: dict[int, BatchRef] = {}
        for b in self.batches.values():
            if b.created_at < since or b.id in recorded:
                continue
            hit = by_file.get(b.input_file_id)
            if hit is None and intents and b.metadata.get(ownership.STORE) == intents[0].store_id:
                hit = by_intent.get(b.metadata.get(ownership.INTENT, ""))
                if hit is not None and b.metadata.get(ownership.NONCE) != hit.nonce:
                    hit = None  # the same intent id in a copy of the store: not proven ours
            if hit is not None:
                found.setdefault(hit.batch_id, BatchRef(b.id, b.input_file_id))
        names = {i.file_name: i for i in intents if i.batch_id not in found and not i.input_file_id}
        for file_id, (name, _, created) in self.files.items():
            if created >= since and name in names:
                found.setdefault(names[name].batch_id, BatchRef("", file_id))
        return found

    def list_tagged(
        self, store_id: str, since: float, recorded: frozenset[str] = frozenset()
    ) -> list[BatchStatus]:
        self._call("list", lambda: None)
        return [
            self._status(b)
            for b in self.batches.values()
            if b.created_at >= since
            and b.id not in recorded
            and b.metadata.get(ownership.STORE) == store_id
        ]

    def stray_uploads(self, store_id: str, since: float) -> list[tuple[str, int, str | None]]:
        self._call("list", lambda: None)
        out = []
        for file_id, (name, _, created) in self.files.items():
            tag = ownership.tag_of_file_name(name, store_id)
            if created >= since and tag is not None:
                out.append((file_id, *tag))
        return out

    def poll(self, batch_ids: Sequence[str], retrieve_budget: int) -> list[BatchStatus]:
        self._call("poll", lambda: None)
        return [self._status(self.batches[i]) for i in batch_ids if i in self.batches]

    def download(self, status: BatchStatus, folder: Path) -> list[ResultFile]:
        self._call("download", lambda: None)
        out = []
        for kind, file_id in (("output", status.output_file_id), ("error", status.error_file_id)):
            if file_id and file_id in self.files:
                path = folder / f"{kind}.jsonl"
                data = self.files[file_id][1]
                path.write_bytes(data)
                out.append(ResultFile(kind, path, len(data)))
        return out

    def cancel(self, provider_batch_id: str) -> None:
        self._call("cancel", lambda: self._cancel(provider_batch_id))

    def delete_files(self, file_ids: Sequence[str]) -> None:
        self._call("delete", lambda: [self.files.pop(f, None) for f in file_ids])

    # -- inside --------------------------------------------------------------------------------
    def _call(self, verb: str, work: Callable[[], Any]) -> Any:
        self.calls[verb] += 1
        queued = self._faults.get(verb)
        fault = queued.pop(0) if queued else None
        if fault is not None and not fault.after:
            raise fault.error
        got = work()
        if fault is not None:
            raise fault.error
        return got

    def _id(self, prefix: str) -> str:
        return f"{prefix}_{next(self._ids)}"

    def _upload(self, intent: Intent) -> str:
        file_id = self._id("file")
        self.files[file_id] = (intent.file_name, Path(intent.path).read_bytes(), self.clock())
        return file_id

    def _create(self, intent: Intent, file_id: str) -> BatchRef:
        data = self.files[file_id][1]
        lines = [orjson.loads(raw) for raw in data.splitlines() if raw.strip()]
        b = MemoryBatch(
            self._id("batch"), file_id, intent.endpoint, dict(intent.metadata), lines, self.clock()
        )
        self.batches[b.id] = b
        return BatchRef(b.id, file_id)

    def _cancel(self, batch_id: str) -> None:
        b = self.batches[batch_id]
        if b.state == "in_progress":
            b.state = "cancelled"

    def _status(self, b: MemoryBatch) -> BatchStatus:
        if b.state == "in_progress" and self.clock() >= b.created_at + self.latency:
            self._finish(b)
        done = len(b.lines) if b.state == "completed" else 0
        return BatchStatus(
            provider_batch_id=b.id,
            state=b.state,
            provider_status=b.state,
            total=len(b.lines),
            completed=done,
            input_file_id=b.input_file_id,
            output_file_id=b.output_file_id,
            error_file_id=b.error_file_id,
            metadata=dict(b.metadata),
            created_at=b.created_at,
        )

    def _finish(self, b: MemoryBatch) -> None:
        out = b"".join(orjson.dumps(self.respond(line)) + b"\n" for line in b.lines)
        b.output_file_id = self._id("file")
        self.files[b.output_file_id] = (f"{b.id}_output.jsonl", out, self.clock())
        b.state = "completed"
