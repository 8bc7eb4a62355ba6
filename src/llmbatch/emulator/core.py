"""The emulator's one object: settings, clock, store, faults, worker, and the operations the
API and the control routes share (so both speak the same rules)."""

from __future__ import annotations

import hashlib
import logging
import secrets
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from llmbatch.emulator.clock import VirtualClock
from llmbatch.emulator.config import EmulatorConfig
from llmbatch.emulator.faults import FaultBook
from llmbatch.emulator.models import DOORS
from llmbatch.emulator.state import Batch, State
from llmbatch.emulator.surfaces import Flavor
from llmbatch.providers.compatible import window_seconds

Json = dict[str, Any]
log = logging.getLogger("llmbatch.emulator")

DAY = 86_400
CATCH_UP_S = 60.0  # how long an advance waits for batches to catch up with the new time
FILE_TTL = 30 * DAY


class Runner(Protocol):
    """What the emulator needs of its worker thread (worker.py)."""

    @property
    def running(self) -> bool: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...


class Emulator:
    """Holds everything one emulator instance knows; safe to share between the event loop
    and the worker thread."""

    def __init__(
        self,
        data_dir: str | Path | None,
        time_scale: float,
        cfg: EmulatorConfig,
        make_worker: Callable[[Emulator], Runner],
    ) -> None:
        self._tmp: str | None = None
        if data_dir is None:
            self._tmp = tempfile.mkdtemp(prefix="llmbatch-emulator-")
            data_dir = self._tmp
        self.data_dir = Path(data_dir)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.state = State(self.data_dir)
        saved_cfg = self.state.get_setting("runtime_config")
        self.cfg = cfg
        if saved_cfg:
            cfg.update(saved_cfg, runtime_only=True)
        for door in DOORS:  # built now (~20 ms), not on the first request
            cfg.catalog(door)
        saved_quotas = self.state.get_setting("quotas")
        if saved_quotas is not None:
            cfg.quotas = saved_quotas
        saved_clock = self.state.get_setting("clock")
        if saved_clock:
            self.clock = VirtualClock.restore(saved_clock, time_scale)
        else:
            self.clock = VirtualClock(cfg.clock_start, time_scale)
        self.state.put_setting("clock", self.clock.state())
        self.faults = FaultBook(cfg.seed)
        self.faults.load(self.state.get_setting("faults") or [])
        self._id_lock = threading.Lock()
        self._directives: list[Json] = self.state.get_setting("next_batches") or []
        self.wake = threading.Event()
        self.generation = 0  # advances of the clock so far
        self._idle_generation = 0  # the newest advance the worker has caught up with
        self._idle = threading.Condition()
        # the worker is handed in (app.py builds it): it needs this object, not the reverse
        self.worker = make_worker(self)
        self._closed = False

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start processing (idempotent)."""
        self.worker.start()

    def close(self) -> None:
        """Stop the worker, save the clock, close the store (and drop a temporary data dir)."""
        if self._closed:
            return
        self._closed = True
        self.worker.stop()
        self.state.put_setting("clock", self.clock.state())
        self.state.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)

    def now(self) -> float:
        return self.clock.now()

    def advance(self, seconds: float, wait: float = CATCH_UP_S) -> float:
        """Move the clock forward; return once the worker has given every batch its due at
        the new time (a round that started after the advance found nothing left to do), or
        after `wait` seconds, so what a test reads next reflects the advance."""
        now = self.clock.advance(seconds)
        self.state.put_setting("clock", self.clock.state())
        with self._idle:
            self.generation += 1
            target = self.generation
        self.wake.set()
        if wait > 0 and self.worker.running:
            with self._idle:
                self._idle.wait_for(lambda: self._idle_generation >= target, timeout=wait)
        return now

    def caught_up(self, generation: int) -> None:
        """The worker finished a round with nothing to do that began at `generation`."""
        with self._idle:
            if generation > self._idle_generation:
                self._idle_generation = generation
                self._idle.notify_all()

    # --- ids ---------------------------------------------------------------------------------

    def new_id(self, prefix: str, nbytes: int = 12) -> str:
        """A fresh id; with a `seed` the sequence is the same on every run (and survives
        restarts, because the counter is stored)."""
        if self.cfg.seed is None:
            return prefix + secrets.token_hex(nbytes)
        with self._id_lock:
            n = int(self.state.get_setting("id_counter") or 0) + 1
            self.state.put_setting("id_counter", n)
        digest = hashlib.blake2b(f"{self.cfg.seed}:{n}".encode(), digest_size=nbytes)
        return prefix + digest.hexdigest()

    # --- objects -----------------------------------------------------------------------------

    def file_object(
        self, file_id: str, size: int, filename: str, purpose: str, expires_at: int | None
    ) -> Json:
        return {
            "id": file_id,
            "object": "file",
            "bytes": size,
            "created_at": int(self.now()),
            "expires_at": expires_at,
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
            "status_details": None,
        }

    def create_batch(self, flavor: Flavor, params: Json) -> Batch:
        """Store a new batch in `validating` (the route has checked `params`)."""
        now = self.now()
        created = int(now)
        obj: Json = {
            "id": self.new_id("batch_", 16),
            "object": "batch",
            "endpoint": params["endpoint"],
            "model": None,
            "errors": None,
            "input_file_id": params["input_file_id"],
            "completion_window": params["completion_window"],
            "status": "validating",
            "output_file_id": None,
            "error_file_id": None,
            "created_at": created,
            "in_progress_at": None,
            "expires_at": created + (window_seconds(params["completion_window"]) or DAY),
            "finalizing_at": None,
            "completed_at": None,
            "failed_at": None,
            "expired_at": None,
            "cancelling_at": None,
            "cancelled_at": None,
            "request_counts": {"total": 0, "completed": 0, "failed": 0},
            "usage": {
                "input_tokens": 0,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": 0,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": 0,
            },
            "metadata": params["metadata"],
        }
        internal: Json = {"created": now, "output_expires_after": params["output_expires_after"]}
        directive = self._take_directive()
        if directive:
            internal.update(directive)
        self.state.add_batch(flavor.name, obj, internal)
        stored = self.state.get_batch(obj["id"])
        self.wake.set()
        # Answer with the batch as created (`validating`), as the service does, even if the
        # worker has already moved a tiny batch on by the time the response is written.
        return Batch(stored.seq if stored else 0, flavor.name, obj, internal)

    def cancel_batch(self, batch_id: str, flavor: str | None) -> tuple[Batch | None, str | None]:
        """Move a batch to `cancelling`. Returns the batch and, when it cannot be cancelled,
        the status that prevents it."""
        refused: list[str] = []
        now = self.now()

        def change(b: Batch) -> bool:
            if b.status in ("cancelling",):
                return False
            if b.status not in ("validating", "in_progress", "finalizing"):
                refused.append(b.status)
                return False
            b.obj["status"] = "cancelling"
            b.obj["cancelling_at"] = int(now)
            b.internal["cancelling"] = now
            return True

        if flavor is not None and self.state.get_batch(batch_id, flavor) is None:
            return None, None
        batch = self.state.update_batch(batch_id, change)
        self.wake.set()
        return batch, (refused[0] if refused else None)

    # --- control directives ------------------------------------------------------------------

    def add_directive(self, directive: Json, count: int) -> None:
        """Apply `directive` (hold / fail_validation) to the next `count` created batches."""
        with self._id_lock:
            self._directives.extend(dict(directive) for _ in range(count))
            self.state.put_setting("next_batches", self._directives)

    def clear_directives(self) -> None:
        """Forget the directives no created batch has taken yet (a reset: a test's `hold`
        a surface that takes none left behind must not hold the next test's batch)."""
        with self._id_lock:
            self._directives.clear()
            self.state.put_setting("next_batches", self._directives)

    def _take_directive(self) -> Json | None:
        with self._id_lock:
            if not self._directives:
                return None
            directive = self._directives.pop(0)
            self.state.put_setting("next_batches", self._directives)
            return directive

    def save_faults(self) -> None:
        self.state.put_setting("faults", self.faults.dump())
