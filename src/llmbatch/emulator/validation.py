"""The two kinds of validation the service does.

**At create** (`check_create`, HTTP 400 with the error envelope): `completion_window` other
than `24h`, an endpoint the flavour does not batch, `metadata` over 16 pairs or with keys
over 64 / values over 512 characters, a bad `output_expires_after`. (Unknown, deleted or
wrong-purpose input files are checked by the route, which has the store.)

**In `validating`** (`scan`, the batch becomes `failed` with `errors.data[]`). Which checks
report how many errors:

- *File-level, one error each, `line: null`, and the scan stops*: the file is over the size
  limit (`invalid_request`); the file has no request lines (`empty_file`).
- *Per line, one error per bad line (the first failing check of that line wins), every bad
  line reported up to 1,000 errors*: not a JSON object (`invalid_json_line`); missing or
  wrong-typed `custom_id`/`method`/`url`/`body`/`body.model`, `method` not `POST`, or
  `stream: true` (`invalid_request`); `url` not the batch's endpoint (`url_mismatch`);
  a repeated `custom_id` (`duplicate_custom_id`, on the repeat); a model the emulator does
  not know (`model_not_found`, once, on the first line naming it); a model other than the
  first line's (`model_mismatch`, on every such line).
- *File-level after a clean line scan, one error, `line: null`*: more request lines than
  the flavour allows (`too_many_tasks`); an embeddings batch with more than 50,000 inputs
  (`invalid_request`). The enqueued-token quota (`token_limit_exceeded`, `line: null`) is
  checked last, by the worker, because it depends on the other batches.

Blank lines are skipped but still counted for line numbers (1-based, physical lines).
"""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from llmbatch.emulator import prepared
from llmbatch.emulator.config import EmulatorConfig
from llmbatch.emulator.envelope import bad_request
from llmbatch.emulator.lines import processing_order
from llmbatch.emulator.surfaces import GONE_ENDPOINTS, Flavor
from llmbatch.emulator.synth import RequestError, embedding_inputs, prompt_tokens
from llmbatch.providers.compatible import window_seconds

Json = dict[str, Any]

MAX_ERRORS = 1_000
MAX_METADATA_PAIRS = 16
MAX_METADATA_KEY = 64
MAX_METADATA_VALUE = 512
#: Models that a moderations line may omit.
DEFAULT_MODERATION_MODEL = "omni-moderation-latest"


def check_create(body: Any, flavor: Flavor) -> Json:
    """Check a create-batch body; returns the parameters or raises a 400 ApiError."""
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    for key in ("input_file_id", "endpoint", "completion_window"):
        if key not in body:
            raise bad_request(
                f"Missing required parameter: '{key}'.", key, "missing_required_parameter"
            )
        if not isinstance(body[key], str):
            raise bad_request(f"Invalid type for '{key}': expected a string.", key, "invalid_type")
    low, high = flavor.windows()
    window = window_seconds(body["completion_window"])
    if window is None or not low <= window <= high:
        supported = "'24h'" if low == high == 86_400 else f"'24h' to '{high // 86_400}d'"
        if flavor.service is not None and low != high:
            supported = f"{flavor.service.min_window} to {flavor.service.max_window}"
        raise bad_request(
            f"Invalid value: '{body['completion_window']}'. Supported values are: {supported}.",
            "completion_window",
            "invalid_value",
        )
    endpoints = flavor.endpoints()
    gone = GONE_ENDPOINTS.get(body["endpoint"])
    if gone is not None and flavor.service is None and not flavor.azure:
        raise bad_request(gone, "endpoint", "invalid_value")
    if body["endpoint"] not in endpoints:
        supported = ", ".join(f"'{e}'" for e in endpoints)
        raise bad_request(
            f"Invalid value: '{body['endpoint']}'. Supported values are: {supported}.",
            "endpoint",
            "invalid_value",
        )
    metadata = body.get("metadata")
    if metadata is not None:
        _check_metadata(metadata)
    expires_after = body.get("output_expires_after")
    if expires_after is not None:
        low = 14 * 86400 if flavor.azure else 3600
        check_expires_after(expires_after, "output_expires_after", low)
    return {
        "input_file_id": body["input_file_id"],
        "endpoint": body["endpoint"],
        "completion_window": body["completion_window"],
        "metadata": metadata,
        "output_expires_after": expires_after,
    }


def _check_metadata(metadata: Any) -> None:
    if not isinstance(metadata, dict):
        raise bad_request(
            "Invalid type for 'metadata': expected an object.", "metadata", "invalid_type"
        )
    if len(metadata) > MAX_METADATA_PAIRS:
        raise bad_request(
            "Invalid 'metadata': too many properties. Expected an object with at most "
            f"{MAX_METADATA_PAIRS} properties, but got an object with {len(metadata)} "
            "properties instead.",
            "metadata",
            "object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > MAX_METADATA_KEY:
            raise bad_request(
                f"Invalid 'metadata': key '{key[:20]}...' is longer than "
                f"{MAX_METADATA_KEY} characters.",
                "metadata",
                "string_above_max_length",
            )
        if not isinstance(value, str):
            raise bad_request(
                f"Invalid type for 'metadata.{key}': expected a string.", "metadata", "invalid_type"
            )
        if len(value) > MAX_METADATA_VALUE:
            raise bad_request(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum "
                f"length {MAX_METADATA_VALUE}, but got a string with length {len(value)} instead.",
                "metadata",
                "string_above_max_length",
            )


def check_expires_after(value: Any, param: str, low: int = 3600) -> Json:
    """Check `{anchor: "created_at", seconds: 3600..2592000}`; raises a 400 ApiError."""
    high = 2_592_000
    if (
        not isinstance(value, dict)
        or value.get("anchor") != "created_at"
        or isinstance(value.get("seconds"), bool)
        or not isinstance(value.get("seconds"), int)
        or not low <= value["seconds"] <= high
    ):
        raise bad_request(
            f'Invalid \'{param}\': expected {{"anchor": "created_at", "seconds": {low}..{high}}}.',
            param,
            "invalid_value",
        )
    return {"anchor": "created_at", "seconds": value["seconds"]}


@dataclass
class ScanResult:
    """What validating an input file found."""

    errors: list[Json] = field(default_factory=list)
    error_count: int = 0
    total: int = 0
    tokens: int = 0
    model: str | None = None


def _error(code: str, message: str, line: int | None, param: str | None = None) -> Json:
    return {"code": code, "message": message, "param": param, "line": line}


#: In a `.tok` file, a line whose prompt its endpoint refuses (the worker counts it again and
#: reports the error).
UNCOUNTED = 0xFFFFFFFF


def tokens_path(index_path: Path) -> Path:
    """Where `scan` writes each request line's prompt tokens, beside its index."""
    return index_path.with_suffix(".tok")


def scan(
    path: Path,
    flavor: Flavor,
    endpoint: str,
    cfg: EmulatorConfig,
    index_path: Path,
    *,
    batch_id: str | None = None,
) -> ScanResult:
    """Validate an input file line by line, streaming; on success writes the byte offsets of
    its request lines (plus the end offset) to `index_path` for the worker, and each line's
    prompt tokens (`UNCOUNTED` where refused) to `tokens_path(index_path)`, so the worker
    does not count them again. With `batch_id`, a chat batch's lines are also kept as
    `prepared` records in the order the worker runs them (it then parses no JSON)."""
    result = ScanResult()
    size = path.stat().st_size
    if size > flavor.max_bytes(cfg):
        mb = flavor.max_bytes(cfg) // (1024 * 1024)
        result.errors.append(
            _error("invalid_request", f"The input file is larger than {mb} MB.", None)
        )
        return result
    known = flavor.models(cfg)
    kind = flavor.kind(endpoint)
    seen: set[str] = set()
    offsets = array("Q")
    prompts = array("I")
    records: list[bytes] | None = None
    preparer = None
    if batch_id is not None and kind == "chat":
        records, preparer = [], prepared.Preparer(batch_id)
    inputs = 0
    line_limit, most = flavor.max_line_bytes, flavor.max_custom_id
    full_lines = not flavor.short_lines  # lines the quick check below takes

    def fail(code: str, message: str, line: int, param: str | None = None) -> None:
        result.error_count += 1
        if len(result.errors) < MAX_ERRORS:
            result.errors.append(_error(code, message, line, param))

    offset = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            start, offset = offset, offset + len(raw)
            if raw[0] != 123 and not raw.strip():  # `{`: not blank, and no copy to see it
                continue
            result.total += 1
            offsets.append(start)
            if line_limit is not None and len(raw.rstrip(b"\r\n")) > line_limit:
                fail("invalid_request", f"The line is over {line_limit} bytes.", number)
                continue
            try:
                line = orjson.loads(raw)
            except orjson.JSONDecodeError:
                fail("invalid_json_line", "This line is not valid JSON.", number)
                continue
            # The usual line passes `_line_problem`'s checks here, without its calls.
            if not (
                type(line) is dict
                and type(custom_id := line.get("custom_id")) is str
                and custom_id
                and (most is None or len(custom_id) <= most)
                and full_lines
                and line.get("method") == "POST"
                and line.get("url") == endpoint
                and type(body := line.get("body")) is dict
                and type(body.get("model")) is str
                and body["model"]
                and body.get("stream") is not True
            ):
                problem = _line_problem(line, flavor, endpoint)
                if problem is not None:
                    fail(problem[0], problem[1], number, problem[2])
                    continue
                custom_id, body = line["custom_id"], line["body"]
            if custom_id in seen:
                fail(
                    "duplicate_custom_id",
                    f"The custom_id '{custom_id}' is not unique.",
                    number,
                    "custom_id",
                )
                continue
            seen.add(custom_id)
            model = body.get("model", DEFAULT_MODERATION_MODEL if kind == "moderations" else None)
            if result.model is None:
                result.model = model
                # a compatible service's own models (llama-3.3-70b-versatile, ...) are not in
                # the SDKs' lists: any name runs there, with the default card
                if model not in known and flavor.service is None:
                    what = "deployment" if flavor.azure else "model"
                    fail(
                        "model_not_found",
                        f"The {what} '{model}' does not exist.",
                        number,
                        "body.model",
                    )
                    continue
            elif model != result.model:
                fail(
                    "model_mismatch",
                    f"The model '{model}' differs from '{result.model}' used on earlier lines;"
                    " a batch file may use one model only.",
                    number,
                    "body.model",
                )
                continue
            if kind is not None:
                # A body its endpoint rejects is reported per request, in the error file.
                try:
                    prompt = prompt_tokens(kind, body)
                except RequestError:
                    prompts.append(UNCOUNTED)
                    if records is not None:
                        records.append(prepared.FULL)
                else:
                    result.tokens += prompt
                    prompts.append(min(prompt, UNCOUNTED - 1))
                    if preparer is not None and records is not None:
                        records.append(preparer.record(body, custom_id, prompt))
                if kind == "embeddings":
                    inputs += embedding_inputs(body)
    offsets.append(offset)
    if result.errors:
        return result
    if result.total == 0:
        result.errors.append(_error("empty_file", "The input file contains no requests.", None))
    elif result.total < flavor.min_lines():
        result.errors.append(
            _error(
                "invalid_request",
                f"The input file has {result.total} requests; a batch needs at least "
                f"{flavor.min_lines()}.",
                None,
            )
        )
    elif result.total > flavor.max_lines(cfg):
        result.errors.append(
            _error(
                "too_many_tasks",
                f"The input file has {result.total} requests; the limit is {flavor.max_lines(cfg)}.",
                None,
            )
        )
    elif kind == "embeddings" and inputs > cfg.max_embedding_inputs:
        result.errors.append(
            _error(
                "invalid_request",
                f"The batch has {inputs} embedding inputs; the limit is {cfg.max_embedding_inputs}.",
                None,
            )
        )
    else:
        with index_path.open("wb") as out:
            offsets.tofile(out)
        if kind is not None and len(prompts) == result.total:
            with tokens_path(index_path).open("wb") as out:
                prompts.tofile(out)
        if records is not None and len(records) == result.total:
            prepared.write(index_path, records, processing_order(result.total, batch_id))
    result.error_count = max(result.error_count, len(result.errors))
    return result


def _line_problem(line: Any, flavor: Flavor, endpoint: str) -> tuple[str, str, str | None] | None:
    if not isinstance(line, dict):
        return "invalid_json_line", "This line is not a JSON object.", None
    custom_id = line.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return (
            "invalid_request",
            "Missing or invalid 'custom_id': expected a non-empty string.",
            "custom_id",
        )
    most = flavor.max_custom_id
    if most is not None and len(custom_id) > most:
        return "invalid_request", f"'custom_id' is over {most} characters.", "custom_id"
    if flavor.short_lines:
        if "method" in line or "url" in line:
            return (
                "invalid_request",
                "A line is {custom_id, body}: 'method' and 'url' are not taken.",
                "url",
            )
        line = {**line, "method": "POST", "url": endpoint}
    if line.get("method") != "POST":
        return "invalid_request", "Invalid 'method': only 'POST' is supported.", "method"
    url = line.get("url")
    if not isinstance(url, str):
        return "invalid_request", "Missing or invalid 'url': expected a string.", "url"
    if not flavor.same_endpoint(url, endpoint):
        return (
            "url_mismatch",
            f"The url '{url}' does not match the batch endpoint '{endpoint}'.",
            "url",
        )
    body = line.get("body")
    if not isinstance(body, dict):
        return "invalid_request", "Missing or invalid 'body': expected an object.", "body"
    model = body.get("model")
    if model is None and flavor.kind(endpoint) == "moderations":
        return None
    if not isinstance(model, str) or not model:
        return (
            "invalid_request",
            "Missing or invalid 'body.model': expected a string.",
            "body.model",
        )
    if body.get("stream") is True:
        return (
            "invalid_request",
            "Streaming ('stream': true) is not supported in a batch.",
            "body.stream",
        )
    return None
