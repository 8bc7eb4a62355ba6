"""Results as users read them: the OpenAI batch output shape (JSONL) or a flat CSV.

Every line, whatever the provider:

    {"id", "custom_id", "provider", "response": {"status_code", "request_id", "body"} | null,
     "error": {"code", "message"} | null}

- `id` is `res_<cursor>`: unique in the store, and `--after <cursor>` resumes after it.
- `response.body` is the provider's own body, spliced in as stored: an OpenAI/Azure
  completion or error body, an Anthropic `message` or, for an `errored` Anthropic result, its
  whole error envelope `{"type": "error", "error": {"type", "message"}, "request_id"}`.
- `response` is null only when no provider answered (expired, cancelled, never run).
- `error` is null on success; on failure `code` is the provider's error code or type
  (`overloaded_error`, `batch_expired`, ...) and `message` says why, with our retry verdict.
- Anthropic batch results carry no HTTP status: an errored one gets the status its error type
  has in the Messages API (`ANTHROPIC_STATUS`), a succeeded one 200.

CSV has one row per result, `output_text` extracted per provider and endpoint (`output_text`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any, Final

import orjson

from llmbatch.store import ResultRow

CSV_COLUMNS = (
    "custom_id", "state", "status_code", "output_text", "input_tokens", "output_tokens",
    "error_code", "error_message",
)  # fmt: skip

# The HTTP status of each Anthropic error type (docs.anthropic.com, "Errors").
ANTHROPIC_STATUS: Final = {
    "invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
    "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
    "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529,
}  # fmt: skip


def succeeded(r: ResultRow) -> bool:
    """Whether this result (not its request's current state) is a success with a body."""
    return r.error_code is None and r.body is not None


def status_code(r: ResultRow) -> int | None:
    """The HTTP status of a result that has a provider body (see the module docstring)."""
    if r.status_code is not None:
        return r.status_code
    if r.error_code is None:
        return 200
    return ANTHROPIC_STATUS.get(r.error_code) if r.provider == "anthropic" else None


def jsonl_line(r: ResultRow) -> bytes:
    """One result in the OpenAI batch output shape, body spliced in without re-encoding."""
    head = (
        b'{"id":"res_' + str(r.cursor).encode() + b'","custom_id":' + orjson.dumps(r.custom_id)
        + b',"provider":' + orjson.dumps(r.provider)
    )  # fmt: skip
    if r.body is not None:
        response = (
            b'{"status_code":' + orjson.dumps(status_code(r))
            + b',"request_id":' + orjson.dumps(r.provider_request_id)
            + b',"body":' + r.body + b"}"
        )  # fmt: skip
    else:
        response = b"null"
    if succeeded(r):
        error = b"null"
    else:
        error = orjson.dumps({"code": r.error_code or "failed", "message": r.error_message or ""})
    return head + b',"response":' + response + b',"error":' + error + b"}\n"


def output_text(provider: str, body: dict[str, Any]) -> str:
    """The generated text of a response body, per provider and endpoint shape ("" if none).

    Anthropic: the `text` blocks of `content`, joined. OpenAI chat: `choices[0].message.content`
    (completions: `choices[0].text`). Responses API: the `output_text` parts of its `message`
    items, joined (what the SDK's `response.output_text` gives)."""
    if provider == "anthropic":
        return "".join(
            str(b.get("text") or "")
            for b in body.get("content") or []
            if isinstance(b, dict) and b.get("type") == "text"
        )
    if "choices" in body:
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message")
        if isinstance(message, dict):
            content = message.get("content")
            return content if isinstance(content, str) else ""
        return str(choice.get("text") or "")
    if "output" in body:
        return "".join(
            str(c.get("text") or "")
            for item in body.get("output") or []
            if isinstance(item, dict) and item.get("type", "message") == "message"
            for c in item.get("content") or []
            if isinstance(c, dict) and c.get("type") == "output_text"
        )
    return ""


def csv_rows(results: Iterable[ResultRow]) -> Iterator[str]:
    """The CSV header, then one line per result."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield _drain(buf)
    for r in results:
        text = ""
        if succeeded(r):
            assert r.body is not None
            try:
                text = output_text(r.provider, orjson.loads(r.body))
            except (orjson.JSONDecodeError, AttributeError, TypeError, IndexError):
                text = ""
        code = status_code(r) if r.body is not None else None
        writer.writerow(
            (r.custom_id, r.state, _blank(code), text, _blank(r.input_tokens), _blank(r.output_tokens),
             r.error_code or "", r.error_message or "")
        )  # fmt: skip
        yield _drain(buf)


def _blank(v: int | None) -> str:
    return "" if v is None else str(v)


def _drain(buf: io.StringIO) -> str:
    out = buf.getvalue()
    buf.seek(0)
    buf.truncate()
    return out
