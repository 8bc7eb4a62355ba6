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

from llmbatch import budget, defaults, ledger, webhooks
from llmbatch.archive import Archiver, ArchiveSettings, batch_folder
from llmbatch.budget import BudgetSettings
from llmbatch.errors import ConfigError, RejectedError
from llmbatch.in_force import InForce
from llmbatch.ingest import Ingesting
from llmbatch.ownership import attempt_prefix
from llmbatch.packing import cut
from llmbatch.polling import Polling
from llmbatch.providers import Provider, make_provider
from llmbatch.providers.base import Limits
from llmbatch.retry import RetryPolicy
from llmbatch.setbacks import Setbacks, group_row
from llmbatch.store import Store
from llmbatch.store.batching import LeaseLost, OpenBatch, _Retry
from llmbatch.store.budgets import OverBudget, Reservation
from llmbatch.store.ownership import Moved
from llmbatch.store.setbacks import GroupBackoff
from llmbatch.store.sqlstore import owner_alive, owner_tag
from llmbatch.submission import Cancelling, Submission, Sweeping

ENDED = ("completed", "failed", "expired", "cancelled")
Clock = Callable[[], float]


@dataclass
class EngineSettings:
    """How the engine schedules its work; see defaults in the field values."""

    poll_interval: float = 30.0
    max_poll_interval: float = 600.0
    first_poll: float = 1.0  # after a submit, poll this soon, then back off (doubling)
    retrieve_budget: int = 5
    settle_seconds: float = 120.0  # wait this long for a lagging list before re-creating
    max_batch_requests: int | None = None
    delete_files: bool = True
    batches_per_hour: int = 2000
    quotas: dict[tuple[str, str], int] = field(default_factory=dict)  # (provider, model) -> tokens
    lease_ttl: float = defaults.LEASE_TTL_S
    # How long an upload or a create may take before the client gives up, and what a renewed
    # lease must still have left after it (None: derived from lease_ttl, see defaults.py).
    submit_timeout: float | None = None
    lease_margin: float | None = None
    ingest_chunk: int = 5000
    backoff_seconds: float = 30.0
    sweep_interval: float = 600.0  # how often to look for our batches the store does not know
    max_batch_rejections: int = 3  # a request whose batch is refused this often fails
    max_result_line_bytes: int = defaults.MAX_RESULT_LINE_BYTES
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    providers: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> provider settings
    budgets: BudgetSettings = field(default_factory=BudgetSettings)
    # Requests of a batch whose results the provider archived before they were read:
    # "requeue" (sent again) or "fail" (a result with the reason "archived").
    archived: str = "requeue"
    archive: ArchiveSettings | None = None  # `[archive]`: copy each batch's files there
    webhooks: webhooks.WebhookSettings | None = None  # `[webhooks]`: POST when results are in
    # How long an intent whose create may have acted waits for a running batch of its size to
    # end and say whose it is, before it creates again (a residual double create, counted).
    max_proof_wait: float = defaults.MAX_PROOF_WAIT_S

    def __post_init__(self) -> None:
        if self.archived not in ("requeue", "fail"):
            raise ConfigError(
                f'[engine] archived = {self.archived!r}: it takes "requeue" or "fail"'
            )
        for name in (
            "lease_ttl", "submit_timeout", "lease_margin", "max_result_line_bytes", "max_proof_wait",
        ):  # fmt: skip
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"[engine] {name} must be more than 0, got {value!r}")
        if self.max_batch_rejections < 1:
            raise ConfigError(
                f"[engine] max_batch_rejections must be at least 1, got {self.max_batch_rejections}"
            )
        if self.call_timeout + self.renew_margin > self.lease_ttl:
            raise ConfigError(
                f"[engine] submit_timeout ({self.call_timeout:g} s) plus lease_margin "
                f"({self.renew_margin:g} s) must fit in lease_ttl ({self.lease_ttl:g} s): a worker "
                "waiting on a create must still hold its lease when the answer comes, or a "
                "standby could create the batch again; lower submit_timeout or raise lease_ttl"
            )

    @property
    def renew_margin(self) -> float:
        if self.lease_margin is not None:
            return self.lease_margin
        return min(defaults.LEASE_MARGIN_S, self.lease_ttl * defaults.LEASE_MARGIN_SHARE)

    @property
    def call_timeout(self) -> float:
        """The client timeout of an upload, a create or a cancel."""
        if self.submit_timeout is not None:
            return self.submit_timeout
        return min(defaults.SUBMIT_TIMEOUT_S, self.lease_ttl - self.renew_margin)


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
    archived: int = 0  # batches whose archive was written
    delivered: int = 0  # webhook events delivered
    unreachable: int = 0  # provider calls that failed for a transient reason (outage, 429, 5xx)
    notes: list[str] = field(default_factory=list)


class Engine(Setbacks, Ingesting, Polling, Sweeping, Cancelling):
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
    ) -> None:
        self.store = store
        self.settings = settings or EngineSettings()
        self.clock = clock
        self._providers: dict[str, Provider] = dict(providers or {})
        self._wrap: Callable[[str, Provider], Provider] | None = None
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="llmbatch-"))
        self._file_seconds = 0.0
        # host:pid:start:pid-space/engine — a restarted worker on this host can tell the old
        # one is dead; one in another PID namespace is never judged by a pid it cannot see
        self.holder = holder or f"{owner_tag()}/{id(self):x}"
        self.next_poll_at = 0.0
        self.interval = self.settings.poll_interval
        self._tick_now = 0.0
        self._renewed_at = 0.0
        self._submitted_since_poll = False
        self._backoffs: dict[tuple[str, str, str], GroupBackoff] = {}
        self._next_sweep_at = 0.0
        self._moved: Moved | None = None  # a copy or move the user has not yet named
        self._disk_full_since: float | None = None  # the work directory's disk is full
        self._disk_until = self._disk_wait = 0.0
        self._disk_blocked: dict[int, float] = {}  # batch -> when its files may try again
        self._rotation = 0
        self._budget_state: object = None  # what held requests were weighed against
        self.budgets = InForce(self.settings.budgets)  # the store's, tightened by our own
        self.timings: dict[str, float] = defaultdict(float)  # seconds per phase, for benchmarks
        self.archiver = (
            Archiver(
                store,
                self.settings.archive,
                self.provider,
                self.workdir,
                delete_files=self.settings.delete_files,
                clock=clock,
            )
            if self.settings.archive is not None
            else None
        )
        self.deliverer = (
            webhooks.Deliverer(store, self.settings.webhooks, clock=clock)
            if self.settings.webhooks is not None
            else None
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
        self._providers = {name: wrap(name, p) for name, p in self._providers.items()}

    # -- the tick --------------------------------------------------------------------------
    def tick(self, now: float) -> TickReport:
        """One step of work at time `now`. Raises AuthError (stop: nothing was failed)."""
        report = TickReport()
        if self.archiver is not None:
            self.archiver.check()  # no bucket, no credentials: said before anything is done
        token = self._lease(now)
        if token is None:
            report.held_by = self.store.lease_holder("engine", now) or "another worker"
            return report
        self._moved = self.store.moved()
        if self._moved is not None:
            report.notes.append(
                f"this store was copied or moved ({self._moved.describe()}): batches up to "
                f"{self._moved.before} wait for `llmbatch store new-identity` (a copy) or "
                "`llmbatch store keep-identity` (a move or a restore)"
            )
        self.store.release_due_retries(now, token)
        self.budgets.refresh(self.store, now, report.notes)
        self._release_held(now, token)
        self._backoffs = {g.group: g for g in self.store.group_backoffs()}
        for b in self.store.open_batches():
            if b.cancel_requested_at is not None and b.cancel_sent_at is None:
                if self._due(b, now):
                    self._guarded(b, now, token, report, self._cancel)
            elif b.state == "submitting" and self._due(b, now) and self._disk_ok(b, now):
                self._guarded(b, now, token, report, self._submit)
        if self._disk_ok(None, now):
            self._pack(now, token, report)
        self._budget_state = budget.state(self.store, self.budgets.settings, now)
        if now >= self.next_poll_at:
            self._poll(now, token, report)
        if now >= self._next_sweep_at:
            self._sweep(now, token, report)
        if self.deliverer is not None:
            self.deliverer.start_tick()
        for b in self.store.open_batches():
            if b.state in ENDED and self._due(b, now) and self._disk_ok(b, now):
                self._guarded(b, now, token, report, self._ingest)
                if self.deliverer is not None:  # its events at once, not after every batch
                    report.delivered += self.deliverer.run(now, report.notes)
        if self.deliverer is not None:  # and those due again after a failure
            report.delivered += self.deliverer.run(now, report.notes)
        if self.archiver is not None:
            started = time.perf_counter()
            report.archived = self.archiver.run(now, report.notes)
            self.timings["archive"] += time.perf_counter() - started
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
        self._tick_now, self._renewed_at = now, now
        return token

    def _renew(self, token: int, force: bool = False) -> None:
        """Renew the lease before a call that spends money (`force`), and during long work
        once a third of it has gone; LeaseLost if it is no longer ours."""
        at = max(self._tick_now, self.clock())  # never shorter than the tick's own lease
        if not force and at - self._renewed_at < self.settings.lease_ttl / 3:
            return
        if self.store.acquire_lease("engine", self.holder, self.settings.lease_ttl, at) != token:
            raise LeaseLost(
                "the engine lease was taken over by another worker; this one stops acting"
            )
        self._renewed_at = at

    def _due(self, b: OpenBatch, now: float) -> bool:
        """Whether to work on a batch now: not backed off, and not made before the store was
        copied or moved (frozen until the user says which: `llmbatch store ...-identity`)."""
        if self._moved is not None and b.id <= self._moved.before:
            return False
        return b.not_before is None or b.not_before <= now

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
            learned = self._backoffs.get(group_row(group))
            if learned is not None and learned.not_before > now:
                continue
            provider = self.provider(provider_name)
            provider.ready()  # no key: said now, before an intent is committed
            limits = provider.limits(endpoint, model)
            while True:
                self._renew(token)
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
                    (learned.cap if learned else None) or limits.max_requests,
                )
                room = None
                quota = None if model is None else self._quota(provider_name, model)
                if quota is not None and model is not None:
                    room = quota - self.store.tokens_in_flight(provider_name, model)
                c = cut(self.store.candidates(provider_name, endpoint, model), limits, cap, room)
                if c.too_large is not None:
                    self._refuse_too_large(c.too_large, provider_name, limits, now, token, report)
                    continue
                if 0 < c.count < limits.min_requests:  # the service refuses smaller batches
                    report.notes.append(
                        f"{provider_name}: {c.count} requests of {model or endpoint} ready; a "
                        f"batch takes at least {limits.min_requests}: waiting for more"
                    )
                    break
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
                self._guarded(opened, now, token, report, self._submit)
                if c.why == "all" or not self._disk_ok(None, now):
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
        """Settle the batch's reservation to what its results cost, then close it (durably:
        the provider's files may be deleted right after)."""
        ledger.settle(self.store, b, self.budgets.settings, now, token)
        # Before the batch is closed: a crash here must lose neither its archive nor its events.
        if self.archiver is not None:
            self.store.archive_add(b.id, now)
        if self.settings.webhooks is not None:
            where = None
            if self.archiver is not None:
                folder = batch_folder(self.store.store_id, b.id)
                where = f"{self.archiver.target.location.rstrip('/')}/{folder}"
            webhooks.add_events(self.store, b, now, where)
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
        prefix = attempt_prefix(self.store.store_id, b.nonce) + "-"
        tmp = path.with_suffix(".partial")
        try:
            with open(tmp, "wb") as f:
                for attempt_id, endpoint, body in self.store.batch_lines(b.id):
                    f.write(provider.request_line(prefix + str(attempt_id), endpoint, body) + b"\n")
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk: give back what was written
            raise
        tmp.rename(path)
        self._file_seconds = time.perf_counter() - started
        self.timings["pack"] += self._file_seconds
        return path

    def _submission(self, b: OpenBatch, now: float, token: int) -> Submission:
        return Submission(
            self.store,
            self.provider(b.provider),
            b,
            now,
            token,
            settle=self.settings.settle_seconds,
            timeout=self.settings.call_timeout,
            clock=self.clock,
            renew=lambda: self._renew(token, force=True),
            held=self._lease_covers_a_call,
            max_proof_wait=self.settings.max_proof_wait,
        )

    def _lease_covers_a_call(self) -> None:
        """LeaseLost unless the lease as last renewed still outlasts a call's client timeout,
        by this worker's clock: a renewal is followed at once by the call, so only a worker
        frozen in between for longer than the renewal margin fails this."""
        left = self._renewed_at + self.settings.lease_ttl - self.clock()
        if left < self.settings.call_timeout:
            raise LeaseLost(
                f"this worker was frozen for {self.settings.lease_ttl - left:.1f} s after "
                "renewing its lease, which may have passed to another worker: it does not send"
            )

    def _submit(self, b: OpenBatch, now: float, token: int, report: TickReport) -> None:
        sub = self._submission(b, now, token)
        started, self._file_seconds = time.perf_counter(), 0.0
        try:
            done = sub.run(lambda: self._file(b))
        except RejectedError as exc:  # the provider refused the upload or the create
            self._abandon(b, now, token, str(exc), report)
            return
        finally:
            self.timings["upload"] += time.perf_counter() - started - self._file_seconds
        if b.input_file_id is None:
            self._disk_back(report, b)
        if done:
            report.submitted += 1
            with contextlib.suppress(FileNotFoundError):
                (self.workdir / f"batch-{b.id}.jsonl").unlink()
            # the first poll soon (an instant provider is done in a second), then back off
            first = min(self.settings.first_poll, self.settings.poll_interval)
            self.interval = first
            self.next_poll_at = min(self.next_poll_at, now + first)
            self._submitted_since_poll = True
        else:
            # Ask the provider again when the wait is over, not every tick: an Anthropic
            # intent may wait hours for a same-size batch to end and say whose it is.
            wait = max(sub.ask_again_at, now + self.settings.poll_interval)
            self.store.defer(b.id, wait, token)
            report.notes.append(self._waiting_note(b, now, wait, sub.ask_again_at > now))

    def _waiting_note(self, b: OpenBatch, now: float, wait: float, settling: bool) -> str:
        """Why an intent is not sent yet, and until when (a create that may have acted is
        waited out for its timeout plus `settle_seconds`; a batch that may be this
        intent's, until it ends)."""
        from llmbatch.render import duration

        if settling:
            return (
                f"batch {b.id}: a create may have reached {b.provider} unrecorded; waiting up to "
                f"{duration(wait - now)} more for its batch list to show it before sending again"
            )
        return (
            f"batch {b.id}: waiting for a {b.provider} batch that may be this intent's to end "
            f"(its results say whose it is); asking again in {duration(wait - now)}"
        )

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.store.release_lease("engine", self.holder)
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)
