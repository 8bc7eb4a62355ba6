"""The emulator's one virtual clock: `virtual = start + scale × real elapsed + advances`.

Everything a batch does — `expires_at`, state durations, the processing rate — runs on this
clock, so a test can advance a day in one call instead of sleeping. Only `retry-after`
headers are in real seconds, because the client sleeps in real time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class VirtualClock:
    """A monotone virtual clock; thread-safe."""

    def __init__(
        self,
        start: float | None = None,
        scale: float = 1.0,
        advanced: float = 0.0,
        real: Callable[[], float] = time.time,
    ) -> None:
        if scale < 0:
            raise ValueError("time scale must be >= 0")
        self._real = real
        self._lock = threading.Lock()
        self._anchor_real = real()
        self._start = self._anchor_real if start is None else float(start)
        self._scale = float(scale)
        self._advanced = float(advanced)

    @property
    def scale(self) -> float:
        return self._scale

    @property
    def advanced(self) -> float:
        return self._advanced

    def now(self) -> float:
        """The current virtual time, in Unix seconds."""
        with self._lock:
            elapsed = self._real() - self._anchor_real
            return self._start + self._scale * elapsed + self._advanced

    def advance(self, seconds: float) -> float:
        """Jump forward by `seconds` virtual seconds; returns the new virtual time."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        with self._lock:
            self._advanced += seconds
        return self.now()

    def state(self) -> dict[str, float]:
        """What to persist so a restart continues where this clock is now."""
        with self._lock:
            return {
                "start": self._start,
                "anchor_real": self._anchor_real,
                "scale": self._scale,
                "advanced": self._advanced,
            }

    @classmethod
    def restore(
        cls, saved: dict[str, float], scale: float, real: Callable[[], float] = time.time
    ) -> VirtualClock:
        """Continue a saved clock. Real time that passed while stopped counts at the saved
        scale; from now on time runs at `scale` (rebased so virtual time never jumps)."""
        old = cls(saved["start"], saved["scale"], saved["advanced"], real)
        old._anchor_real = saved["anchor_real"]
        now = old.now()
        return cls(now, scale, 0.0, real) if scale != saved["scale"] else old
