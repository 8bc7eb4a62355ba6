"""Loops around `Engine.tick`: drain the queue (`run`, `wait`, `Queue.run`) or serve forever
(`llmbatch worker`). The first SIGINT/SIGTERM lets the current step finish and exits 0; a
second exits at once."""

from __future__ import annotations

import dataclasses
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from llmbatch import defaults
from llmbatch.archive import parse_archive
from llmbatch.budget import parse_budgets
from llmbatch.engine import Engine, EngineSettings, TickReport
from llmbatch.errors import ConfigError, StoreUnavailable
from llmbatch.retry import RetryPolicy
from llmbatch.store.base import Store
from llmbatch.store.batching import LeaseLost
from llmbatch.webhooks import parse_webhooks

Clock = Callable[[], float]
Sleep = Callable[[float], None]
OnTick = Callable[[TickReport], None]


def engine_settings(
    config: dict[str, Any],
    *,
    budget_usd: Any = None,
    budget_period: str | None = None,
    budget_queue: str | None = None,
    allow_unpriced: bool | None = None,
    **overrides: Any,
) -> EngineSettings:
    """EngineSettings from the config file's `[engine]`, `[providers.*]` and `[budgets]`
    tables and overrides (`budget_usd` per `budget_period` over `budget_queue` or all queues)."""
    values = dict(config.get("engine", {}))
    values.update({k: v for k, v in overrides.items() if v is not None})
    retry_values = values.pop("retry", {})
    if values or retry_values:  # pydantic only when there is a table to check
        _check_engine(values, retry_values)
    retry = RetryPolicy(**retry_values)
    from llmbatch.providers.configure import check_providers

    providers = dict(config.get("providers") or {})
    check_providers(providers)  # first: a table may declare a service
    quotas = _quotas(config.get("quotas") or {})
    providers = {k: dict(v) for k, v in providers.items()}
    budgets = parse_budgets(
        config.get("budgets"),
        budget_usd=budget_usd,
        period=budget_period or defaults.BUDGET_PERIOD,
        queue=budget_queue,
        allow_unpriced=allow_unpriced,
    )
    archive = parse_archive(config.get("archive"))
    hooks = parse_webhooks(config.get("webhooks"))
    return EngineSettings(
        **values,
        retry=retry,
        quotas=quotas,
        providers=providers,
        budgets=budgets,
        archive=archive,
        webhooks=hooks,
    )


# Read from tables of their own (`[providers.NAME]`, `[quotas]`, ...), not from `[engine]`
OWN_TABLES = ("quotas", "providers", "budgets", "archive", "webhooks")


def _check_engine(values: dict[str, Any], retry: Any) -> None:
    """`[engine]` and `[engine.retry]` against their typed models."""
    from llmbatch.settings import check_dataclass

    def unknown(table: str, known: list[str]) -> Callable[[str], str]:
        return lambda key: f"{table} has no setting {key!r}; known: {', '.join(sorted(known))}"

    engine = [f.name for f in dataclasses.fields(EngineSettings) if f.name not in OWN_TABLES]
    in_table = {**values, "retry": retry} if retry != {} else values
    check_dataclass(
        in_table, EngineSettings, "[engine] ", unknown("[engine]", engine), leave_out=OWN_TABLES
    )
    retries = [f.name for f in dataclasses.fields(RetryPolicy)]
    check_dataclass(retry, RetryPolicy, "[engine.retry] ", unknown("[engine.retry]", retries))


def _quotas(table: dict[str, Any]) -> dict[tuple[str, str], int]:
    """`[quotas.PROVIDER]` MODEL = tokens (or {enqueued_tokens = tokens}), checked."""
    from llmbatch.providers import names, unknown

    quotas = {}
    for provider, models in table.items():
        if provider not in names():
            raise ConfigError(f"[quotas.{provider}]: {unknown(provider)}")
        if not isinstance(models, dict):
            raise ConfigError(f"[quotas.{provider}] must be a table of model = enqueued tokens")
        for model, q in models.items():
            tokens = q.get("enqueued_tokens") if isinstance(q, dict) else q
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
                raise ConfigError(
                    f"[quotas.{provider}] {model} must be a positive number of enqueued tokens (or "
                    f"{{enqueued_tokens = N}}), got {q!r}"
                )
            quotas[(provider, model)] = tokens
    return quotas


@dataclass
class Drain:
    """What a drain saw: ticks, and whether another worker was doing the work."""

    ticks: int = 0
    watched: bool = False
    finished: bool = False
    held: int = 0  # requests a budget holds, when nothing else was left to do


def drain(
    engine: Engine,
    *,
    queue: str | None = None,
    timeout: float | None = None,
    clock: Clock = time.time,
    sleep: Sleep = time.sleep,
    on_tick: OnTick | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> Drain:
    """Tick until every request (of `queue`) is succeeded, failed or cancelled.

    If a live worker holds the engine lease, just watch it work.
    """
    out = Drain()
    engine.clock = clock  # the engine stamps its calls and renews its lease by this clock
    started = clock()
    while not stop():
        report = engine.tick(clock())
        out.ticks += 1
        out.watched = out.watched or report.held_by is not None
        if on_tick is not None:
            on_tick(report)
        if not engine.store.has_unfinished(queue):
            out.finished = True
            return out
        if engine.budgets.settings and report.held_by is None and _only_held(engine, queue):
            out.held = engine.store.held_count(queue)
            return out  # nothing moves until a budget is raised or a new period starts
        if timeout is not None and clock() - started >= timeout:
            return out
        sleep(max(0.05, min(engine.next_poll_at - clock(), engine.settings.poll_interval, 5.0)))
    return out


def _only_held(engine: Engine, queue: str | None) -> bool:
    """Whether every unfinished request is held and no batch is open."""
    held = engine.store.held_count(queue)
    return (
        held > 0
        and held == engine.store.unfinished_count(queue)
        and not engine.store.open_batches()
    )


class Worker:
    """`llmbatch worker`: tick forever at `interval`, stopping cleanly on a signal."""

    def __init__(self, engine: Engine, interval: float | None = None) -> None:
        self.engine = engine
        self.interval = interval
        self.stopping = False
        self._down_since: float | None = None
        self._down_for = 0  # failed ticks in a row while the database is unreachable
        # outages and recoveries are warnings of the `llmbatch` logger (logs.setup formats it)
        self.log: Callable[[str], None] = logging.getLogger("llmbatch").warning

    def _outage(self, reason: str, now: float) -> float:
        """Say once that the database is gone; how long to wait before trying again."""
        if self._down_since is None:
            self._down_since = now
            self.log(f"{reason}; waiting for the database (retrying, up to every 5 s)")
        self._down_for += 1
        return min(5.0, 0.25 * self._down_for)  # a restart takes seconds; a failover, longer

    def outage_since(self) -> float | None:
        """When the database became unreachable, while it is (health checks read it)."""
        return self._down_since

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self.stopping:
            raise SystemExit(128 + signum)  # the second signal: leave now
        self.stopping = True

    def serve(
        self, clock: Clock = time.time, sleep: Sleep = time.sleep, on_tick: OnTick | None = None
    ) -> None:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        self.engine.clock = clock  # the engine stamps its calls and renews its lease by it
        try:
            while not self.stopping:
                outage, started = None, clock()
                try:
                    report = self.engine.tick(started)
                except LeaseLost as exc:
                    # Paused past its lease (GC, SIGSTOP, sleep): the fenced write refused,
                    # nothing changed; the next tick finds the lease held and just watches.
                    report = TickReport(notes=[str(exc)])
                except StoreUnavailable as exc:
                    # The database restarted or dropped us. The tick stopped where a kill
                    # would have, and the next one picks up from the store as a restarted
                    # worker does (reconcile first), on a new connection.
                    report, outage = TickReport(), self._outage(str(exc), started)
                if outage is None and self._down_since is not None:
                    self.log(f"the database is back after {started - self._down_since:.1f} s")
                    self._down_since, self._down_for = None, 0
                if on_tick is not None:
                    on_tick(report)
                wait = (
                    outage
                    if outage is not None
                    else self.interval
                    if self.interval is not None
                    else max(0.05, self.engine.next_poll_at - clock())
                )
                end = clock() + wait
                # the clock moves between the check and the sleep: never a negative sleep
                while not self.stopping and clock() < end:
                    sleep(max(0.0, min(0.2, end - clock())))
        finally:
            for s, handler in old.items():
                signal.signal(s, handler)
            self.engine.close()


def queue_progress(store: Store, queue: str | None) -> tuple[int, int]:
    """(done, total) requests of a queue, for progress bars."""
    done = total = 0
    for c in store.counts(queue):
        total += c.n
        if c.state in ("succeeded", "failed", "cancelled"):
            done += c.n
    return done, total
