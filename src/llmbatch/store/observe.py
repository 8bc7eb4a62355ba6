"""Store verbs for /metrics and the dashboard: what every worker reports the same for one store.

`observe` runs a few grouped scans in one read (`sql/observe.sql`): requests per queue,
provider, model and state (the one scan whose cost grows with the store), open batches, the
event log per kind, the cost totals and the engine lease. `turnaround` counts enqueue-to-
result times of the results recorded in a range of result ids, per histogram bucket, in SQL.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from llmbatch.store.rows import by_name, named, one, scalar

# Upper bounds (seconds) of the turnaround histogram's buckets, as observe_turnaround counts them.
TURNAROUND_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 43200, 86400, 172800)


@dataclass(frozen=True, slots=True)
class RequestGroup:
    queue: str
    provider: str
    model: str
    state: str
    n: int
    oldest: float  # enqueue time of the oldest request of the group
    retries: int  # attempts after the first
    expiries: int  # times their batches expired with them unrun
    missed: int = 0  # with a deadline already passed
    at_risk: int = 0  # with a deadline before the horizon asked about


@dataclass(frozen=True, slots=True)
class BatchGroup:
    provider: str
    model: str  # '' for a batch of several models
    state: str
    n: int
    requests: int
    done_at_provider: int
    est_tokens: int


@dataclass(frozen=True, slots=True)
class CostRow:
    """Usage summed over one UTC day, queue and pricing aggregate."""

    day: int
    queue: str
    provider: str
    model: str
    endpoint: str
    price_tier: int
    requests: int
    succeeded: int
    input_tokens: int
    cached_tokens: int
    cache_write_5m_tokens: int
    cache_write_1h_tokens: int
    output_tokens: int
    flagged: int


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    token: int
    expires_at: float


@dataclass(frozen=True, slots=True)
class Observed:
    """One consistent read of the store's figures."""

    requests: list[RequestGroup]
    batches: list[BatchGroup]
    events: dict[str, tuple[int, float]]  # kind -> (count, newest at)
    costs: list[CostRow]
    lease: Lease | None
    results_high: int  # the newest result id when read


@dataclass(frozen=True, slots=True)
class Turnaround:
    """Results recorded in a range of ids: cumulative counts per bucket bound, count, sum."""

    buckets: tuple[int, ...] = field(default_factory=lambda: (0,) * len(TURNAROUND_BUCKETS))
    count: int = 0
    total_s: float = 0.0


class ObserveOps:
    """Mixed into SqlStore; relies on its `_read` and `q`."""

    def _read(self) -> Any:
        raise NotImplementedError

    def q(self, name: str) -> str:
        raise NotImplementedError

    def observe(self, now: float, horizon: float) -> Observed:
        """Every figure /metrics and the dashboard show from the store, in one read;
        deadlines count as at risk when they fall before `horizon`."""
        with self._read() as cur:
            cur.execute(self.q("observe_requests"), {"now": now, "horizon": horizon})
            requests = named(RequestGroup, cur)
            cur.execute(self.q("observe_batches"))
            batches = named(BatchGroup, cur)
            cur.execute(self.q("observe_events"))
            events = {r["kind"]: (int(r["n"]), float(r["newest"])) for r in by_name(cur)}
            cur.execute(self.q("observe_costs"))
            costs = named(CostRow, cur)
            cur.execute(self.q("observe_lease"))
            lease = one(Lease, cur)
            cur.execute(self.q("observe_results_high"))
            high = int(scalar(cur))
        return Observed(requests, batches, events, costs, lease, high)

    def turnaround(self, after: int, upto: int) -> Turnaround:
        """Enqueue-to-result times of the results with ids in (after, upto]."""
        if upto <= after:
            return Turnaround()
        with self._read() as cur:
            cur.execute(self.q("observe_turnaround"), {"after": after, "upto": upto})
            r = by_name(cur)[0]
        buckets = tuple(int(r[f"within_{bound}"]) for bound in TURNAROUND_BUCKETS)
        return Turnaround(buckets, int(r["count"]), float(r["total_s"]))

    def batch_events(self, batch_id: int) -> list[dict[str, Any]]:
        """A batch's entries in the event log, oldest first: its timeline."""
        with self._read() as cur:
            cur.execute(self.q("observe_batch_events"), {"id": batch_id})
            return by_name(cur)

    def recent_failures(self, n: int = 10, window: int = 20_000) -> list[dict[str, Any]]:
        """The newest failed results among the last `window`, newest first (no bodies)."""
        with self._read() as cur:
            cur.execute(self.q("observe_recent_failures"), {"n": n, "window": window})
            return by_name(cur)
