"""Splitting ready requests into batches that respect every limit: a pure function."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from llmbatch.providers.base import Limits

LINE_OVERHEAD = 120  # custom_id, method, url and punctuation around each body
MARGIN = 0.95  # stay this far under the byte limit: the provider counts, we estimate


@dataclass(frozen=True, slots=True)
class Cut:
    count: int  # how many candidates go into this batch
    input_bytes: int
    inputs: int
    why: str  # the limit that ended the batch, or "all" when every candidate fits


def cut(
    candidates: Sequence[tuple[int, int, int, int]],
    limits: Limits,
    user_cap: int | None = None,
    token_room: int | None = None,
    tokens: Sequence[int] | None = None,
) -> Cut:
    """How many of the candidates (id, body bytes, embedding inputs, text bytes), taken in
    order, fit one batch: the line cap, the byte cap with a margin, the embedding-input cap,
    the user's cap and the room left under an enqueued-token quota."""
    max_lines = min(limits.max_requests, user_cap or limits.max_requests)
    max_bytes = int(limits.max_bytes * MARGIN)
    size = inputs = used_tokens = 0
    for i, (_rid, nbytes, ninputs, _text) in enumerate(candidates):
        if i >= max_lines:
            return Cut(i, size, inputs, "lines")
        line = nbytes + LINE_OVERHEAD
        if size + line > max_bytes:
            return Cut(i, size, inputs, "bytes")
        if limits.max_inputs is not None and inputs + ninputs > limits.max_inputs:
            return Cut(i, size, inputs, "embedding inputs")
        if token_room is not None and tokens is not None:
            if used_tokens + tokens[i] > token_room:
                return Cut(i, size, inputs, "token quota")
            used_tokens += tokens[i]
        size += line
        inputs += ninputs
    return Cut(len(candidates), size, inputs, "all")
