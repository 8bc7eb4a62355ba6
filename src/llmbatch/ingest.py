"""Reading result lines: OpenAI-shaped output and error lines into per-attempt findings.

A line is keyed by its `custom_id`, which is our attempt id (`<store_id>-<n>`). A line that
is not JSON, or carries an id that is not ours, is an anomaly: recorded, never dropped silently.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson

from llmbatch.usage import UsageRecord, read_usage


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


class Anomaly(ValueError):
    """A result line that cannot be mapped to one of our attempts."""


def attempt_id_of(custom_id: object, store_id: str) -> int:
    """Our attempt number from a custom_id we sent; Anomaly for anything else."""
    prefix = store_id + "-"
    if not isinstance(custom_id, str) or not custom_id.startswith(prefix):
        raise Anomaly(f"custom_id {custom_id!r} is not one of this store's attempt ids")
    try:
        return int(custom_id[len(prefix) :])
    except ValueError:
        raise Anomaly(f"custom_id {custom_id!r} is not one of this store's attempt ids") from None


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
    response = obj.get("response")
    error = obj.get("error")
    if isinstance(response, dict):
        status = response.get("status_code")
        status = int(status) if isinstance(status, int) else None
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


def _s(v: object) -> str | None:
    return None if v is None else str(v)
