"""Processing capacity per model, shared by every batch of that model, as at the provider.

Without a `capacity` setting for a model (the default) each batch runs on its own at the
per-batch `rate`, as before: splitting work into more batches finishes sooner. With one,
`{"requests_per_second": r, "tokens_per_second": t}` (either or both; `"*"` for every
model), all batches of that model on one door draw on one processor whose clock is the
virtual time up to which its capacity is spent. A chunk of `n` requests worth `k` tokens
starts when both its batch and the model are free and lasts
``max(n / rate, n / r, k / t)`` virtual seconds; it runs only once the clock has passed its
start. The worker gives each active batch one chunk per round, so batches of one model share
the capacity in turn and together take as long as one batch of all their requests — never
less. A chunk's token count is known only after it runs, so its size is planned from the
batch's tokens per request so far; the model's clock then moves by what it really cost.

The model's clock is kept in memory and, after a restart, read back as the latest
`last_t` (end of processing so far) of that model's batches: nothing extra is stored.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llmbatch.emulator.core import Emulator

CHUNK = 512
Key = tuple[str, str]


class Capacity:
    """The per-model processors of one emulator (used by its worker thread only)."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self._free_at: dict[Key, float] = {}

    def limits(self, model: str) -> tuple[float, float] | None:
        """(requests/s, tokens/s) for `model`, or None when its capacity is unlimited."""
        table = self.emu.cfg.capacity
        # A Gemini batch names its model `models/NAME`; the setting names it as users do.
        entry = table.get(model.removeprefix("models/")) or table.get("*")
        if not entry:
            return None
        return (
            entry.get("requests_per_second", math.inf),
            entry.get("tokens_per_second", math.inf),
        )

    def _free(self, key: Key) -> float:
        found = self._free_at.get(key)
        if found is None:
            found = self._free_at[key] = self.emu.state.model_busy_until(*key)
        return found

    def grant(
        self, key: Key, last_t: float, horizon: float, remaining: int, tokens_per_request: float
    ) -> tuple[int, float]:
        """(how many requests a batch of `key` = (door, model) may run now, the virtual
        time they start), given the batch's own clock `last_t` and the time `horizon` up to
        which it may work."""
        rate = self.emu.cfg.rate
        limits = self.limits(key[1])
        if limits is None:
            credit = math.floor((horizon - last_t) * rate + 1e-9)
            return max(0, min(credit, remaining, CHUNK)), last_t
        start = max(last_t, self._free(key))
        room = horizon - start
        if room <= 0:
            return 0, start
        requests, tokens = limits
        each = max(1 / rate, 1 / requests, max(tokens_per_request, 1.0) / tokens)
        n = math.floor(room / each + 1e-9)
        return max(0, min(n, remaining, CHUNK)), start

    def spend(self, key: Key, start: float, n: int, tokens: int) -> float:
        """Record `n` requests worth `tokens` run from `start`; returns when they end."""
        rate = self.emu.cfg.rate
        limits = self.limits(key[1])
        if limits is None:
            return start + n / rate
        requests, per_second = limits
        end = start + max(n / rate, n / requests, tokens / per_second)
        self._free_at[key] = max(self._free(key), end)
        return end
