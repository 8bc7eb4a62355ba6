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
  if not; and right before the request leaves, the provider's request hook asks the journal
  (`sending`, providers/sending.py), which refuses a create more than the send window
  (`min(submit_timeout, lease_margin)`) after its stamp. Only a freeze between that hook and
  the bytes leaving (a connection being made: microseconds to milliseconds) still sends the
  create when it wakes — after the new holder has created. Its next write is refused, so the
  store stays consistent, but two batches are paid. Frozen *after* sending (blocked on the
  answer) is safe: the new holder's reconcile finds the batch once the wait is over. A
  create sent `w` after its stamp is found if it acts within `submit_timeout +
  settle_seconds - w` of being sent.
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

The sweep (sweeper.py, every `sweep_interval`) closes the loop: batches created since the
oldest open intent (at least the last hour) that prove ours but that the store never
recorded are adopted as batches of their intent and ingested, uploads proven ours that no
intent uses are deleted, and batches read and found foreign are remembered, never read again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from llmbatch import defaults
from llmbatch.errors import RejectedError, TransientError
from llmbatch.providers.base import BatchRef, Intent, Provider
from llmbatch.store.base import Store
from llmbatch.store.batching import OpenBatch

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
        send_within: float | None = None,
    ) -> None:
        self.store, self.provider, self.batch = store, provider, batch
        self.now, self.token, self.settle = now, token, settle
        self.max_proof_wait = max_proof_wait
        self.call_timeout = timeout  # the client timeout of the upload and the create
        # how long after its stamp a create may still leave (EngineSettings.send_window)
        self.send_within = timeout if send_within is None else send_within
        self.stamped_at = now
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
        self.stamped_at = self.clock()
        self.store.mark("create", self.batch.id, self.stamped_at, self.token)
        # Frozen between the renewal and here past the lease (SIGSTOP, GC), a standby may have
        # taken over and created already: LeaseLost, and the create is not sent.
        self.held()

    def sending(self) -> None:
        """Refuse a create about to leave more than `send_within` after its stamp (asked by
        the provider's request hook, providers/sending.py): frozen after the lease check,
        the worker may have lost its lease and a standby created already. Within the window,
        the lease still covers the create and a later reconcile waits long enough for it."""
        held = self.clock() - self.stamped_at
        if held > self.send_within:
            raise TransientError(
                f"create for intent {self.batch.id} not sent: this worker was held {held:.1f} s "
                f"between journaling it and sending it (the send window is {self.send_within:g} "
                "s); it is reconciled, then sent again"
            )

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
