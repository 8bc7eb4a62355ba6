"""What /healthz and /readyz say about a worker.

- `/healthz`: the process answers (liveness). Always 200 while it serves HTTP.
- `/readyz`: 200 when the store answers a read now and the worker is serving or standing by;
  503 while it starts (no step yet), stops, or cannot reach the store. Whether it holds the
  lease, the age of its last successful poll and what each provider last said are in the
  body, not the status: a standby is healthy (restarting it would help nothing), and a
  provider outage is not cured by restarting the worker (alert on the metrics instead).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmbatch.errors import LlmbatchError
from llmbatch.store.base import Store


@dataclass
class WorkerState:
    """What the worker loop last did, as the health checks read it."""

    holder: str
    started_at: float
    last_tick_at: float | None = None
    role: str = "starting"  # starting, serving, standby, stopping
    lease_holder: str | None = None
    outage_since: Callable[[], float | None] = lambda: None


def readiness(
    state: WorkerState,
    store: Store,
    providers: dict[str, dict[str, Any]],
    now: float | None = None,
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of /readyz; reads the engine lease from the store (its answer is
    the store check)."""
    now = time.time() if now is None else now
    body: dict[str, Any] = {"role": state.role, "holder": state.holder}
    try:
        holder = store.lease_holder("engine", now)
        body["store"] = "reachable"
        reachable = True
    except LlmbatchError as exc:
        holder = None
        body["store"] = f"unreachable: {str(exc).splitlines()[0][:300]}"
        reachable = False
    down = state.outage_since()
    if down is not None:
        body["store_outage_s"] = round(now - down, 1)
    body["lease"] = {
        "held_by_this_worker": holder == state.holder,
        "holder": holder,
    }
    body["last_tick_age_s"] = (
        None if state.last_tick_at is None else round(now - state.last_tick_at, 1)
    )
    polls = [v["poll_ok_at"] for v in providers.values() if "poll_ok_at" in v]
    body["last_successful_poll_age_s"] = round(now - max(polls), 1) if polls else None
    body["providers"] = {
        name: {
            "last_success_age_s": round(now - v["ok_at"], 1) if "ok_at" in v else None,
            "last_error": v.get("error"),
            "last_error_age_s": round(now - v["error_at"], 1) if "error_at" in v else None,
            "reachable": "error_at" not in v or v.get("ok_at", 0) > v["error_at"],
        }
        for name, v in sorted(providers.items())
    }
    ready = reachable and down is None and state.role in ("serving", "standby")
    body["ready"] = ready
    return (200 if ready else 503), body
