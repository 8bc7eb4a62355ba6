"""The engine's submitting part: an intent's input file written from the store, then sent
by the exactly-once protocol (submission.py); what a refusal, a wait or a success means
for the batch, its group and the next poll."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from llmbatch.archive import Archiver, kept_input
from llmbatch.errors import RejectedError
from llmbatch.lease import Lease
from llmbatch.ownership import attempt_prefix
from llmbatch.polling import Poller
from llmbatch.providers.base import Provider
from llmbatch.render import duration
from llmbatch.setbacks import Setbacks
from llmbatch.store.base import Store
from llmbatch.store.batching import OpenBatch
from llmbatch.submission import Submission
from llmbatch.tick import EngineSettings, Tick


class Submitter:
    """Writes intents' files and sends them."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        provider: Callable[[str], Provider],
        workdir: Path,
        lease: Lease,
        setbacks: Setbacks,
        poller: Poller,
        clock: Callable[[], float],
        timings: dict[str, float],
        archiver: Archiver | None = None,
    ) -> None:
        self.store, self.settings, self.provider, self.workdir = store, settings, provider, workdir
        self.lease, self.setbacks, self.poller = lease, setbacks, poller
        self.clock, self.timings, self.archiver = clock, timings, archiver
        self._file_seconds = 0.0

    def file(self, b: OpenBatch) -> Path:
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

    def submission(self, b: OpenBatch, t: Tick) -> Submission:
        return Submission(
            self.store,
            self.provider(b.provider),
            b,
            t.now,
            t.token,
            settle=self.settings.settle_seconds,
            timeout=self.settings.call_timeout,
            clock=self.clock,
            renew=lambda: self.lease.renew(force=True),
            held=self.lease.covers_a_call,
            max_proof_wait=self.settings.max_proof_wait,
            send_within=self.settings.send_window,
        )

    def submit(self, b: OpenBatch, t: Tick) -> None:
        now, report = t.now, t.report
        sub = self.submission(b, t)
        started, self._file_seconds = time.perf_counter(), 0.0
        try:
            done = sub.run(lambda: self.file(b))
        except RejectedError as exc:  # the provider refused the upload or the create
            self.setbacks.abandon(b, t, str(exc))
            return
        finally:
            self.timings["upload"] += time.perf_counter() - started - self._file_seconds
        if b.input_file_id is None:
            self.setbacks.disk_back(report, b)
        if done:
            report.submitted += 1
            with contextlib.suppress(FileNotFoundError):
                sent = self.workdir / f"batch-{b.id}.jsonl"
                if self.settings.archive is not None:  # its archive's input.jsonl, as sent
                    kept = kept_input(self.workdir, b.id)
                    sent.rename(kept)
                    if self.archiver is not None:  # on their way while the provider works
                        self.archiver.early(b.id, "input.jsonl", kept)
                        prefix = attempt_prefix(self.store.store_id, b.nonce)
                        self.archiver.early_attempts(b.id, prefix)
                else:
                    sent.unlink()
            self.poller.soon(b, t)
        else:
            # Ask the provider again when the wait is over, not every tick: an Anthropic
            # intent may wait hours for a same-size batch to end and say whose it is.
            wait = max(sub.ask_again_at, now + self.settings.poll_interval)
            self.store.defer(b.id, wait, t.token)
            report.notes.append(self._waiting_note(b, now, wait, sub.ask_again_at > now))

    def _waiting_note(self, b: OpenBatch, now: float, wait: float, settling: bool) -> str:
        """Why an intent is not sent yet, and until when (a create that may have acted is
        waited out for its timeout plus `settle_seconds`; a batch that may be this
        intent's, until it ends)."""
        if settling:
            return (
                f"batch {b.id}: a create may have reached {b.provider} unrecorded; waiting up to "
                f"{duration(wait - now)} more for its batch list to show it before sending again"
            )
        return (
            f"batch {b.id}: waiting for a {b.provider} batch that may be this intent's to end "
            f"(its results say whose it is); asking again in {duration(wait - now)}"
        )
