"""A toy provider, written as an outside package would write one (docs/providers.md).

Lines: `{"custom_id", "model", "prompt"}` (one endpoint, `/echo`). Result lines:
`{"custom_id", "outcome": "echoed" | "refused", "text", "tokens": {"in", "out"}}`. A prompt
equal to the `refuse` setting is refused with HTTP 422. The transport is llmbatch's in-process
double (`llmbatch.providers.testing.MemoryProvider`) speaking this shape, on the real clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from llmbatch.providers import Format, Plugin
from llmbatch.providers.testing import MemoryProvider
from llmbatch.requests import LineError, Request, body_hash, canonical_json, text_size
from llmbatch.results import Anomaly, Finding
from llmbatch.usage import UsageRecord

NAME = "echo"
ENDPOINT = "/echo"


class EchoFormat(Format):
    name = NAME
    label = "Echo"
    endpoints = frozenset({ENDPOINT})
    default_endpoint = ENDPOINT
    model_prefixes = ("echo-",)
    gives_batch_total = False
    estimate_note = "Echo tokens are words."

    def parse(self, custom_id: str, line: dict[str, Any], provider: str) -> Request:
        body = {k: v for k, v in line.items() if k != "custom_id"}
        return self.item(custom_id, body, None, provider)

    def item(self, custom_id: str, body: object, url: str | None, provider: str) -> Request:
        if not isinstance(body, dict) or not isinstance(body.get("prompt"), str):
            raise LineError("an echo line needs a prompt (a string)")
        model = body.get("model")
        if not isinstance(model, str) or not model.startswith("echo-"):
            raise LineError(f"model must be an echo-* model, got {model!r}")
        canonical = canonical_json(body)
        chars, nbytes = text_size(body)
        digest = body_hash("POST", ENDPOINT, canonical)
        return Request(custom_id, provider, ENDPOINT, model, canonical, digest, chars, nbytes, 1)

    def result(self, attempt: int, line: dict[str, Any], endpoint: str | None) -> Finding:
        outcome = line.get("outcome")
        if outcome == "echoed":
            u = self.usage(line.get("tokens"), endpoint)
            body = orjson.dumps({"text": line.get("text"), "tokens": line.get("tokens")})
            return Finding(attempt, True, 200, None, body, None, None, None, u.input, u.output, u)
        if outcome == "refused":
            body = orjson.dumps({"reason": line.get("text")})
            return Finding(
                attempt, False, None, None, body, "refused", "refused", str(line.get("text")),
                None, None,
            )  # fmt: skip
        raise Anomaly(f"echo result line with outcome {outcome!r}")

    def usage(self, usage: Any, endpoint: str | None) -> UsageRecord:
        if not isinstance(usage, dict):
            return UsageRecord(None, None, flag="missing: tokens")
        return UsageRecord(int(usage.get("in", 0)), int(usage.get("out", 0)))

    def status_code(self, error_code: str | None) -> int | None:
        return {None: 200, "refused": 422}.get(error_code)

    def output_text(self, body: dict[str, Any]) -> str:
        return str(body.get("text") or "")

    def batch_note(self, state: str) -> str | None:
        return "echoing" if state == "in_progress" else None

    def input_tokens(self, endpoint: str, model: str, body: dict[str, Any]) -> int:
        return len(str(body.get("prompt", "")).split())


@dataclass
class EchoSettings:
    latency: float = 0.0
    refuse: str = "no"


@dataclass
class EchoTransport(MemoryProvider):
    name: str = NAME
    clock: Callable[[], float] = field(default=time.time)
    refuse: str = "no"

    def request_line(self, attempt_id: str, endpoint: str, body: bytes) -> bytes:
        return orjson.dumps({"custom_id": attempt_id, **orjson.loads(body)})

    def respond(self, line: dict[str, Any]) -> dict[str, Any]:
        prompt = str(line["prompt"])
        if prompt == self.refuse:
            return {"custom_id": line["custom_id"], "outcome": "refused", "text": "not that"}
        words = len(prompt.split())
        return {
            "custom_id": line["custom_id"],
            "outcome": "echoed",
            "text": prompt.upper(),
            "tokens": {"in": words, "out": words},
        }


plugin = Plugin(EchoFormat(), transport=EchoTransport, settings=EchoSettings)
