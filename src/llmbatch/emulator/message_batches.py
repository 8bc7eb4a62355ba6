"""Anthropic Message Batches as objects: create (checking the envelope and storing the
requests), the public view, cancel, delete and where the results live. Shared by the API
routes (`anthropic_api.py`) and the control API; processing is `anthropic_worker.py`.

Storage, beside the OpenAI batches (same `batches` table, flavour `anthropic`)::

    DATA_DIR/work/BATCH_ID.req      one line per request: {"custom_id", "params", "cache"}
    DATA_DIR/work/BATCH_ID.idx      byte offsets of those lines (plus the end offset)
    DATA_DIR/work/BATCH_ID.out      results written so far (cut back to the saved size on restart)
    DATA_DIR/work/BATCH_ID.results  the results once processing has ended

`cache` lists the request's cache-breakpoint prefixes that an earlier request of the same
batch (in request order) already carries: those are cache reads, the rest writes.
"""

from __future__ import annotations

import re
from array import array
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from llmbatch.emulator.anthropic_synth import count_prompt, first_seen_plan
from llmbatch.emulator.envelope import AnthropicApiError
from llmbatch.emulator.state import Batch

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

Json = dict[str, Any]

FLAVOR = "anthropic"
DAY = 86_400
#: Results stay downloadable this long after a batch ends; then `archived_at` is set.
RESULTS_KEPT = 29 * DAY
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
OUTCOMES = ("succeeded", "errored", "canceled", "expired")


def rfc3339(t: float) -> str:
    """A Unix time as the service writes it: `2024-08-20T18:37:24.100435Z`."""
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def invalid(message: str) -> AnthropicApiError:
    return AnthropicApiError(400, message, retryable=False)


def not_found(batch_id: str) -> AnthropicApiError:
    return AnthropicApiError(
        404, f"Message batch '{batch_id}' not found.", "not_found_error", retryable=False
    )


def check_requests(body: Any, max_requests: int) -> list[Json]:
    """The `requests` of a create body, or a 400 for an envelope error."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    requests = body.get("requests")
    if requests is None:
        raise invalid("requests: Field required")
    if not isinstance(requests, list):
        raise invalid("requests: Input should be a valid list")
    if not requests:
        raise invalid("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > max_requests:
        raise invalid(
            f"requests: List should have at most {max_requests} items after validation, "
            f"not {len(requests)}"
        )
    extra = set(body) - {"requests"}
    if extra:
        raise invalid(f"{sorted(extra)[0]}: Extra inputs are not permitted")
    seen: set[str] = set()
    for i, item in enumerate(requests):
        if not isinstance(item, dict):
            raise invalid(f"requests.{i}: Input should be a valid dictionary")
        custom_id = item.get("custom_id")
        if custom_id is None:
            raise invalid(f"requests.{i}.custom_id: Field required")
        if not isinstance(custom_id, str) or not CUSTOM_ID.match(custom_id):
            raise invalid(
                f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'"
            )
        if custom_id in seen:
            raise invalid(
                f"requests.{i}.custom_id: Duplicate custom_id '{custom_id}'; each request in a "
                "batch needs a unique custom_id."
            )
        seen.add(custom_id)
        if "params" not in item:
            raise invalid(f"requests.{i}.params: Field required")
        if not isinstance(item["params"], dict):
            raise invalid(f"requests.{i}.params: Input should be a valid dictionary")
    return requests


def _cache_hits(params: Json, seen: set[str]) -> list[str]:
    try:
        return first_seen_plan(count_prompt(params), seen)
    except (KeyError, TypeError, AttributeError):
        return []  # a malformed request errors when it runs; it caches nothing


def create(emu: Emulator, requests: list[Json], *, uses_cache: bool) -> Batch:
    """Store checked requests and a new `in_progress` batch (blocking: run off the loop).
    `uses_cache`: whether any request may carry `cache_control` (else skip the plan)."""
    batch_id = emu.new_id("msgbatch_01", 11)
    offsets = array("Q", [0])
    seen: set[str] = set()
    with emu.state.work_path(batch_id, "req").open("wb") as f:
        for item in requests:
            params = item["params"]
            line: Json = {"custom_id": item["custom_id"], "params": params}
            line["cache"] = _cache_hits(params, seen) if uses_cache else []
            raw = orjson.dumps(line) + b"\n"
            f.write(raw)
            offsets.append(offsets[-1] + len(raw))
    with emu.state.work_path(batch_id, "idx").open("wb") as f:
        offsets.tofile(f)
    now = emu.now()
    total = len(requests)
    obj: Json = {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "in_progress",
        "request_counts": {"processing": total} | dict.fromkeys(OUTCOMES, 0),
        "ended_at": None,
        "created_at": rfc3339(now),
        "expires_at": rfc3339(now + DAY),
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": None,
    }
    internal: Json = {
        "created": now,
        "expires": now + DAY,
        "total": total,
        "done": 0,
        "out_bytes": 0,
        "last_t": now,
        "tally": {"succeeded": 0, "errored": 0},
        # Capacity is per model: the batch counts as its first request's model.
        "model": str(requests[0]["params"].get("model", "")),
    }
    emu.state.add_batch(FLAVOR, obj, internal)
    emu.wake.set()
    return emu.state.get_batch(batch_id, FLAVOR) or Batch(0, FLAVOR, obj, internal)


def archived(obj: Json, now: float) -> bool:
    """Whether an ended batch's results are gone (29 virtual days after it ended)."""
    ended = obj.get("ended_at")
    return ended is not None and now >= _unix(ended) + RESULTS_KEPT


def view(obj: Json, now: float, root: str) -> Json:
    """The public object at virtual time `now`; `root` is the emulator's own URL (the
    absolute `results_url` points there)."""
    out = dict(obj)
    if out.get("ended_at") is not None:
        out["results_url"] = f"{root.rstrip('/')}/v1/messages/batches/{obj['id']}/results"
        if archived(obj, now):
            out["archived_at"] = rfc3339(_unix(obj["ended_at"]) + RESULTS_KEPT)
    return out


def get(emu: Emulator, batch_id: str) -> Batch:
    batch = emu.state.get_batch(batch_id, FLAVOR)
    if batch is None:
        raise not_found(batch_id)
    return batch


def cancel(emu: Emulator, batch_id: str) -> Batch:
    """Start cancelling (idempotent while `canceling`); a 400 once processing has ended."""
    get(emu, batch_id)
    now = emu.now()
    ended: list[bool] = []

    def change(b: Batch) -> bool:
        if b.status == "ended":
            ended.append(True)
            return False
        if b.status == "canceling":
            return False
        b.obj["processing_status"] = "canceling"
        b.obj["cancel_initiated_at"] = rfc3339(now)
        b.internal["canceling"] = now
        return True

    batch = emu.state.update_batch(batch_id, change)
    if ended or batch is None:
        raise invalid(f"Message batch '{batch_id}' has ended; it can no longer be canceled.")
    emu.wake.set()
    return batch


def delete(emu: Emulator, batch_id: str) -> Json:
    """Delete an ended batch and its results; an unfinished one must be cancelled first."""
    batch = get(emu, batch_id)
    if batch.status != "ended":
        raise invalid(
            f"Message batch '{batch_id}' is still {batch.status}; cancel it and wait for "
            "processing to end before deleting it."
        )
    emu.state.delete_batch(batch_id)
    for suffix in ("req", "idx", "out", "results"):
        emu.state.work_path(batch_id, suffix).unlink(missing_ok=True)
    return {"id": batch_id, "type": "message_batch_deleted"}


def seed(emu: Emulator, count: int) -> list[str]:
    """Batches of another app in the same organisation (the control API's `seed`)."""
    model = next(iter(emu.cfg.catalog("anthropic")), "claude-haiku-4-5")
    ids = []
    for i in range(count):
        params = {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"hello {i}"}],
        }
        requests = [{"custom_id": f"other-app-{i}", "params": params}]
        ids.append(create(emu, requests, uses_cache=False).id)
    return ids
