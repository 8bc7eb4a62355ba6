"""The Queue API against the emulator: why a wait stops, results as they land, the report,
and a wait that leaves the event loop free."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import body, fast_settings
from llmbatch import Budget, BudgetHeld, BudgetSettings, Queue, WaitTimeout
from llmbatch.emulator.server import running


def test_wait_says_why_it_stopped_and_as_completed_gives_each_result_once(db: str) -> None:
    with running(time_scale=1000.0) as emu, Queue(db, "sweep",
                                                  settings=fast_settings(emu, first_poll=0.05)) as q:  # fmt: skip
        q.add_many({"custom_id": f"{m}/{i}", "body": body(str(i), model=m)}
                   for m in ("gpt-4o-mini", "gpt-4.1-mini") for i in range(5))  # fmt: skip
        seen = [r.custom_id for r in q.as_completed(timeout=60)]
        assert sorted(seen) == sorted({*seen}) and len(seen) == 10
        done = q.wait(timeout=5, progress=False)
        assert done and done.reason == "finished"
        lines = q.report(group_by=("model",))
        assert {ln.model for ln in lines} == {"gpt-4o-mini", "gpt-4.1-mini"}
        assert all(ln.requests == 5 and ln.batch_usd > 0 for ln in lines)
        assert all(r.cost_usd and r.cost_usd > 0 for r in q.results())


def test_a_wait_that_runs_out_of_time_or_budget_says_so(sqlite_db: str, tmp_path: Path) -> None:
    with running(time_scale=0.0) as emu:  # a frozen clock: nothing finishes
        with Queue(sqlite_db, "slow", settings=fast_settings(emu)) as q:
            q.add("s1", body())
            stopped = q.run(timeout=0.3)
            assert not stopped and stopped.reason == "timeout"
            assert "1 requests of queue 'slow' still unfinished after 0.3 s" in stopped.message
            with pytest.raises(WaitTimeout, match=r"still unfinished after 0\.2 s"):
                list(q.as_completed(timeout=0.2))
        capped = fast_settings(emu, budgets=BudgetSettings((Budget(None, "day", Decimal("1e-6")),)))
        with Queue(str(tmp_path / "capped.db"), "capped", settings=capped) as q:
            q.add("c1", body())
            held = q.wait(timeout=30, progress=False)
            assert held.reason == "held" and held.held == 1
            assert "a budget holds the 1 requests left in queue 'capped'" in held.message
            with pytest.raises(BudgetHeld, match="a budget holds"):
                list(q.as_completed(timeout=30))


def test_wait_async_leaves_the_event_loop_free_and_stops_when_cancelled(sqlite_db: str) -> None:
    async def main(q: Queue) -> tuple[int, float]:
        beats = 0

        async def heartbeat() -> None:
            nonlocal beats
            while True:
                beats += 1
                await asyncio.sleep(0.01)

        beat = asyncio.create_task(heartbeat())
        waiting = asyncio.create_task(q.wait_async(timeout=60))
        await asyncio.sleep(0.5)
        started = time.monotonic()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        stopped_in = time.monotonic() - started
        beat.cancel()
        return beats, stopped_in

    with running(time_scale=0.0) as emu, Queue(sqlite_db, "loop", settings=fast_settings(emu)) as q:
        q.add("a1", body())
        beats, stopped_in = asyncio.run(main(q))
        assert beats >= 20  # the loop ran while the engine waited on the provider
        assert stopped_in < 2
        assert q.run(timeout=0.1).reason == "timeout"  # the engine is usable again
