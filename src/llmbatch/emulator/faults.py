"""Fault rules: what the control API can make the emulator do wrong, and when.

A rule is JSON::

    {"op": "batches.create", "kind": "500", "mode": "after", "rate": 1.0, "count": 1}

- `op`: an operation name (`files.create`, `files.list`, `files.retrieve`, `files.delete`,
  `files.content`, `batches.create`, `batches.retrieve`, `batches.list`, `batches.cancel`,
  `models.list`, `chat.completions`, `responses`, `embeddings`, `completions`,
  `moderations`; Anthropic: `messages.batches.create|retrieve|list|cancel|delete|results`,
  `messages.create`, `messages.count_tokens`, `models.list|retrieve`; Gemini:
  `files.create` (an upload's start), `files.upload` (its data), `files.get|list|delete|download`,
  `batches.create|create_embeddings|get|list|cancel|delete`), a prefix pattern such as
  `batches.*` or `messages.batches.*`, or `*`.
- `flavor`: `openai`, `azure`, `anthropic`, `gemini` or `*` (default).
- `kind`: `500`, `502`, `503`, `529` (server error; Anthropic's envelope says `api_error`,
  or `overloaded_error` for 503/529), `429` (with `retry-after`, real seconds,
  from `retry_after`, default 1), `401` (the key is refused, as a wrong or revoked key
  is: the emulator itself takes any non-empty key), `latency` (sleep `seconds` real seconds), `drop` (the
  connection dies mid-response: for `files.content`, after half the file), or `list_lag`
  (for `batches.list`/`files.list`: objects created in the last `seconds` virtual seconds
  are missing from lists).
- Responses that are wrong in shape rather than status, as proxies and bad days make them:
  `502_html` (a load balancer's HTML 502 page), `200_html` (an HTML page answered 200, as a
  captive portal or a login proxy does: the wrong content type), `no_output_file` (a
  retrieved or listed batch says `output_file_id: null` and `error_file_id: null`, even when
  completed). For a download (`files.content`, `messages.batches.results`): `truncate`
  (only the first half of the file, sent as if whole: no connection error, the length
  header matches), and, keeping the file's size so that a size check passes:
  `garble_line` (the first line is `#…#`, not JSON), `foreign_line` (the first line's
  `custom_id` becomes another app's, `zzz…`, as long), `duplicate_line` (the longest line
  is replaced by the shortest, padded with spaces: one custom_id twice, one missing; a file
  of one line is left alone). These change
  the operation's real answer, so `mode` is `after` whatever the rule says (except the HTML
  pages, which honour it).
- `mode`: `before` (fail instead of doing the operation) or `after` (do it — store the
  file, create the batch — and then fail the response; the case that breaks naive
  exactly-once). Ignored by `list_lag`.
- `delay_before`: real seconds the call waits *before* it acts (stores the file, creates
  the batch), whatever the rule's kind, as a gateway or an overloaded service holds a
  request: a client that gives up meanwhile has not stopped the work, which happens after
  it left. `latency` with `mode: after` waits after the work instead; both can be set.
- `rate`: the chance each matching call is hit (default 1); `count`: how many calls it
  hits before it retires (default unlimited).
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import asdict, dataclass
from typing import Any

# Kinds that rewrite the real answer (see the module docstring); the rest replace it.
REWRITES = ("no_output_file", "truncate", "garble_line", "foreign_line", "duplicate_line")
KINDS = (
    "500",
    "502",
    "503",
    "529",
    "429",
    "401",
    "latency",
    "drop",
    "list_lag",
    "502_html",
    "200_html",
    *REWRITES,
)
MODES = ("before", "after")


class FaultError(ValueError):
    """A fault rule that makes no sense; the control API answers 400 with this message."""


@dataclass
class Rule:
    """One fault rule (see the module docstring)."""

    op: str
    kind: str
    mode: str = "before"
    flavor: str = "*"
    rate: float = 1.0
    count: int | None = None
    retry_after: float = 1.0
    seconds: float = 0.0
    delay_before: float = 0.0
    hits: int = 0

    def matches(self, op: str, flavor: str) -> bool:
        if self.flavor not in ("*", flavor):
            return False
        if self.op == "*" or self.op == op:
            return True
        return self.op.endswith(".*") and op.startswith(self.op[:-1])

    @property
    def status(self) -> int:
        code = self.kind.removesuffix("_html")
        return int(code) if code.isdigit() else 0


def parse_rule(data: Any) -> Rule:
    """Build a Rule from control-API JSON, rejecting anything unclear."""
    if not isinstance(data, dict):
        raise FaultError("a fault rule must be a JSON object")
    allowed = {"op", "kind", "mode", "flavor", "rate", "count", "retry_after", "seconds"}
    allowed.add("delay_before")
    unknown = set(data) - allowed
    if unknown:
        raise FaultError(f"unknown fault field(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    op, kind = data.get("op"), str(data.get("kind", ""))
    if not isinstance(op, str) or not op:
        raise FaultError("fault 'op' must be an operation name such as 'batches.create' or '*'")
    if kind not in KINDS:
        raise FaultError(f"fault 'kind' must be one of {list(KINDS)}, got {data.get('kind')!r}")
    mode = data.get("mode", "before")
    if mode not in MODES:
        raise FaultError(f"fault 'mode' must be 'before' or 'after', got {mode!r}")
    flavor = data.get("flavor", "*")
    if not isinstance(flavor, str) or not re.fullmatch(r"\*|[a-z0-9][a-z0-9_-]*", flavor):
        raise FaultError(
            "fault 'flavor' must be 'openai', 'azure', 'anthropic', 'gemini', a configured "
            f"service's name or '*', got {flavor!r}"
        )
    rate = _number(data, "rate", 1.0)
    if not 0 <= rate <= 1:
        raise FaultError("fault 'rate' must be between 0 and 1")
    count = data.get("count")
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise FaultError("fault 'count' must be a positive integer or null")
    if kind in REWRITES:
        mode = "after"
    rule = Rule(op, kind, mode, flavor, rate, count)
    rule.retry_after = _number(data, "retry_after", 1.0)
    rule.seconds = _number(data, "seconds", 0.0)
    rule.delay_before = _number(data, "delay_before", 0.0)
    if kind in ("latency", "list_lag") and rule.seconds <= 0:
        raise FaultError(f"a '{kind}' fault needs 'seconds' > 0")
    return rule


def _number(data: dict[str, Any], key: str, default: float) -> float:
    value = data.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise FaultError(f"fault '{key}' must be a number >= 0, got {value!r}")
    return float(value)


class FaultBook:
    """The active rules. Thread-safe; dice are seeded so a run can be repeated."""

    def __init__(self, seed: int | None = None) -> None:
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self._rng = random.Random(seed if seed is not None else 0)

    def add(self, rule: Rule) -> None:
        with self._lock:
            self._rules.append(rule)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def dump(self) -> list[dict[str, Any]]:
        with self._lock:
            return [asdict(r) for r in self._rules]

    def load(self, rules: list[dict[str, Any]]) -> None:
        with self._lock:
            self._rules = [Rule(**r) for r in rules]

    def pick(self, op: str, flavor: str, kinds: tuple[str, ...] | None = None) -> Rule | None:
        """The first matching rule whose dice hit (spending one of its `count`), or None."""
        with self._lock:
            for rule in self._rules:
                if kinds is not None and rule.kind not in kinds:
                    continue
                if kinds is None and rule.kind == "list_lag":
                    continue
                if not rule.matches(op, flavor):
                    continue
                if rule.rate < 1 and self._rng.random() >= rule.rate:
                    continue
                rule.hits += 1
                if rule.count is not None and rule.hits >= rule.count:
                    self._rules.remove(rule)
                return rule
            return None

    def list_lag(self, op: str, flavor: str) -> float:
        """Seconds of list lag in force for this list operation (0 if none)."""
        with self._lock:
            lags = [
                r.seconds for r in self._rules if r.kind == "list_lag" and r.matches(op, flavor)
            ]
        return max(lags, default=0.0)
