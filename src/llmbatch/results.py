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

from llmbatch.defaults import PROVIDER
from llmbatch.providers import format_of
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
    line: bytes, store_id: str, endpoint: str | None = None, provider: str = PROVIDER
) -> Finding:
    """Parse one output- or error-file line; raise Anomaly if it is not ours or not readable.
    What the line says is read by the provider's format (`Format.result`)."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise Anomaly(f"result line is not JSON ({exc}): {line[:80]!r}") from None
    if not isinstance(obj, dict):
        raise Anomaly(f"result line is not a JSON object: {line[:80]!r}")
    fmt = format_of(provider)
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
