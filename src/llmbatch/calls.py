"""Calls in flight for the Python clients: grouped into imports, then watched until they end.

- `Calls.add` takes a validated request and buffers it. A flush — `window` seconds after the
  first buffered call, or at once at `max_group` calls — writes the buffer as ONE import, so
  thousands of concurrent calls make a few imports. A custom_id already in the queue with
  the same request attaches to it (never enqueued twice: a restarted program gets its answers
  back); with another body that call alone fails (`ConflictError`), nothing else is touched.
- One watcher task polls the store every `interval` with ONE statement for every waiting
  call (`Store.watch`: the results recorded since a cursor, and what a budget holds), so the
  cost to the store does not grow with the number of calls, and resolves their futures with
  the SDK's own objects or errors (`sdk.outcome`).
- Result ids can commit out of order on PostgreSQL (a cancel racing an ingest); every
  SWEEP_S the watcher also reads again from the cursor of two sweeps ago, so a result that
  committed late is still seen.
- Store work runs on one thread of its own: the event loop never waits on the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from llmbatch import defaults
from llmbatch.errors import ConflictError, LlmbatchError, StoreError, WaitTimeout
from llmbatch.importer import CHUNK_ROWS, RowDefaults
from llmbatch.requests import Request
from llmbatch.sdk import outcome
from llmbatch.store.base import Store
from llmbatch.store.types import Clash, ResultRow
from llmbatch.store.watch import Found

SOURCE = "python client"  # the import's source, as `llmbatch show` and the event log say it
PAGE = 5000  # results scanned per statement (a full scan: read the next one at once)
SWEEP_S = 60.0
BUSY_RETRY_S = 0.5  # another import holds the custom_id right now: try again this soon
FINISHED = ("succeeded", "failed", "cancelled")


@dataclass(eq=False)
class Waiting:
    """One request awaited by one or more calls: its future resolves once, for all of them."""

    custom_id: str
    body_hash: bytes
    future: asyncio.Future[Any]
    enqueued: asyncio.Future[None]  # done once its import committed (or it attached)


@dataclass(slots=True)
class _Entry:
    request: Request
    priority: int
    deadline: float | None
    waiting: Waiting


@dataclass
class _Imported:
    clashes: dict[str, Clash] = field(default_factory=dict)
    found: dict[str, Found] = field(default_factory=dict)


class Calls:
    """The calls of one client on one queue (see the module docstring). Lives on one event
    loop; `store` is used only from its own thread."""

    def __init__(
        self,
        store: Store,
        queue: str,
        *,
        interval: float = defaults.CLIENT_WATCH_INTERVAL_S,
        window: float = defaults.CLIENT_WINDOW_S,
        max_group: int = CHUNK_ROWS,
        on_enqueued: Callable[[], None] | None = None,
    ) -> None:
        self.store, self.queue = store, queue
        self.interval, self.window, self.max_group = interval, window, max_group
        self.on_enqueued = on_enqueued
        self.waiting: dict[str, Waiting] = {}
        self._buffer: list[_Entry] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        self._thread = ThreadPoolExecutor(1, thread_name_prefix="llmbatch-calls")
        self._cursor = store.results_high()  # before any import: no result of ours is older
        self._sweeps: deque[int] = deque([self._cursor, self._cursor], maxlen=2)
        self._next_sweep = time.monotonic() + SWEEP_S
        self._held_after = float("-inf")
        self._cleaned = False
        self._watcher: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self.polls = 0  # statements the watcher ran (for tests and benchmarks)

    # -- adding calls --------------------------------------------------------------------
    def add(self, request: Request, *, priority: int = 0, deadline: float | None = None) -> Waiting:
        """The request a call waits for: the one already in flight here with this custom_id
        and body, or a new one buffered for the next import (ConflictError, at once, for the
        same custom_id with another body)."""
        loop = asyncio.get_running_loop()
        w = self.waiting.get(request.custom_id)
        if w is not None:
            if w.body_hash != request.body_hash:
                raise ConflictError(
                    f"custom_id {request.custom_id!r} is already awaited in queue {self.queue!r} "
                    "with a different body; use a new custom_id (nothing was enqueued for this "
                    "call)"
                )
            return w
        w = Waiting(
            request.custom_id, request.body_hash, loop.create_future(), loop.create_future()
        )
        self.waiting[request.custom_id] = w
        self._buffer.append(_Entry(request, priority, deadline, w))
        if len(self._buffer) >= self.max_group:
            self._flush_now()
        elif self._timer is None:
            self._timer = loop.call_later(self.window, self._flush_now)
        return w

    def follow(self, found: Found) -> Waiting:
        """Wait for a request already in the queue (`client.result`), resolved at once if it
        has ended."""
        loop = asyncio.get_running_loop()
        w = self.waiting.get(found.custom_id)
        if w is None:
            w = Waiting(
                found.custom_id, found.body_hash, loop.create_future(), loop.create_future()
            )
            w.enqueued.set_result(None)
            self.waiting[found.custom_id] = w
            self._settle(w, found)
            self._start_watching()
        return w

    def _flush_now(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._buffer:
            return
        entries, self._buffer = self._buffer, []
        task = asyncio.get_running_loop().create_task(self._flush(entries))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, entries: list[_Entry]) -> None:
        loop = asyncio.get_running_loop()
        try:
            done = await loop.run_in_executor(self._thread, self._import, entries)
        except Exception as exc:  # the store refused the import: these calls fail, loudly
            if not isinstance(exc, LlmbatchError):
                exc = StoreError(f"enqueueing {len(entries):,} calls failed: {exc}")
            for e in entries:
                self._fail(e.waiting, exc, enqueued=False)
            return
        busy = []
        for e in entries:
            cid, w = e.request.custom_id, e.waiting
            clash = done.clashes.get(cid)
            if clash is None:
                w.enqueued.set_result(None)
            elif clash.kind == "busy":
                busy.append(e)
            elif clash.kind == "conflict":
                self._fail(w, self._conflict(clash), enqueued=False)
            else:  # unchanged: this very request is already in the queue; attach to it
                w.enqueued.set_result(None)
                found = done.found.get(cid)
                if found is not None:
                    self._settle(w, found)
        if busy:
            await asyncio.sleep(BUSY_RETRY_S)
            self._buffer.extend(busy)
            self._flush_now()
        if self.on_enqueued is not None:
            self.on_enqueued()
        self._start_watching()

    def _conflict(self, c: Clash) -> ConflictError:
        return ConflictError(
            f"custom_id {c.custom_id!r} is already in queue {self.queue!r} with a different body "
            f"(import {c.other_import}, line {c.other_line}); use a new custom_id or another "
            "queue (nothing was enqueued for this call)"
        )

    def _import(self, entries: list[_Entry]) -> _Imported:
        """One import of these calls (store thread); rows that clash are not inserted, the
        rest commit together."""
        store = self.store
        if not self._cleaned:
            store.clean_dead_imports()
            self._cleaned = True
        import_id = store.begin_import(self.queue, SOURCE)
        out = _Imported()
        try:
            now = time.time()
            for i in range(0, len(entries), CHUNK_ROWS):
                rows = [
                    RowDefaults(
                        self.queue, import_id, e.request.provider, e.priority, e.deadline
                    ).row(e.request, i + n + 1, now)
                    for n, e in enumerate(entries[i : i + CHUNK_ROWS])
                ]
                for c in store.load_rows(import_id, self.queue, rows):
                    out.clashes[c.custom_id] = c
            unchanged = sum(c.kind == "unchanged" for c in out.clashes.values())
            store.commit_import(
                import_id,
                lines=len(entries),
                added=len(entries) - len(out.clashes),
                unchanged=unchanged,
                rejected=len(out.clashes) - unchanged,
            )
        except BaseException:
            with contextlib.suppress(Exception):
                store.abort_import(import_id, "interrupted")
            raise
        attached = [c.custom_id for c in out.clashes.values() if c.kind == "unchanged"]
        if attached:
            out.found = store.lookup(self.queue, attached)
        return out

    async def flush(self) -> None:
        """Return once every call made so far is durably enqueued (or failed)."""
        while self._buffer or self._flushes:
            self._flush_now()
            if self._flushes:
                await asyncio.wait(set(self._flushes))

    # -- waiting -------------------------------------------------------------------------
    def _settle(self, w: Waiting, found: Found) -> None:
        """Resolve from a lookup: an ended request at once; a held one with BudgetHeld."""
        if found.result is not None:
            self._resolve(w.custom_id, outcome(found.result, self.queue))
        elif found.state == "held":
            self._resolve(w.custom_id, outcome(_held_row(found), self.queue))

    def _resolve(self, custom_id: str, got: Any) -> None:
        w = self.waiting.pop(custom_id, None)
        if w is None or w.future.done():
            return
        if isinstance(got, BaseException):
            w.future.set_exception(got)
            w.future.exception()  # a call nobody awaits must not log "never retrieved"
        else:
            w.future.set_result(got)

    def _fail(self, w: Waiting, exc: BaseException, *, enqueued: bool) -> None:
        if not enqueued and not w.enqueued.done():
            w.enqueued.set_exception(exc)
            w.enqueued.exception()
        self._resolve(w.custom_id, exc)

    def fail_all(self, exc: BaseException) -> None:
        """Every waiting call raises `exc` (the in-process engine stopped for good)."""
        for cid in list(self.waiting):
            self._resolve(cid, exc)

    def _start_watching(self) -> None:
        if self._watcher is None and self.waiting:
            self._watcher = asyncio.get_running_loop().create_task(self._watch())
        self._wake.set()

    async def _watch(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self.waiting:
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                got, more = await loop.run_in_executor(self._thread, self._poll)
            except StoreError:
                got, more = [], False  # the database is away: ask again next interval
            for cid, value in got:
                self._resolve(cid, value)
            if not more:
                await asyncio.sleep(self.interval)

    def _poll(self) -> tuple[list[tuple[str, Any]], bool]:
        """One statement (store thread): outcomes for waiting calls, and whether a full page
        says more is there. A sweep reads again from two sweeps ago, page by page."""
        out: list[tuple[str, Any]] = []
        now = time.monotonic()
        if now >= self._next_sweep:
            start, self._next_sweep = self._sweeps[0], now + SWEEP_S
            self._sweeps.append(self._cursor)
            after, more = start, True
            while more:
                after, more = self._read(after, out)
            return out, False
        self._cursor, more = self._read(self._cursor, out)
        return out, more

    def _read(self, after: int, out: list[tuple[str, Any]]) -> tuple[int, bool]:
        seen = self.store.watch(self.queue, after, self._held_after, PAGE)
        self.polls += 1
        waiting = self.waiting
        for row in seen.results:
            if row.custom_id in waiting:
                out.append((row.custom_id, outcome(row, self.queue)))
        for row in seen.held:
            if row.custom_id in waiting:
                out.append((row.custom_id, outcome(row, self.queue)))
        if seen.held:
            self._held_after = max(r.recorded_at for r in seen.held)
        self._cursor = max(self._cursor, seen.high)
        return seen.high, seen.scanned >= PAGE

    async def wait(self, w: Waiting, timeout: float | None) -> Any:
        """The call's answer; after `timeout` seconds a WaitTimeout saying where things
        stand (nothing is cancelled: wait again later)."""
        try:
            return await asyncio.wait_for(asyncio.shield(w.future), timeout)
        except TimeoutError:
            if w.future.done():
                return w.future.result()
            loop = asyncio.get_running_loop()
            where = await loop.run_in_executor(self._thread, self.where, w.custom_id)
            raise WaitTimeout(
                f"custom_id {w.custom_id!r} (queue {self.queue!r}): no answer after "
                f"{timeout:g} s: {where}. Nothing was cancelled; wait again (client.result"
                f"({w.custom_id!r}))"
            ) from None

    def where(self, custom_id: str) -> str:
        """Where a request stands, in words (store thread): why no answer came yet."""
        return where(self.store, self.queue, custom_id)

    def lookup(self, custom_id: str) -> Found | None:
        """The request with this custom_id, if any (store thread)."""
        return self.store.lookup(self.queue, [custom_id]).get(custom_id)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the store's thread."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, *args)

    async def close(self) -> None:
        """Stop watching. Calls still waiting raise that the client closed; their requests
        stay in the queue (a new client's `result(custom_id)` gets the answers)."""
        await self.flush()
        for cid in list(self.waiting):
            self._resolve(
                cid,
                LlmbatchError(
                    f"custom_id {cid!r} (queue {self.queue!r}): the client was closed before the "
                    "answer came; the request stays in the queue: await client.result("
                    f"{cid!r}) in a new client"
                ),
            )
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        await asyncio.get_running_loop().run_in_executor(self._thread, lambda: None)
        self._thread.shutdown(wait=True)


def _held_row(found: Found) -> ResultRow:
    return ResultRow(
        cursor=0,
        custom_id=found.custom_id,
        state="held",
        provider=found.provider,
        status_code=None,
        provider_request_id=None,
        body=None,
        error_code="held",
        error_message=found.reason,
        input_tokens=None,
        output_tokens=None,
        model=found.model,
        endpoint=found.endpoint,
    )


def where(store: Store, queue: str, custom_id: str) -> str:
    """Where a request stands, in words: not enqueued, no worker running, its batch and the
    provider's progress, a retry's wait."""
    found = store.lookup(queue, [custom_id]).get(custom_id)
    if found is None:
        return "it is not in the queue (its import has not committed)"
    if found.state in FINISHED:
        return f"it has ended ({found.state})"
    holder = store.lease_holder("engine", time.time())
    idle = (
        f"; no worker is running on {store.location} (start `llmbatch worker`, or run the "
        "engine in this process: `async with client.running():`)"
        if holder is None
        else f"; worker {holder} holds the queue"
    )
    if found.state == "held":
        return f"a budget holds it ({found.reason}){idle}"
    if found.state == "retry_wait":
        return f"it waits to be sent again ({found.reason}){idle}"
    if found.state == "queued":
        return f"it is queued, not yet in a batch{idle}"
    detail = store.request_detail(custom_id, queue)
    attempts = detail[0]["attempts"] if detail else []
    batch_id = attempts[-1]["batch_id"] if attempts else None
    for b in store.batch_progress(queue):
        if b.id == batch_id:
            status = b.provider_status or b.state
            return (
                f"it is in batch {b.provider_batch_id or b.id} at {b.provider} ({status}, "
                f"{b.done_at_provider:,} of {b.requests:,} done at the provider){idle}"
            )
    return f"it is {found.state}{idle}"
