"""A conservative token estimate from the cheap size stats stored at enqueue (no tokenizer).

Used for the per-model enqueued-token quota and for packing; it overestimates on purpose
(a quota exceeded fails a whole batch). Tokenizer-grade estimates belong to `estimate`.
"""

from __future__ import annotations

BYTES_PER_TOKEN = 3.0  # English averages ~4 bytes a token; CJK and code pack fewer
OVERHEAD_TOKENS = 16  # message framing, role names, formatting


def estimate_tokens(text_bytes: int) -> int:
    """An upper-leaning estimate of a request's input tokens."""
    return int(text_bytes / BYTES_PER_TOKEN) + OVERHEAD_TOKENS
