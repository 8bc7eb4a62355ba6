"""Results as users read them: the OpenAI batch output shape (JSONL) or a flat CSV.

Success:  {"custom_id", "response": {"status_code", "request_id", "body"}, "error": null}
Failure:  {"custom_id", "response": null, "error": {"code", "message"}}
Both carry "provider" when it is not OpenAI's, and `response.body` is the provider's own body.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from typing import Any

import orjson

from llmbatch.store import ResultRow

CSV_COLUMNS = (
    "custom_id", "state", "status_code", "output_text", "input_tokens", "output_tokens",
    "error_code", "error_message",
)  # fmt: skip


def jsonl_line(r: ResultRow) -> bytes:
    """One result in the OpenAI batch output shape, body spliced in without re-encoding."""
    head = b'{"custom_id":' + orjson.dumps(r.custom_id)
    if r.provider not in ("openai", "azure"):
        head += b',"provider":' + orjson.dumps(r.provider)
    if r.state == "succeeded" and r.body is not None:
        meta = (
            orjson.dumps(r.status_code or 200)
            + b',"request_id":'
            + orjson.dumps(r.provider_request_id)
        )
        return (
            head
            + b',"response":{"status_code":'
            + meta
            + b',"body":'
            + r.body
            + b'},"error":null}\n'
        )
    error = orjson.dumps({"code": r.error_code or "failed", "message": r.error_message or ""})
    return head + b',"response":null,"error":' + error + b"}\n"


def output_text(provider: str, body: dict[str, Any]) -> str:
    """The generated text of a response body, per provider and endpoint shape ("" if none)."""
    if provider == "anthropic":
        return "".join(
            b.get("text", "") for b in body.get("content") or [] if b.get("type") == "text"
        )
    if "choices" in body:
        choice = (body.get("choices") or [{}])[0]
        message = choice.get("message")
        if isinstance(message, dict):
            return str(message.get("content") or "")
        return str(choice.get("text") or "")
    if "output" in body:
        parts = [
            c.get("text", "")
            for item in body.get("output") or []
            if isinstance(item, dict)
            for c in item.get("content") or []
            if isinstance(c, dict) and c.get("type") == "output_text"
        ]
        return "".join(parts)
    return ""


def csv_rows(results: Iterable[ResultRow]) -> Iterator[str]:
    """The CSV header, then one line per result."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    yield _drain(buf)
    for r in results:
        text = ""
        if r.body is not None and r.state == "succeeded":
            try:
                text = output_text(r.provider, orjson.loads(r.body))
            except (orjson.JSONDecodeError, AttributeError, TypeError):
                text = ""
        writer.writerow(
            (r.custom_id, r.state, _blank(r.status_code), text, _blank(r.input_tokens), _blank(r.output_tokens),
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
