"""Batch processing, off the event loop: one thread that moves batches through their states.

`tick(now)` does one round: each active batch gets at most one step (validate it, process
one chunk of its lines, expire, cancel or finalize it). The thread is a loop around `tick`.

Lines are processed in a deterministic shuffled order (a permutation seeded by the batch
id), so output files are not in input order but a restart reproduces them byte for byte.
The processing rate is in requests per *virtual* second: a batch earns
`rate × (virtual now − last processed time)` lines of credit, so advancing the clock lets
it catch up at CPU speed, and nothing is processed after a (non-Azure) `expires_at`. A
model with a `capacity` shares it among all its batches (`capacity.py`).

Validation parses every line once; a chat batch's usual lines (plain text, one choice) are
then answered from what it kept of them (`prepared.py`), without reading the input again,
and the others are read and parsed in full. The thread rests while no batch is active
(every call that makes work wakes it) and looks again every 10 ms while one waits for its
time.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from array import array
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from llmbatch.emulator import prepared
from llmbatch.emulator.anthropic_worker import MessageBatchWorker
from llmbatch.emulator.capacity import Capacity
from llmbatch.emulator.chat_synth import plain_chat_reply
from llmbatch.emulator.gemini_worker import GeminiWorker
from llmbatch.emulator.lines import processing_order
from llmbatch.emulator.replies import is_reasoning
from llmbatch.emulator.state import Batch
from llmbatch.emulator.surfaces import flavor_of
from llmbatch.emulator.synth import (
    RequestError,
    check_counts,
    error_body,
    kind_of,
    respond_json,
    share,
)
from llmbatch.emulator.validation import (
    DEFAULT_MODERATION_MODEL,
    UNCOUNTED,
    scan,
    tokens_path,
)

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]
log = logging.getLogger("llmbatch.emulator")

CHUNK = 512
POLL_S = 0.01  # how often the worker looks at active batches waiting for their time
IDLE_S = 1.0  # and with none active (a safety net: calls that make work wake it)
#: One result line, `{"id", "custom_id", "response": {"status_code", "request_id", "body"},
#: "error": null}` as orjson writes it, with the body encoded once.
_RECORD = (
    b'{"id":"batch_req_%s","custom_id":%s,"response":{"status_code":%d,"request_id":"req_%s",'
    b'"body":%s},"error":null}\n'
)
UNRUN_MESSAGES = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


@dataclass
class _Open:
    """A running batch's line index, processing order and input handle. Lines are read with
    `pread`, not from a map: the pages of a mapped input count in the emulator's RSS (the
    order is shuffled, so every page is touched), ~25 MB for each 50,000-line batch open."""

    offsets: array[int]
    seed: str
    fd: int
    prompts: array[int] | None = None  # each line's prompt tokens, as validation counted
    prepared: prepared.Prepared | None = None  # a chat batch's lines, as validation read them
    _order: array[int] | None = None

    @property
    def order(self) -> array[int]:
        """Made when first needed: a prepared batch's records are in this order already."""
        if self._order is None:
            self._order = processing_order(len(self.offsets) - 1, self.seed)
        return self._order

    def line(self, position: int) -> bytes:
        i = self.order[position]
        start, end = self.offsets[i], self.offsets[i + 1]
        return os.pread(self.fd, end - start, start)

    def prompt(self, position: int) -> int | None:
        if self.prompts is None:
            return None
        n = self.prompts[self.order[position]]
        return None if n == UNCOUNTED else n

    def close(self) -> None:
        os.close(self.fd)
        if self.prepared is not None:
            self.prepared.close()


class Worker:
    """The processing thread of one emulator."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._open: dict[str, _Open] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._active = True  # whether the last round found a batch active
        self.capacity = Capacity(emu)
        self.messages = MessageBatchWorker(emu, self.capacity)
        self.gemini = GeminiWorker(emu, self.capacity)
        self._recover()

    # --- thread ------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="llmbatch-emulator", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.emu.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        for handle in self._open.values():
            handle.close()
        self._open.clear()
        self.messages.close()
        self.gemini.close()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stop.is_set()

    def _run(self) -> None:
        while not self._stop.is_set():
            generation = self.emu.generation  # read before the clock: see Emulator.advance
            self.emu.wake.clear()  # before the round: a wake during it ends the wait below
            try:
                busy = self.tick(self.emu.now())
            except Exception:  # keep serving; a bug in one batch must not stop the others
                log.exception("emulator worker step failed")
                busy = False
            if not busy:
                self.emu.caught_up(generation)
                # With no batch active nothing is due until a call wakes the worker (every
                # create, cancel, advance and control step does): no round every 10 ms.
                self.emu.wake.wait(POLL_S if self._active else IDLE_S)

    def _recover(self) -> None:
        """After a restart, cut partial output back to the last saved progress."""
        for batch in self.emu.state.active_batches():
            if batch.flavor == "anthropic":
                self.messages.recover(batch)
            if batch.flavor == "gemini":
                self.gemini.recover(batch)
                continue
            for suffix, key in (("out", "out_bytes"), ("err", "err_bytes")):
                path = self.emu.state.work_path(batch.id, suffix)
                if path.exists():
                    with path.open("r+b") as f:
                        f.truncate(int(batch.internal.get(key, 0)))

    # --- one round ---------------------------------------------------------------------------

    def tick(self, now: float) -> bool:
        """Give every active batch one step at virtual time `now`; True if any did work."""
        busy = False
        batches = self.emu.state.active_batches()
        self._active = bool(batches)
        for batch in batches:
            if self._stop.is_set():
                break
            if batch.flavor == "anthropic":
                busy |= self.messages.step(batch, now)
            elif batch.flavor == "gemini":
                busy |= self.gemini.step(batch, now)
            else:
                busy |= self._step(batch, now)
        return busy

    def _step(self, b: Batch, now: float) -> bool:
        cfg, internal = self.emu.cfg, b.internal
        if b.status == "validating":
            if internal.get("force_expire"):
                return self._end(b, now, "expired", None)
            if (
                internal.get("hold") == "validating"
                or now < internal["created"] + cfg.validating_seconds
            ):
                return False
            return self._validate(b, now)
        if b.status == "in_progress":
            return self._progress(b, now)
        if b.status == "finalizing":
            if (
                internal.get("hold") == "finalizing"
                or now < internal["finalizing"] + cfg.finalizing_seconds
            ):
                return False
            return self._end(b, now, "completed", None)
        if b.status == "cancelling" and now >= internal["cancelling"] + cfg.cancelling_seconds:
            return self._end(b, now, "cancelled", "batch_cancelled")
        return False

    # --- validating --------------------------------------------------------------------------

    def _validate(self, b: Batch, now: float) -> bool:
        emu, flavor = self.emu, flavor_of(b.flavor, self.emu.cfg)
        # Validation took effect when it was due (or when a hold was released), not when this
        # step runs: after a clock advance, the batch has been processing since then.
        due = b.internal["created"] + emu.cfg.validating_seconds
        now = min(now, max(due, float(b.internal.get("released", 0.0))))
        forced = b.internal.get("fail_validation")
        if forced:
            errors = [forced]
            result = None
        else:
            path = emu.state.file_path(b.obj["input_file_id"])
            index = emu.state.work_path(b.id, "idx")
            result = scan(path, flavor, b.obj["endpoint"], emu.cfg, index, batch_id=b.id)
            errors = result.errors
            if not errors and result.model is not None:
                limit = emu.cfg.quotas.get(b.flavor, {}).get(result.model)
                used = emu.state.enqueued_tokens(b.flavor, result.model)
                if limit is not None and used + result.tokens > limit:
                    errors = [
                        {
                            "code": "token_limit_exceeded",
                            "message": f"Enqueued token limit reached for {result.model}: "
                            f"{used} tokens are enqueued, this batch needs {result.tokens} "
                            f"and the limit is {limit}.",
                            "param": None,
                            "line": None,
                        }
                    ]

        def change(batch: Batch) -> bool:
            if batch.status != "validating":
                return False  # cancelled meanwhile; the cancelling step takes over
            if errors:
                batch.obj.update(status="failed", failed_at=int(now))
                batch.obj["errors"] = {"object": "list", "data": errors}
                return True
            assert result is not None
            batch.obj.update(status="in_progress", in_progress_at=int(now), model=result.model)
            batch.obj["request_counts"]["total"] = result.total
            batch.internal.update(
                total=result.total,
                tokens=result.tokens,
                done=0,
                out_bytes=0,
                err_bytes=0,
                last_t=now,
                started=now,
            )
            return True

        emu.state.update_batch(b.id, change)
        return True

    # --- in progress -------------------------------------------------------------------------

    def _handle(self, b: Batch) -> _Open:
        handle = self._open.get(b.id)
        if handle is None:
            state = self.emu.state
            index = state.work_path(b.id, "idx")
            offsets = array("Q")
            offsets.frombytes(index.read_bytes())
            total = len(offsets) - 1
            fd = os.open(state.file_path(b.obj["input_file_id"]), os.O_RDONLY)
            prompts = array("I")
            counted = tokens_path(index)
            if counted.exists():  # a batch validated before there were .tok files has none
                prompts.frombytes(counted.read_bytes())
            records = None
            if prepared.exists(index):  # nor .pre files before those
                records = prepared.Prepared(index)
                if records.total != total:
                    records.close()
                    records = None
            handle = self._open[b.id] = _Open(
                offsets,
                b.id,
                fd,
                prompts if len(prompts) == total else None,
                records,
            )
        return handle

    def _release(self, batch_id: str) -> None:
        handle = self._open.pop(batch_id, None)
        if handle is not None:
            handle.close()

    def _progress(self, b: Batch, now: float) -> bool:
        internal = b.internal
        flavor = flavor_of(b.flavor, self.emu.cfg)
        if internal.get("force_expire"):
            return self._end(b, now, "expired", "batch_expired")
        total, done = internal["total"], internal["done"]
        horizon = min(now, b.obj["expires_at"]) if flavor.expires else now
        usage = b.obj["usage"]
        per_request = (internal.get("tokens", 0) / max(total, 1)) + (
            usage["output_tokens"] / done if done else 128
        )
        key = (b.flavor, b.obj["model"] or DEFAULT_MODERATION_MODEL)
        n, start = self.capacity.grant(key, internal["last_t"], horizon, total - done, per_request)
        if n > 0:
            self._process(b, done, n, start)
            # The last line done: on to finalizing, and completed when that is due, in this
            # step, not a round later each (after every other batch's step: validating
            # another 50,000-line batch takes a second or more).
            for _ in range(2 if done + n >= total else 0):
                fresh = self.emu.state.get_batch(b.id)
                if fresh is None or not self._step(fresh, now):
                    break
            return True
        if done >= total:
            return self._to_finalizing(b, now)
        if flavor.expires and now >= b.obj["expires_at"]:
            return self._end(b, now, "expired", "batch_expired")
        return False

    def _process(self, b: Batch, done: int, n: int, start: float) -> None:
        emu, cfg = self.emu, self.emu.cfg
        handle = self._handle(b)
        kind = kind_of(b.obj["endpoint"]) or "chat"
        model = b.obj["model"] or DEFAULT_MODERATION_MODEL
        card = flavor_of(b.flavor, self.emu.cfg).card(cfg, model)
        created = int(b.obj["in_progress_at"])
        out: list[bytes] = []
        err: list[bytes] = []
        ok = failed = tokens_in = tokens_out = reasoning = 0
        salt, failure_rate = b.id, cfg.request_failure_rate
        length_rate, dimensions = cfg.length_rate, cfg.embedding_dimensions
        failure_status = cfg.request_failure_status
        failure = orjson.dumps(
            error_body(failure_status, "The server had an error while processing your request.")
        )
        records = [prepared.FULL] * n
        ceiling, reasoning_model, head = 0, False, b""
        served, window = False, 0
        if handle.prepared is not None and card is not None and kind == "chat":
            records = handle.prepared.records(done, n)
            ceiling, reasoning_model = card.max_output_tokens, is_reasoning(card.runs_as)
            served, window = card.serves("chat"), card.context_window
            head = b'","object":"chat.completion","created":%d,"model":%s' % (
                created,
                orjson.dumps(card.runs_as),
            )
        unpack, reply, keys = prepared.HEAD.unpack_from, plain_chat_reply, prepared.KEYS
        ids_at, reply_id_at, custom_id_at = prepared.IDS, prepared.REPLY_ID, prepared.CUSTOM_ID
        for position, record in zip(range(done, done + n), records, strict=True):
            if record[0]:  # a plain chat line, as validation read it: no JSON to parse
                assert card is not None
                flag, h, draw, prompt, cap = unpack(record)
                ids = record[ids_at]
                if failure_rate and draw / 2**32 < failure_rate:
                    status, body = failure_status, failure
                else:
                    try:
                        # `check_counts` refuses only these (cap 0: none)
                        if (
                            not served
                            or 0 < ceiling < cap
                            or (window > 0 and prompt + cap > window)
                        ):
                            check_counts("chat", card, prompt, cap or None, keys[flag - 1])
                        body, spent, thought = reply(
                            record[reply_id_at],
                            h,
                            head,
                            reasoning_model,
                            prompt,
                            cap or None,
                            length_rate,
                            ceiling,
                        )
                        status = 200
                        tokens_in += prompt
                        tokens_out += spent
                        reasoning += thought
                    except RequestError as e:
                        status = e.status
                        body = orjson.dumps(error_body(e.status, e.message, e.param, e.code))
                line = _RECORD % (ids[:32], record[custom_id_at:], status, ids[32:], body)
                if status == 200:
                    ok += 1
                    out.append(line)
                else:
                    failed += 1
                    err.append(line)
                continue
            request = orjson.loads(handle.line(position))
            custom_id = request["custom_id"]
            digest = prepared.request_ids(salt, custom_id)
            if failure_rate and share(digest, 0) < failure_rate:
                status, body = failure_status, failure
            else:
                try:
                    body, usage = respond_json(
                        kind,
                        request["body"],
                        model=model,
                        created=created,
                        salt=salt,
                        length_rate=length_rate,
                        embedding_dimensions=dimensions,
                        card=card,
                        prompt=handle.prompt(position),
                    )
                    status = 200
                    tokens_in += usage.input
                    tokens_out += usage.output
                    reasoning += usage.reasoning
                except RequestError as e:
                    status = e.status
                    body = orjson.dumps(error_body(e.status, e.message, e.param, e.code))
            line = _RECORD % (
                digest[:16].hex().encode(),
                orjson.dumps(custom_id),
                status,
                digest[16:].hex().encode(),
                body,
            )
            if status == 200:
                ok += 1
                out.append(line)
            else:
                failed += 1
                err.append(line)
        out_bytes = self._append(b.id, "out", out)
        err_bytes = self._append(b.id, "err", err)
        end = self.capacity.spend((b.flavor, model), start, n, tokens_in + tokens_out)

        def change(batch: Batch) -> bool:
            i = batch.internal
            if i.get("done") != done:
                return False
            i.update(done=done + n, out_bytes=out_bytes, err_bytes=err_bytes)
            i["last_t"] = end
            counts = batch.obj["request_counts"]
            counts["completed"] += ok
            counts["failed"] += failed
            usage = batch.obj["usage"]
            usage["input_tokens"] += tokens_in
            usage["output_tokens"] += tokens_out
            usage["output_tokens_details"]["reasoning_tokens"] += reasoning
            usage["total_tokens"] += tokens_in + tokens_out
            return True

        emu.state.update_batch(b.id, change)

    def _append(self, batch_id: str, suffix: str, lines: list[bytes]) -> int:
        path = self.emu.state.work_path(batch_id, suffix)
        with path.open("ab") as f:
            if lines:
                f.write(b"".join(lines))
            return f.tell()

    def _to_finalizing(self, b: Batch, now: float) -> bool:
        now = min(now, float(b.internal["last_t"]))  # when the last line was done

        def change(batch: Batch) -> bool:
            if batch.status != "in_progress":
                return False
            batch.obj.update(status="finalizing", finalizing_at=int(now))
            batch.internal["finalizing"] = now
            return True

        self._release(b.id)
        self.emu.state.update_batch(b.id, change)
        return True

    # --- endings -----------------------------------------------------------------------------

    def _write_unrun(self, b: Batch, code: str) -> int:
        """Write every request not yet run as an error line with `code`; returns the error
        file's size."""
        internal = b.internal
        done, total = internal.get("done", 0), internal.get("total", 0)
        path = self.emu.state.work_path(b.id, "err")
        if done >= total:
            return path.stat().st_size if path.exists() else 0
        handle = self._handle(b)
        error = {"code": code, "message": UNRUN_MESSAGES[code]}
        with path.open("ab") as f:
            for start in range(done, total, CHUNK):
                lines = []
                for position in range(start, min(total, start + CHUNK)):
                    custom_id = orjson.loads(handle.line(position))["custom_id"]
                    ids = hashlib.blake2b(f"{b.id}:{custom_id}".encode(), digest_size=32)
                    record = {"id": "batch_req_" + ids.hexdigest()[:32], "custom_id": custom_id}
                    record |= {"response": None, "error": error}
                    lines.append(orjson.dumps(record) + b"\n")
                f.write(b"".join(lines))
            return f.tell()

    def _end(self, b: Batch, now: float, status: str, unrun_code: str | None) -> bool:
        """Finish a batch as `status`: write unrun lines, publish output and error files."""
        emu, flavor = self.emu, flavor_of(b.flavor, self.emu.cfg)
        validated = "total" in b.internal
        if validated and unrun_code is not None:
            b.internal["err_bytes"] = self._write_unrun(b, unrun_code)
        self._release(b.id)
        files: list[Json] = []
        file_ids: dict[str, str | None] = {"out": None, "err": None}
        if validated:
            ttl = (b.internal.get("output_expires_after") or {}).get("seconds")
            if ttl is None and not flavor.azure:
                ttl = 30 * 86_400
            for suffix in ("out", "err"):
                work = emu.state.work_path(b.id, suffix)
                size = int(b.internal.get(f"{suffix}_bytes", 0))
                if size == 0 and not (suffix == "err" and flavor.always_error_file):
                    work.unlink(missing_ok=True)
                    continue
                # Derived from the batch id, so a crash between rename and commit is harmless.
                file_id = (
                    "file-"
                    + hashlib.blake2b(f"{b.id}:{suffix}".encode(), digest_size=12).hexdigest()
                )
                target = emu.state.file_path(file_id)
                if work.exists():
                    work.replace(target)
                elif not target.exists():
                    target.touch()
                name = "output" if suffix == "out" else "error"
                expires = int(now) + int(ttl) if ttl is not None else None
                files.append(
                    emu.file_object(file_id, size, f"{b.id}_{name}.jsonl", "batch_output", expires)
                )
                file_ids[suffix] = file_id
        emu.state.work_path(b.id, "idx").unlink(missing_ok=True)
        tokens_path(emu.state.work_path(b.id, "idx")).unlink(missing_ok=True)
        prepared.remove(emu.state.work_path(b.id, "idx"))
        stamp = {"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}

        def change(batch: Batch) -> bool:
            batch.obj["status"] = status
            batch.obj[stamp[status]] = int(now)
            batch.obj["output_file_id"] = file_ids["out"]
            batch.obj["error_file_id"] = file_ids["err"]
            batch.internal["err_bytes"] = b.internal.get("err_bytes", 0)
            return True

        emu.state.update_batch(b.id, change, files=files)
        return True
