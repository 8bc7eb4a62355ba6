"""Processing Anthropic Message Batches, one step at a time, inside the emulator's worker.

A batch earns `rate × virtual seconds` requests of credit, like an OpenAI batch, and runs
its requests in a deterministic shuffled order, appending result lines to its `.out` file
and saving progress (lines done, bytes written, outcome tallies) after every chunk, so a
restart cuts the file back and carries on byte for byte. `request_counts` stay all
`processing` until the whole batch ends; then the tallies are published, the requests not
run become `canceled` (cancel) or `expired` (24 h, or the control API's expire) results,
and the file becomes the batch's results.

Each request is checked as `/v1/messages` would check it: a bad one is an `errored` result
carrying the error that call would answer (`invalid_request_error`, or `not_found_error`
for an unknown model). The `request_failure_rate` share fails with the error type of
`request_failure_status` (500 `api_error`, 529/503 `overloaded_error`, 429
`rate_limit_error`).
"""

from __future__ import annotations

import hashlib
import os
import random
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from llmbatch.emulator.anthropic_synth import (
    MessagesError,
    cache_use,
    check_params,
    check_window,
    count_prompt,
    error_envelope,
    message,
)
from llmbatch.emulator.capacity import Capacity
from llmbatch.emulator.envelope import anthropic_error_type
from llmbatch.emulator.message_batches import OUTCOMES, rfc3339
from llmbatch.emulator.state import Batch
from llmbatch.emulator.synth import share

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]
CHUNK = 512
FAILURE_MESSAGES = {
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
    "rate_limit_error": "Number of requests has exceeded your rate limit.",
}


@dataclass
class _Open:
    offsets: array[int]
    order: array[int]
    fd: int

    def line(self, position: int) -> bytes:
        i = self.order[position]
        start, end = self.offsets[i], self.offsets[i + 1]
        return os.pread(self.fd, end - start, start)


class MessageBatchWorker:
    """The Message Batches part of the emulator's processing thread."""

    def __init__(self, emu: Emulator, capacity: Capacity) -> None:
        self.emu = emu
        self.capacity = capacity
        self._open: dict[str, _Open] = {}

    def close(self) -> None:
        for handle in self._open.values():
            os.close(handle.fd)
        self._open.clear()

    def recover(self, b: Batch) -> None:
        """After a restart: an ending interrupted after the rename is redone from `.out`."""
        state = self.emu.state
        results, out = state.work_path(b.id, "results"), state.work_path(b.id, "out")
        if results.exists() and not out.exists():
            results.replace(out)

    def step(self, b: Batch, now: float) -> bool:
        """One step of an active batch at virtual time `now`; True if it did work."""
        internal, cfg = b.internal, self.emu.cfg
        if internal.get("force_expire"):
            return self._end(b, now, "expired")
        # Requests in flight when a cancel lands may still finish: work goes on until the
        # cancel takes effect `cancelling_seconds` later.
        canceling = internal.get("canceling")
        deadline = internal["expires"]
        if canceling is not None:
            deadline = min(deadline, canceling + cfg.cancelling_seconds)
        total, done = internal["total"], internal["done"]
        horizon = min(now, deadline)
        per_request = internal.get("spent_tokens", 0) / done if done else 256
        n, start = self.capacity.grant(
            self._key(b), internal["last_t"], horizon, total - done, per_request
        )
        if n > 0:
            self._process(b, done, n, start)
            return True
        if done >= total:
            return self._end(b, now, None)
        if now >= deadline:
            return self._end(b, now, "expired" if canceling is None else "canceled")
        return False

    @staticmethod
    def _key(b: Batch) -> tuple[str, str]:
        """Capacity is per model; a batch counts as its first request's model."""
        return (b.flavor, str(b.internal.get("model", "")))

    def _handle(self, b: Batch) -> _Open:
        handle = self._open.get(b.id)
        if handle is None:
            state = self.emu.state
            offsets = array("Q")
            offsets.frombytes(state.work_path(b.id, "idx").read_bytes())
            order = list(range(len(offsets) - 1))
            random.Random(b.id).shuffle(order)
            fd = os.open(state.work_path(b.id, "req"), os.O_RDONLY)
            handle = self._open[b.id] = _Open(offsets, array("I", order), fd)
        return handle

    def _release(self, batch_id: str) -> None:
        handle = self._open.pop(batch_id, None)
        if handle is not None:
            os.close(handle.fd)

    def _result(self, b: Batch, line: Json) -> tuple[Json, bool, int]:
        """The result of one request, whether it succeeded, and the tokens it used."""
        cfg = self.emu.cfg
        custom_id, params = line["custom_id"], line["params"]
        ids = hashlib.blake2b(f"{b.id}:{custom_id}".encode(), digest_size=16).hexdigest()
        request_id = "req_01" + ids[:24]
        try:
            card = check_params(params, cfg.catalog("anthropic"))
            prompt = count_prompt(params)
            check_window(prompt, card)
        except MessagesError as e:
            return (
                {
                    "type": "errored",
                    "error": error_envelope(e.type, e.message, request_id),
                },
                False,
                0,
            )
        if share(bytes.fromhex(ids[:8]), 0) < cfg.request_failure_rate:
            kind = anthropic_error_type(cfg.request_failure_status)
            text = FAILURE_MESSAGES.get(kind, "Invalid request")
            return {"type": "errored", "error": error_envelope(kind, text, request_id)}, False, 0
        hits = set(line.get("cache") or ())
        use = cache_use(prompt, lambda bp: bp.prefix in hits)
        body = message(
            params,
            salt=b.id,
            cache=use,
            prompt=prompt,
            service_tier="batch",
            length_rate=cfg.length_rate,
            ceiling=card.max_output_tokens,
        )
        return (
            {"type": "succeeded", "message": body},
            True,
            prompt.tokens + body["usage"]["output_tokens"],
        )

    def _process(self, b: Batch, done: int, n: int, start: float) -> None:
        handle = self._handle(b)
        lines, ok, tokens = [], 0, 0
        for position in range(done, done + n):
            line = orjson.loads(handle.line(position))
            result, succeeded, used = self._result(b, line)
            ok += succeeded
            tokens += used
            lines.append(orjson.dumps({"custom_id": line["custom_id"], "result": result}) + b"\n")
        path = self.emu.state.work_path(b.id, "out")
        with path.open("ab") as f:
            f.write(b"".join(lines))
            size = f.tell()
        end = self.capacity.spend(self._key(b), start, n, tokens)

        def change(batch: Batch) -> bool:
            i = batch.internal
            if i.get("done") != done or batch.status == "ended":
                return False
            i.update(done=done + n, out_bytes=size, last_t=end)
            i["spent_tokens"] = i.get("spent_tokens", 0) + tokens
            i["tally"]["succeeded"] += ok
            i["tally"]["errored"] += n - ok
            return True

        self.emu.state.update_batch(b.id, change)

    def _end(self, b: Batch, now: float, unrun: str | None) -> bool:
        """End the batch: unrun requests become `unrun` results; publish counts and file."""
        state = self.emu.state
        internal = b.internal
        done, total = internal["done"], internal["total"]
        out = state.work_path(b.id, "out")
        with out.open("ab") as f:
            f.truncate(int(internal.get("out_bytes", 0)))
            if unrun is not None and done < total:
                handle = self._handle(b)
                result = orjson.dumps({"type": unrun})
                for start in range(done, total, CHUNK):
                    chunk = []
                    for position in range(start, min(total, start + CHUNK)):
                        custom_id = orjson.loads(handle.line(position))["custom_id"]
                        chunk.append(
                            b'{"custom_id":'
                            + orjson.dumps(custom_id)
                            + b',"result":'
                            + result
                            + b"}\n"
                        )
                    f.write(b"".join(chunk))
        self._release(b.id)
        out.replace(state.work_path(b.id, "results"))

        def change(batch: Batch) -> bool:
            if batch.status == "ended":
                return False
            tally = batch.internal["tally"]
            counts = dict.fromkeys(OUTCOMES, 0) | {"processing": 0}
            counts["succeeded"], counts["errored"] = tally["succeeded"], tally["errored"]
            if unrun is not None:
                counts[unrun] = total - done
            batch.obj["request_counts"] = counts
            batch.obj["processing_status"] = "ended"
            batch.obj["ended_at"] = rfc3339(now)
            batch.obj["results_url"] = f"/v1/messages/batches/{batch.id}/results"
            batch.internal["ended"] = now
            return True

        state.update_batch(b.id, change)
        for suffix in ("req", "idx"):
            state.work_path(b.id, suffix).unlink(missing_ok=True)
        return True
