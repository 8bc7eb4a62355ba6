"""The batch engine: `tick(now)` packs what is ready, submits it, polls what is in flight and
ingests what has finished. It never sleeps; the worker, `run` and `wait` are loops around it.

One tick, in order:
1. take (or renew) the engine lease — its token fences every write of this tick;
2. move `retry_wait` requests whose time has come back to `queued`;
3. finish submitting intents a crash or an outage interrupted (see submission.py);
4. pack ready requests per provider group (the provider's `group_key`) into new intents and
   submit them;
5. poll in-flight batches (one list call, a few retrieves), at most every `poll_interval`,
   backing off to `max_poll_interval` while nothing moves;
6. ingest ended batches: stream result files to disk, verify them, record every line.

Errors are per batch: whatever one batch's step raises (a 404, a refusal, a full disk, a bug)
backs that batch off and is said, and the tick goes on with the others. Only what concerns
the whole store stops a tick: the key refused (AuthError), the database (StoreError, a lost
lease), a wrong setting (ConfigError). Everything the engine counts — back-offs, download
tries, 404 confirmations, rejections, what a group's failures taught — lives in the store,
so `llmbatch run` from cron (a new process each time) behaves as a long-lived worker does.

The engine is composed of parts, each given its collaborators when it is made and the
tick's context (`tick.Tick`: time, fencing token, report, pending move) when it acts: the
lease (lease.py), the packer (packer.py), the submitter (submitter.py, by submission.py's
protocol), the poller (polling.py), the ingestor (ingest.py), the sweeper (sweeper.py) and
the canceller (cancelling.py); setbacks.py backs failing batches and groups off, and
closing.py ends a batch. `Engine` builds them and `tick` calls them in order.
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from llmbatch import webhooks
from llmbatch.archive import Archiver
from llmbatch.cancelling import Canceller
from llmbatch.closing import Closer
from llmbatch.in_force import InForce
from llmbatch.ingest import Ingestor
from llmbatch.lease import Claims, Lease
from llmbatch.packer import Groups, Packer
from llmbatch.polling import ENDED, Poller
from llmbatch.providers import Provider, make_provider
from llmbatch.setbacks import Learned, Setbacks
from llmbatch.store.base import Store
from llmbatch.store.sqlstore import owner_tag
from llmbatch.submitter import Submitter
from llmbatch.sweeper import Sweeper
from llmbatch.tick import EngineSettings, Tick, TickReport

__all__ = ["ENDED", "Engine", "EngineSettings", "TickReport"]

Clock = Callable[[], float]


class Engine:
    """Drives one store's queue through the providers' batch APIs.

    `clock` is read when a call that spends money starts (its stamp in the store) and to
    renew the lease during long work; `tick(now)` takes the tick's time. A worker passes the
    same clock to both; tests pass a fake one."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        workdir: str | Path | None = None,
        holder: str | None = None,
        clock: Clock = time.time,
        queues: Sequence[str] | None = None,
    ) -> None:
        self.store = store
        self.settings = settings = settings or EngineSettings()
        self._clock = clock
        self._providers: dict[str, Provider] = dict(providers or {})
        self._wrap: Callable[[str, Provider], Provider] | None = None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="llmbatch-"))
        # host:pid:start:pid-space/engine — a restarted worker on this host can tell the old
        # one is dead; one in another PID namespace is never judged by a pid it cannot see
        self.holder = holder or f"{owner_tag()}/{id(self):x}"
        self.timings: dict[str, float] = defaultdict(float)  # seconds per phase, for benchmarks
        self.budgets = InForce(settings.budgets)  # the store's, tightened by our own
        self.archiver = (
            Archiver(
                store,
                settings.archive,
                self.provider,
                self.workdir,
                delete_files=settings.delete_files,
                clock=clock,
                background=True,  # the engine polls and ingests while archives are written
            )
            if settings.archive is not None
            else None
        )
        self.deliverer = (
            webhooks.Deliverer(store, settings.webhooks, clock=clock)
            if settings.webhooks is not None
            else None
        )
        # the parts, each given what it works with
        provider, timings = self.provider, self.timings
        self.lease = Lease(store, settings, self.holder, clock, queues)
        self.claims = Claims(store, settings, self.lease)
        self.closer = Closer(store, settings, self.budgets, self.archiver)
        self.learned = Learned(store, settings)
        self.groups = Groups(settings, provider, self.budgets, self.learned)
        self.setbacks = Setbacks(
            store,
            settings,
            self.workdir,
            self.lease,
            self.learned,
            self.groups.of_batch,
            self.closer,
        )
        self.ingestor = Ingestor(
            store,
            settings,
            self.workdir,
            provider,
            self.lease,
            self.setbacks,
            self.closer,
            self.archiver,
            timings,
        )
        self.poller = Poller(store, settings, provider, self.ingestor, self.closer, timings)
        self.submitter = Submitter(
            store,
            settings,
            provider,
            self.workdir,
            self.lease,
            self.setbacks,
            self.poller,
            clock,
            timings,
            self.archiver,
        )
        self.canceller = Canceller(
            store, settings, provider, self.submitter, self.lease, self.poller, self.closer
        )
        self.sweeper = Sweeper(store, settings, self._providers)
        self.packer = Packer(
            store,
            settings,
            provider,
            self.groups,
            self.learned,
            self.setbacks,
            self.budgets,
            self.submitter,
            self.lease,
            timings,
        )

    # -- providers -------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            made = make_provider(name, **self.settings.providers.get(name, {}))
            self._providers[name] = made if self._wrap is None else self._wrap(name, made)
        return self._providers[name]

    def instrument(self, wrap: Callable[[str, Provider], Provider]) -> None:
        """Wrap every provider, those in use and those made later (metrics time the calls)."""
        self._wrap = wrap
        for name, p in list(self._providers.items()):
            self._providers[name] = wrap(name, p)  # the same dict the sweeper reads

    @property
    def clock(self) -> Clock:
        """The clock the lease and the submitter read (a test may swap it)."""
        return self._clock

    @clock.setter
    def clock(self, clock: Clock) -> None:
        self._clock = self.lease.clock = self.submitter.clock = clock

    @property
    def next_poll_at(self) -> float:
        """When the next tick polls (a worker sleeps until then)."""
        return self.poller.next_poll_at

    @next_poll_at.setter
    def next_poll_at(self, at: float) -> None:
        """Poll at `at` every batch in flight, whatever its schedule (benchmarks, tests)."""
        self.poller.next_poll_at, self.poller.forced = at, True

    # -- the tick --------------------------------------------------------------------------
    def tick(self, now: float) -> TickReport:
        """One step of work at time `now`. Raises AuthError (stop: nothing was failed)."""
        report = TickReport()
        if self.archiver is not None:
            self.archiver.check()  # no bucket, no credentials: said before anything is done
        token = self.lease.take(now)
        report.engine_lease = engine = self.lease.engine
        if self.archiver is not None:
            self.archiver.engine = engine  # archiving is the engine lease holder's work
        report.engine_holder = self.lease.engine_holder
        t = Tick(now, token, report, self.store.moved())
        if t.moved is not None:
            report.notes.append(
                f"this store was copied or moved ({t.moved.describe()}): batches up to "
                f"{t.moved.before} wait for `llmbatch store new-identity` (a copy) or "
                "`llmbatch store keep-identity` (a move or a restore)"
            )
        if engine:  # what concerns the whole store: one worker at a time
            self.store.release_due_retries(now, token)
        self.budgets.refresh(self.store, now, report.notes)
        if engine:
            self.packer.release_held(t)
        self.learned.refresh()
        frozen = 0 if t.moved is None else t.moved.before
        t.mine = self.claims.share(now, self.store.open_batches(), report.notes, frozen)
        self._resume(t)
        if self.setbacks.disk_ok(None, now):
            self.packer.pack(t)
        self.packer.weighed(now)
        if self.poller.due(now):
            self.poller.poll(t)
        if engine and self.sweeper.due(now):
            self.sweeper.sweep(t)
        self._ingest(t)
        if self.archiver is not None and engine:
            started = time.perf_counter()
            report.archived = self.archiver.run(now, report.notes)
            self.timings["archive"] += time.perf_counter() - started
        report.claimed = len(t.mine)
        self.store.worker_seen(
            token,
            now,
            {
                "packed": report.packed,
                "submitted": report.submitted,
                "polled": report.polled,
                "ingested": report.ingested_batches,
                "outcomes": report.outcomes,
            },
        )
        return report

    def _resume(self, t: Tick) -> None:
        """Carry out cancels asked for, and finish sending intents a crash or an outage
        interrupted."""
        for b in self.store.open_batches():
            if b.cancel_requested_at is not None and b.cancel_sent_at is None:
                if t.due(b):
                    self.setbacks.guarded(b, t, self.canceller.cancel)
            elif b.state == "submitting" and t.due(b) and self.setbacks.disk_ok(b, t.now):
                self.setbacks.guarded(b, t, self.submitter.submit)

    def _ingest(self, t: Tick) -> None:
        """Ingest ended batches, delivering each one's webhook events at once (and those due
        again after a failure at the end)."""
        deliverer = self.deliverer if self.lease.engine else None  # one worker delivers
        if deliverer is not None:
            deliverer.start_tick()
        for b in self.store.open_batches():
            if b.state in ENDED and t.due(b) and self.setbacks.disk_ok(b, t.now):
                self.setbacks.guarded(b, t, self.ingestor.ingest)
                if deliverer is not None:  # its events at once, not after every batch
                    t.report.delivered += deliverer.run(t.now, t.report.notes)
        if deliverer is not None:
            t.report.delivered += deliverer.run(t.now, t.report.notes)

    def close(self) -> None:
        if self.archiver is not None:
            self.archiver.close()  # its pass reads the work directory and the lease's store
        with contextlib.suppress(Exception):
            self.lease.release()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
