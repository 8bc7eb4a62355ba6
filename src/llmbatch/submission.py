"""Submitting an intent exactly once: the protocol, and its bounded residual risks.

An *intent* (a `batches` row in state `submitting` with its attempts in line order) is
committed durably before anything is sent. Then, for OpenAI and Azure:

1. the engine lease is renewed; `upload_started_at` is committed, stamped from the engine's
   clock as the call starts; the file is uploaded as `llmbatch-<store_id>-<intent_id>.jsonl`
   with `max_retries=0` and the client timeout `submit_timeout`; its id is committed.
2. the lease is renewed; `create_started_at` is committed, stamped as the call starts; the
   batch is created with `max_retries=0`, the same timeout and
   `metadata={"llmbatch_store", "llmbatch_intent"}`; its id is committed with the requests
   moved to `submitted` — all durable (`synchronous=FULL` on SQLite).

The lease outlasts each call: settings load refuses a `submit_timeout` that, with the
renewal margin, does not fit in `lease_ttl`. So while a live worker waits on a create, no
standby can take the queue over, and the fence (token and expiry) refuses any write of a
worker whose lease ran out anyway.

After any interruption (a crash, a timeout, a 5xx whose effect is unknown, a take-over) the
next attempt first *reconciles*: it lists batches and matches ours by `input_file_id`, then
by metadata, then lists files and matches an unrecorded upload by name. A match is adopted;
nothing is created twice. If a create may have happened but no match is found, it creates
again only once `submit_timeout + settle_seconds` have passed since that create's stamp:
the last create may have acted as late as its client timeout, and the list may lag
`settle_seconds` behind it. A cancel of such an intent reconciles only: a batch found is
recorded and cancelled at the provider; after the same wait with nothing found, the intent
is closed as cancelled. A cancel never creates.

A batch is taken only on proof of ownership (ownership.py; the protocol in
docs/reliability.md): its tag names our store, the intent and the intent's nonce. A batch
that cannot prove yet (a running Anthropic batch) makes the intent wait — at most
`max_proof_wait` after its create, then it creates again, a residual double create counted
in the store — and is never adopted on its size. Every unrecorded intent that may exist is
asked about at once; proven batches beyond an intent's first are adopted as duplicates.
Intents made before a copy or move the user has not named are left alone (identity.py).

Residual risks. In each, no request is lost or answered twice (attempt ids are globally
unique, an outcome lands only on an attempt still waiting, the sweep adopts what carries our
store id); what it costs is said with it.

- A batch created, then invisible in the provider's list for longer than `settle_seconds`,
  and our record of it lost: a second batch is created, and paid.
  (tests/e2e/test_exactly_once.py reproduces it with a list lag longer than the settle delay.)
- A create the provider acts on later than `submit_timeout + settle_seconds` after it was
  sent (a gateway that holds requests for minutes): the same second batch.
- A worker frozen (GC, SIGSTOP, a laptop asleep) after its renewal and stamp but before its
  create leaves, for longer than its lease and the wait above: after the stamp it checks by
  its own clock that the lease it renewed still covers the create's timeout, and stands down
  if not; only a freeze in the last instructions before the request's bytes leave (the SDK
  building it, microseconds to milliseconds) still sends the create when it wakes — after
  the new holder has created. Its next write is refused, so the store stays consistent, but
  two batches are paid. Frozen *after* sending (blocked on the answer) is safe: the new
  holder's reconcile finds the batch once the wait is over.
- Clocks: the stamp is one host's clock, the wait is judged by another's, and the fence on
  SQLite by the host's (PostgreSQL's own on PostgreSQL). Skew beyond the lease margin or
  the settle window shortens the wait by as much.
- An intent cancelled while its create's outcome is unknown, whose batch stays invisible
  past the wait: it is closed as cancelled, the batch runs and is paid; the sweep adopts
  it, and its results are dropped (the requests were cancelled).
- An upload longer than the lease (hundreds of MB on a slow link): a standby may upload
  again; the first file is a stray the sweep deletes. No batch is paid twice.
- A batch the provider answers 404 for three times (polling.py) that reappears later, and
  a completed batch whose files stay unnamed through every download try (ingest.py): their
  requests are sent again and paid again.

The sweep (`Sweeping`, every `sweep_interval`) closes the loop: batches created since the
oldest open intent (at least the last hour) that prove ours but that the store never
recorded are adopted as batches of their intent and ingested, uploads proven ours that no
intent uses are deleted, and batches read and found foreign are remembered, never read again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from llmbatch import defaults, ownership
from llmbatch.errors import RejectedError, TransientError
from llmbatch.ownership import Proof
from llmbatch.providers.base import BatchRef, Intent, Provider
from llmbatch.store import Store
from llmbatch.store.batching import OpenBatch, Outcome

if TYPE_CHECKING:
    from llmbatch.engine import EngineSettings, TickReport
    from llmbatch.store.ownership import Moved

ENDED = ("completed", "failed", "expired", "cancelled")


class Submission:
    """One attempt to move one intent to a created provider batch; the journal the provider
    reports to before each call that may spend money."""

    def __init__(
        self,
        store: Store,
        provider: Provider,
        batch: OpenBatch,
        now: float,
        token: int,
        *,
        settle: float,
        timeout: float,
        clock: Callable[[], float],
        renew: Callable[[], None],
        held: Callable[[], None] = lambda: None,
        max_proof_wait: float = defaults.MAX_PROOF_WAIT_S,
    ) -> None:
        self.store, self.provider, self.batch = store, provider, batch
        self.now, self.token, self.settle = now, token, settle
        self.max_proof_wait = max_proof_wait
        self.call_timeout = timeout  # the client timeout of the upload and the create
        self.clock, self.renew, self.held = clock, renew, held
        self.file_id = batch.input_file_id
        self.ask_again_at = now  # when `run` returned False: when to ask the provider again

    # The journal: the lease is renewed and the call's start stamped, durably, before it.
    def uploading(self) -> None:
        self.renew()
        self.store.mark("upload", self.batch.id, self.clock(), self.token)

    def uploaded(self, file_id: str) -> None:
        self.file_id = file_id
        self.store.record_upload(self.batch.id, file_id, self.now, self.token)

    def creating(self) -> None:
        self.renew()
        self.store.mark("create", self.batch.id, self.clock(), self.token)
        # Frozen between the renewal and here past the lease (SIGSTOP, GC), a standby may have
        # taken over and created already: LeaseLost, and the create is not sent.
        self.held()

    @property
    def resend_at(self) -> float:
        """The earliest a create whose outcome is unknown may be sent again: the last one may
        have acted as late as its client timeout, and the list may lag `settle` behind it."""
        started = self.batch.create_started_at
        return self.now if started is None else started + self.call_timeout + self.settle

    def run(self, write_file: Callable[[], Path]) -> bool:
        """True once the provider batch exists and is recorded; False to try again later."""
        b = self.batch
        if b.upload_started_at is not None or b.create_started_at is not None:
            found = self.find()
            if found != "none":
                return found == "found"
            if self.now < self.resend_at:
                self.ask_again_at = self.resend_at
                return False
        # written even with an upload recorded: a provider whose uploads expire uploads again
        path = write_file()
        intent = _intent(b, self.store.store_id)
        ref = self.provider.submit(replace(intent, path=path, input_file_id=self.file_id), self)
        self.store.record_submitted(
            b.id, ref.provider_batch_id, ref.input_file_id or self.file_id, self.now, self.token
        )
        return True

    def find(self) -> str:
        """Reconcile only, never send: "found" (the batch exists and is now recorded),
        "pending" (a batch that may be this intent's has yet to say whose it is) or "none".
        A refused list proves nothing was created: it is a reason to wait, not to give up."""
        b = self.batch
        try:
            ref = self._reconcile(_intent(b, self.store.store_id))
        except RejectedError as exc:
            raise TransientError(f"reconcile of intent {b.id}: {exc}") from None
        if ref is not None and ref.provider_batch_id:
            self.store.record_submitted(
                b.id, ref.provider_batch_id, ref.input_file_id or self.file_id, self.now, self.token
            )
            self.store.note("adopted", b.id, f"found {ref.provider_batch_id} for intent {b.id}")
            for dup in ref.duplicates:
                self.store.adopt_batch(self.provider.name, dup, b.id, self.now, self.token)
                self.store.note(
                    "duplicate_create",
                    b.id,
                    f"{dup.provider_batch_id} matches intent {b.id} as well as "
                    f"{ref.provider_batch_id}: adopted too, its results land on their attempts",
                )
            self.batch = replace(b, provider_batch_id=ref.provider_batch_id, state="validating")
            return "found"
        if ref is not None and ref.pending:
            # A running batch of its size may be this intent's: wait for it to end and say,
            # up to max_proof_wait after the create; then create again, and say so.
            until = (b.create_started_at or b.created_at) + self.max_proof_wait
            if self.now < until:
                if b.proof_wait_until != until:
                    self.store.set_proof_wait(b.id, until)
                    self.batch = replace(b, proof_wait_until=until)
                self.ask_again_at = self.now  # the engine asks again a poll interval later
                return "pending"
            self.store.residual_double_create(
                b.id,
                f"intent {b.id}: a running batch of its size still cannot say whose it is "
                f"after max_proof_wait ({self.max_proof_wait:g} s); creating again (if it was "
                "this intent's, both are paid; its results land on the same attempts once)",
            )
        if ref is not None and ref.input_file_id and not self.file_id:
            self.uploaded(ref.input_file_id)
        return "none"

    def _reconcile(self, intent: Intent) -> BatchRef | None:
        """What the provider already holds for this intent. Every other intent of the same
        provider that may have been created unrecorded is asked about too, so a provider
        matching by request count does not hand this one another intent's batch."""
        b = self.batch
        frozen = self.store.moved()
        peers = [
            _intent(o, self.store.store_id, self.store.attempt_span(o.id))
            for o in self.store.open_batches()
            if o.provider == b.provider
            and o.id != b.id
            and (frozen is None or o.id > frozen.before)
            and o.provider_batch_id is None
            and (o.create_started_at is not None or o.upload_started_at is not None)
        ]
        recorded = frozenset(self.store.known_ids(b.provider)[0])
        recorded |= self.store.judged_ids(b.provider)
        intent = replace(intent, attempt_span=self.store.attempt_span(b.id))
        found = self.provider.reconcile([intent, *peers], b.created_at - 3600, recorded)
        return found.get(b.id)


def _intent(b: OpenBatch, store_id: str, span: tuple[int, int] | None = None) -> Intent:
    return Intent(
        b.id,
        store_id,
        b.endpoint,
        b.model,
        Path(),
        b.request_count,
        b.created_at,
        b.input_file_id,
        span,
        b.nonce,
    )


class Sweeping:
    """The engine's sweep (mixed into Engine, whose state it uses): batches proven ours that
    the store never recorded are adopted, uploads proven ours that no intent uses are
    deleted, and batches found foreign are remembered so none is judged twice."""

    store: Store
    settings: EngineSettings
    _providers: dict[str, Provider]
    _next_sweep_at: float
    _moved: Moved | None

    def _sweep_since(self, now: float) -> float:
        """Back to the oldest open intent, and at least `SWEEP_RECENT_S` (a duplicate the
        list showed after its intent was done), less the providers' clock skew."""
        oldest = min((b.created_at for b in self.store.open_batches()), default=now)
        return min(oldest, now - defaults.SWEEP_RECENT_S) - CLOCK_SKEW_S

    def _sweep(self, now: float, token: int, report: TickReport) -> None:
        """Adopt batches proven ours that the store does not know (a re-create the residual
        risk allowed, a restored database); delete our uploads no intent uses."""
        self._next_sweep_at = now + self.settings.sweep_interval
        since = self._sweep_since(now)
        proof = Proof(self.store.store_id, self.store.nonce_of, self.store.batch_of_attempt)
        frozen = self._moved.before if self._moved is not None else 0
        for name in sorted(self._providers):
            provider = self._providers[name]
            known_batches, known_files = self.store.known_ids(name)
            skip = frozenset(known_batches) | self.store.judged_ids(name)
            try:
                judged = provider.list_tagged(self.store.store_id, since, skip)
                strays = provider.stray_uploads(self.store.store_id, since)
            except (TransientError, RejectedError) as exc:
                report.notes.append(f"sweep later: {exc}")
                continue
            open_intents = {
                b.id: b for b in self.store.open_batches() if b.provider_batch_id is None
            }
            foreign = []
            for status in judged:
                if status.provider_batch_id in skip:
                    continue
                intent_id = proof.owner(status.metadata)
                if intent_id is None:
                    if not _names_frozen(status.metadata, proof, frozen):
                        foreign.append(status.provider_batch_id)
                    continue
                if intent_id <= frozen or intent_id in open_intents:
                    continue  # made before a copy or move; or still being sent: reconcile
                batch_id = self.store.adopt_batch(name, status, intent_id, now, token)
                if batch_id is not None:
                    report.notes.append(
                        f"adopted {status.provider_batch_id}: ours, but not recorded"
                    )
            self.store.judge_foreign(name, foreign, now)
            open_intents = {
                b.id: b for b in self.store.open_batches() if b.provider_batch_id is None
            }
            unused = []
            for file_id, intent_id, nonce in strays:
                pending = open_intents.get(intent_id)
                if (
                    file_id in known_files
                    or intent_id <= frozen
                    or self.store.nonce_of(intent_id) != nonce  # not proven ours
                    or (pending is not None and pending.input_file_id is None)
                ):
                    continue  # recorded, not ours, or possibly the upload of an intent being sent
                unused.append(file_id)
            if unused and self.settings.delete_files:
                with contextlib.suppress(TransientError, RejectedError):
                    provider.delete_files(unused)
                self.store.note(
                    "deleted_uploads",
                    None,
                    f"{len(unused)} uploads no intent uses: {', '.join(unused[:5])}",
                )


CLOCK_SKEW_S = 300.0  # how far a provider's clock may be behind ours


def _names_frozen(tag: dict[str, str] | None, proof: Proof, frozen: int) -> bool:
    """Whether a tag names an intent made before an unresolved copy or move: not judged
    foreign now, as it may be proven ours once the user says the store moved."""
    if not frozen or not tag or tag.get(ownership.STORE) != proof.store_id:
        return False
    intent = tag.get(ownership.INTENT, "")
    if intent.isdigit():
        return int(intent) <= frozen
    attempt = tag.get(ownership.ATTEMPT, "")
    owner = proof.intent_of_attempt(int(attempt)) if attempt.isdigit() else None
    return owner is not None and owner <= frozen


class Cancelling:
    """Carrying out `llmbatch cancel` of whole batches (mixed into Engine, whose state it
    uses). An intent that may have reached the provider is reconciled, never sent: a batch
    found is recorded and cancelled there; one that provably does not exist (nothing found
    once a create could have acted and the list settled) is closed as cancelled here."""

    store: Store
    settings: EngineSettings
    next_poll_at: float
    provider: Callable[[str], Provider]
    _submission: Callable[[OpenBatch, float, int], Submission]
    _renew: Callable[..., None]
    _mark_ingested: Callable[[OpenBatch, float, int, str], None]

    def _cancel(self, b: OpenBatch, now: float, token: int, report: TickReport) -> None:
        if b.provider_batch_id is None:
            if b.create_started_at is None:  # nothing can exist at the provider
                self._cancelled_unsent(b, now, token, report, "cancelled before it was sent")
                return
            sub = self._submission(b, now, token)
            found = sub.find()
            if found == "none" and now >= sub.resend_at:
                self._cancelled_unsent(
                    b, now, token, report, "cancelled: its create never reached the provider"
                )
                return
            if found != "found":
                wait = max(sub.resend_at, now + self.settings.poll_interval)
                self.store.defer(b.id, wait, token)
                report.notes.append(f"batch {b.id}: cancelling; it may exist, looking again later")
                return
            b = sub.batch  # found and recorded: cancel it at the provider
        if b.state not in ENDED:
            self._renew(token, force=True)
            # refused: it ended meanwhile (ingest keeps what finished), or is gone (polling says)
            with contextlib.suppress(RejectedError):
                self.provider(b.provider).cancel(b.provider_batch_id or "")
        self.store.mark_cancel_sent(b.id, now, token)
        self.next_poll_at = min(self.next_poll_at, now)  # watch it wind down
        report.notes.append(f"asked {b.provider} to cancel batch {b.provider_batch_id}")

    def _cancelled_unsent(
        self, b: OpenBatch, now: float, token: int, report: TickReport, why: str
    ) -> None:
        outs = [
            Outcome(a, "cancelled", error_code="cancelled", error_message=why)
            for a, _r, _l in self.store.unfinished_attempts(b.id)
        ]
        self.store.apply_outcomes(b.id, outs, now, token)
        self.store.mark_cancel_sent(b.id, now, token)
        self._mark_ingested(b, now, token, why)
        if b.input_file_id and self.settings.delete_files:
            with contextlib.suppress(TransientError, RejectedError):
                self.provider(b.provider).delete_files([b.input_file_id])
        report.notes.append(f"batch {b.id} {why}")
