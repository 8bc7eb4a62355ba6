"""The store's figures, as /metrics and the dashboard show them: one read of the store
(`Store.observe`), priced, with every label capped, cached so a scrape never waits on the
database.

`FigureCache.get()` answers from the last read; once that is older than `max_age` (15 s) it
starts one new read in the background and still answers at once (a scrape on a store of a
million requests must not pay for the scan). The first call reads in the foreground. A read
that fails keeps the last figures and says why (`error`). Turnaround is counted from the
results recorded since the cache started (a per-process histogram fed from the store).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from decimal import Decimal

from llmbatch import defaults
from llmbatch.errors import LlmbatchError
from llmbatch.pricing import Tokens, price_group
from llmbatch.states import TERMINAL
from llmbatch.store.base import Store
from llmbatch.store.budgets import BudgetRow
from llmbatch.store.observe import CostRow, Observed, Turnaround

OTHER = "other"  # where label values past the first MAX_VALUES go
MAX_VALUES = 50
MAX_AGE_S = 15.0
NICE = 10  # the background read's thread
EPOCH = date(1970, 1, 1)

Labels = tuple[str, ...]


def cap(
    series: Iterable[tuple[Labels, float]],
    *,
    limit: int = MAX_VALUES,
    combine: Callable[[float, float], float] = lambda a, b: a + b,
) -> dict[Labels, float]:
    """Series with at most `limit` values per label position: the values with the largest
    totals stay, the rest become `other` and their series are combined (summed by default;
    `max` for an age)."""
    rows = list(series)
    if not rows:
        return {}
    width = len(rows[0][0])
    keep: list[set[str]] = []
    for i in range(width):
        weight: dict[str, float] = defaultdict(float)
        for labels, v in rows:
            weight[labels[i]] += abs(v) + 1e-9
        ranked = sorted(weight, key=lambda k: (-weight[k], k))
        keep.append(set(ranked[:limit]) if len(ranked) > limit else set(ranked))
    out: dict[Labels, float] = {}
    for labels, v in rows:
        key = tuple(x if x in keep[i] else OTHER for i, x in enumerate(labels))
        out[key] = combine(out[key], v) if key in out else v
    return out


@dataclass(frozen=True, slots=True)
class Priced:
    """Usage and cost of one queue × provider × model, or of one UTC day."""

    requests: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    batch_usd: Decimal = Decimal(0)
    realtime_usd: Decimal = Decimal(0)
    unpriced: int = 0  # succeeded requests whose cost is not known (left out, never $0)

    def plus(self, row: CostRow, batch: Decimal | None, real: Decimal | None) -> Priced:
        if batch is None or real is None:  # unpriced: left out of both sums, counted apart
            batch = real = None
        return Priced(
            requests=self.requests + row.requests,
            input_tokens=self.input_tokens + row.input_tokens,
            cached_tokens=self.cached_tokens + row.cached_tokens,
            cache_write_tokens=(
                self.cache_write_tokens + row.cache_write_5m_tokens + row.cache_write_1h_tokens
            ),
            output_tokens=self.output_tokens + row.output_tokens,
            batch_usd=self.batch_usd + (batch or 0),
            realtime_usd=self.realtime_usd + (real or 0),
            unpriced=self.unpriced + (row.flagged if batch is not None else row.succeeded),
        )


@dataclass(frozen=True, slots=True)
class Figures:
    """What the store said at `at`, and what that read cost."""

    at: float
    took_s: float
    observed: Observed
    budgets: list[BudgetRow]
    costs: dict[tuple[str, str, str], Priced]  # (queue, provider, model) -> all time
    days: dict[int, Priced]  # UTC day -> every queue
    turnaround: Turnaround
    held: list[tuple[str, int]] = field(default_factory=list)  # (reason, requests), newest first
    error: str | None = None  # why the newest read failed (these figures are older)
    error_at: float | None = None

    def deadlines(self) -> dict[str, tuple[int, int]]:
        """queue -> (missed, at risk): unfinished requests whose deadline has passed, or falls
        before the latest a batch sent now may finish (24 h)."""
        out: dict[str, tuple[int, int]] = {}
        for g in self.observed.requests:
            if g.state not in TERMINAL and (g.missed or g.at_risk):
                missed, risk = out.get(g.queue, (0, 0))
                out[g.queue] = (missed + g.missed, risk + g.at_risk)
        return out

    def oldest_unfinished(self) -> dict[str, float]:
        """queue -> enqueue time of its oldest request not yet succeeded, failed or cancelled."""
        out: dict[str, float] = {}
        for g in self.observed.requests:
            if g.state not in TERMINAL:
                out[g.queue] = min(out.get(g.queue, g.oldest), g.oldest)
        return out


class Pricer:
    """Prices cost rows, remembering each row's price: past days do not change, so a refresh
    prices only today's rows again."""

    def __init__(self) -> None:
        self._memo: dict[Hashable, tuple[Decimal | None, Decimal | None]] = {}

    def price(self, row: CostRow) -> tuple[Decimal | None, Decimal | None]:
        if row not in self._memo:
            tokens = Tokens(
                row.input_tokens,
                row.cached_tokens,
                row.cache_write_5m_tokens,
                row.cache_write_1h_tokens,
                row.output_tokens,
            )
            day = EPOCH + timedelta(days=row.day)
            cost = price_group(row.provider, row.model, tokens, row.price_tier, day, row.endpoint)
            self._memo[row] = (cost.batch, cost.real)
        return self._memo[row]

    def totals(
        self, rows: Iterable[CostRow]
    ) -> tuple[dict[tuple[str, str, str], Priced], dict[int, Priced]]:
        per_model: dict[tuple[str, str, str], Priced] = {}
        per_day: dict[int, Priced] = {}
        for row in rows:
            batch, real = self.price(row)
            key = (row.queue, row.provider, row.model)
            per_model[key] = per_model.get(key, Priced()).plus(row, batch, real)
            per_day[row.day] = per_day.get(row.day, Priced()).plus(row, batch, real)
        return per_model, per_day


@dataclass
class FigureCache:
    """The newest figures of one store, read again in the background once `max_age` old."""

    store: Store
    max_age: float = MAX_AGE_S
    pace: float = 0.0  # also wait `pace` times the last read's cost (a big store: read less)
    clock: Callable[[], float] = time.time
    held_reasons: bool = False  # also group the held requests by reason (the dashboard shows them)
    _figures: Figures | None = None
    _pricer: Pricer = field(default_factory=Pricer)
    _cursor: int | None = None  # the newest result id counted into turnaround
    _turnaround: Turnaround = field(default_factory=Turnaround)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _reading: bool = False
    _read_lock: threading.Lock = field(default_factory=threading.Lock)  # one read at a time
    _first: threading.Event = field(default_factory=threading.Event)  # a first read ended

    def get(self) -> Figures:
        """The newest figures; a read in the background if they are stale (in the foreground
        when there are none yet, or the one under way)."""
        figures = self._figures
        if figures is None:
            return self.refresh(unless_younger_than=self.period())
        if self.clock() - figures.at >= self.period():
            self._refresh_in_background()
        return figures

    def ready(self, timeout: float) -> Figures | None:
        """The figures, waiting at most `timeout` seconds for a first read (started in the
        background if none is under way); None if there are none by then (a scrape must not
        wait for the first scan of a big store)."""
        if self._figures is None:
            self._refresh_in_background()
            if not self._first.wait(timeout):
                return None  # still reading
        return self.get()  # a first read that failed is tried again here, and raises

    def period(self) -> float:
        """How old the figures may grow before they are read again."""
        took = self._figures.took_s if self._figures is not None else 0.0
        return max(self.max_age, self.pace * took)

    def keep_fresh(self, stop: threading.Event) -> threading.Thread:
        """Read again every `period()` seconds in a thread until `stop` is set (a worker's
        /metrics: scrapes then always find figures at most that old)."""

        def loop() -> None:
            while not stop.wait(max(0.0, self.period() - (self.clock() - self._at()))):
                self._background_once()

        thread = threading.Thread(target=loop, name="llmbatch-figures-keeper", daemon=True)
        thread.start()
        return thread

    def _at(self) -> float:
        return self._figures.at if self._figures is not None else 0.0

    def _background_once(self) -> None:
        with self._lock:
            if self._reading:
                return
            self._reading = True
        self._background()

    def _refresh_in_background(self) -> None:
        with self._lock:
            if self._reading:
                return
            self._reading = True
        threading.Thread(target=self._background, name="llmbatch-figures", daemon=True).start()

    def _background(self) -> None:
        """A read in a thread of its own, at a lower CPU priority: on SQLite the read runs in
        this process, and the engine's steps and the scrapes come first."""
        _lower_priority()
        try:
            self.refresh()
        except Exception:
            pass
        finally:
            with self._lock:
                self._reading = False

    def refresh(self, unless_younger_than: float | None = None) -> Figures:
        """Read the store now (after the read under way, if any; not at all if that one's
        figures are younger than `unless_younger_than`). A failed read keeps the last figures,
        marked with the error (re-raised when there are none)."""
        with self._read_lock:
            figures = self._figures
            if (
                unless_younger_than is not None
                and figures is not None
                and self.clock() - figures.at < unless_younger_than
            ):
                return figures
            try:
                return self._read()
            finally:
                self._first.set()

    def _read(self) -> Figures:
        started = time.perf_counter()
        now = self.clock()
        try:
            observed = self.store.observe(now, now + defaults.BATCH_WINDOW_S)
            budgets = self.store.budget_overview(now)
            # grouped from the held requests themselves: only when asked and some are held
            held = (
                self.store.held_reasons()
                if self.held_reasons and any(g.state == "held" for g in observed.requests)
                else []
            )
            if self._cursor is None:
                self._cursor = observed.results_high
            new = self.store.turnaround(self._cursor, observed.results_high)
        except LlmbatchError as exc:
            if self._figures is None:
                raise
            self._figures = replace(self._figures, error=str(exc), error_at=now)
            return self._figures
        self._cursor = max(self._cursor, observed.results_high)
        self._turnaround = _add(self._turnaround, new)
        costs, days = self._pricer.totals(observed.costs)
        took = time.perf_counter() - started
        self._figures = Figures(
            now, took, observed, budgets, costs, days, self._turnaround, held=held
        )
        return self._figures


def _lower_priority() -> None:
    """This thread at nice 10 where threads have their own (Linux; elsewhere as it is): on a
    busy machine it gets a tenth of what the engine's thread gets, and is not starved."""
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), NICE)


def _add(a: Turnaround, b: Turnaround) -> Turnaround:
    return Turnaround(
        tuple(x + y for x, y in zip(a.buckets, b.buckets, strict=True)),
        a.count + b.count,
        a.total_s + b.total_s,
    )
