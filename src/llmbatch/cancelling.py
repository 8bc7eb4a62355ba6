"""Carrying out `llmbatch cancel` of whole batches. An intent that may have reached the
provider is reconciled, never sent: a batch found is recorded and cancelled there; one that
provably does not exist (nothing found once a create could have acted and the list
settled) is closed as cancelled here."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from llmbatch.closing import Closer
from llmbatch.errors import RejectedError, TransientError
from llmbatch.lease import Lease, batch_claim
from llmbatch.polling import ENDED, Poller
from llmbatch.providers.base import Provider
from llmbatch.store.base import Store
from llmbatch.store.batching import OpenBatch, Outcome
from llmbatch.submitter import Submitter
from llmbatch.tick import EngineSettings, Tick


class Canceller:
    """The engine's part that carries out cancels of whole batches."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        provider: Callable[[str], Provider],
        submitter: Submitter,
        lease: Lease,
        poller: Poller,
        closer: Closer,
    ) -> None:
        self.store, self.settings, self.provider = store, settings, provider
        self.submitter, self.lease, self.poller, self.closer = submitter, lease, poller, closer

    def cancel(self, b: OpenBatch, t: Tick) -> None:
        now, token, report = t.now, t.token, t.report
        if b.provider_batch_id is None:
            if b.create_started_at is None:  # nothing can exist at the provider
                self._cancelled_unsent(b, t, "cancelled before it was sent")
                return
            sub = self.submitter.submission(b, t)
            found = sub.find()
            if found == "none" and now >= sub.resend_at:
                self._cancelled_unsent(b, t, "cancelled: its create never reached the provider")
                return
            if found != "found":
                wait = max(sub.resend_at, now + self.settings.poll_interval)
                self.store.defer(b.id, wait, token)
                report.notes.append(f"batch {b.id}: cancelling; it may exist, looking again later")
                return
            b = sub.batch  # found and recorded: cancel it at the provider
        if b.state not in ENDED:
            self.lease.renew(force=True, claim=batch_claim(b.id))
            # refused: it ended meanwhile (ingest keeps what finished), or is gone (polling says)
            with contextlib.suppress(RejectedError):
                self.provider(b.provider).cancel(b.provider_batch_id or "")
        self.store.mark_cancel_sent(b.id, now, token)
        self.poller.now(b, t)  # watch it wind down
        report.notes.append(f"asked {b.provider} to cancel batch {b.provider_batch_id}")

    def _cancelled_unsent(self, b: OpenBatch, t: Tick, why: str) -> None:
        now, token = t.now, t.token
        outs = [
            Outcome(a, "cancelled", error_code="cancelled", error_message=why)
            for a, _r, _l in self.store.unfinished_attempts(b.id)
        ]
        self.store.apply_outcomes(b.id, outs, now, token)
        self.store.mark_cancel_sent(b.id, now, token)
        self.closer.close(b, t, why)
        if b.input_file_id and self.settings.delete_files:
            with contextlib.suppress(TransientError, RejectedError):
                self.provider(b.provider).delete_files([b.input_file_id])
        t.report.notes.append(f"batch {b.id} {why}")
