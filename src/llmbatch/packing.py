"""Splitting ready requests into batches that respect every limit: a pure function."""

from __future__ import annotations

from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field

from llmbatch.providers.base import Limits
from llmbatch.tokens import estimate_tokens

LINE_OVERHEAD = 120  # custom_id, method, url and punctuation around each body
MARGIN = 0.95  # stay this far under the byte limit: the provider counts, we estimate


@dataclass(slots=True)
class Cut:
    """The requests of one batch, and the limit that ended it."""

    ids: array[int] = field(default_factory=lambda: array("q"))
    input_bytes: int = 0
    inputs: int = 0
    tokens: int = 0
    why: str = "all"  # the limit that ended the batch, or "all" when every candidate fits
    too_large: int | None = None  # a first candidate no batch of these limits can hold

    @property
    def count(self) -> int:
        return len(self.ids)


def cut(
    candidates: Iterable[tuple[int, int, int, int]],
    limits: Limits,
    user_cap: int | None = None,
    token_room: int | None = None,
) -> Cut:
    """Take candidates (id, body bytes, embedding inputs, text bytes) in order while they fit
    one batch: the line cap, the byte cap with a margin, the embedding-input cap, the user's
    cap and the room left under an enqueued-token quota. Streams: ids are kept, rows are not."""
    max_lines = min(limits.max_requests, user_cap or limits.max_requests)
    max_bytes = int(limits.max_bytes * MARGIN)
    out = Cut()
    for rid, nbytes, ninputs, text_bytes in candidates:
        if len(out.ids) >= max_lines:
            out.why = "lines"
            break
        line = nbytes + LINE_OVERHEAD
        too_many_inputs = limits.max_inputs is not None and ninputs > limits.max_inputs
        if not out.ids and (line > max_bytes or too_many_inputs):
            out.why, out.too_large = "too large", rid  # alone it would block its group forever
            break
        if out.input_bytes + line > max_bytes:
            out.why = "bytes"
            break
        if limits.max_inputs is not None and out.inputs + ninputs > limits.max_inputs:
            out.why = "embedding inputs"
            break
        tokens = estimate_tokens(text_bytes)
        if token_room is not None and out.tokens + tokens > token_room:
            out.why = "token quota"
            break
        out.ids.append(rid)
        out.input_bytes += line
        out.inputs += ninputs
        out.tokens += tokens
    return out
