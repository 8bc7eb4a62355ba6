"""Gemini batches as objects: create (inline requests or an uploaded file; generateContent or
embedContent), the long-running Operation the API shows, list pages, cancel, delete and the
control API's actions. Processing is `gemini_worker.py`.

A batch is a row of the `batches` table (flavour `gemini`) whose `obj` is the emulator's
record of it, shown through `operation()`::

    DATA_DIR/work/ID.req       an inline batch's requests, one line each: {"metadata", "request"}
    DATA_DIR/work/ID.idx       offsets of the request lines (of `.req`, or of the input file)
    DATA_DIR/work/ID.out       results so far (cut back to the saved size on restart)
    DATA_DIR/work/ID.results   an inline batch's results once it has ended
    DATA_DIR/files/batch-ID    a file batch's results, the File `files/batch-ID`

States: `BATCH_STATE_PENDING` (for `validating_seconds`) → `RUNNING` → `SUCCEEDED` (after
`finalizing_seconds`); `FAILED` when the input file is not JSONL of `{"key", "request"}`
objects (the first bad line is named in the Operation's `error`); `CANCELLED`
(`cancelling_seconds` after a cancel) and `EXPIRED` (48 virtual hours after create) keep the
results of the requests that ran, the others are left out (`pendingRequestCount` says how
many). Delete works in any state (the service's LRO delete), and the batch is gone from get
and list at once. Choices where the service documents nothing: an unknown batch is 404
NOT_FOUND, cancelling an ended one 400 FAILED_PRECONDITION, an unknown or expired input
file 400 INVALID_ARGUMENT, results in request order (`gemini_shuffle_results` for
processing order).
"""

from __future__ import annotations

import threading
from array import array
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from llmbatch.emulator import gemini_files
from llmbatch.emulator.envelope import GoogleApiError
from llmbatch.emulator.gemini_synth import (
    embed_tokens,
    error_object,
    pick,
    prompt_tokens,
    short_model,
)
from llmbatch.emulator.lines import write_index
from llmbatch.emulator.message_batches import rfc3339
from llmbatch.emulator.state import Batch

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]

FLAVOR = "gemini"
JOB_TTL = 2 * 86_400
PENDING, RUNNING = "BATCH_STATE_PENDING", "BATCH_STATE_RUNNING"
SUCCEEDED, FAILED = "BATCH_STATE_SUCCEEDED", "BATCH_STATE_FAILED"
CANCELLED, EXPIRED = "BATCH_STATE_CANCELLED", "BATCH_STATE_EXPIRED"
ENDED = (SUCCEEDED, FAILED, CANCELLED, EXPIRED)
#: The status of a deleted batch's row (hidden from the API; kept so list tokens stay valid).
DELETED = "deleted"
_TYPE = "type.googleapis.com/google.ai.generativelanguage.v1main."
TYPES = {
    "generate": ("GenerateContentBatch", "GenerateContentBatchOutput", "batchGenerateContent"),
    "embed": ("EmbedContentBatch", "EmbedContentBatchOutput", "asyncBatchEmbedContent"),
}
WORK_FILES = ("req", "idx", "out", "results")
_queue_lock = threading.Lock()


def invalid(message: str) -> GoogleApiError:
    return GoogleApiError(400, message)


def not_found(batch_id: str) -> GoogleApiError:
    return GoogleApiError(404, f"Batch batches/{batch_id} was not found.")


def model_for(emu: Emulator, kind: str, name: str, version: str = "v1beta") -> str:
    """`models/NAME` for a model of the catalog that serves `kind`'s batch method (its
    card's `endpoints`), else the service's 404."""
    short = short_model(name)
    card = emu.cfg.catalog("gemini").get(short)
    if card is None or not card.serves(TYPES[kind][2]):
        raise GoogleApiError(
            404,
            f"models/{short} is not found for API version {version}, or is not "
            f"supported for {TYPES[kind][2]}. Call ListModels to see the list of available "
            "models and their supported methods.",
        )
    return f"models/{short}"


# --- create ----------------------------------------------------------------------------------


def create(emu: Emulator, kind: str, model_name: str, body: Any, version: str = "v1beta") -> Batch:
    """Check a create body, store the requests and a new PENDING batch (blocking: run off
    the loop). Raises 400/404 for a bad body, 429 when the model's queue is full."""
    model = model_for(emu, kind, model_name, version)
    batch = body.get("batch") if isinstance(body, dict) else None
    if not isinstance(batch, dict):
        raise invalid('Invalid JSON payload received: the body must be {"batch": {...}}.')
    display = pick(batch, "displayName")
    if display is not None and not isinstance(display, str):
        raise invalid("batch.display_name must be a string.")
    config = pick(batch, "inputConfig")
    if not isinstance(config, dict):
        raise invalid("batch.input_config is required.")
    inline, file_name = pick(config, "requests"), pick(config, "fileName")
    if (inline is None) == (file_name is None):
        raise invalid("batch.input_config needs exactly one of requests and file_name.")
    batch_id = emu.new_id("", 18)
    now = emu.now()
    internal: Json = {"created": now, "expires": now + JOB_TTL, "done": 0, "out_bytes": 0}
    input_file = ""
    count = _counter(emu, kind, model)
    problem: Json | None
    try:
        if inline is not None:
            total, tokens, problem = _write_inline(emu, batch_id, inline, count)
        else:
            if not isinstance(file_name, str):
                raise invalid("batch.input_config.file_name must be a string.")
            input_file = gemini_files.file_id_of(file_name)
            if emu.state.get_file(FLAVOR, input_file, now) is None:
                raise invalid(
                    f"batch.input_config.file_name: {file_name} does not exist or has expired "
                    "(uploads are kept 48 hours); upload it again."
                )
            total, tokens, problem = _scan_file(emu, batch_id, input_file, count)
        internal |= {"total": total, "tokens": tokens, "invalid": problem, "last_t": now}
        internal["shuffle"] = emu.cfg.gemini_shuffle_results
        obj: Json = {
            "id": batch_id,
            "status": PENDING,
            "kind": kind,
            "model": model,
            "displayName": display,
            "input_file_id": input_file,
            "createTime": rfc3339(now),
            "updateTime": rfc3339(now),
            "endTime": None,
            "stats": {"total": total, "ok": 0, "failed": 0},
            "output_file": None,
            "error": None,
            "deleted": False,
        }
        with _queue_lock:
            _check_queue(emu, model, tokens)
            directive = emu._take_directive()  # the control API's next-batches
            if directive:
                internal["hold"] = directive.get("hold")
                failed = directive.get("fail_validation")
                if failed:
                    internal["invalid"] = error_object(400, failed["message"])
            emu.state.add_batch(FLAVOR, obj, internal)
    except BaseException:
        for suffix in WORK_FILES:
            emu.state.work_path(batch_id, suffix).unlink(missing_ok=True)
        raise
    emu.wake.set()
    return Batch(0, FLAVOR, obj, internal)


def _no_count(request: Any) -> int:
    return 0


def _counter(emu: Emulator, kind: str, model: str) -> Callable[[Any], int]:
    """How to count a request's tokens for the queue: only when the model has a quota (the
    count is the slowest part of a create)."""
    if short_model(model) not in emu.cfg.quotas.get(FLAVOR, {}):
        return _no_count
    return embed_tokens if kind == "embed" else prompt_tokens


def _write_inline(
    emu: Emulator, batch_id: str, inline: Any, count: Callable[[Any], int]
) -> tuple[int, int, None]:
    requests = pick(inline, "requests")
    if not isinstance(requests, list) or not requests:
        raise invalid("batch.input_config.requests.requests must be a non-empty list.")
    offsets = array("Q", [0])
    tokens = 0
    with emu.state.work_path(batch_id, "req").open("wb") as f:
        for i, item in enumerate(requests):
            where = f"batch.input_config.requests.requests[{i}]"
            if not isinstance(item, dict) or not isinstance(item.get("request"), dict):
                raise invalid(f"{where}.request is required and must be an object.")
            metadata = item.get("metadata")
            if metadata is not None and not isinstance(metadata, dict):
                raise invalid(f"{where}.metadata must be an object.")
            line: Json = {"request": item["request"]}
            if metadata is not None:
                line["metadata"] = metadata
            tokens += count(item["request"])
            raw = orjson.dumps(line) + b"\n"
            f.write(raw)
            offsets.append(offsets[-1] + len(raw))
    write_index(emu.state.work_path(batch_id, "idx"), offsets)
    return len(requests), tokens, None


def _line_problem(raw: bytes) -> tuple[str | None, Any]:
    """Why a file line is not a `{"key", "request"}` object (None if it is), and the line."""
    try:
        line = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "is not valid JSON", None
    if not isinstance(line, dict):
        return "is not a JSON object", None
    key = line.get("key")
    if key is not None and not isinstance(key, str):
        return "has a 'key' that is not a string", None
    if not isinstance(line.get("request"), dict):
        return "has no 'request' object", None
    return None, line


def _scan_file(
    emu: Emulator, batch_id: str, file_id: str, count: Callable[[Any], int]
) -> tuple[int, int, Json | None]:
    """Index an input file's request lines and count their prompt tokens, streaming. The
    first malformed line makes the batch fail when it runs (the error names the line)."""
    offsets = array("Q")
    tokens, problem, offset = 0, None, 0
    with emu.state.file_path(file_id).open("rb") as f:
        for number, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            if not raw.strip():
                continue
            offsets.append(start)
            if problem is not None:
                continue
            why, line = _line_problem(raw)
            if why is not None:
                problem = error_object(
                    400,
                    f"files/{file_id} line {number} {why}: each line must be "
                    '{"key": "...", "request": {...}}.',
                )
                continue
            tokens += count(line["request"])
    total = len(offsets)
    offsets.append(offset)
    if total == 0 and problem is None:
        problem = error_object(400, f"files/{file_id} holds no requests.")
    write_index(emu.state.work_path(batch_id, "idx"), offsets)
    return total, tokens, problem


def _check_queue(emu: Emulator, model: str, tokens: int) -> None:
    limit = emu.cfg.quotas.get(FLAVOR, {}).get(short_model(model))
    if limit is None:
        return
    used = sum(
        int(b.internal.get("tokens", 0))
        for b in emu.state.active_batches()
        if b.flavor == FLAVOR and b.obj["model"] == model
    )
    if used + tokens > limit:
        raise GoogleApiError(
            429,
            f"Enqueued token limit reached for {short_model(model)}: {used} tokens are "
            f"enqueued, this batch needs {tokens} and the limit is {limit}. Try again once "
            "batches finish, or split the batch.",
        )


# --- the Operation ---------------------------------------------------------------------------


def _stats(obj: Json) -> Json:
    s = obj["stats"]
    counts = {
        "requestCount": s["total"],
        "successfulRequestCount": s["ok"],
        "failedRequestCount": s["failed"],
        "pendingRequestCount": s["total"] - s["ok"] - s["failed"],
    }
    # int64 fields travel as strings, and zero fields are left out.
    return {k: str(v) for k, v in counts.items() if v}


def _output(emu: Emulator, obj: Json) -> Json | None:
    if obj["output_file"] is not None:
        return {"responsesFile": obj["output_file"]}
    path = emu.state.work_path(obj["id"], "results")
    if obj["status"] not in ENDED or obj["input_file_id"] or not path.exists():
        return None
    lines = [ln for ln in path.read_bytes().split(b"\n") if ln]
    if not lines:  # cancelled or expired before any request ran
        return None
    fragment = orjson.Fragment(b'{"inlinedResponses":[' + b",".join(lines) + b"]}")
    return {"inlinedResponses": fragment}


def operation(emu: Emulator, obj: Json) -> Json:
    """The public Operation of a batch record."""
    name = "batches/" + obj["id"]
    batch_type, output_type, _ = TYPES[obj["kind"]]
    meta: Json = {"@type": _TYPE + batch_type, "model": obj["model"]}
    if obj.get("displayName") is not None:
        meta["displayName"] = obj["displayName"]
    if obj["input_file_id"]:
        meta["inputConfig"] = {"fileName": "files/" + obj["input_file_id"]}
    output = _output(emu, obj)
    if output is not None:
        meta["output"] = output
    meta |= {"createTime": obj["createTime"], "updateTime": obj["updateTime"]}
    if obj["endTime"] is not None:
        meta["endTime"] = obj["endTime"]
    meta |= {"batchStats": _stats(obj), "state": obj["status"], "name": name}
    op: Json = {"name": name, "metadata": meta}
    if obj["status"] in ENDED:
        op["done"] = True
        if obj["error"] is not None:
            op["error"] = obj["error"]
        else:
            op["response"] = {"@type": _TYPE + output_type} | (output or {})
    return op


def get(emu: Emulator, batch_id: str) -> Batch:
    batch = emu.state.get_batch(batch_id, FLAVOR)
    if batch is None or batch.obj.get("deleted"):
        raise not_found(batch_id)
    return batch


def list_page(emu: Emulator, size: int, token: str | None) -> tuple[list[Json], str | None]:
    """One page of batch records, newest first, and the next page's token. Deleted rows
    are skipped (they stay so that a token naming one still works)."""
    after = gemini_files.decode_token(token) if token else None
    if after is not None and emu.state.get_batch(after, FLAVOR) is None:
        raise invalid("Invalid page token.")
    lag = emu.faults.list_lag("batches.list", FLAVOR)
    hide_after = emu.now() - lag if lag else None
    page: list[Json] = []
    while True:
        rows, more = emu.state.list_batches(
            FLAVOR, limit=size + 1, after=after, hide_after=hide_after
        )
        page += [r for r in rows if not r.get("deleted")]
        if len(page) > size:
            return page[:size], gemini_files.encode_token(page[size - 1]["id"])
        if not more:
            return page, None
        after = rows[-1]["id"]


# --- cancel, delete --------------------------------------------------------------------------


def cancel(emu: Emulator, batch_id: str) -> None:
    """Start cancelling (a no-op while cancelling); 400 FAILED_PRECONDITION once ended."""
    get(emu, batch_id)
    ended: list[str] = []
    now = emu.now()

    def change(b: Batch) -> bool:
        if b.status in ENDED or b.status == DELETED:
            ended.append(b.status)
            return False
        if "cancelling" in b.internal:
            return False
        b.internal["cancelling"] = now
        return True

    emu.state.update_batch(batch_id, change)
    if ended:
        raise GoogleApiError(
            400,
            f"Batch batches/{batch_id} has ended ({ended[0]}); it can no longer be cancelled.",
            "FAILED_PRECONDITION",
        )
    emu.wake.set()


def delete(emu: Emulator, batch_id: str) -> None:
    """Forget a batch in any state (an unfinished one stops running)."""
    get(emu, batch_id)

    def change(b: Batch) -> bool:
        b.obj["deleted"] = True
        if b.status in ENDED:
            b.obj["status"] = DELETED
        return True

    batch = emu.state.update_batch(batch_id, change)
    if batch is not None and batch.status == DELETED:
        remove_work(emu, batch_id)
    emu.wake.set()  # an active one is cleaned up by the worker, which may hold its files


def remove_work(emu: Emulator, batch_id: str) -> None:
    for suffix in WORK_FILES:
        emu.state.work_path(batch_id, suffix).unlink(missing_ok=True)


# --- control API -----------------------------------------------------------------------------


def control(emu: Emulator, batch: Batch, action: str, body: Json) -> Json:
    """`POST /_emulator/batches/{id}/{action}` on a Gemini batch: hold (PENDING as
    `validating`, or RUNNING at the end as `finalizing`), release, expire, cancel, fail."""
    if action == "cancel":
        cancel(emu, batch.id)
        return operation(emu, get(emu, batch.id).obj)
    allowed = {
        "hold": (PENDING, RUNNING),
        "release": (PENDING, RUNNING),
        "expire": (PENDING, RUNNING),
        "fail": (PENDING,),
    }
    if action not in allowed:
        raise GoogleApiError(
            404, f"Unknown batch action '{action}'; use hold, release, expire, cancel or fail."
        )
    hold = body.get("state")
    if action == "hold" and hold not in ("validating", "finalizing"):
        raise invalid("'state' must be 'validating' (PENDING) or 'finalizing' (RUNNING).")
    if hold == "validating":
        allowed["hold"] = (PENDING,)
    refused: list[str] = []

    def change(b: Batch) -> bool:
        if b.status not in allowed[action] or b.obj.get("deleted"):
            refused.append(b.status)
            return False
        if action == "hold":
            b.internal["hold"] = hold
        elif action == "release":
            b.internal.pop("hold", None)
            b.internal["released"] = emu.now()  # it goes on from here, not before
        elif action == "expire":
            b.internal["force_expire"] = True
        else:
            b.internal["invalid"] = error_object(400, str(body.get("message") or "Failed."))
            b.internal.pop("hold", None)
        return True

    updated = emu.state.update_batch(batch.id, change)
    if refused:
        raise GoogleApiError(409, f"Cannot {action} a batch in state {refused[0]}.")
    emu.wake.set()
    return operation(emu, (updated or batch).obj)


def seed(emu: Emulator, count: int) -> list[str]:
    """Batches of another app on the same key (the control API's `seed`)."""
    method = TYPES["generate"][2]
    cards = emu.cfg.catalog("gemini").cards.values()
    model = next((c.id for c in cards if c.serves(method)), "gemini-2.5-flash")
    ids = []
    for i in range(count):
        request = {"contents": [{"role": "user", "parts": [{"text": f"hello {i}"}]}]}
        body = {
            "batch": {
                "displayName": f"another-app-{i}",
                "inputConfig": {"requests": {"requests": [{"request": request}]}},
            }
        }
        ids.append(create(emu, "generate", model, body).id)
    return ids
