"""Ingest: a finished batch's result files into per-attempt outcomes.

Each line is read as results.py says; an anomaly (a line that is not ours, not readable,
too long) is recorded, never dropped silently. The first few of a batch are logged one by
one, the rest as a count, in one transaction per chunk: a file of a million foreign lines
costs a handful of writes, not a million.

A batch counts as ingested only when its lines account for every request. Else its status
is retrieved again (a completed batch may say `output_file_id: null` for a while) and the
files downloaded again, a few times with a growing pause (the tries are counted in the
store); then an attempt with no line goes back to the queue uncharged. Every file is named
by our own batch row, never by a provider's string. `Ingestor` is the engine's part that
does it.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

from llmbatch.archive import RESULT_NAMES, Archiver, Envelope
from llmbatch.closing import Closer
from llmbatch.errors import RejectedError, TransientError
from llmbatch.lease import Lease
from llmbatch.ledger import Tally
from llmbatch.ownership import attempt_prefix
from llmbatch.pricing import model_prices
from llmbatch.providers import format_of
from llmbatch.providers.base import BatchStatus, Provider, ResultFile, ResultsGone
from llmbatch.reading import MIN_REQUESTS, Reader, read_items
from llmbatch.results import Anomaly, Finding, Success
from llmbatch.retry import decide
from llmbatch.setbacks import Setbacks
from llmbatch.store.base import Store
from llmbatch.store.batching import OpenBatch, Outcome, Succeeded
from llmbatch.tick import EngineSettings, Tick

MAX_DOWNLOAD_TRIES = 4  # downloads of one batch before its missing lines are given up
SAID_ANOMALIES = 20  # anomalies of one batch logged one by one; the rest as a count


class Anomalies:
    """A batch's anomalies: the first few kept for the log, all counted, written in one
    transaction per flush."""

    def __init__(self, store: Store, batch_id: int) -> None:
        self.store, self.batch_id = store, batch_id
        self.count = 0
        self._unsaid: list[str] = []

    def add(self, detail: str) -> None:
        self.count += 1
        if self.count <= SAID_ANOMALIES:
            self._unsaid.append(detail)

    def flush(self) -> None:
        self.store.note_many("anomaly", self.batch_id, self._unsaid)
        self._unsaid = []

    def close(self) -> None:
        self.flush()
        if self.count > SAID_ANOMALIES:
            self.store.note(
                "anomaly",
                self.batch_id,
                f"{self.count:,} anomalies in this batch's results; the first {SAID_ANOMALIES} "
                "are logged above",
            )


class Ingestor:
    """The engine's ingest part: an ended batch's files read into outcomes."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        workdir: Path,
        provider: Callable[[str], Provider],
        lease: Lease,
        setbacks: Setbacks,
        closer: Closer,
        archiver: Archiver | None,
        timings: dict[str, float],
    ) -> None:
        self.store, self.settings, self.workdir, self.provider = store, settings, workdir, provider
        self.lease, self.setbacks, self.closer = lease, setbacks, closer
        self.archiver, self.timings = archiver, timings
        self._envelope: Envelope | None = None  # the batch being ingested's, with an archive

    def ingest(self, b: OpenBatch, t: Tick) -> None:
        provider = self.provider(b.provider)
        if b.state == "failed" and not b.output_file_id:
            if b.intent_id is not None:  # an adopted duplicate: its intent's own batch decides
                self.closer.close(b, t, "adopted batch failed validation")
                return
            self._failed_validation(b, t)
            return
        b = self._refreshed(b, t)
        status = BatchStatus(
            provider_batch_id=b.provider_batch_id or "",
            state=b.state,
            provider_status=b.provider_status or b.state,
            total=b.request_count,
            completed=b.completed_count,
            failed=b.failed_count,
            input_file_id=b.input_file_id,
            output_file_id=b.output_file_id,
            error_file_id=b.error_file_id,
        )
        folder = self.workdir / f"ingest-{b.id}"
        folder.mkdir(exist_ok=True)
        # a large batch's lines are read by a second process, started now: its start-up
        # overlaps the download
        reader = Reader() if b.request_count >= MIN_REQUESTS else None
        try:
            self._fetch_and_read(b, t, provider, status, folder, reader)
        finally:
            if reader is not None:
                reader.close()

    def _fetch_and_read(
        self,
        b: OpenBatch,
        t: Tick,
        provider: Provider,
        status: BatchStatus,
        folder: Path,
        reader: Reader | None,
    ) -> None:
        report = t.report
        started = time.perf_counter()
        try:
            files = provider.download(status, folder)
        except ResultsGone as exc:
            self._archived(b, t, str(exc))
            return
        except RejectedError as exc:
            # A result file that is gone (404): another worker that took the lease over may have
            # ingested the batch and deleted it (then this worker's next write fails and it stops
            # acting), or the provider let it expire. Look again a few times; then its requests go
            # back to the queue as results that never arrived.
            if b.download_tries + 1 < MAX_DOWNLOAD_TRIES:
                self._download_again(b, t, f"result files not found: {exc}")
                return
            self._archived(b, t, f"result files gone: {exc}")  # as `archived` says
            return
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)  # a full disk: give back what was written
            raise
        finally:
            self.timings["download"] += time.perf_counter() - started
        if self.archiver is not None:  # on their way to the archive while they are read
            for f in files:
                self.archiver.early(b.id, RESULT_NAMES[f.kind], f.path)
        self.setbacks.disk_back(report, b)
        started = time.perf_counter()
        prefix = attempt_prefix(self.store.store_id, b.nonce)
        # the archive's results.jsonl, written as outcomes are recorded (archive.Envelope)
        self._envelope = (
            self.archiver.envelope(b.attempts_of, prefix, b.provider, folder)
            if self.archiver is not None
            else None
        )
        self.timings["ingest"] += time.perf_counter() - started
        try:
            self._read(b, t, provider, files, folder, prefix, reader)
        finally:
            if self._envelope is not None:
                self._envelope.discard()
            self._envelope = None

    def _read(
        self,
        b: OpenBatch,
        t: Tick,
        provider: Provider,
        files: list[ResultFile],
        folder: Path,
        prefix: str,
        reader: Reader | None = None,
    ) -> None:
        """Read the downloaded files into outcomes (in a second process, `reader`, where the
        batch is large), then close the batch (or download again)."""
        now, report = t.now, t.report
        started = time.perf_counter()
        lines = 0
        chunk: list[Success | Finding] = []
        seen: set[int] = set()  # one int per request of one batch (≤ 100,000)
        tally = Tally(b.provider, b.model, now)  # what its lines say it used (ledger.py)
        anomalies = Anomalies(self.store, b.id)
        cap, size = self.settings.max_result_line_bytes, self.settings.ingest_chunk
        fmt, endpoint = format_of(b.provider), b.endpoint
        # only lines carrying this intent's nonce are ours (ownership.py)
        if reader is not None:
            items = reader.items(files, cap, fmt, prefix, endpoint)
        else:
            items = read_items(files, cap, fmt, prefix, endpoint)
        for found in items:
            lines += 1
            try:
                if isinstance(found, int):
                    raise Anomaly(
                        f"a result line of {found:,} bytes, longer than max_result_line_bytes "
                        f"({cap:,}): not read"
                    )
                if isinstance(found, Anomaly):
                    raise found
                attempt = found[0] if isinstance(found, tuple) else found.attempt_id
                if attempt in seen:  # the first is kept; never silently dropped
                    cid = f"{prefix}-{attempt}"
                    raise Anomaly(f"a second result line for custom_id {cid!r}; the first is kept")
                seen.add(attempt)
                chunk.append(found)
            except Anomaly as exc:
                anomalies.add(str(exc))
            if len(chunk) >= size:
                report.outcomes += self._apply(b, chunk, t, anomalies, tally)
                anomalies.flush()
                self.lease.renew()
                chunk = []
        report.outcomes += self._apply(b, chunk, t, anomalies, tally)
        anomalies.close()
        report.anomalies += anomalies.count
        self.timings["ingest"] += time.perf_counter() - started
        if (
            lines < b.request_count or anomalies.count
        ) and b.download_tries + 1 < MAX_DOWNLOAD_TRIES:
            shutil.rmtree(folder, ignore_errors=True)
            said = (
                f"batch {b.provider_batch_id}: {lines:,} result lines for {b.request_count:,} "
                f"requests ({anomalies.count} unreadable); downloading again"
            )
            self._download_again(b, t, said)
            return
        missing = self.store.unfinished_attempts(b.id) if b.intent_id is None else []
        if missing:
            why = (
                "no result line for this request" if b.state == "completed" else f"batch {b.state}"
            )
            kind = "batch_expired" if b.state in ("expired", "cancelled") else "missing_result"
            self.apply_waiting(b, [(a, kind, why) for a, _r, _l in missing], t)
        self.closer.count(b, tally, t)
        if self.archiver is not None:  # the archive step copies them, then deletes the provider's
            if self._envelope is not None:
                self._envelope.whole()  # kept only if it holds every result the store has
            self.archiver.keep(b.id, folder, {f.path.name: f.kind for f in files})
        shutil.rmtree(folder, ignore_errors=True)
        self.closer.close(b, t, f"{lines:,} lines, {anomalies.count} anomalies")
        if self.archiver is not None:
            self.archiver.kick(t.now)  # its archive is due: written while the tick goes on
        if b.state == "completed":  # the group is healthy again: full-size batches
            self.setbacks.healthy(b, t.token)
        report.ingested_batches += 1
        if lines and anomalies.count >= lines:
            # not one line of ours: whatever this batch is, it is not proven ours to delete
            self.store.note("anomaly", b.id, "no result line of ours: left at the provider")
        elif self.settings.delete_files and self.archiver is None:
            try:
                provider.delete_files(
                    [f for f in (b.input_file_id, b.output_file_id, b.error_file_id) if f]
                )
            except (TransientError, RejectedError) as exc:
                report.notes.append(f"clean-up later: {exc}")

    def _refreshed(self, b: OpenBatch, t: Tick) -> OpenBatch:
        """The batch as the provider reports it now, before a download is tried again or
        when a finished batch names no result file at all (OpenAI and Azure have been seen
        to say `output_file_id: null` on a completed batch for a while)."""
        if not b.provider_batch_id or not (
            b.download_tries or not (b.output_file_id or b.error_file_id)
        ):
            return b
        try:
            statuses = self.provider(b.provider).poll([b.provider_batch_id], 1)
        except RejectedError:
            return b  # the download says what is wrong
        for s in statuses:
            if s.provider_batch_id != b.provider_batch_id or not s.ended:
                continue
            files = (s.output_file_id, s.error_file_id)
            if files != (b.output_file_id, b.error_file_id) or s.state != b.state:
                self.store.update_batch(b.id, s, t.now, t.token)
                return dataclasses.replace(
                    b, state=s.state, output_file_id=files[0], error_file_id=files[1]
                )
        return b

    def _download_again(self, b: OpenBatch, t: Tick, said: str) -> None:
        """Count one more download of this batch and pause it (doubling each time)."""
        delay = min(
            self.settings.backoff_seconds * 2**b.download_tries,
            max(self.settings.backoff_seconds, self.settings.max_poll_interval),
        )
        t.report.notes.append(said)
        self.store.count_setback(
            b.id, "download_tries", t.now + delay, t.now, t.token, "download_again", said
        )

    def _archived(self, b: OpenBatch, t: Tick, why: str) -> None:
        """The provider archived the results before we read them: the requests still waiting
        go back to the queue (`archived = "requeue"`, counted as an expiry) or fail with the
        reason "archived" (`archived = "fail"`); the batch shows as archived in `status`."""
        now, token, report = t.now, t.token, t.report
        fail = self.settings.archived == "fail"
        message = "the provider archived the results before they were read"
        n = self.results_gone(b, t, "archived", message)
        gone = BatchStatus(
            provider_batch_id=b.provider_batch_id or "",
            state=b.state,
            provider_status="archived",
            total=b.request_count,
            completed=b.completed_count,
            failed=b.failed_count,
        )
        self.store.update_batch(b.id, gone, now, token)
        self.store.note("archived", b.id, why)
        self.closer.close(b, t, f"archived: {n:,} requests {'failed' if fail else 'requeued'}")
        report.ingested_batches += 1
        report.notes.append(f"{why}; {n:,} requests {'failed' if fail else 'queued again'}")

    def results_gone(self, b: OpenBatch, t: Tick, code: str, message: str) -> int:
        """The results of `b` can no longer be read: its waiting requests go back to the queue
        (`archived = "requeue"`, counted as an expiry) or fail with `code` (`archived = "fail"`,
        for those who would rather not pay twice); cancelled if so asked. An adopted
        duplicate's requests belong to its intent. Returns how many."""
        fail = self.settings.archived == "fail"
        outs = [
            Outcome(a, "failed", error_code=code, error_message=message)
            if fail
            else Outcome(a, "requeue", error_code=code, error_message=message, charge_expiry=1)
            for a, _r, _l in (self.store.unfinished_attempts(b.id) if b.intent_id is None else [])
        ]
        if b.cancel_requested_at is not None:
            outs = [dataclasses.replace(o, kind="cancelled") for o in outs]
        for i in range(0, len(outs), self.settings.ingest_chunk):
            self.store.apply_outcomes(
                b.id, outs[i : i + self.settings.ingest_chunk], t.now, t.token
            )
        return len(outs)

    def _apply(
        self,
        b: OpenBatch,
        found: Sequence[Success | Finding],
        t: Tick,
        anomalies: Anomalies | None = None,
        tally: Tally | None = None,
    ) -> int:
        """Record a chunk of read lines (`tally` counts their usage): a success as the store's
        `Succeeded` tuple, anything else as the `Outcome` the retry policy decides."""
        if not found:
            return 0
        now, token = t.now, t.token
        # Counters are needed only to decide about errors; the store skips attempts that
        # already have an outcome (a re-download) or belong to another batch.
        errors = [f.attempt_id for f in found if not isinstance(f, tuple)]
        info = self.store.attempt_info(b.attempts_of, errors) if errors else {}
        outs: list[Outcome | Succeeded] = []
        successes: list[Success] = []
        day = datetime.fromtimestamp(now, UTC)
        prices = {b.model: model_prices(b.provider, b.model or "", day)}
        for f in found:
            if isinstance(f, tuple):
                successes.append(f)
                # A batch of several models records none: each line names the one that answered.
                model = b.model or f[11]
                p = prices.get(model)
                if p is None:
                    p = prices[model] = model_prices(b.provider, model or "", day)
                outs.append((*f[:11], p.tier(f[4] or 0)))
                continue
            a = info.get(f.attempt_id)
            if a is None:
                continue
            # One jitter per batch: its retries come due together and travel in one new batch.
            d = decide(
                self.settings.retry,
                status_code=f.status_code,
                error_type=f.error_type or f.error_code,
                attempts=a.attempts,
                expiries=a.expiries,
                now=now,
                rng=random.Random(b.id),
            )
            outs.append(
                Outcome(
                    f.attempt_id,
                    d.kind,
                    status_code=f.status_code,
                    provider_request_id=f.provider_request_id,
                    body=f.body,
                    error_code=f.error_code,
                    error_message=f"{f.error_message} ({d.reason})"
                    if d.reason
                    else f.error_message,
                    not_before=d.not_before,
                    charge_expiry=1 if d.kind == "requeue" else 0,
                )
            )
        if tally is not None and successes:
            tally.add_successes(successes)
        if b.cancel_requested_at is not None:  # cancelled by the user: nothing goes back
            outs = [
                dataclasses.replace(o, kind="cancelled")
                if not isinstance(o, tuple) and o.kind in ("retry", "requeue")
                else o
                for o in outs
            ]
        applied = self.store.apply_outcomes(b.attempts_of, outs, now, token)
        if self._envelope is not None:
            self._envelope.add(outs, applied)
        if applied < len(found):  # a re-download, or lines naming attempts of other batches
            said = anomalies or Anomalies(self.store, b.id)
            attempts = [f[0] if isinstance(f, tuple) else f.attempt_id for f in found]
            for stranger in self.store.attempts_not_in_batch(b.attempts_of, attempts):
                said.add(f"result line for attempt {stranger}, which is not in this batch")
            if anomalies is None:
                said.close()
        return applied

    def apply_waiting(self, b: OpenBatch, items: list[tuple[int, str, str]], t: Tick) -> None:
        """Attempts that got no result line (a batch expired, gone, cut short) as outcomes."""
        findings = [
            Finding.failed(a, code=code, error_type=code, message=why) for a, code, why in items
        ]
        for i in range(0, len(findings), self.settings.ingest_chunk):
            self._apply(b, findings[i : i + self.settings.ingest_chunk], t)

    def _failed_validation(self, b: OpenBatch, t: Tick) -> None:
        """Line errors fail exactly those requests (an unknown model: all of them); the others
        go back to the queue, each counted as a rejection when the whole file was refused."""
        now, token, report = t.now, t.token, t.report
        by_line = {int(e["line"]): e for e in b.errors if type(e.get("line")) is int}
        # An unknown model is reported once, on the first line, but it is every line's model:
        # failing one request per batch would take as many batches as requests.
        unknown_model = next((e for e in b.errors if e.get("code") == "model_not_found"), None)
        codes = ", ".join(sorted({str(e.get("code")) for e in b.errors})) or "no reason given"
        outs, rest = [], []
        for attempt_id, _rid, line in self.store.unfinished_attempts(b.id):
            e = by_line.get(line) or unknown_model
            if e is None:
                rest.append(attempt_id)
                continue
            outs.append(
                Outcome(
                    attempt_id,
                    "failed",
                    error_code=str(e.get("code")),
                    error_message=str(e.get("message")),
                )
            )
        if by_line:  # other lines were at fault: not theirs, not counted
            why = "its batch failed validation"
            outs += [
                Outcome(a, "requeue", error_code="batch_failed", error_message=why) for a in rest
            ]
        else:
            outs += self.setbacks.rejected(
                b, rest, "batch_failed", f"its batch failed validation ({codes})"
            )
        if b.cancel_requested_at is not None:
            outs = [
                dataclasses.replace(o, kind="cancelled") if o.kind == "requeue" else o for o in outs
            ]
        for i in range(0, len(outs), self.settings.ingest_chunk):
            self.store.apply_outcomes(b.id, outs[i : i + self.settings.ingest_chunk], now, token)
        if not by_line:
            self.setbacks.batch_level_failure(b, t, codes)
        self.closer.close(b, t, f"failed validation: {codes}")
        report.ingested_batches += 1
        report.notes.append(f"batch {b.provider_batch_id} failed validation ({codes})")
