"""Polling in-flight batches, one batch's trouble kept to that batch.

One list call per provider sees most batches; a few direct retrieves (round-robin) see the
rest. A retrieve the provider refuses (404: the batch was deleted by a person, or the key
moved to another project) must not hide every other batch's status, nor stop the tick: the
batches are then polled one by one, and the one that answers 404 is confirmed
`GONE_CONFIRMATIONS` times, spaced by the back-off, before its waiting requests go back to
the queue (each counted as an expiry, explained in `show`) and the batch is closed.

What a provider reports is checked before it is stored: a count that no database integer
holds is an anomaly, not an OverflowError out of the tick.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from llmbatch import defaults
from llmbatch.closing import Closer
from llmbatch.errors import IllegalTransition, RejectedError, TransientError
from llmbatch.ingest import Ingestor
from llmbatch.providers.base import BatchStatus, Provider
from llmbatch.store.base import Store
from llmbatch.store.batching import OpenBatch
from llmbatch.tick import EngineSettings, Tick, TickReport

ENDED = ("completed", "failed", "expired", "cancelled")
GONE_CONFIRMATIONS = 3  # a batch that answers 404 this many times is gone
MAX_COUNT = 2**31 - 1  # more requests than any batch holds: not a count
MAX_USAGE = 2**62  # tokens a BIGINT holds with room to sum: more is not a usage


class Poller:
    """The engine's polling part: when to poll next (soon after a submit, backing off while
    nothing moves), and what each provider says of the batches in flight.

    The schedule is each batch's, in the store (`poll_at`, `poll_every`): a cron `run` starts
    where the last one stopped, and a worker that takes a batch over polls it when it was due.
    The batches of one poll are scheduled in one statement. `next_poll_at` is this worker's
    earliest, for its sleep."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        provider: Callable[[str], Provider],
        ingestor: Ingestor,
        closer: Closer,
        timings: dict[str, float],
    ) -> None:
        self.store, self.settings, self.provider = store, settings, provider
        self.ingestor, self.closer, self.timings = ingestor, closer, timings
        self.next_poll_at = 0.0  # 0: read the batches' schedule at the next tick
        self.forced = False  # `Engine.next_poll_at` set by hand: poll every batch in flight
        self.rotation = 0

    def due(self, now: float) -> bool:
        return now >= self.next_poll_at

    def soon(self, b: OpenBatch, t: Tick) -> None:
        """A batch was just submitted: poll soon (an instant provider is done in a second),
        then back off. Its interval is stored as half the first one, so its first poll
        keeps the short interval (doubled back) for the second. If this tick polls anyway
        (a `run` from cron), it polls this batch too: an instant provider's is done."""
        first = min(self.settings.first_poll, self.settings.poll_interval)
        at = t.now if self.due(t.now) else t.at() + first
        self.store.schedule_polls([b.id], at, first / 2, t.token)
        self.next_poll_at = min(self.next_poll_at, at)

    def now(self, b: OpenBatch, t: Tick) -> None:
        """Poll a batch at the next tick (it is winding down)."""
        self.store.schedule_polls([b.id], t.now, b.poll_every, t.token)
        self.next_poll_at = min(self.next_poll_at, t.now)

    def poll(self, t: Tick) -> None:
        now, token, report = t.now, t.token, t.report
        mine = [
            b
            for b in self.store.open_batches()
            if b.provider_batch_id and b.state not in ENDED and t.due(b)
        ]
        flying = [b for b in mine if self.forced or b.poll_at <= now]
        self.forced = False
        changed = False
        by_provider: dict[str, list[OpenBatch]] = {}
        for b in flying:
            by_provider.setdefault(b.provider, []).append(b)
        for name, batches in by_provider.items():
            self.rotation += 1
            k = self.rotation % len(batches)
            order = batches[k:] + batches[:k]  # round-robin for the direct retrieves
            started = time.perf_counter()
            try:
                statuses = self.provider(name).poll(
                    [b.provider_batch_id or "" for b in order], self.settings.retrieve_budget
                )
            except TransientError as exc:
                report.unreachable += 1
                report.notes.append(str(exc))
                continue
            except RejectedError:  # a batch the provider does not know: find which one
                statuses = self._poll_each(name, order, t)
            finally:
                self.timings["poll"] += time.perf_counter() - started
            known = {b.provider_batch_id: b for b in batches}
            for s in statuses:
                seen = known.get(s.provider_batch_id)
                if seen is None:
                    continue
                report.polled += 1
                s = self._sane(seen, s, report)
                old = (seen.state, seen.completed_count, seen.failed_count)
                if (s.state, s.completed, s.failed) != old:
                    try:
                        self.store.update_batch(seen.id, s, now, token)
                    except IllegalTransition as exc:  # a stale answer: the batch moved on
                        said = f"batch {seen.provider_batch_id}: {exc}; that poll is not stored"
                        report.notes.append(said)
                        self.store.note("anomaly", seen.id, said)
                        continue
                    changed = True
                    if s.usage is not None:  # what the provider says it used, to check ours
                        self.store.record_provider_usage(seen.id, s.usage, now, token, s.model)
        # The interval doubles from the shortest of the batches polled (one just submitted:
        # half the first, so the short first interval stands once), up to poll_interval while
        # batches move or one of them is young (in flight less than STEADY_POLL_S), and up to
        # max_poll_interval while nothing does. It counts from when the poll answered, not
        # from the tick's start (a tick that packed and uploaded first started long before).
        later = [b.poll_at for b in mine if b.poll_at > now]
        if flying:
            every = min(b.poll_every or self.settings.poll_interval for b in flying)
            young = any(
                now - (b.submitted_at or b.created_at) < defaults.STEADY_POLL_S for b in flying
            )
            steady = changed or young
            cap = self.settings.poll_interval if steady else self.settings.max_poll_interval
            every = min(every * 2, cap)
            at = t.at() + every
            self.store.schedule_polls([b.id for b in flying], at, every, token)
            later.append(at)
        self.next_poll_at = min(later, default=now + self.settings.poll_interval)

    def _poll_each(self, name: str, order: list[OpenBatch], t: Tick) -> list[BatchStatus]:
        """After a refused poll: the list alone, then each batch it missed on its own, so the
        one the provider does not know is found and the others are still seen."""
        report = t.report
        provider = self.provider(name)
        ids = [b.provider_batch_id or "" for b in order]
        try:
            statuses = provider.poll(ids, 0)
        except TransientError as exc:
            report.unreachable += 1
            report.notes.append(str(exc))
            return []
        except RejectedError as exc:
            report.notes.append(str(exc))
            return []
        seen = {s.provider_batch_id for s in statuses}
        missed = [b for b in order if b.provider_batch_id not in seen]
        for b in missed[: self.settings.retrieve_budget]:
            try:
                statuses += provider.poll([b.provider_batch_id or ""], 1)
            except RejectedError as exc:
                self._gone(b, t, str(exc))
            except TransientError as exc:
                report.unreachable += 1
                report.notes.append(str(exc))
        return statuses

    def _gone(self, b: OpenBatch, t: Tick, why: str) -> None:
        """A batch the provider answers 404 for: confirmed a few times, then closed, its
        waiting requests back in the queue (an adopted duplicate's belong to its intent), or
        failed under `archived = "fail"`: their results are gone before they were read."""
        now, token, report = t.now, t.token, t.report
        checks = b.gone_checks + 1
        pid = b.provider_batch_id
        if checks < GONE_CONFIRMATIONS:
            delay = self.settings.backoff_seconds * 2 ** (checks - 1)
            said = f"batch {pid} unknown to {b.provider} ({checks} of {GONE_CONFIRMATIONS}): {why}"
            report.notes.append(f"{said}; asking again in {delay:.0f} s")
            self.store.count_setback(b.id, "gone_checks", now + delay, now, token, "gone?", said)
            return
        reason = (
            f"batch {pid} is gone at {b.provider} (404 {checks} times: deleted there, or the key "
            "now belongs to another project)"
        )
        fail = self.settings.archived == "fail"  # its results are gone before they were read
        if fail:
            self.ingestor.results_gone(b, t, "batch_gone", reason)
        elif b.intent_id is None:
            waiting = self.store.unfinished_attempts(b.id)  # cancelled instead if so asked
            self.ingestor.apply_waiting(b, [(a, "batch_gone", reason) for a, _r, _l in waiting], t)
        gone = BatchStatus(pid or "", "failed", "gone", b.request_count, b.completed_count)
        self.store.update_batch(b.id, gone, now, token)
        self.store.note("batch_gone", b.id, reason)
        self.closer.close(b, t, reason)
        report.notes.append(
            f"{reason}; its waiting requests {'failed' if fail else 'are queued again'}"
        )

    def _sane(self, b: OpenBatch, s: BatchStatus, report: TickReport) -> BatchStatus:
        """A status whose counts a database integer holds (else they are dropped, and said)."""
        counts = (s.total, s.completed, s.failed)
        usage = dataclasses.astuple(s.usage) if s.usage is not None else ()
        if not all(0 <= n <= MAX_USAGE for n in usage):
            said = f"batch {b.provider_batch_id}: provider usage out of range {usage}; not stored"
            report.notes.append(said)
            self.store.note("anomaly", b.id, said)
            s = dataclasses.replace(s, usage=None)
        if all(isinstance(n, int) and 0 <= n <= MAX_COUNT for n in counts):
            return s
        said = f"batch {b.provider_batch_id}: request counts out of range {counts}; not stored"
        report.notes.append(said)
        self.store.note("anomaly", b.id, said)
        return dataclasses.replace(s, total=0, completed=0, failed=0)
