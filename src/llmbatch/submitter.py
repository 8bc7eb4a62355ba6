"""The engine's submitting part: an intent's input file written from the store, then sent
by the exactly-once protocol (submission.py); what a refusal, a wait or a success means
for the batch, its group and the next poll."""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO

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


class Spool:
    """The bodies a cut read from the store, in its order, kept in a file while the intent is
    committed: its input file is then written from them (a request's body never changes), so
    packing reads each body from the store once, not once to size the batch and again to write
    it. Holds two integers a request in memory, not the bodies."""

    def __init__(self, workdir: Path, endpoint: str) -> None:
        self.workdir, self.endpoint = workdir, endpoint
        self._open()

    def _open(self) -> None:
        fd, name = tempfile.mkstemp(dir=self.workdir, prefix="pack-", suffix=".spool")
        self.path, self._out = Path(name), os.fdopen(fd, "wb")
        self._in: IO[bytes] | None = None
        self.ids, self.sizes = array("q"), array("q")
        self.broken = False  # a body could not be written: the store writes the file

    def reset(self) -> None:
        """Empty, for the next cut: a new file, the last one deleted unwritten (truncating it
        instead would have ext4 write it out to disk when closed: `auto_da_alloc`)."""
        self.close()
        try:
            self._open()
        except OSError:  # a full disk: this cut's file is written from the store
            self.ids, self.sizes, self.broken = array("q"), array("q"), True

    def feed(
        self, candidates: Iterable[tuple[int, int, int, int, bytes]]
    ) -> Iterator[tuple[int, int, int, int]]:
        """The candidates as `packing.cut` takes them, each body kept as it is taken."""
        write, ids, sizes = self._out.write, self.ids.append, self.sizes.append
        for rid, nbytes, ninputs, text_bytes, body in candidates:
            if not self.broken:
                try:
                    write(body)
                except OSError:  # a full disk: the store writes the file (or says so)
                    self.broken = True
                else:
                    ids(rid)
                    sizes(nbytes)
            yield rid, nbytes, ninputs, text_bytes

    def lines(self, lines: list[tuple[int, int]]) -> Iterator[tuple[int, str, bytes]] | None:
        """`Store.batch_lines` of an intent whose (attempt id, request id) lines are `lines`,
        from the kept bodies; None if its requests are not the first ones kept, in order (the
        intent was cut otherwise, as under budgets: the store writes its file)."""
        n, ids = len(lines), self.ids
        if self.broken or not n or n > len(ids) or ids[:n].tolist() != [r for _a, r in lines]:
            return None
        try:
            self._out.close()
        except OSError:  # the last bodies could not be written out
            return None
        return self._read(lines)

    def _read(self, lines: list[tuple[int, int]]) -> Iterator[tuple[int, str, bytes]]:
        endpoint, sizes = self.endpoint, self.sizes
        # kept, for `close` may come first (a full disk while the file is written)
        self._in = f = open(self.path, "rb")  # noqa: SIM115
        with f:
            read = f.read
            for i, (attempt_id, _rid) in enumerate(lines):
                yield attempt_id, endpoint, read(sizes[i])

    def close(self) -> None:
        """Give the file and its room back (a reader left open would keep the room); until
        `reset`, the store writes the file (`lines` is None)."""
        self.broken = True
        for f in (self._out, self._in):
            if f is not None:
                with contextlib.suppress(OSError):
                    f.close()
        self.path.unlink(missing_ok=True)


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

    def spool(self, endpoint: str) -> Spool | None:
        """Where a cut keeps the bodies it reads (`Spool`); None where no file can be made
        (a full disk: the store writes the file, or says so)."""
        try:
            return Spool(self.workdir, endpoint)
        except OSError:
            return None

    def file(self, b: OpenBatch, spool: Spool | None = None) -> Path:
        """The batch input file of an intent: written from the bodies its cut kept (`spool`),
        else (again, if missing) from the store."""
        path = self.workdir / f"batch-{b.id}.jsonl"
        if path.exists():
            return path
        started = time.perf_counter()
        provider = self.provider(b.provider)
        prefix = attempt_prefix(self.store.store_id, b.nonce) + "-"
        tmp = path.with_suffix(".partial")

        def write(spool: Spool | None) -> None:
            try:
                with open(tmp, "wb") as f:
                    lines = None
                    if spool is not None:
                        lines = spool.lines(self.store.batch_line_requests(b.id))
                    if lines is None:
                        lines = self.store.batch_lines(b.id)
                    for attempt_id, endpoint, body in lines:
                        line = provider.request_line(prefix + str(attempt_id), endpoint, body)
                        f.write(line + b"\n")
            except OSError:
                tmp.unlink(missing_ok=True)  # a full disk: give back what was written
                raise

        try:
            write(spool)
        except OSError:
            if spool is None:
                raise
            # The kept bodies take as much room as the file: a disk that holds the file alone
            # must not be called full because of them. Give them back; the store writes it.
            spool.close()
            write(None)
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

    def submit(self, b: OpenBatch, t: Tick, spool: Spool | None = None) -> None:
        now, report = t.now, t.report
        sub = self.submission(b, t)
        started, self._file_seconds = time.perf_counter(), 0.0
        try:
            done = sub.run(lambda: self.file(b, spool))
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
