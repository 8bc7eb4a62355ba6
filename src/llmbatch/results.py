"""What one result line says: a provider's output- or error-file line, read as untrusted.

A line is keyed by its `custom_id`, which is our attempt id (`<store_id>-<nonce>-<n>`, the
nonce its intent's: `parse_line` takes that prefix, so a line of another copy of the store
is an anomaly; `<store_id>-<n>` before migration 0005). A line that
is not JSON, carries an id that is not ours, or holds a number no database integer holds is
an `Anomaly`; so is a line longer than `max_result_line_bytes`, which `capped_lines` skips
while streaming, never holding it whole. Pure functions: ingest.py records what they find.
"""

from __future__ import annotations

import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any, Protocol

import orjson

from llmbatch.providers.base import ResultFile
from llmbatch.usage import UsageRecord

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
    model: str | None = None  # the model that answered, where the line says

    @classmethod
    def succeeded(
        cls,
        attempt_id: int,
        *,
        status: int,
        request_id: str | None,
        body: bytes,
        usage: UsageRecord,
        model: str | None = None,
    ) -> Finding:
        """A line with the provider's answer, its tokens as `usage` counts them."""
        return cls(
            attempt_id,
            ok=True,
            status_code=status,
            provider_request_id=request_id,
            body=body,
            error_code=None,
            error_type=None,
            error_message=None,
            input_tokens=usage.input,
            output_tokens=usage.output,
            usage=usage,
            model=model,
        )

    @classmethod
    def failed(
        cls,
        attempt_id: int,
        *,
        code: str,
        error_type: str | None,
        message: str,
        status: int | None = None,
        request_id: str | None = None,
        body: bytes | None = None,
    ) -> Finding:
        """A line with an error for the request (no tokens: nothing was billed)."""
        return cls(
            attempt_id,
            ok=False,
            status_code=status,
            provider_request_id=request_id,
            body=body,
            error_code=code,
            error_type=error_type,
            error_message=message,
            input_tokens=None,
            output_tokens=None,
        )


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


class ReadsResults(Protocol):
    """The part of a provider's format (providers/plugin.py) that reads a result line."""

    id_field: str  # the field that carries a line's id (`custom_id`; Gemini's `key`)

    def result(self, attempt: int, line: dict[str, Any], endpoint: str | None) -> Finding: ...


def parse_line(line: bytes, store_id: str, endpoint: str | None, fmt: ReadsResults) -> Finding:
    """Parse one output- or error-file line; raise Anomaly if it is not ours or not readable.
    What the line says is read by the provider's format (`fmt.result`)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise Anomaly(f"result line is not JSON ({exc}): {line[:80]!r}") from None
    if not isinstance(obj, dict):
        raise Anomaly(f"result line is not a JSON object: {line[:80]!r}")
    attempt = attempt_id_of(obj.get(fmt.id_field), store_id)
    return fmt.result(attempt, obj, endpoint)


def text_or_none(v: object) -> str | None:
    """A result field as text (None stays None)."""
    return None if v is None else str(v)


def capped_lines(files: Sequence[ResultFile], cap: int) -> Iterator[bytes | int]:
    """Every non-blank line of the downloaded files, streamed; a line longer than `cap` bytes
    is skipped without being held whole, and its length given instead."""
    for f in files:
        with open(f.path, "rb") as fh:
            for _start, raw in _spans(fh, cap):
                if isinstance(raw, int):
                    yield raw
                    continue
                line = raw.rstrip(b"\r\n")
                if line.strip():
                    yield line


def _spans(fh: IO[bytes], cap: int) -> Iterator[tuple[int, bytes | int]]:
    """Each line of an open file with its offset: the raw line, or for a line longer than
    `cap` bytes its length (newline not counted), read past without being held whole."""
    at = 0
    while raw := fh.readline(cap + 1):
        start, at = at, at + len(raw)
        if len(raw) > cap and not raw.endswith(b"\n"):
            size = len(raw)
            while raw and not raw.endswith(b"\n"):
                raw = fh.readline(CHUNK)
                size += len(raw)
                at += len(raw)
            yield start, size - (1 if raw.endswith(b"\n") else 0)
        else:
            yield start, raw


def in_attempt_order(
    files: Sequence[ResultFile], cap: int, id_field: str, prefix: str
) -> Iterator[bytes | int]:
    """`capped_lines`' lines, those whose id a quick look reads as one of `prefix`'s attempts
    in attempt order, the rest (and every over-long line's length) first, in file order.

    A provider writes results in its own order (the emulator's, like the real services', is
    not the input's): applied in that order, each chunk of outcomes touches rows all over the
    attempts and requests tables and every chunk rewrites nearly every page of both. In
    attempt order a chunk touches a run of neighbouring rows. The quick look only orders;
    every line is still read in full by `parse_line`. Holds three integers a line, not the
    lines: they are read again from the file (in the page cache) one by one."""
    pattern = re.compile(
        rb'"'
        + re.escape(id_field.encode())
        + rb'"\s*:\s*"'
        + re.escape(prefix.encode())
        + rb'-(\d{1,18})"'
    )
    keys, file_of, offsets = array("q"), array("q"), array("q")
    sizes = array("q")  # < 0: an over-long line, not read
    handles = []
    try:
        for n, f in enumerate(files):
            fh = open(f.path, "rb")  # noqa: SIM115 - kept open for the second pass
            handles.append(fh)
            for start, raw in _spans(fh, cap):
                if isinstance(raw, int):  # over-long: its length, negated
                    keys.append(-1)
                    sizes.append(-raw)
                else:
                    m = pattern.search(raw)
                    keys.append(int(m.group(1)) if m else -1)
                    sizes.append(len(raw))
                file_of.append(n)
                offsets.append(start)
        for i in sorted(range(len(keys)), key=keys.__getitem__):  # stable: file order kept
            size = sizes[i]
            if size < 0:
                yield -size
                continue
            fh = handles[file_of[i]]
            fh.seek(offsets[i])
            line = fh.read(size).rstrip(b"\r\n")
            if line.strip():
                yield line
    finally:
        for fh in handles:
            fh.close()


def openai_output_text(body: dict[str, Any]) -> str:
    """The text of a body in the OpenAI shapes: chat `choices[0].message.content` (completions:
    `choices[0].text`); Responses: the `output_text` parts of its `message` items, joined (what
    the SDK's `response.output_text` gives)."""
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
