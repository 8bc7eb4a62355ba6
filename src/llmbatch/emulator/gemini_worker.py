"""Processing Gemini batches, one step at a time, inside the emulator's worker thread.

A batch waits `validating_seconds` in PENDING (or fails there, if its input file was
malformed), then runs: it earns `rate × virtual seconds` requests of credit, within its
model's shared capacity when one is set (`capacity.py`, as for the other doors), runs them
in request order (or a seeded shuffle with `gemini_shuffle_results`) and appends
one result per request to its `.out` file, saving progress after every chunk, so that a
restart cuts the file back and carries on byte for byte. `finalizing_seconds` after the last
request it SUCCEEDS: the results become the File `files/batch-ID` (file batches) or the
inline responses of the Operation. A cancel takes effect `cancelling_seconds` later
(CANCELLED), and 48 virtual hours after create an unfinished batch EXPIRES; both keep the
results of the requests that ran.

Each request is checked as `generateContent` / `embedContent` would check it (a prompt over
the model's context window included): a bad one is a result with Google's error object (`{"code": 400, "message", "status":
"INVALID_ARGUMENT"}`); the `request_failure_rate` share fails with
`request_failure_status` (500 INTERNAL, 503 UNAVAILABLE, 429 RESOURCE_EXHAUSTED).
A file batch's result lines are `{"key", "response" | "error"}`; an inline batch's are
InlinedResponses `{"response" | "error", "metadata"}` carrying each request's metadata.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

import orjson

from llmbatch.emulator import gemini_batches as gb
from llmbatch.emulator import gemini_files
from llmbatch.emulator.capacity import Capacity
from llmbatch.emulator.gemini_synth import (
    RequestInvalid,
    check_embed,
    check_generate,
    check_window,
    embed,
    failure,
    generate,
    prompt_tokens,
    short_model,
)
from llmbatch.emulator.lines import Lines, OpenLines, append, truncate
from llmbatch.emulator.message_batches import rfc3339
from llmbatch.emulator.models import ModelCard
from llmbatch.emulator.state import Batch
from llmbatch.emulator.synth import share

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]


class GeminiWorker:
    """The Gemini part of the emulator's processing thread."""

    def __init__(self, emu: Emulator, capacity: Capacity) -> None:
        self.emu = emu
        self.capacity = capacity
        self.lines = OpenLines()

    def close(self) -> None:
        self.lines.close()

    def recover(self, b: Batch) -> None:
        """After a restart: cut `.out` back to the saved progress, and put back the results
        of an ending that was interrupted after its rename."""
        state = self.emu.state
        out = state.work_path(b.id, "out")
        for published in (state.work_path(b.id, "results"), state.file_path("batch-" + b.id)):
            if published.exists() and not out.exists():
                published.replace(out)
        truncate(out, int(b.internal.get("out_bytes", 0)))

    # --- one step ----------------------------------------------------------------------------

    def step(self, b: Batch, now: float) -> bool:
        """One step of an active batch at virtual time `now`; True if it did work."""
        obj, internal, cfg = b.obj, b.internal, self.emu.cfg
        if obj.get("deleted"):
            return self._forget(b)
        cancel_at = internal.get("cancelling")
        if cancel_at is not None:
            cancel_at += cfg.cancelling_seconds
        if b.status == gb.PENDING:
            if cancel_at is not None and now >= cancel_at:
                return self._end(b, now, gb.CANCELLED)
            if internal.get("force_expire") or now >= internal["expires"]:
                return self._end(b, now, gb.EXPIRED)
            if internal.get("hold") == "validating":
                return False
            if now < internal["created"] + cfg.validating_seconds:
                return False
            if internal.get("invalid"):
                return self._end(b, now, gb.FAILED, internal["invalid"])
            return self._start(b, now)
        if internal.get("force_expire"):
            return self._end(b, now, gb.EXPIRED)
        total, done = internal["total"], internal["done"]
        deadline = internal["expires"] if cancel_at is None else min(cancel_at, internal["expires"])
        per_request = internal.get("spent_tokens", 0) / done if done else 256
        n, start = self.capacity.grant(
            self._key(b), internal["last_t"], min(now, deadline), total - done, per_request
        )
        if n > 0:
            self._process(b, done, n, start, now)
            return True
        if cancel_at is not None and now >= cancel_at:
            return self._end(b, now, gb.CANCELLED)
        if done >= total:
            finished = internal.get("finished", now)
            if internal.get("hold") == "finalizing" or now < finished + cfg.finalizing_seconds:
                return False
            return self._end(b, now, gb.SUCCEEDED)
        if now >= internal["expires"]:
            return self._end(b, now, gb.EXPIRED)
        return False

    def _start(self, b: Batch, now: float) -> bool:
        # It runs from when validation was due (or its hold was released), not from when this
        # step comes: a step late after a clock advance must not lose the advance's credit.
        due = b.internal["created"] + self.emu.cfg.validating_seconds
        at = min(now, max(due, float(b.internal.get("released", 0.0))))

        def change(batch: Batch) -> bool:
            if batch.status != gb.PENDING:
                return False
            batch.obj["status"] = gb.RUNNING
            batch.obj["updateTime"] = rfc3339(at)
            batch.internal["last_t"] = at
            return True

        self.emu.state.update_batch(b.id, change)
        return True

    # --- running requests --------------------------------------------------------------------

    @staticmethod
    def _key(b: Batch) -> tuple[str, str]:
        """Capacity is per model (`models/NAME`, as the batch names it)."""
        return (b.flavor, str(b.obj["model"]))

    def _open(self, b: Batch) -> Lines:
        state = self.emu.state
        input_file = b.obj["input_file_id"]
        data = state.file_path(input_file) if input_file else state.work_path(b.id, "req")
        seed = b.id if b.internal.get("shuffle") else None
        index = state.work_path(b.id, "idx")
        return self.lines.get(b.id, lambda: Lines(index, data, shuffle_seed=seed))

    def _result(self, b: Batch, index: int, line: Json, card: ModelCard | None) -> Json:
        cfg, kind, model = self.emu.cfg, b.obj["kind"], b.obj["model"]
        salt = f"{b.id}:{index}"
        dice = hashlib.blake2b(salt.encode(), digest_size=8).digest()
        if share(dice, 0) < cfg.request_failure_rate:
            return {"error": failure(cfg.request_failure_status)}
        request: Any = line.get("request")
        try:
            if kind == "embed":
                check_embed(request, model)
                return {"response": embed(request, default_dimensions=cfg.embedding_dimensions)}
            check_generate(request, model)
            prompt = prompt_tokens(request)
            if card is not None:
                check_window(prompt, card.context_window)
            response = generate(
                request, model=model, salt=salt, length_rate=cfg.length_rate, prompt=prompt
            )
            return {"response": response}
        except RequestInvalid as e:
            return {"error": e.error}

    def _process(self, b: Batch, done: int, n: int, start: float, now: float) -> None:
        lines = self._open(b)
        inline = not b.obj["input_file_id"]
        # A model removed from the catalog after create still runs (without a window check).
        card = self.emu.cfg.catalog("gemini").get(short_model(b.obj["model"]))
        out, ok, tokens = [], 0, 0
        for position in range(done, done + n):
            index = lines.index(position)
            line = orjson.loads(lines.line(position))
            result = self._result(b, index, line, card)
            ok += "response" in result
            tokens += _tokens(result)
            if inline:
                record = result | ({"metadata": line["metadata"]} if "metadata" in line else {})
            else:
                record = ({"key": line["key"]} if "key" in line else {}) | result
            out.append(orjson.dumps(record) + b"\n")
        size = append(self.emu.state.work_path(b.id, "out"), out)
        end = self.capacity.spend(self._key(b), start, n, tokens)

        def change(batch: Batch) -> bool:
            i = batch.internal
            if i.get("done") != done or batch.status != gb.RUNNING:
                return False
            i.update(done=done + n, out_bytes=size, last_t=end)
            i["spent_tokens"] = i.get("spent_tokens", 0) + tokens
            if done + n >= i["total"]:
                i["finished"] = now
            stats = batch.obj["stats"]
            stats["ok"] += ok
            stats["failed"] += n - ok
            batch.obj["updateTime"] = rfc3339(now)
            return True

        self.emu.state.update_batch(b.id, change)

    # --- endings -----------------------------------------------------------------------------

    def _end(self, b: Batch, now: float, state: str, error: Json | None = None) -> bool:
        """End as `state`: publish the results of the requests that ran (none if FAILED)."""
        emu, obj = self.emu, b.obj
        self.lines.release(b.id)
        out = emu.state.work_path(b.id, "out")
        truncate(out, int(b.internal.get("out_bytes", 0)))
        files: list[Json] = []
        output_file = None
        if state != gb.FAILED and obj["input_file_id"]:
            if b.internal.get("done", 0) > 0 or state == gb.SUCCEEDED:
                file_id = "batch-" + b.id
                target = emu.state.file_path(file_id)
                if out.exists():
                    out.replace(target)
                elif not target.exists():
                    target.touch()
                digest = hashlib.sha256()
                with target.open("rb") as f:
                    while block := f.read(1 << 20):
                        digest.update(block)
                obj_file = gemini_files.new_object(
                    emu,
                    file_id,
                    size=target.stat().st_size,
                    sha256=digest.digest(),
                    mime_type="application/jsonl",
                    display_name=f"{obj.get('displayName') or b.id} results",
                    source="GENERATED",
                )
                files.append(obj_file)
                output_file = "files/" + file_id
        elif state != gb.FAILED:
            if out.exists():
                out.replace(emu.state.work_path(b.id, "results"))
            else:
                emu.state.work_path(b.id, "results").touch()

        def change(batch: Batch) -> bool:
            if batch.status not in (gb.PENDING, gb.RUNNING):
                return False
            batch.obj.update(status=state, endTime=rfc3339(now), updateTime=rfc3339(now))
            batch.obj["output_file"] = output_file
            batch.obj["error"] = error
            return True

        emu.state.update_batch(b.id, change, files=files)
        for suffix in ("req", "idx", "out"):
            emu.state.work_path(b.id, suffix).unlink(missing_ok=True)
        return True

    def _forget(self, b: Batch) -> bool:
        """A batch deleted while it was active: stop it and drop its work files."""
        self.lines.release(b.id)

        def change(batch: Batch) -> bool:
            batch.obj["status"] = gb.DELETED
            return True

        self.emu.state.update_batch(b.id, change)
        gb.remove_work(self.emu, b.id)
        return True


def _tokens(result: Json) -> int:
    """The tokens a result used (what a model's shared capacity is spent by)."""
    response = result.get("response")
    if not isinstance(response, dict):
        return 0
    usage = response.get("usageMetadata")
    if isinstance(usage, dict):
        return int(usage.get("totalTokenCount", 0))
    return int(response.get("tokenCount", 0))
