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
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmbatch import budget, ledger
from llmbatch.budget import BudgetSettings
from llmbatch.errors import ConfigError, RejectedError, TransientError
from llmbatch.in_force import InForce
from llmbatch.ingest import Ingesting
from llmbatch.packing import cut
from llmbatch.providers import Provider, make_provider
from llmbatch.providers.base import Limits
from llmbatch.retry import RetryPolicy
from llmbatch.store import Store
from llmbatch.store.batching import OpenBatch, Outcome, _Retry
from llmbatch.store.budgets import OverBudget, Reservation
from llmbatch.store.sqlstore import owner_alive, owner_tag
from llmbatch.submission import Submission, Sweeping

ENDED = ("completed", "failed", "expired", "cancelled")


@dataclass
class EngineSettings:
    """How the engine schedules its work; see defaults in the field values."""

    poll_interval: float = 30.0
    max_poll_interval: float = 600.0
    retrieve_budget: int = 5
    settle_seconds: float = 120.0  # wait this long for a lagging list before re-creating
    max_batch_requests: int | None = None
    delete_files: bool = True
    batches_per_hour: int = 2000
    quotas: dict[tuple[str, str], int] = field(default_factory=dict)  # (provider, model) -> tokens
    lease_ttl: float = 600.0
    ingest_chunk: int = 5000
    backoff_seconds: float = 30.0
    sweep_interval: float = 600.0  # how often to look for our batches the store does not know
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> provider settings
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    # Requests of a batch whose results the provider archived before they were read:
    # "requeue" (sent again) or "fail" (a result with the reason "archived").
    archived: str = "requeue"

    def __post_init__(self) -> None:
        if self.archived not in ("requeue", "fail"):
            raise ConfigError(
                f'[engine] archived = {self.archived!r}: it takes "requeue" or "fail"'
            )


@dataclass
class TickReport:
    """What one tick did (for progress bars, logs and tests)."""

    held_by: str | None = None
    packed: int = 0
    intents: int = 0
    submitted: int = 0
    polled: int = 0
    ingested_batches: int = 0
    outcomes: int = 0
    anomalies: int = 0
    notes: list[str] = field(default_factory=list)


class Engine(Ingesting, Sweeping):
    """Drives one store's queue through the providers' batch APIs."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings | None = None,
        *,
        providers: Mapping[str, Provider] | None = None,
        workdir: str | Path | None = None,
        holder: str | None = None,
    ) -> None:
        self.store = store
        self.settings = settings or EngineSettings()
        self._providers: dict[str, Provider] = dict(providers or {})
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="llmbatch-"))
        self._file_seconds = 0.0
        # host:pid:start/engine — a restarted worker on the same host can tell the old one is dead
        self.holder = holder or f"{owner_tag()}/{id(self):x}"
        self.next_poll_at = 0.0
        self.interval = self.settings.poll_interval
        self._not_before: dict[int, float] = {}  # batch id -> retry time after a transient error
        self._group_not_before: dict[tuple[str, ...], float] = {}
        # What batch-level failures taught us, per group: a smaller batch, a lower quota.
        self._group_cap: dict[tuple[str, ...], int] = {}
        self._group_strikes: dict[tuple[str, ...], int] = {}
        self._learned_quota: dict[tuple[str, str], int] = {}
        self._next_sweep_at = 0.0
        self._download_tries: dict[int, int] = {}
        self._rotation = 0
        self._budget_state: object = None  # what held requests were weighed against
        self.budgets = InForce(self.settings.budgets)  # the store's, tightened by our own
        self.timings: dict[str, float] = defaultdict(float)  # seconds per phase, for benchmarks

    # -- providers -------------------------------------------------------------------------
    def provider(self, name: str) -> Provider:
        if name not in self._providers:
            self._providers[name] = make_provider(name, **self.settings.providers.get(name, {}))
        return self._providers[name]

    # -- the tick --------------------------------------------------------------------------
    def tick(self, now: float) -> TickReport:
        """One step of work at time `now`. Raises AuthError (stop: nothing was failed)."""
        report = TickReport()
        token = self._lease(now)
        if token is None:
            report.held_by = self.store.lease_holder("engine", now) or "another worker"
            return report
        self.store.release_due_retries(now, token)
        self.budgets.refresh(self.store, now, report.notes)
        self._release_held(now, token)
        for b in self.store.open_batches():
            if b.cancel_requested_at is not None and b.cancel_sent_at is None:
                self._cancel(b, now, token, report)
            elif b.state == "submitting" and self._due(b.id, now):
                self._submit(b, now, token, report)
        self._pack(now, token, report)
        self._budget_state = budget.state(self.store, self.budgets.settings, now)
        if now >= self.next_poll_at:
            self._poll(now, token, report)
        if now >= self._next_sweep_at:
            self._sweep(now, token, report)
        for b in self.store.open_batches():
            if b.state in ENDED and self._due(b.id, now):
                self._ingest(b, now, token, report)
        return report

    def _lease(self, now: float) -> int | None:
        """Take or renew the engine lease; take it over at once from a dead worker on this host."""
        ttl = self.settings.lease_ttl
        token = self.store.acquire_lease("engine", self.holder, ttl, now)
        if token is None:
            holder = self.store.lease_holder("engine", now)
            # A live lease's expiry stands in for a heartbeat here: only the pid check decides.
            if holder and not owner_alive(holder.split("/")[0], now, now):
                self.store.break_lease("engine", holder)
                self.store.note("lease_taken_over", None, f"engine lease of dead worker {holder}")
                token = self.store.acquire_lease("engine", self.holder, ttl, now)
        return token

    def _due(self, batch_id: int, now: float) -> bool:
        return self._not_before.get(batch_id, 0.0) <= now

    def _later(self, batch_id: int, now: float, exc: TransientError, report: TickReport) -> None:
        delay = max(exc.retry_after or 0.0, self.settings.backoff_seconds)
        self._not_before[batch_id] = now + delay
        report.notes.append(f"{exc}; trying again in {delay:.0f} s")
        self.store.note("transient", batch_id, str(exc))

    # -- packing ---------------------------------------------------------------------------
    def _pack_groups(self) -> list[tuple[tuple[str, ...], str, str, str | None]]:
        """(group key, provider, endpoint, model or None for several) of what is ready.

        Requests share a batch as their provider's `group_key` allows (Anthropic: one batch
        may mix models). Where budgets (priced per model) or an enqueued-token quota (per
        model) are in force for a provider and endpoint, its models are packed one by one."""
        ready = self.store.ready_groups()
        alone = {
            (p, e)
            for p, e, m, _n in ready
            if self.budgets.settings or self._quota(p, m) is not None
        }
        out: dict[tuple[str, ...], tuple[str, str, list[str]]] = {}
        for provider_name, endpoint, model, _n in ready:
            key = self._key(provider_name, endpoint, model, (provider_name, endpoint) in alone)
            out.setdefault(key, (provider_name, endpoint, []))[2].append(model)
        return [(k, p, e, ms[0] if len(ms) == 1 else None) for k, (p, e, ms) in out.items()]

    def _key(
        self, provider_name: str, endpoint: str, model: str, alone: bool = False
    ) -> tuple[str, ...]:
        """What may share a batch with requests of this model (its packing group)."""
        if alone:
            return (provider_name, endpoint, model)
        return self.provider(provider_name).group_key(endpoint, model)

    def _batch_key(self, b: OpenBatch) -> tuple[str, ...]:
        """The packing group a batch was cut from (a batch of several models records none)."""
        if b.model is None:
            return self._key(b.provider, b.endpoint, "")
        alone = bool(self.budgets.settings) or self._quota(b.provider, b.model) is not None
        return self._key(b.provider, b.endpoint, b.model, alone)

    def _pack(self, now: float, token: int, report: TickReport) -> None:
        for group, provider_name, endpoint, model in self._pack_groups():
            if self._group_not_before.get(group, 0.0) > now:
                continue
            provider = self.provider(provider_name)
            limits = provider.limits(endpoint, model)
            while True:
                if (
                    self.store.batches_created_since(provider_name, now - 3600)
                    >= self.settings.batches_per_hour
                ):
                    report.notes.append(
                        f"{provider_name}: {self.settings.batches_per_hour} batches this hour; waiting"
                    )
                    return
                cap = min(
                    limits.max_requests,
                    self.settings.max_batch_requests or limits.max_requests,
                    self._group_cap.get(group, limits.max_requests),
                )
                room = None
                quota = None if model is None else self._quota(provider_name, model)
                if quota is not None and model is not None:
                    room = quota - self.store.tokens_in_flight(provider_name, model)
                c = cut(self.store.candidates(provider_name, endpoint, model), limits, cap, room)
                if c.too_large is not None:
                    self._refuse_too_large(c.too_large, provider_name, limits, now, token, report)
                    continue
                if c.count == 0:
                    if c.why == "token quota":
                        report.notes.append(
                            f"{model}: held back by the enqueued-token quota ({quota:,})"
                        )
                    break
                started = time.perf_counter()
                ids: Sequence[int] = c.ids
                size, tokens, reserve = c.input_bytes, c.tokens, None
                if self.budgets.settings and model is not None:  # budgets pack one model
                    ids, size, tokens, reserve = self._budgeted(
                        (provider_name, endpoint, model), ids, now, token, report
                    )
                    if not ids:
                        continue  # every one of them is held now: look at the next ones
                try:
                    batch_id = self.store.create_intent(
                        (provider_name, endpoint, model), ids, size, tokens, now, token, reserve
                    )
                except (_Retry, OverBudget):
                    continue
                finally:
                    self.timings["pack"] += time.perf_counter() - started
                report.intents += 1
                report.packed += len(ids)
                opened = next(b for b in self.store.open_batches() if b.id == batch_id)
                self._submit(opened, now, token, report)
                if c.why == "all":
                    break

    def _refuse_too_large(
        self, request_id: int, provider: str, limits: Limits, now: float, token: int,
        report: TickReport,
    ) -> None:  # fmt: skip
        """Fail a request no batch can hold, so the rest of its group still goes out."""
        why = (
            f"too large for one {provider} batch (limit {limits.max_bytes:,} bytes"
            + (f", {limits.max_inputs:,} inputs" if limits.max_inputs is not None else "")
            + ")"
        )
        if self.store.fail_unsendable(request_id, why, now, token):
            report.notes.append(f"request {request_id} failed: {why}")

    def _budgeted(
        self, group: tuple[str, str, str], ids: Any, now: float, token: int, report: TickReport
    ) -> tuple[list[int], int, int, Reservation]:
        """The part of a cut the budgets let go, with its reservation; the rest is held."""
        p = budget.plan(self.store, group, ids, self.budgets.settings, now)
        for reason, held in p.fit.held.items():
            n = self.store.hold(held, reason, now, token)
            if n:
                report.notes.append(f"{group[2]}: {n:,} requests held: {reason}")
                self.store.note("held", None, f"{group[2]}: {n:,} requests held: {reason}")
        return p.fit.ids, p.input_bytes, p.est_tokens, p.reservation

    def _release_held(self, now: float, token: int) -> None:
        """Held requests are weighed again when what held them changed."""
        current = budget.state(self.store, self.budgets.settings, now)
        if current != self._budget_state:
            self.store.release_held(now, token)
            self._budget_state = current

    def _mark_ingested(self, b: OpenBatch, now: float, token: int, detail: str) -> None:
        """Settle the batch's reservation to what its results cost, then close it."""
        ledger.settle(self.store, b, self.budgets.settings, now, token)
        self.store.mark_ingested(b.id, now, token, detail)

    def _count(
        self, b: OpenBatch, tally: ledger.Tally, now: float, token: int, report: TickReport
    ) -> None:
        """Record what a batch's result lines said it used; say it if the provider's own
        total differs (an anomaly status and report show)."""
        note = ledger.record(self.store, b, tally, now, token)
        if note is not None:
            report.notes.append(note)

    # -- submission --------------------------------------------------------------------------
    def _file(self, b: OpenBatch) -> Path:
        """The batch input file of an intent, written (again) from the store if missing."""
        path = self.workdir / f"batch-{b.id}.jsonl"
        if path.exists():
            return path
        started = time.perf_counter()
        provider = self.provider(b.provider)
        prefix = self.store.store_id + "-"
        tmp = path.with_suffix(".partial")
        with open(tmp, "wb") as f:
            for attempt_id, endpoint, body in self.store.batch_lines(b.id):
                f.write(provider.request_line(prefix + str(attempt_id), endpoint, body) + b"\n")
        tmp.rename(path)
        self._file_seconds = time.perf_counter() - started
        self.timings["pack"] += self._file_seconds
        return path

    def _submit(self, b: OpenBatch, now: float, token: int, report: TickReport) -> None:
        sub = Submission(
            self.store, self.provider(b.provider), b, now, token, self.settings.settle_seconds
        )
        started, self._file_seconds = time.perf_counter(), 0.0
        try:
            done = sub.run(lambda: self._file(b))
        except TransientError as exc:
            self._later(b.id, now, exc, report)
            return
        except RejectedError as exc:
            self._abandon(b, now, token, str(exc), report)
            return
        finally:
            self.timings["upload"] += time.perf_counter() - started - self._file_seconds
        if done:
            report.submitted += 1
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / f"batch-{b.id}.jsonl").unlink()
        else:
            # Ask the provider again a poll interval later, not every tick: an Anthropic intent
            # may wait hours for a same-size batch to end and say whose it is.
            self._not_before[b.id] = now + self.settings.poll_interval
            report.notes.append(
                f"batch {b.id}: waiting for the batch list to settle, or for a batch that may be "
                "this intent's to end"
            )

    def _quota(self, provider: str, model: str) -> int | None:
        """The enqueued-token quota in force: configured, or lower if a failure taught us."""
        known = [
            q
            for q in (
                self.settings.quotas.get((provider, model)),
                self._learned_quota.get((provider, model)),
            )
            if q
        ]
        return min(known) if known else None

    def _batch_level_failure(self, b: OpenBatch, now: float, codes: str) -> None:
        """A batch failed as a whole: halve the next one, learn a lower quota, back off."""
        group = self._batch_key(b)
        strikes = self._group_strikes.get(group, 0) + 1
        self._group_strikes[group] = strikes
        self._group_cap[group] = max(1, b.request_count // 2)
        if "token_limit_exceeded" in codes and b.model:
            self._learned_quota[(b.provider, b.model)] = max(1, b.est_tokens // 2)
        delay = min(self.settings.backoff_seconds * 2 ** (strikes - 1), 3600.0)
        self._group_not_before[group] = now + delay
        self.store.note(
            "backoff", b.id, f"{b.model}: batch-level failure ({codes}); next batch at most "
            f"{self._group_cap[group]:,} requests, in {delay:.0f} s",
        )  # fmt: skip

    def _abandon(self, b: OpenBatch, now: float, token: int, why: str, report: TickReport) -> None:
        """The provider refused an intent outright: its requests go back to the queue unharmed."""
        outs = [
            Outcome(a, "requeue", error_code="rejected", error_message=why)
            for a, _r, _l in self.store.unfinished_attempts(b.id)
        ]
        self.store.apply_outcomes(b.id, outs, now, token)
        self._mark_ingested(b, now, token, f"abandoned: {why}")
        self._batch_level_failure(b, now, why)
        report.notes.append(f"batch {b.id} refused: {why}; its requests are queued again")

    def _cancel(self, b: OpenBatch, now: float, token: int, report: TickReport) -> None:
        """Carry out a `llmbatch cancel` of a whole batch."""
        if b.provider_batch_id is None:
            if b.create_started_at is None:  # nothing can exist at the provider: stop here
                outs = [
                    Outcome(
                        a,
                        "cancelled",
                        error_code="cancelled",
                        error_message="cancelled before it was sent",
                    )
                    for a, _r, _l in self.store.unfinished_attempts(b.id)
                ]
                self.store.apply_outcomes(b.id, outs, now, token)
                self.store.mark_cancel_sent(b.id, now, token)
                self._mark_ingested(b, now, token, "cancelled before it was sent")
                if b.input_file_id and self.settings.delete_files:
                    with contextlib.suppress(TransientError):
                        self.provider(b.provider).delete_files([b.input_file_id])
                report.notes.append(f"batch {b.id} cancelled before it was sent")
            elif self._due(b.id, now):
                self._submit(b, now, token, report)  # it may exist: find it first, then cancel it
            return
        if b.state not in ENDED:
            try:
                self.provider(b.provider).cancel(b.provider_batch_id)
            except TransientError as exc:
                self._later(b.id, now, exc, report)
                return
            except RejectedError:
                pass  # it ended meanwhile; ingest keeps what finished
        self.store.mark_cancel_sent(b.id, now, token)
        self.next_poll_at = min(self.next_poll_at, now)  # watch it wind down
        report.notes.append(f"asked {b.provider} to cancel batch {b.provider_batch_id}")

    # -- polling ---------------------------------------------------------------------------
    def _poll(self, now: float, token: int, report: TickReport) -> None:
        flying = [
            b for b in self.store.open_batches() if b.provider_batch_id and b.state not in ENDED
        ]
        changed = False
        by_provider: dict[str, list[OpenBatch]] = {}
        for b in flying:
            by_provider.setdefault(b.provider, []).append(b)
        for name, batches in by_provider.items():
            self._rotation += 1
            k = self._rotation % len(batches)
            order = batches[k:] + batches[:k]  # round-robin for the direct retrieves
            started = time.perf_counter()
            try:
                statuses = self.provider(name).poll(
                    [b.provider_batch_id or "" for b in order], self.settings.retrieve_budget
                )
            except TransientError as exc:
                report.notes.append(str(exc))
                continue
            finally:
                self.timings["poll"] += time.perf_counter() - started
            known = {b.provider_batch_id: b for b in batches}
            for s in statuses:
                b = known[s.provider_batch_id]
                report.polled += 1
                if (s.state, s.completed, s.failed) != (b.state, b.completed_count, b.failed_count):
                    self.store.update_batch(b.id, s, now, token)
                    changed = True
                    if s.usage is not None:  # what the provider says it used, to check ours
                        self.store.record_provider_usage(b.id, s.usage, now, token)
        self.interval = (
            self.settings.poll_interval
            if changed
            else min(self.interval * 2, self.settings.max_poll_interval)
        )
        self.next_poll_at = now + self.interval

    # -- ingest ----------------------------------------------------------------------------
    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.store.release_lease("engine", self.holder)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


Clock = Callable[[], float]
