"""`llmbatch worker` waits out a database it cannot reach: one line when it goes, one when
it is back, a wait that grows to 5 s, and no exit (benchmarks/bench_outages.py, a CI stage,
does it for real, with PostgreSQL restarted and its connections terminated)."""

from __future__ import annotations

from typing import Any

from llmbatch.engine import TickReport
from llmbatch.errors import StoreUnavailable
from llmbatch.worker import Worker


class FlakyEngine:
    """Ticks that fail while the database is `down` (a list of tick numbers)."""

    def __init__(self, down: set[int]) -> None:
        self.down, self.ticks, self.closed = down, 0, False
        self.next_poll_at = 0.0

    def tick(self, now: float) -> TickReport:
        self.ticks += 1
        if self.ticks in self.down:
            raise StoreUnavailable("lost the connection to PostgreSQL at db:5432/q: terminated")
        return TickReport()

    def close(self) -> None:
        self.closed = True


def serve(engine: FlakyEngine, ticks: int) -> tuple[list[str], list[float]]:
    now = [1000.0]
    waits: list[float] = []
    lines: list[str] = []
    worker = Worker(engine, interval=0.1)  # type: ignore[arg-type]
    worker.log = lines.append

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        now[0] += seconds

    def on_tick(_report: Any) -> None:
        worker.stopping = engine.ticks >= ticks

    worker.serve(clock=lambda: now[0], sleep=sleep, on_tick=on_tick)
    return lines, waits


def test_an_outage_is_said_once_waited_out_and_its_end_said() -> None:
    engine = FlakyEngine(down={2, 3, 4, 5})
    lines, _waits = serve(engine, ticks=7)
    assert engine.ticks == 7 and engine.closed
    assert len(lines) == 2, lines
    assert lines[0].startswith("lost the connection to PostgreSQL at db:5432/q")
    assert "waiting for the database" in lines[0]
    # down from tick 2 (t=1000.1) to tick 6: 0.25 + 0.5 + 0.75 + 1.0 s of waiting
    assert lines[1] == "the database is back after 2.5 s"


def test_the_wait_grows_to_five_seconds_and_stays_there() -> None:
    engine = FlakyEngine(down=set(range(1, 41)))
    lines, waits = serve(engine, ticks=41)
    assert len(lines) == 2  # one line going down, one coming back: not one per try
    assert max(waits) <= 5.0
    assert sum(waits) > 150  # 40 tries over minutes, not a hot loop
