"""The engine in a thread of the application's own process (`client.running()`), for
programs that do not run a separate `llmbatch worker`.

It is the worker's loop without the signals: tick, then sleep until the engine's next poll
(at most `max_sleep`), woken early when calls are enqueued — but not before `pack_delay`
after the first of them, so calls arriving together share a batch. It takes the engine
lease like any worker, so a `llmbatch worker` on the same store and this thread are standbys
for each other. A lost lease or database is waited out as the worker does; any other error
(a refused key) stops the thread and is handed to `on_error`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from llmbatch import defaults
from llmbatch.engine import Engine, EngineSettings
from llmbatch.errors import StoreUnavailable
from llmbatch.store import open_store
from llmbatch.store.batching import LeaseLost

log = logging.getLogger("llmbatch")


class EngineThread:
    """`start()` the engine ticking in a daemon thread; `stop()` finishes the current tick,
    releases the lease and closes its connection."""

    def __init__(
        self,
        db: str,
        settings: EngineSettings | None = None,
        *,
        pack_delay: float = defaults.PACK_DELAY_S,
        max_sleep: float = defaults.ENGINE_THREAD_MAX_SLEEP_S,
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        self.db, self.settings = db, settings or EngineSettings()
        self.pack_delay, self.max_sleep = pack_delay, max_sleep
        self.on_error = on_error
        self.error: BaseException | None = None
        self.ticks = 0
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._nudged_at: float | None = None
        self._thread = threading.Thread(target=self._run, name="llmbatch-engine", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def nudge(self) -> None:
        """Requests were enqueued: tick within `pack_delay` (thread-safe)."""
        if self._nudged_at is None:
            self._nudged_at = time.monotonic()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        try:
            engine = Engine(open_store(self.db), self.settings)
        except Exception as exc:
            self._died(exc)
            return
        try:
            while not self._stop.is_set():
                self._nudged_at = None
                try:
                    engine.tick(time.time())
                    self.ticks += 1
                except (LeaseLost, StoreUnavailable) as exc:
                    log.warning("engine in this process: %s; trying again", exc)
                wait = max(0.05, min(engine.next_poll_at - time.time(), self.max_sleep))
                self._sleep(wait)
        except Exception as exc:
            self._died(exc)
        finally:
            engine.close()
            engine.store.close()

    def _sleep(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self._stop.is_set():
            nudged = self._nudged_at
            due = end if nudged is None else min(end, nudged + self.pack_delay)
            left = due - time.monotonic()
            if left <= 0:
                return
            self._wake.wait(left)
            self._wake.clear()

    def _died(self, exc: BaseException) -> None:
        self.error = exc
        log.error("the engine in this process stopped: %s", exc)
        if self.on_error is not None:
            self.on_error(exc)
