"""How long a synthetic reply is, and its words: the emulator's length rule.

**Text replies.** A reply's natural length is log-normal with a median that grows with the
prompt, ``min(600, 24 + prompt_tokens / 4)`` tokens, and a spread σ = 0.7 (so the middle
90 % lie within a factor of 3.2 of the median). A request's cap (`max_tokens`,
`max_completion_tokens`, `max_output_tokens`) is read as the length its caller expects: a
`length_rate` share of capped requests (default 1 %, chosen by the request's hash) runs
into the cap (`finish_reason: "length"`); the others are drawn from the distribution cut
below the cap, so a cap of 64 yields replies of 1–63 tokens, never a pile-up at 64. With no
cap, the model's largest output bounds the reply (reached almost never).

**Structured replies** (JSON for a schema, tool arguments) are as long as their text's
tokens; longer than the cap, the text is cut at the cap; in the `length_rate` share it
rambles inside its first string value until the cap cuts it. Cut text is not valid JSON, as
the service's is not.

Everything is chosen by the request body's hash, so the same request gets the same reply.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import islice
from statistics import NormalDist
from typing import Any

from llmbatch.emulator.envelope import RequestError

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORDS = [
    *("the", "batch", "emulator", "answers", "every", "request", "with", "words", "chosen"),
    *("by", "a", "hash", "so", "that", "the", "same", "request", "always", "gets", "the"),
    *("same", "reply", "and", "the", "counts", "add", "up", "exactly", "while", "nobody"),
    *("pays", "anything", "for", "tokens", "that", "were", "never", "really", "generated"),
    *("by", "any", "model", "at", "all", "today"),
]
_TEXT = [_WORDS[(i * 7 + i // len(_WORDS)) % len(_WORDS)] for i in range(8192)]
SIGMA = 0.7
MEDIAN_BASE, MEDIAN_PER_PROMPT_TOKEN, MEDIAN_MAX = 24.0, 0.25, 600.0
_NORMAL = NormalDist()
# The standard normal's quantiles on a grid (NormalDist.inv_cdf costs microseconds a call).
_STEPS = 4096
_QUANTILES = [_NORMAL.inv_cdf(min(max(i / _STEPS, 1e-9), 1 - 1e-9)) for i in range(_STEPS + 1)]


def _quantile(p: float) -> float:
    x = p * _STEPS
    i = min(int(x), _STEPS - 1)
    return _QUANTILES[i] + (_QUANTILES[i + 1] - _QUANTILES[i]) * (x - i)


def _ascii_classes() -> bytes:
    """Each ASCII byte as its class under the rule, as `re` sees it: `a` a word character,
    ` ` a space, `.` anything else (a token on its own)."""
    table = bytearray(b"." * 256)
    for i in range(128):
        if re.fullmatch(r"\w", chr(i)):
            table[i] = ord("a")
        elif re.fullmatch(r"\s", chr(i)):
            table[i] = ord(" ")
    return bytes(table)


_CLASSES = _ascii_classes()


def text_tokens(text: str) -> int:
    """Tokens of a text under the emulator's rule: one per `\\w+|[^\\w\\s]` match.

    ASCII text (nearly every prompt) is counted without the regex, ~4x faster: each byte
    becomes its class (`_CLASSES`), and the tokens are the punctuation bytes plus the word
    runs (a word byte after a space, after punctuation, or first)."""
    if not text.isascii():
        return len(_TOKEN.findall(text))
    t = text.encode().translate(_CLASSES)
    return t.count(b".") + t.count(b" a") + t.count(b".a") + t.startswith(b"a")


def share(h: bytes, offset: int) -> float:
    """A number in [0, 1) taken from bytes `offset..offset+4` of a hash."""
    return int.from_bytes(h[offset : offset + 4], "big") / 2**32


def words(h: bytes, n: int) -> str:
    """`n` words (so `n` tokens under the rule) chosen by the hash `h`."""
    start = int.from_bytes(h[12:16], "big") % 4096
    if n <= 4096:
        return " ".join(_TEXT[start : start + n])
    return " ".join(_TEXT[(start + i) % 8192] for i in range(n))


_TEXT_BYTES = [w.encode() for w in _TEXT]


def words_bytes(h: bytes, n: int) -> bytes:
    """`words(h, n)` encoded (as JSON, inside quotes: they need no escapes)."""
    if n <= 4096:
        start = int.from_bytes(h[12:16], "big") % 4096
        return b" ".join(_TEXT_BYTES[start : start + n])
    return words(h, n).encode()


def median(prompt_tokens: int) -> float:
    """The median natural reply length for a prompt of this size."""
    return min(MEDIAN_MAX, MEDIAN_BASE + MEDIAN_PER_PROMPT_TOKEN * prompt_tokens)


def text_length(
    h: bytes, prompt_tokens: int, cap: int | None, length_rate: float, ceiling: int = 0
) -> tuple[int, bool]:
    """(output tokens, whether the cap cut the reply) for a text reply. `cap` is the
    request's; `ceiling` the model's largest output (0: none)."""
    # `share`, `median` and `_quantile` written out: the batch worker calls this per line.
    if cap is not None and int.from_bytes(h[4:8], "big") / 2**32 < length_rate:
        return cap, True
    m = min(MEDIAN_MAX, MEDIAN_BASE + MEDIAN_PER_PROMPT_TOKEN * prompt_tokens)
    top = cap if cap is not None else (ceiling or None)
    if top is not None and top <= 1:
        return 1, cap is None and ceiling == 1
    # Inverse CDF of the log-normal, cut below `top` (rounded lengths stay under it).
    p_top = 1.0 if top is None else _cdf_below(top, m)
    x = int.from_bytes(h[0:4], "big") / 2**32 * p_top * _STEPS
    i = min(int(x), _STEPS - 1)
    low = _QUANTILES[i]
    n = max(1, round(m * math.exp(SIGMA * (low + (_QUANTILES[i + 1] - low) * (x - i)))))
    if top is not None and n >= top:
        n = top - 1
    return n, False


@lru_cache(maxsize=4096)
def _cdf_below(top: int, m: float) -> float:
    """The share of natural lengths that round below `top`."""
    return _NORMAL.cdf((math.log(top - 0.5) - math.log(m)) / SIGMA)


def cut(text: str, n: int) -> str:
    """The first `n` tokens of `text` (and nothing after the last of them)."""
    end = 0
    for match in islice(_TOKEN.finditer(text), n):
        end = match.end()
    return text[:end]


def _first_string_value(text: str) -> int:
    """Where the first string value of compact JSON starts (after its quote), or -1."""
    spots = [i + 3 for i in (text.find('":"'),) if i >= 0]
    spots += [i + 2 for i in (text.find('["'),) if i >= 0]
    return min(spots) if spots else -1


def fit(text: str, h: bytes, cap: int | None, length_rate: float) -> tuple[str, int, bool]:
    """A structured text against the cap: (text, tokens, whether the cap cut it)."""
    n = text_tokens(text)
    if cap is None:
        return text, n, False
    if n > cap:
        return cut(text, cap), cap, True
    if share(h, 4) >= length_rate:
        return text, n, False
    start = _first_string_value(text)
    if start < 0:
        return text, n, False  # nothing to ramble in: numbers, enums, booleans only
    prefix = text[:start]
    k = text_tokens(prefix)
    if k >= cap:
        return cut(prefix, cap), cap, True
    return prefix + words(h, cap - k), cap, True


@dataclass(frozen=True)
class Usage:
    """Tokens one request used, in the batch object's terms."""

    input: int
    output: int
    reasoning: int = 0


CAP_KEYS = {
    "chat": ("max_completion_tokens", "max_tokens"),
    "responses": ("max_output_tokens",),
    "completions": ("max_tokens",),
}


def cap_of(kind: str, body: dict[str, Any]) -> tuple[int | None, str | None]:
    """The request's output cap and the parameter that set it; (None, None) when unset
    (legacy completions default to 16, as the service does)."""
    for key in CAP_KEYS.get(kind, ()):
        value = body.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RequestError(f"Invalid '{key}': must be an integer >= 1.", key)
            return value, key
    return (16, None) if kind == "completions" else (None, None)


def is_reasoning(model: str) -> bool:
    return model.startswith(("o1", "o3", "o4", "gpt-5", "gpt-6"))


def ident(prefix: str, h: bytes, salt: str) -> str:
    return prefix + hashlib.blake2b(h + salt.encode(), digest_size=12).hexdigest()
