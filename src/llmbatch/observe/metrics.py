"""Prometheus metrics: the store's figures (the same from every worker of one store) and this
process's own counters (its provider calls, their latency and errors, its ticks).

Names are under `llmbatch_`; labels are queue, provider, model, state, call, type, tier,
period and error_class, never a batch id or custom_id, each with at most 50 values (the rest
under `other`). docs/metrics.md lists every metric and maps the token counters to
OpenTelemetry's `gen_ai.client.token.usage`.

prometheus-client is an extra (`pip install 'llmbatch[metrics]'`): only those who scrape a
worker need it, and `require()` says so in one line when it is missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any

from llmbatch.errors import ConfigError
from llmbatch.observe.figures import OTHER, FigureCache, Figures, cap
from llmbatch.store.budgets import BudgetRow
from llmbatch.store.observe import TURNAROUND_BUCKETS

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric

    from llmbatch.engine import Engine, TickReport
    from llmbatch.providers.base import Provider

INSTALL = "pip install 'llmbatch[metrics]'"
# Provider calls timed and counted: the protocol's verbs that talk to the provider.
CALLS = {
    "submit": "submit",
    "reconcile": "reconcile",
    "list_tagged": "reconcile",
    "stray_uploads": "reconcile",
    "poll": "poll",
    "download": "download",
    "cancel": "cancel",
    "delete_files": "delete",
}
CALL_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
TOKEN_TYPES = ("input", "cached_input", "cache_write", "output")
FIRST_READ_WAIT_S = 5.0  # a scrape waits this long for the first read of the store's figures


def require() -> None:
    """prometheus-client is installed, or one line saying how to install it."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(f"--metrics-port needs prometheus-client: {INSTALL}") from None


class StoreCollector:
    """The store's figures as Prometheus metric families (read from the figure cache)."""

    def __init__(self, cache: FigureCache, quotas: dict[tuple[str, str], int] | None = None):
        self.cache = cache
        self.quotas = dict(quotas or {})
        self._rendered: tuple[Figures, bytes] | None = None  # the figures last written, as text

    def describe(self) -> list[Metric]:
        return []  # collected on demand: the registry must not read the store at registration

    def collect(self) -> Iterator[Metric]:
        f = yield from self._head()
        if f is not None:
            yield from self._per_read(f)
            yield from self._per_scrape(f, time.time())

    def render(self) -> bytes:
        """The store's figures in Prometheus's text format. All but the two that move with the
        clock (the figures' age, the oldest requests' ages) are written once per read of the
        store, not on every scrape."""
        from prometheus_client import generate_latest

        head: list[Metric] = []
        f = _run(self._head(), head)
        if f is None:
            return bytes(generate_latest(_Families(head)))
        rendered = self._rendered
        if rendered is None or rendered[0] is not f:
            rendered = (f, bytes(generate_latest(_Families(list(self._per_read(f))))))
            self._rendered = rendered
        timed = _Families(list(self._per_scrape(f, time.time())))
        return bytes(generate_latest(_Families(head))) + rendered[1] + generate_latest(timed)

    def _head(self) -> Generator[Metric, None, Figures | None]:
        """Whether the store could be read and has been once; the figures if so."""
        from prometheus_client.core import GaugeMetricFamily

        try:
            f = self.cache.ready(FIRST_READ_WAIT_S)
        except Exception as exc:
            up = GaugeMetricFamily("llmbatch_store_up", "1 if the last store read succeeded")
            up.add_metric([], 0)
            yield up
            info = GaugeMetricFamily(
                "llmbatch_store_error_info", "Why the store could not be read", labels=["error"]
            )
            info.add_metric([type(exc).__name__], 1)
            yield info
            return None
        ready = GaugeMetricFamily(
            "llmbatch_snapshot_ready", "1 once the store's figures have been read a first time"
        )
        ready.add_metric([], 0 if f is None else 1)
        yield ready
        return f  # None: the first read of a big store is still under way (process figures only)

    def _per_read(self, f: Figures) -> Iterator[Metric]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        up = GaugeMetricFamily("llmbatch_store_up", "1 if the last store read succeeded")
        up.add_metric([], 0 if f.error else 1)
        yield up
        g = GaugeMetricFamily(
            "llmbatch_snapshot_seconds", "What the last read of the store's figures took"
        )
        g.add_metric([], f.took_s)
        yield g
        yield from _requests(f, GaugeMetricFamily, CounterMetricFamily)
        yield from _batches(f, GaugeMetricFamily, self.quotas)
        yield from _events(f, CounterMetricFamily)
        yield from _costs(f, CounterMetricFamily)
        yield from _budgets(f.budgets, GaugeMetricFamily)
        yield from _lease(f, GaugeMetricFamily)
        h = HistogramMetricFamily(
            "llmbatch_turnaround_seconds",
            "Enqueue to result, for results recorded since this process started",
        )
        t = f.turnaround
        buckets = [
            (str(float(b)), float(n)) for b, n in zip(TURNAROUND_BUCKETS, t.buckets, strict=True)
        ]
        h.add_metric([], [*buckets, ("+Inf", float(t.count))], sum_value=t.total_s)
        yield h

    def _per_scrape(self, f: Figures, now: float) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        g = GaugeMetricFamily(
            "llmbatch_snapshot_age_seconds", "How old the store's figures shown here are"
        )
        g.add_metric([], max(0.0, now - f.at))
        yield g
        g = GaugeMetricFamily(
            "llmbatch_oldest_unfinished_request_age_seconds",
            "Age of the oldest request not yet succeeded, failed or cancelled",
            labels=["queue"],
        )
        ages = [((q,), max(0.0, now - at)) for q, at in f.oldest_unfinished().items()]
        for labels, v in cap(ages, combine=max).items():
            g.add_metric(list(labels), v)
        yield g


class _Families:
    """Metric families as generate_latest reads a registry."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def _run(gen: Generator[Metric, None, Figures | None], out: list[Metric]) -> Figures | None:
    """Run a generator of families to its end, collecting them in `out`; its return value."""
    while True:
        try:
            out.append(next(gen))
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]


def _requests(f: Figures, gauge: Any, counter: Any) -> Iterator[Metric]:
    g = gauge(
        "llmbatch_requests",
        "Requests per queue, provider, model and state",
        labels=["queue", "provider", "model", "state"],
    )
    for labels, v in cap(
        ((r.queue, r.provider, r.model, r.state), r.n) for r in f.observed.requests
    ).items():
        g.add_metric(list(labels), v)
    yield g
    g = gauge(
        "llmbatch_deadline_requests",
        "Unfinished requests whose deadline has passed (missed) or falls within 24 h (at_risk)",
        labels=["queue", "risk"],
    )
    risks = f.deadlines()
    for i, risk in enumerate(("missed", "at_risk")):
        for labels, v in cap([((q,), float(mr[i])) for q, mr in risks.items()]).items():
            g.add_metric([*labels, risk], v)
    yield g
    for name, what, attr in (
        (
            "llmbatch_request_retries",
            "Attempts after the first, of requests in the store",
            "retries",
        ),
        ("llmbatch_request_expiries", "Times a batch expired with a request unrun", "expiries"),
    ):
        c = counter(name, what, labels=["queue", "provider", "model"])
        series = [((r.queue, r.provider, r.model), getattr(r, attr)) for r in f.observed.requests]
        for labels, v in cap(series).items():
            c.add_metric(list(labels), v)
        yield c


def _batches(f: Figures, gauge: Any, quotas: dict[tuple[str, str], int]) -> Iterator[Metric]:
    g = gauge(
        "llmbatch_batches_open",
        "Batches not yet read back, per provider, model and state",
        labels=["provider", "model", "state"],
    )
    done = gauge(
        "llmbatch_batch_requests_done_at_provider",
        "Requests of open batches the provider reports run (completed or failed)",
        labels=["provider", "model"],
    )
    total = gauge(
        "llmbatch_batch_requests", "Requests in open batches", labels=["provider", "model"]
    )
    tokens = gauge(
        "llmbatch_enqueued_tokens",
        "Estimated tokens enqueued at the provider (the enqueued-token quota's measure)",
        labels=["provider", "model"],
    )
    rows = f.observed.batches
    for labels, v in cap(((b.provider, b.model or "mixed", b.state), b.n) for b in rows).items():
        g.add_metric(list(labels), v)
    for family, attr in ((done, "done_at_provider"), (total, "requests"), (tokens, "est_tokens")):
        series = [((b.provider, b.model or "mixed"), getattr(b, attr)) for b in rows]
        for labels, v in cap(series).items():
            family.add_metric(list(labels), v)
    yield from (g, done, total, tokens)
    q = gauge(
        "llmbatch_enqueued_tokens_quota",
        "The enqueued-token quota this worker packs against",
        labels=["provider", "model"],
    )
    for (provider, model), n in sorted(quotas.items())[:50]:
        q.add_metric([provider, model], n)
    yield q


def _events(f: Figures, counter: Any) -> Iterator[Metric]:
    c = counter("llmbatch_events", "Entries of the store's event log per kind", labels=["kind"])
    for labels, v in cap(((k,), n) for k, (n, _at) in f.observed.events.items()).items():
        c.add_metric(list(labels), v)
    yield c
    adopted = counter(
        "llmbatch_creates_prevented",
        "Batches found at the provider by reconcile and adopted instead of created again",
    )
    adopted.add_metric([], f.observed.events.get("adopted", (0, 0.0))[0])
    yield adopted


def _costs(f: Figures, counter: Any) -> Iterator[Metric]:
    tokens = counter(
        "llmbatch_tokens",
        "Tokens of recorded results (cached_input and cache_write are inside input)",
        labels=["queue", "provider", "model", "type"],
    )
    cost = counter(
        "llmbatch_cost_usd",
        "What recorded results cost in batch, and would have cost in real time",
        labels=["queue", "provider", "model", "tier"],
    )
    unpriced = counter(
        "llmbatch_unpriced_requests",
        "Succeeded requests left out of the costs (no price, or usage not readable)",
        labels=["queue", "provider", "model"],
    )
    rows = f.costs.items()
    for t, attr in zip(
        TOKEN_TYPES,
        ("input_tokens", "cached_tokens", "cache_write_tokens", "output_tokens"),
        strict=True,
    ):
        for labels, v in cap((k, getattr(p, attr)) for k, p in rows).items():
            tokens.add_metric([*labels, t], v)
    for tier, attr in (("batch", "batch_usd"), ("realtime", "realtime_usd")):
        for labels, v in cap((k, float(getattr(p, attr))) for k, p in rows).items():
            cost.add_metric([*labels, tier], v)
    for labels, v in cap((k, p.unpriced) for k, p in rows).items():
        unpriced.add_metric(list(labels), v)
    yield from (tokens, cost, unpriced)


def _budgets(budgets: list[BudgetRow], gauge: Any) -> Iterator[Metric]:
    families = {
        "limit": gauge("llmbatch_budget_limit_usd", "A budget's limit", labels=["queue", "period"]),
        "committed": gauge(
            "llmbatch_budget_committed_usd",
            "Spent or reserved in the budget's current period",
            labels=["queue", "period"],
        ),
        "remaining": gauge(
            "llmbatch_budget_remaining_usd",
            "What the budget has left this period",
            labels=["queue", "period"],
        ),
    }
    for b in budgets[:MAX_BUDGETS]:
        labels = ["*" if b.queue == "*" else b.queue, b.period]
        families["limit"].add_metric(labels, b.limit_micro / 1e6)
        families["committed"].add_metric(labels, b.committed / 1e6)
        families["remaining"].add_metric(labels, max(0, b.limit_micro - b.committed) / 1e6)
    yield from families.values()


MAX_BUDGETS = 50


def _lease(f: Figures, gauge: Any) -> Iterator[Metric]:
    token = gauge(
        "llmbatch_lease_token",
        "The engine lease's fencing token: it goes up each time the lease changes hands",
    )
    expires = gauge(
        "llmbatch_lease_expires_timestamp_seconds", "When the engine lease runs out unless renewed"
    )
    lease = f.observed.lease
    token.add_metric([], lease.token if lease else 0)
    expires.add_metric([], lease.expires_at if lease else 0)
    yield from (token, expires)


class ProcessMeter:
    """This process's own counters: provider calls, their latency and errors, ticks, and
    whether it holds the engine lease."""

    def __init__(self, registry: CollectorRegistry) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.calls = Histogram(
            "llmbatch_provider_call_seconds",
            "Latency of this process's calls to a provider",
            ["provider", "call"],
            buckets=CALL_BUCKETS,
            registry=registry,
        )
        self.errors = Counter(
            "llmbatch_provider_errors",
            "This process's provider calls that raised, by call and error class",
            ["provider", "call", "error_class"],
            registry=registry,
        )
        self.last_ok = Gauge(
            "llmbatch_provider_last_success_timestamp_seconds",
            "When a call of this process to the provider last succeeded, per call",
            ["provider", "call"],
            registry=registry,
        )
        self.ticks = Counter(
            "llmbatch_worker_ticks",
            "This process's engine steps: serving (it held the lease) or standby",
            ["role"],
            registry=registry,
        )
        self.lease_held = Gauge(
            "llmbatch_lease_held", "1 while this process holds the engine lease", registry=registry
        )
        # What this worker did of the work the workers on its store share (issue 27); every
        # worker's totals are also in `llmbatch status` (the store's `workers` table).
        self.claimed = Gauge(
            "llmbatch_worker_claimed_batches",
            "Open batches this worker holds the claims of (polls, downloads, ingests)",
            registry=registry,
        )
        self.done = Counter(
            "llmbatch_worker_done",
            "What this worker did: requests packed, batches submitted, polled and ingested, "
            "results recorded",
            ["what"],
            registry=registry,
        )
        self.started = Gauge(
            "llmbatch_process_start_timestamp_seconds",
            "When this worker started",
            registry=registry,
        )
        self.started.set(time.time())
        self._lock = threading.Lock()
        self._classes: set[str] = set()
        self.state: dict[str, dict[str, Any]] = {}  # provider -> last ok / last error (health)

    def error_class(self, exc: BaseException) -> str:
        """The exception's class name, at most 50 of them (the rest `other`)."""
        name = type(exc).__name__
        with self._lock:
            if name not in self._classes and len(self._classes) >= 50:
                return OTHER
            self._classes.add(name)
        return name

    def observe_call(
        self, provider: str, call: str, seconds: float, exc: BaseException | None
    ) -> None:
        self.calls.labels(provider, call).observe(seconds)
        seen = self.state.setdefault(provider, {})
        if exc is None:
            now = time.time()
            self.last_ok.labels(provider, call).set(now)
            seen["ok_at"] = now
            if call == "poll":
                seen["poll_ok_at"] = now
        else:
            self.errors.labels(provider, call, self.error_class(exc)).inc()
            seen["error_at"] = time.time()
            seen["error"] = (
                f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
            )

    def on_tick(self, report: TickReport) -> None:
        role = "standby" if report.held_by is not None else "serving"
        self.ticks.labels(role).inc()
        self.lease_held.set(1 if report.engine_lease else 0)
        self.claimed.set(report.claimed)
        for what, n in (
            ("packed", report.packed),
            ("submitted", report.submitted),
            ("polled", report.polled),
            ("ingested", report.ingested_batches),
            ("results", report.outcomes),
        ):
            if n:
                self.done.labels(what).inc(n)

    def instrument(self, engine: Engine) -> None:
        """Time and count every provider call the engine makes from now on."""
        engine.instrument(lambda name, provider: Metered(provider, name, self))


class Metered:
    """A provider whose calls are timed and counted; everything else passes through."""

    def __init__(self, inner: Provider, name: str, meter: ProcessMeter) -> None:
        self._inner, self._name, self._meter = inner, name, meter

    def __getattr__(self, attr: str) -> Any:
        value = getattr(self._inner, attr)
        call = CALLS.get(attr)
        if call is None or not callable(value):
            return value
        name, meter = self._name, self._meter

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                out = value(*args, **kwargs)
            except BaseException as exc:
                meter.observe_call(name, call, time.perf_counter() - started, exc)
                raise
            meter.observe_call(name, call, time.perf_counter() - started, None)
            return out

        return timed
