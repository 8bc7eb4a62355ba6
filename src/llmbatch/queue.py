"""The Python API: a named queue in a store — add requests, run or wait, read results, see
what it costs, cancel. (`AsyncBatchClient` is the other door: SDK-shaped calls.)

    with Queue("llmbatch.db", "evals") as q:
        q.add_many(...)
        print(q.estimate().summary())          # before anything is sent
        done = q.wait(timeout=3600)            # Waited: truthy when finished, else `.reason`
        for model, results in q.results(group_by="model").items(): ...
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, overload

from llmbatch import defaults
from llmbatch.calls import where
from llmbatch.engine import Engine, EngineSettings, TickReport
from llmbatch.errors import BudgetHeld, InputError, NotFound, WaitTimeout
from llmbatch.estimate import EXPECTED_OUTPUT, Estimate, Parsed, estimate_parsed
from llmbatch.export import Result, export
from llmbatch.importer import ImportReport, enqueue_file, enqueue_requests
from llmbatch.report import ReportLine, build
from llmbatch.requests import LineError, Request, from_item
from llmbatch.store import open_store
from llmbatch.store.base import Store
from llmbatch.store.types import Count
from llmbatch.worker import Drain, drain

UNFINISHED = ("queued", "held", "retry_wait", "packed", "submitted")


@dataclass(frozen=True, slots=True)
class Waited:
    """Why a wait (or run) stopped: truthy only when every request has ended.

    `reason` is one of `finished`, `timeout`, `held` (a budget holds everything left),
    `stopped` (cancelled); `message` says it in a sentence."""

    reason: str
    message: str
    unfinished: int = 0
    held: int = 0
    ticks: int = 0

    @property
    def finished(self) -> bool:
        return self.reason == "finished"

    def __bool__(self) -> bool:
        return self.finished


@dataclass(frozen=True, slots=True)
class Cancelled:
    """What a cancel did: waiting requests ended at once; in-flight batches wholly in scope
    asked to stop at the provider (by this process, or by `sent_by`, the worker holding the
    queue); requests sharing a batch with others left running."""

    cancelled: int
    batches: int = 0
    in_batches: int = 0
    left_running: int = 0
    sent_by: str | None = None

    def lines(self) -> list[str]:
        """What `llmbatch cancel` prints."""
        out = [f"cancelled {self.cancelled:,} waiting requests"]
        if self.batches:
            where = f"; {self.sent_by} will send it" if self.sent_by else ""
            out.append(
                f"cancelling {self.batches} batch(es) at the provider ({self.in_batches:,} "
                f"requests){where}; finished results are kept"
            )
        if self.left_running:
            out.append(
                f"{self.left_running:,} requests share a batch with requests outside this "
                "scope and will run"
            )
        return out


def cancel_requests(
    store: Store,
    request_ids: Sequence[int],
    *,
    engine: Callable[[], Engine] | None = None,
    now: float | None = None,
) -> Cancelled:
    """Cancel these requests: waiting ones at once; a batch at the provider when every request
    in it is in scope (sent now by a tick of the engine `engine()` makes, only if needed, or
    by the worker that holds the queue). Finished results are kept; nothing cancelled is
    retried."""
    now = time.time() if now is None else now
    plan = store.request_cancel(request_ids, now)
    sent_by = None
    if plan.batches and engine is not None:
        sent_by = engine().tick(now).held_by
    return Cancelled(plan.cancelled, len(plan.batches), plan.in_batches, plan.left_running, sent_by)


@dataclass(eq=False)
class RequestHandle:
    """One request in a queue (what `add` returns): its state now, and its result once it
    has one. Waiting on it watches the store; something must run the engine (`wait()`, a
    worker, `AsyncBatchClient.running()`)."""

    queue: Queue
    custom_id: str
    report: ImportReport | None = field(default=None, repr=False)

    def state(self) -> str:
        """queued, held, packed, submitted, retry_wait, succeeded, failed or cancelled."""
        found = self.queue.store.lookup(self.queue.name, [self.custom_id]).get(self.custom_id)
        if found is None:
            raise NotFound(f"no request {self.custom_id!r} in queue {self.queue.name!r}")
        return found.state

    def done(self) -> bool:
        return self.state() in ("succeeded", "failed", "cancelled")

    def result(
        self, timeout: float | None = None, *, interval: float = defaults.RESULT_INTERVAL_S
    ) -> Result:
        """Its result, once it has ended; after `timeout` seconds WaitTimeout, saying where it
        stands (no worker running, its batch at the provider). `.response()` on the result
        gives the SDK's own object."""
        store, name = self.queue.store, self.queue.name
        started = time.monotonic()
        while True:
            found = store.lookup(name, [self.custom_id]).get(self.custom_id)
            if found is None:
                raise NotFound(f"no request {self.custom_id!r} in queue {name!r}")
            if found.result is not None:
                return Result.of(found.result, store.store_id)
            left = None if timeout is None else timeout - (time.monotonic() - started)
            if left is not None and left <= 0:
                raise WaitTimeout(
                    f"custom_id {self.custom_id!r} (queue {name!r}): no result after "
                    f"{timeout:g} s: {where(store, name, self.custom_id)}"
                )
            time.sleep(interval if left is None else min(interval, left))


class Queue:
    """A queue of requests in a store (SQLite file or PostgreSQL), by name.

    >>> q = Queue("llmbatch.db", "reviews")
    >>> q.add("r1", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    """

    def __init__(
        self,
        db: str | None = None,
        name: str = defaults.QUEUE,
        *,
        provider: str = defaults.PROVIDER,
        settings: EngineSettings | None = None,
    ) -> None:
        self.name = name
        self.provider = provider
        self.store: Store = open_store(db)
        self.settings = settings or EngineSettings()
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The batch engine behind `tick`, `run` and `wait` (made on first use)."""
        if self._engine is None:
            self._engine = Engine(self.store, self.settings)
        return self._engine

    # -- adding ----------------------------------------------------------------------------
    def add(
        self,
        custom_id: str,
        body: Mapping[str, Any],
        *,
        url: str = "/v1/chat/completions",
        provider: str | None = None,
        priority: int = 0,
        deadline: float | None = None,
    ) -> RequestHandle:
        """Enqueue one request; a handle on it (use `add_many` for many: each call is one
        import). The same custom_id and body again adds nothing (`handle.report.unchanged`)."""
        item = {"custom_id": custom_id, "body": dict(body), "url": url}
        report = self.add_many([item], provider=provider, priority=priority, deadline=deadline)
        return RequestHandle(self, custom_id, report)

    def add_many(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        provider: str | None = None,
        priority: int = 0,
        deadline: float | None = None,
    ) -> ImportReport:
        """Enqueue many requests as one import: all or nothing.

        Each item is a batch input line as a dict — `{"custom_id", "method", "url", "body"}`
        (method and url may be left out: POST to chat completions) or Anthropic's
        `{"custom_id", "params"}`.
        """
        provider = provider or self.provider
        return enqueue_requests(
            self.store,
            self._validated(items, provider),
            queue=self.name,
            priority=priority,
            deadline=deadline,
        )

    @staticmethod
    def _validated(items: Iterable[Mapping[str, Any]], provider: str) -> Iterator[Request]:
        for n, item in enumerate(items, 1):
            try:
                yield from_item(item, provider)
            except LineError as exc:
                cid = item.get("custom_id") if isinstance(item, Mapping) else None
                raise InputError(
                    f"item {n} (custom_id {cid!r}): {exc}; nothing was enqueued"
                ) from None

    def add_file(self, path: str | Path, **options: Any) -> ImportReport:
        """Enqueue a JSONL file of batch input lines (see `importer.enqueue_file`)."""
        return enqueue_file(
            self.store,
            path,
            queue=self.name,
            provider=options.pop("provider", self.provider),
            **options,
        )

    def handle(self, custom_id: str) -> RequestHandle:
        """A handle on a request already in the queue (NotFound if there is none)."""
        h = RequestHandle(self, custom_id)
        h.state()
        return h

    # -- running ---------------------------------------------------------------------------
    def tick(self, now: float | None = None) -> TickReport:
        """One engine step at `now` (default: the current time). Never sleeps."""
        return self.engine.tick(time.time() if now is None else now)

    def run(self, timeout: float | None = None) -> Waited:
        """Tick until every request of this queue has ended, or `timeout` seconds pass, or a
        budget holds everything left; says which (truthy when finished)."""
        return self._waited(drain(self.engine, queue=self.name, timeout=timeout), timeout)

    def wait(self, timeout: float | None = None, progress: bool = True) -> Waited:
        """As `run`, with a progress bar (in a terminal or a notebook)."""
        if not progress:
            return self.run(timeout)
        from llmbatch.views import drain_with_progress

        return self._waited(drain_with_progress(self.engine, self.name, timeout), timeout)

    async def wait_async(self, timeout: float | None = None) -> Waited:
        """As `run`, without blocking the event loop (the engine ticks in a thread). Cancelling
        the awaiting task stops it after the current step (`reason` "stopped")."""
        stop = threading.Event()

        def pause(seconds: float) -> None:
            stop.wait(seconds)  # a cancel ends the pause at once

        def work() -> Drain:
            return drain(
                self.engine, queue=self.name, timeout=timeout, stop=stop.is_set, sleep=pause
            )

        task = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            return self._waited(await asyncio.shield(task), timeout)
        except asyncio.CancelledError:
            stop.set()
            await asyncio.wait({task})  # the engine is ours again before the task ends
            raise

    def _waited(self, d: Drain, timeout: float | None) -> Waited:
        if d.finished:
            return Waited(
                "finished", f"every request of queue {self.name!r} has ended", ticks=d.ticks
            )
        unfinished = self.store.unfinished_count(self.name)
        if d.held:
            reasons = "; ".join(r for r, _n in self.store.held_reasons()[:1])
            return Waited(
                "held",
                f"a budget holds the {d.held:,} requests left in queue {self.name!r} "
                f"({reasons}); they are sent when the budget allows",
                unfinished=unfinished,
                held=d.held,
                ticks=d.ticks,
            )
        if timeout is not None:
            who = (
                f"; worker {self.store.lease_holder('engine', time.time())} holds the queue"
                if d.watched
                else ""
            )
            return Waited(
                "timeout",
                f"{unfinished:,} requests of queue {self.name!r} still unfinished after "
                f"{timeout:g} s{who}",
                unfinished=unfinished,
                ticks=d.ticks,
            )
        message = f"stopped with {unfinished:,} requests unfinished"
        return Waited("stopped", message, unfinished=unfinished, ticks=d.ticks)

    # -- reading ---------------------------------------------------------------------------
    def status(self) -> list[Count]:
        """Requests of this queue per provider × model × state."""
        return self.store.counts(self.name)

    @overload
    def results(
        self,
        state: str | None = None,
        after: int = 0,
        *,
        order: str = "recorded",
        group_by: None = None,
    ) -> Iterator[Result]: ...
    @overload
    def results(
        self,
        state: str | None = None,
        after: int = 0,
        *,
        order: str = "recorded",
        group_by: str,
    ) -> dict[str, list[Result]]: ...
    def results(
        self,
        state: str | None = None,
        after: int = 0,
        *,
        order: str = "recorded",
        group_by: str | None = None,
    ) -> Iterator[Result] | dict[str, list[Result]]:
        """Each ended request's newest result (succeeded, failed, cancelled), streamed in the
        order recorded (`order="input"`: as enqueued); `after` resumes from a `cursor`.
        `group_by="model"` (or "provider", "state", "endpoint") gives lists by that key,
        in memory."""
        rows = export(self.store, queue=self.name, state=state, after=after, order=order)
        if group_by is None:
            return rows.results()
        if group_by not in ("model", "provider", "state", "endpoint"):
            raise ValueError(f"group_by takes model, provider, state or endpoint, not {group_by!r}")
        grouped: dict[str, list[Result]] = {}
        for r in rows.results():
            grouped.setdefault(getattr(r, group_by), []).append(r)
        return grouped

    def as_completed(
        self, timeout: float | None = None, *, after: int = 0, interval: float = 1.0
    ) -> Iterator[Result]:
        """Each result as it is recorded (those already recorded first), ticking the engine
        — or watching the worker that holds it — until every request has ended. WaitTimeout
        after `timeout` seconds; BudgetHeld when a budget holds everything left."""
        started, cursor = time.monotonic(), after
        while True:
            rows = export(self.store, queue=self.name, after=cursor)
            yield from rows.results()
            cursor = rows.cursor
            if not self.store.has_unfinished(self.name):
                yield from export(self.store, queue=self.name, after=cursor).results()
                return
            report = self.tick()
            left = self.store.unfinished_count(self.name)
            held = self.store.held_count(self.name)
            if report.held_by is None and held and held == left and not self.store.open_batches():
                raise BudgetHeld(
                    self._waited(Drain(held=held), None).message,
                    custom_id=None,
                    queue=self.name,
                    code="held",
                )
            spent = time.monotonic() - started
            if timeout is not None and spent >= timeout:
                raise WaitTimeout(
                    f"{left:,} requests of queue {self.name!r} still unfinished after {timeout:g} s"
                )
            pause = max(0.05, min(self.engine.next_poll_at - time.time(), interval))
            time.sleep(pause if timeout is None else min(pause, timeout - spent))

    # -- money -----------------------------------------------------------------------------
    def estimate(self, *, expected_output: int = EXPECTED_OUTPUT) -> Estimate:
        """What this queue's unfinished requests will cost, expected and worst case, in batch
        and in real time (tokens counted as `llmbatch estimate` counts them)."""
        import orjson

        def parsed() -> Iterator[tuple[str, Parsed | Exception]]:
            for cid, provider, endpoint, model, body in self.store.queue_requests(
                self.name, UNFINISHED
            ):
                yield cid, (provider, endpoint, model, orjson.loads(body))

        return estimate_parsed(
            parsed(), source=f"queue {self.name}", expected_output=expected_output
        )

    def report(
        self,
        *,
        group_by: Sequence[str] = ("day", "model"),
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> list[ReportLine]:
        """What this queue's results cost in batch against real time, per `group_by` (day,
        model, queue), for results recorded in [since, until)."""
        return build(self.store, since=since, until=until, group_by=group_by, queue=self.name)

    # -- taking back -----------------------------------------------------------------------
    def cancel(self, *custom_ids: str) -> Cancelled:
        """Cancel the named requests, or with none the whole queue: waiting ones at once,
        batches wholly in scope at the provider (this queue's engine sends the cancel).
        NotFound if a named custom_id is not in the queue."""
        ids = self.store.scope_request_ids(self.name, list(custom_ids), None)
        if custom_ids and len(ids) < len(set(custom_ids)):
            known = self.store.lookup(self.name, list(custom_ids))
            missing = [c for c in custom_ids if c not in known]
            raise NotFound(f"no request {missing[0]!r} in queue {self.name!r}; nothing cancelled")
        return cancel_requests(self.store, ids, engine=lambda: self.engine)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self.store.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
