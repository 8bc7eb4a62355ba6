"""What one result line says: a provider's output- or error-file line, read as untrusted.

A line is keyed by its `custom_id`, which is our attempt id (`<store_id>-<nonce>-<n>`, the
nonce its intent's: `parse_line` takes that prefix, so a line of another copy of the store
is an anomaly; `<store_id>-<n>` before migration 0005). A line that
is not JSON, carries an id that is not ours, or holds a number no database integer holds is
an `Anomaly`; so is a line longer than `max_result_line_bytes`, which `capped_lines` skips
while streaming, never holding it whole. Pure functions: ingest.py records what they find.
"""

from __future__ import annotations

import os
import re
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import orjson

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

    def success(self) -> Success:
        """This succeeded line as the `Success` tuple ingest records (`ok` only)."""
        u = self.usage
        if u is None:
            detail: tuple[int | None, int | None, int | None, int | None] = (None,) * 4
            flag = "missing: usage" if self.input_tokens is None else None
        else:
            detail, flag = (u.cached, u.write_5m, u.write_1h, u.reasoning), u.flag
        return (
            self.attempt_id,
            self.status_code,
            self.provider_request_id,
            self.body,
            self.input_tokens,
            self.output_tokens,
            *detail,
            flag,
            self.model,
        )


# A succeeded line as a plain tuple, what ingest records of it: making a `Finding` (and then an
# `Outcome`) costs ~2 µs a line, at up to 50,000 lines a batch. Its fields, by position:
# attempt id, status code, provider request id, body, input and output tokens, cached tokens,
# 5-minute and 1-hour cache writes, reasoning tokens (these four None when the line gave no
# usage), the usage flag (None: priceable), and the model that answered (None: the batch's).
Success = tuple[
    int,
    int | None,
    str | None,
    bytes | None,
    int | None,
    int | None,
    int | None,
    int | None,
    int | None,
    int | None,
    str | None,
    str | None,
]


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

    def success(
        self, attempt: int, line: dict[str, Any], endpoint: str | None
    ) -> Success | None: ...


def _line_object(line: bytes) -> dict[str, Any]:
    """A result line's JSON object; Anomaly if it is not JSON or not an object."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise Anomaly(f"result line is not JSON ({exc}): {line[:80]!r}") from None
    if type(obj) is not dict:
        raise Anomaly(f"result line is not a JSON object: {line[:80]!r}")
    return obj


def parse_line(line: bytes, store_id: str, endpoint: str | None, fmt: ReadsResults) -> Finding:
    """Parse one output- or error-file line; raise Anomaly if it is not ours or not readable.
    What the line says is read by the provider's format (`fmt.result`)."""
    obj = _line_object(line)
    attempt = attempt_id_of(obj.get(fmt.id_field), store_id)
    return fmt.result(attempt, obj, endpoint)


def read_line(
    line: bytes, store_id: str, endpoint: str | None, fmt: ReadsResults, hint: int = -1
) -> Success | Finding:
    """`parse_line` as ingest records it: a succeeded line as its `Success` tuple (read by the
    format's fast path where it has one for the line's shape), any other as its `Finding`.
    `hint`: the attempt number `in_attempt_order` read; taken when the id is exactly it."""
    obj = _line_object(line)
    custom_id = obj.get(fmt.id_field)
    if hint >= 0 and custom_id == f"{store_id}-{hint}":
        attempt = hint
    else:
        attempt = attempt_id_of(custom_id, store_id)
    quick = fmt.success(attempt, obj, endpoint)
    if quick is not None:
        return quick
    finding = fmt.result(attempt, obj, endpoint)
    return finding.success() if finding.ok else finding


def text_or_none(v: object) -> str | None:
    """A result field as text (None stays None)."""
    return None if v is None else str(v)


class Downloaded(Protocol):
    """A downloaded result file (`providers.base.ResultFile`): what a reader needs of it, named
    here because the providers package imports this module (importing any module of a package
    runs its `__init__`, so importing that one from here was a cycle: `import llmbatch.results`
    in a fresh interpreter failed)."""

    @property
    def path(self) -> Path: ...


def capped_lines(files: Sequence[Downloaded], cap: int) -> Iterator[bytes | int]:
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
    files: Sequence[Downloaded], cap: int, id_field: str, prefix: str
) -> Iterator[tuple[int, bytes | int]]:
    """`capped_lines`' lines, those whose id a quick look reads as one of `prefix`'s attempts
    in attempt order, the rest (and every over-long line's length) first, in file order;
    each with the attempt number the quick look read (-1: none), which `read_line` checks.

    A provider writes results in its own order (the emulator's, like the real services', is
    not the input's): applied in that order, each chunk of outcomes touches rows all over the
    attempts and requests tables and every chunk rewrites nearly every page of both. In
    attempt order a chunk touches a run of neighbouring rows. The quick look only orders;
    every line is still read in full by `read_line`. Holds four integers a line, not the
    lines: the index is made a block at a time (`_Index`), then each line is read again from
    the file (in the page cache) with one `pread`."""
    pattern = re.compile(
        rb'"'
        + re.escape(id_field.encode())
        + rb'"\s*:\s*"'
        + re.escape(prefix.encode())
        + rb'-(\d{1,18})"'
    )
    index = _Index()
    handles = []
    try:
        for n, f in enumerate(files):
            fh = open(f.path, "rb")  # noqa: SIM115 - kept open for the second pass
            handles.append(fh)
            index.add(fh, n, cap, pattern)
        fds = [fh.fileno() for fh in handles]
        keys, file_of, offsets, sizes = index.keys, index.file_of, index.offsets, index.sizes
        pread = os.pread
        for i in sorted(range(len(keys)), key=keys.__getitem__):  # stable: file order kept
            size = sizes[i]
            if size < 0:
                yield -1, -size
                continue
            fd, at = fds[file_of[i]], offsets[i]
            line = pread(fd, size, at)
            if len(line) < size:  # a regular file reads whole unless it shrank
                line = _pread(fd, size, at)
            line = line.rstrip(b"\r\n")
            if line.strip():
                yield keys[i], line
    finally:
        for fh in handles:
            fh.close()


class _Index:
    """Per line of the files: the attempt number a quick look reads (-1: none), the file,
    the offset and the length (its newline not counted, so the line is read back without
    a copy to strip it; < 0: an over-long line's length, not read)."""

    def __init__(self) -> None:
        self.keys, self.file_of, self.offsets = array("q"), array("q"), array("q")
        self.sizes = array("q")

    def add(self, fh: IO[bytes], n: int, cap: int, pattern: re.Pattern[bytes]) -> None:
        """Index an open file a block at a time: the lines and lengths `_spans` reads, at a
        fraction of a `readline` a line."""
        search, find = pattern.search, bytes.find
        keys, file_of, offsets, sizes = self.keys, self.file_of, self.offsets, self.sizes
        base, pos, buf = 0, 0, fh.read(CHUNK)  # base: the file offset of buf[0]
        while buf:
            nl = find(buf, b"\n", pos)
            if nl >= 0:  # a whole line in the block
                if nl - pos > cap:
                    keys.append(-1)
                    sizes.append(pos - nl)
                else:
                    m = search(buf, pos, nl + 1)
                    keys.append(int(m.group(1)) if m else -1)
                    sizes.append(nl - pos)
                file_of.append(n)
                offsets.append(base + pos)
                pos = nl + 1
                continue
            # the block's last line goes on past it: read the rest of it, up to the cap
            start, line = base + pos, buf[pos:]
            if len(line) <= cap:
                line += fh.readline(cap + 1 - len(line))
            if len(line) > cap and not line.endswith(b"\n"):  # over-long: read past it
                size = len(line)
                while line and not line.endswith(b"\n"):
                    line = fh.readline(CHUNK)
                    size += len(line)
                keys.append(-1)
                sizes.append(-(size - (1 if line.endswith(b"\n") else 0)))
            elif line:
                size = len(line)
                m = search(line)
                keys.append(int(m.group(1)) if m else -1)
                sizes.append(size - 1 if line.endswith(b"\n") else size)
            else:
                return
            file_of.append(n)
            offsets.append(start)
            base, pos, buf = start + size, 0, fh.read(CHUNK)


def _pread(fd: int, size: int, offset: int) -> bytes:
    """`size` bytes of a file at `offset` (a regular file reads whole unless it shrank)."""
    data = os.pread(fd, size, offset)
    while len(data) < size:
        more = os.pread(fd, size - len(data), offset + len(data))
        if not more:
            break
        data += more
    return data


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
