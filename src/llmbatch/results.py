"""What one result line says: a provider's output- or error-file line, read as untrusted.

A line is keyed by its `custom_id`, which is our attempt id (`<store_id>-<nonce>-<n>`, the
nonce its intent's: `parse_line` takes that prefix, so a line of another copy of the store
is an anomaly; `<store_id>-<n>` before migration 0005). A line that
is not JSON, carries an id that is not ours, or holds a number no database integer holds is
an `Anomaly`; so is a line longer than `max_result_line_bytes`, which `capped_lines` skips
while streaming, never holding it whole. Pure functions: ingest.py records what they find.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson

from llmbatch.providers.base import ResultFile
from llmbatch.usage import UsageRecord, read_usage

CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class Finding:
    """What one result line says about one attempt."""

    attempt_id: int
    ok: bool
    status_code: int | None
    provider_request_id: str | None
    body: bytes | None
    error_code: str | None
    error_type: str | None
    error_message: str | None
    input_tokens: int | None
    output_tokens: int | None
    usage: UsageRecord | None = None
    model: str | None = None  # the model that answered, where the line says (Anthropic)


class Anomaly(ValueError):
    """A result line that cannot be mapped to one of our attempts."""


def attempt_id_of(custom_id: object, store_id: str) -> int:
    """Our attempt number from a custom_id we sent; Anomaly for anything else."""
    prefix = store_id + "-"
    if not isinstance(custom_id, str) or not custom_id.startswith(prefix):
        raise Anomaly(f"custom_id {_short(custom_id)} is not one of this store's attempt ids")
    number = custom_id[len(prefix) :]
    if not (number.isascii() and number.isdigit() and len(number) <= 18):
        raise Anomaly(f"custom_id {_short(custom_id)} is not one of this store's attempt ids")
    return int(number)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 200 else text[:200] + "..."


def parse_line(
    line: bytes, store_id: str, endpoint: str | None = None, provider: str = "openai"
) -> Finding:
    """Parse one output- or error-file line; raise Anomaly if it is not ours or not readable."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise Anomaly(f"result line is not JSON ({exc}): {line[:80]!r}") from None
    if not isinstance(obj, dict):
        raise Anomaly(f"result line is not a JSON object: {line[:80]!r}")
    attempt = attempt_id_of(obj.get("custom_id"), store_id)
    if provider == "anthropic":
        return _anthropic_line(attempt, obj)
    response = obj.get("response")
    error = obj.get("error")
    if isinstance(response, dict):
        status = response.get("status_code")
        status = status if type(status) is int and 100 <= status <= 599 else None
        body = response.get("body")
        rid = response.get("request_id")
        rid = str(rid) if rid is not None else None
        if status is not None and 200 <= status < 300 and isinstance(body, dict):
            u = read_usage(body.get("usage"), provider=provider, endpoint=endpoint)
            return Finding(
                attempt,
                True,
                status,
                rid,
                orjson.dumps(body),
                None,
                None,
                None,
                u.input,
                u.output,
                u,
            )
        err = body.get("error") if isinstance(body, dict) else None
        err = err if isinstance(err, dict) else {}
        return Finding(
            attempt, False, status, rid, orjson.dumps(body) if body is not None else None,
            _s(err.get("code")) or (f"http_{status}" if status else "error"), _s(err.get("type")),
            _s(err.get("message")) or f"HTTP {status}", None, None,
        )  # fmt: skip
    if isinstance(error, dict):
        code = _s(error.get("code")) or "error"
        return Finding(
            attempt,
            False,
            None,
            None,
            None,
            code,
            code,
            _s(error.get("message")) or code,
            None,
            None,
        )
    raise Anomaly(f"result line for {obj.get('custom_id')!r} has neither a response nor an error")


ANTHROPIC_ENDED = {"canceled": "batch_cancelled", "expired": "batch_expired"}


def _anthropic_line(attempt: int, obj: dict[str, object]) -> Finding:
    """`{"custom_id", "result": {"type": succeeded|errored|canceled|expired, ...}}`."""
    result = obj.get("result")
    kind = result.get("type") if isinstance(result, dict) else None
    if isinstance(result, dict) and kind == "succeeded" and isinstance(result.get("message"), dict):
        message = result["message"]
        u = read_usage(message.get("usage"), provider="anthropic")
        return Finding(
            attempt, True, 200, _s(message.get("id")), orjson.dumps(message), None, None, None,
            u.input, u.output, u, _s(message.get("model")),
        )  # fmt: skip
    if isinstance(result, dict) and kind == "errored":
        envelope = result.get("error")
        envelope = envelope if isinstance(envelope, dict) else {}
        err = envelope.get("error")
        err = err if isinstance(err, dict) else {}
        code = _s(err.get("type")) or "error"
        return Finding(
            attempt, False, None, _s(envelope.get("request_id")), orjson.dumps(envelope), code,
            code, _s(err.get("message")) or code, None, None,
        )  # fmt: skip
    if isinstance(kind, str) and kind in ANTHROPIC_ENDED:
        code = ANTHROPIC_ENDED[kind]
        return Finding(attempt, False, None, None, None, code, code, f"request {kind}", None, None)
    raise Anomaly(f"result line for {obj.get('custom_id')!r} has no known result type")


def _s(v: object) -> str | None:
    return None if v is None else str(v)


def capped_lines(files: Sequence[ResultFile], cap: int) -> Iterator[bytes | int]:
    """Every non-blank line of the downloaded files, streamed; a line longer than `cap` bytes
    is skipped without being held whole, and its length given instead."""
    for f in files:
        with open(f.path, "rb") as fh:
            while raw := fh.readline(cap + 1):
                if len(raw) > cap and not raw.endswith(b"\n"):
                    size = len(raw)
                    while raw and not raw.endswith(b"\n"):
                        raw = fh.readline(CHUNK)
                        size += len(raw)
                    yield size - (1 if raw.endswith(b"\n") else 0)
                    continue
                line = raw.rstrip(b"\r\n")
                if line.strip():
                    yield line
