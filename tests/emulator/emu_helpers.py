"""What the emulator tests share: validators built from the OpenAPI excerpt
(openapi_excerpt.json), input lines, upload and wait through the official SDK.

A module of its own, not conftest.py: tests/e2e has a conftest too, and `from conftest import`
reads whichever of the two pytest imported last (a run naming tests of both folders failed).
"""

from __future__ import annotations

import copy
import io
import json
import time
from pathlib import Path
from typing import Any

import jsonschema
import openai

SPEC = json.loads((Path(__file__).parent / "openapi_excerpt.json").read_text())
TERMINAL = ("completed", "failed", "expired", "cancelled")


def _relax(schema: Any) -> Any:
    """Allow null for optional properties: the service sends unset optional fields as
    null, which the spec does not spell out (and the issue allows)."""
    if isinstance(schema, dict):
        out = {k: _relax(v) for k, v in schema.items()}
        props = out.get("properties")
        if isinstance(props, dict):
            required = set(out.get("required", []))
            for name, sub in props.items():
                if name not in required:
                    props[name] = {"anyOf": [sub, {"type": "null"}]}
        return out
    if isinstance(schema, list):
        return [_relax(v) for v in schema]
    return schema


_COMPONENTS = _relax(copy.deepcopy(SPEC["components"]))
# The spec requires first_id/last_id on a files page; an empty page has neither, and the
# service sends null there.
for _key in ("first_id", "last_id"):
    _COMPONENTS["schemas"]["ListFilesResponse"]["properties"][_key] = {"type": ["string", "null"]}


def validate(name: str, body: Any) -> None:
    """Validate a response body (dict or SDK model) against a schema of the excerpt."""
    if hasattr(body, "model_dump"):
        body = body.model_dump(mode="json")
    root = {"$ref": f"#/components/schemas/{name}", "components": _COMPONENTS}
    jsonschema.validate(body, root, cls=jsonschema.Draft202012Validator)


def chat_line(
    i: int, *, model: str = "gpt-4o-mini", url: str = "/v1/chat/completions", **body: Any
) -> dict[str, Any]:
    request = {
        "model": model,
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"Question number {i}: why?"},
        ],
    }
    request.update(body)
    return {"custom_id": f"req-{i}", "method": "POST", "url": url, "body": request}


def jsonl(lines: list[Any]) -> bytes:
    """Encode lines (dicts, or raw str/bytes for malformed ones) as a JSONL file."""
    return b"".join(_encode(x) + b"\n" for x in lines)


def _encode(line: Any) -> bytes:
    if isinstance(line, bytes):
        return line
    if isinstance(line, str):
        return line.encode()
    return json.dumps(line).encode()


def upload(client: openai.OpenAI, lines: list[Any], name: str = "input.jsonl") -> Any:
    return client.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch")


def wait(
    client: openai.OpenAI, batch_id: str, statuses: tuple[str, ...] = TERMINAL, timeout: float = 20
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.batches.retrieve(batch_id)
        if batch.status in statuses:
            return batch
        assert time.monotonic() < deadline, f"{batch_id} stuck in {batch.status}"
        time.sleep(0.01)


def read_jsonl(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()]
