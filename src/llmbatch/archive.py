"""Archives: each ingested batch's files copied where the user keeps data, before the
provider's copies are deleted, and every result read back from there alone.

Under `<url>/<store id>/batch-<8 digits>/` an archive holds:

- `input.jsonl`: the batch file as sent (made again from the store: the same bytes);
- `output.jsonl`, `errors.jsonl`: the provider's result files, as downloaded;
- `results.jsonl`: the batch's results in the results envelope (`export.py`) that the
  provider's files do not hold (manifest version 2, `archived.py`): each success read from
  `output.jsonl` is named in the manifest's `rebuilt` instead of written again, and
  `--from-archive` rebuilds it through the provider's format (version 1 held them all);
- `attempts.jsonl`: each attempt id the batch carried (batch files carry attempt ids, not the
  user's ids) with its queue, custom_id and result id;
- `manifest.json`, written last: the batch, its provider ids, and per file its lines, bytes
  and sha256; `from_store` when the provider's copy was gone and only what the store held was
  archived; `ours` false when no result line carried this intent's ids (its files are then
  left at the provider, as ingest leaves them). An archive without its manifest is not one.

Archiving is idempotent: keys are fixed by the batch, every file is written whole or not at
all, so a worker killed mid-archive leaves what the next one overwrites, never a duplicate or
a gap. The archive row is added before the batch is marked ingested and the provider's files
are deleted only once the manifest is written; a target that fails (down, 5xx, slow) backs
the archive off (doubling, up to an hour) with its error in the store, and the engine's
other work goes on.

The engine's archives are written by a thread of their own, one pass at a time, while the
tick goes on polling and ingesting (inline, an archive added half to a 100,000-request
drain); a pass is started by each batch's ingest on the engine lease's holder (one tick may
ingest many batches) and by the tick's archive step; within an archive, each file is sent
while the next is made. What is fixed before the ingest is sent before it, by a thread of
its own (`Archiver.early`): `input.jsonl` and `attempts.jsonl` once the batch is sent (the
provider's batch time goes by meanwhile), the provider's files once downloaded (ingest reads
them meanwhile); the archive waits for those uploads and takes each whose file is the one it
archives, so after the last ingest only `results.jsonl` and the manifest are left. The
engine waits for the pass on close. What `results.jsonl` needs is kept during ingest as
outcomes are recorded (`Envelope`: each result the provider's files do not hold, under its
attempt id) with the downloaded files; the archiving thread joins it to the batch's attempt
map from the store as it writes `attempts.jsonl` (`_joined`), so the engine's ingest does no
per-request work for the archive (at 100,000 requests the map's read and lines were ~0.4 CPU
s of its thread). It is used only when it holds exactly what the store
holds: every outcome of that ingest recorded as written, as many results as the store has
for the batch, and only attempts the batch carried. An ingest cut short (a worker killed
mid-ingest, resumed by another), a re-download or an adopted duplicate's lines landing on
answered attempts leaves no such file, and the archive step reads the results from the
store, every result whole (nothing is left to the provider's files then, nor when they were
downloaded again or are gone). Spools an older worker left (results.jsonl and
attempts.jsonl written whole during ingest) are still read.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import orjson

from llmbatch import defaults
from llmbatch.archived import MANIFEST, MANIFEST_VERSION
from llmbatch.archived import from_archive as from_archive
from llmbatch.errors import ConfigError, RejectedError, StoreError, TransientError
from llmbatch.export import jsonl_head, jsonl_line, jsonl_tail, result_id
from llmbatch.ownership import attempt_prefix
from llmbatch.providers.base import BatchStatus, ResultsGone
from llmbatch.tables import positive
from llmbatch.targets import ArchiveUnavailable, Target, TargetSettings, check_url, open_target

if TYPE_CHECKING:
    from llmbatch.providers import Provider
    from llmbatch.store.base import Store
    from llmbatch.store.batching import Outcome, Succeeded

MAX_BACKOFF = 3600.0
RESULT_NAMES = {"output": "output.jsonl", "error": "errors.jsonl"}  # a result file's kind's
SPOOL_KINDS = "kinds.json"  # in a spool folder: which downloaded file is output, which error
# In a spool folder: what ingest wrote of the envelope (each result the provider's files do
# not hold, as its attempt id, its length and the end of its line; `Envelope`), and the
# marker that says it is whole.
SPOOL_PENDING, SPOOL_ENVELOPE = "env-pending.jsonl", "env-v3.json"
# What workers before wrote, still read (a worker upgraded with archives due): results.jsonl
# and attempts.jsonl whole, with the marker of manifest version 2 (`env-v2.json`: the
# successes named in `rebuilt`) or version 1 (`env.json`: results.jsonl held every result).
# Each marker has its own name so that an older worker, sharing the work directory during an
# upgrade, never takes files it does not know: it finds no marker of its own and reads the
# results from the store.
SPOOL_RESULTS, SPOOL_ATTEMPTS = "env-results.jsonl", "env-attempts.jsonl"
SPOOL_ENVELOPE_V2, SPOOL_ENVELOPE_V1 = "env-v2.json", "env.json"


@dataclass(frozen=True)
class ArchiveSettings(TargetSettings):
    """`[archive]`: the target, and how much of a tick archiving may take."""

    backoff_seconds: float = positive(defaults.ARCHIVE_BACKOFF_S)
    tick_seconds: float = positive(defaults.ARCHIVE_TICK_S)


def parse_archive(table: Any) -> ArchiveSettings | None:
    """`[archive]` checked: known keys of the right types, a URL we can write to."""
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"[archive] must be a table, got a {type(table).__name__}")
    from llmbatch.settings import check_dataclass

    fields = ", ".join(ArchiveSettings.__dataclass_fields__)

    def unknown(key: str) -> str:
        return f"[archive] has no setting {key!r}; known: {fields}"

    # a wrong value is not echoed: it may be a secret pasted in the wrong place
    check_dataclass(table, ArchiveSettings, "[archive] ", unknown, echo=False)
    if "url" not in table:
        raise ConfigError('[archive] needs url = "s3://bucket/prefix" or "file:///path"')
    settings = ArchiveSettings(**table)
    check_url(settings)  # the scheme, the bucket's name, boto3 installed
    return settings


def batch_folder(store_id: str, batch_id: int) -> str:
    return f"{store_id}/batch-{batch_id:08d}"


def kept_input(workdir: Path, batch_id: int) -> Path:
    """Where the engine keeps an intent's batch file once sent, for its archive (made again
    from the store when missing: a worker restarted with a new work directory)."""
    return workdir / f"archive-input-{batch_id}.jsonl"


def _digest(path: Path) -> dict[str, Any]:
    """Lines, bytes and sha256 of a file, read in chunks."""
    h, size, lines, last = hashlib.sha256(), 0, 0, b"\n"
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    if size and last != b"\n":
        lines += 1
    return {"lines": lines, "bytes": size, "sha256": h.hexdigest()}


class Envelope:
    """What a batch's `results.jsonl` needs, written in its ingest folder while it is
    ingested, so the archive step need not read the batch's results back from the store.

    A success read from the provider's files is not written again: only its attempt id is
    kept (`rebuilt`), and `--from-archive` rebuilds its envelope from the archived output
    file through the provider's format, as ingest built it. Every other result (a failure
    with its retry verdict, a cancellation, a request with no line) is kept as the end of
    the line `llmbatch results` gives for it (`jsonl_tail`), under its attempt id: the
    archive step puts each one's id and custom_id before it as it writes `attempts.jsonl`
    from the store's attempt map (`_joined`), in the archiving thread, so the engine's
    ingest does no per-request work for the archive but the outcomes it has. `whole()` says
    whether the file can stand for the store's rows; the ingest keeps it with the
    downloaded files only then."""

    FINAL = ("succeeded", "failed", "cancelled")  # the outcomes that are results

    def __init__(self, store: Store, batch_id: int, prefix: str, provider: str, folder: Path):
        self.store, self.batch_id, self.provider = store, batch_id, provider
        self.prefix = prefix
        self.pending_path = folder / SPOOL_PENDING
        self.lines = 0
        self.rebuilt: list[int] = []  # successes the provider's files hold, by attempt id
        self.spoiled = False
        self._out: IO[bytes] | None = None
        try:
            for name in (SPOOL_ENVELOPE, SPOOL_ENVELOPE_V2, SPOOL_ENVELOPE_V1):  # an earlier's
                (folder / name).unlink(missing_ok=True)
            self._out = open(self.pending_path, "wb")  # noqa: SIM115 (closed in whole/discard)
        except OSError:  # a full disk: the archive step reads them from the store
            self.spoil()

    def add(self, outcomes: Sequence[Outcome | Succeeded], applied: int) -> None:
        """Outcomes just given to the store, which says it recorded `applied` of them: all of
        them, or the file cannot say which (it is then not used). Every success comes from a
        line of the provider's files (ingest reads no other): it is kept by attempt id."""
        if self.spoiled or self._out is None:
            return
        if applied != len(outcomes):
            self.spoil()
            return
        write, provider, rebuilt = self._out.write, self.provider, self.rebuilt
        try:
            for o in outcomes:
                if isinstance(o, tuple):  # a Succeeded tuple: a success with no error
                    a, status, rid, body = o[0], o[1], o[2], o[3]
                    kind, code, message = "succeeded", None, None
                elif o.kind in self.FINAL:
                    a, status, rid, body = (
                        o.attempt_id,
                        o.status_code,
                        o.provider_request_id,
                        o.body,
                    )
                    kind, code, message = o.kind, o.error_code, o.error_message
                else:
                    continue
                if kind == "succeeded" and code is None and body is not None:
                    rebuilt.append(a)
                    continue
                tail = jsonl_tail(kind, provider, status, rid, body, code, message)
                write(b"%d %d\n" % (a, len(tail)))
                write(tail)
                self.lines += 1
        except OSError:  # a full disk: never a reason to stop an ingest
            self.spoil()

    def spoil(self) -> None:
        self.spoiled = True
        self.discard()

    def whole(self) -> bool:
        """Close the file; True (and the marker written) if it and `rebuilt` hold every
        result the store has for the batch, each recorded by this ingest. The file is
        synced first: a marker never stands for a file a power loss cut short."""
        out, self._out = self._out, None
        if out is None or self.spoiled:
            return False
        try:
            out.flush()
            os.fsync(out.fileno())
            out.close()
            if self.store.batch_result_count(self.batch_id) != self.lines + len(self.rebuilt):
                return False
            said = {
                "batch": self.batch_id,
                "bytes": {SPOOL_PENDING: self.pending_path.stat().st_size},
                "lines": self.lines,
                "rebuilt": {"prefix": self.prefix, "attempts": ranges(self.rebuilt)},
            }
            (self.pending_path.parent / SPOOL_ENVELOPE).write_text(json.dumps(said))
        except OSError:
            return False
        return True

    def discard(self) -> None:
        if self._out is not None:
            with contextlib.suppress(OSError):
                self._out.close()
            self._out = None


def ranges(ids: list[int]) -> list[list[int]]:
    """Attempt ids as sorted, inclusive `[first, last]` runs (a batch's are mostly one)."""
    out: list[list[int]] = []
    for a in sorted(set(ids)):
        if out and out[-1][1] == a - 1:
            out[-1][1] = a
        else:
            out.append([a, a])
    return out


class Archiver:
    """The engine's archive step: writes the archives that are due, within a time budget."""

    def __init__(
        self,
        store: Store,
        settings: ArchiveSettings,
        provider: Callable[[str], Provider],
        workdir: Path,
        *,
        delete_files: bool = True,
        clock: Callable[[], float] = time.time,
        target: Target | None = None,
        background: bool = False,
    ) -> None:
        self.store, self.settings, self.provider = store, settings, provider
        self.workdir, self.delete_files, self.clock = workdir, delete_files, clock
        self.target = target or open_target(settings)
        self._checked = False
        self.background = background
        self.engine = False  # set by each tick: this worker holds the engine lease (`kick`)
        self.busy_seconds = 0.0  # spent writing archives (in the archiving thread or not)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._written, self._notes = 0, list[str]()
        self._error: BaseException | None = None
        self._early: dict[str, list[_Early]] = {}  # archive key -> its early uploads (`early`)
        self._early_pool: ThreadPoolExecutor | None = None
        self._early_seq = 0

    def check(self) -> None:
        """Once per engine, before any work: a missing bucket or credentials stop it."""
        if not self._checked:
            self.target.check()
            self._checked = True

    def envelope(self, batch_id: int, prefix: str, provider: str, folder: Path) -> Envelope:
        """The results and attempt map of a batch being ingested, written as it goes."""
        return Envelope(self.store, batch_id, prefix, provider, folder)

    def spool(self, batch_id: int) -> Path:
        """Where ingest leaves a batch's downloaded files for its archive."""
        return self.workdir / f"archive-{batch_id}"

    def keep(self, batch_id: int, folder: Path, kinds: dict[str, str]) -> None:
        """Keep an ingest's downloaded files (file name -> output|error) for the archive."""
        (folder / SPOOL_KINDS).write_text(json.dumps(kinds))
        dest = self.spool(batch_id)
        shutil.rmtree(dest, ignore_errors=True)
        folder.rename(dest)

    def early(self, batch_id: int, name: str, path: Path) -> None:
        """Start sending one of a batch's files to its archive now, in a thread of its own:
        the input file once sent (the provider's batch time goes by meanwhile), the
        provider's files once downloaded (ingest reads them meanwhile). The batch's archive
        waits for it, then takes it when the file it archives is the one sent (`_taken`;
        else it sends that file itself): after the last ingest only what the store adds is
        left to send. Only on the engine lease's holder, whose archiving thread writes the
        archive (a killed worker's parts are aborted by the archive that follows; another
        worker's upload could land after the archive was written). The upload reads a hard
        link, which ingest's renames and deletions leave alone."""
        if not (self.background and self.engine):
            return
        key = f"{batch_folder(self.store.store_id, batch_id)}/{name}"
        with self._lock:
            self._early_seq += 1
            link = self.workdir / f"early-{os.getpid()}-{self._early_seq}-{name}"
            try:
                os.link(path, link)
                sent = _identity(link)
            except OSError:  # no hard links here: the archive sends it
                return
            future = self._pool().submit(self._send_early, key, link)
            self._early.setdefault(key, []).append(_Early(future, sent, link))

    def early_attempts(self, batch_id: int, prefix: str) -> None:
        """Start writing and sending a batch's attempts.jsonl once it is sent (its attempt
        map is fixed then): the archive after its ingest then reads from the store only the
        attempts of the results the provider's files do not hold (`_joined`)."""
        if not (self.background and self.engine):
            return
        key = f"{batch_folder(self.store.store_id, batch_id)}/attempts.jsonl"
        with self._lock:
            self._early_seq += 1
            path = self.workdir / f"early-{os.getpid()}-{self._early_seq}-attempts.jsonl"
            carried: list[list[int]] = []
            pool = self._pool()
            future = pool.submit(self._send_attempts, key, batch_id, prefix, path, carried)
            self._early.setdefault(key, []).append(_Early(future, (), path, carried))

    def _send_attempts(
        self, key: str, batch_id: int, prefix: str, path: Path, carried: list[list[int]]
    ) -> dict[str, Any]:
        try:
            said, _, runs = self._map_pass(batch_id, prefix, path, {}, [], b"")
            self.target.put(key, path, said["sha256"])
            carried.extend(runs)
            return said
        finally:
            path.unlink(missing_ok=True)

    def _pool(self) -> ThreadPoolExecutor:
        if self._early_pool is None:
            self._early_pool = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="llmbatch-archive-early"
            )
        return self._early_pool

    def _send_early(self, key: str, link: Path) -> dict[str, Any]:
        try:
            return self._send(key, link, None)
        finally:
            link.unlink(missing_ok=True)

    def _early_of(self, folder: str) -> dict[str, _Early]:
        """The early uploads of an archive's files, each waited for (an upload still going
        could land after the archive's own), the last of each name; none is used twice."""
        with self._lock:
            keys = [k for k in self._early if k.startswith(folder + "/")]
            got = {k: self._early.pop(k) for k in keys}
        for uploads in got.values():
            for u in uploads:
                with contextlib.suppress(Exception):  # a failed one: the archive sends it
                    u.future.result()
        return {k[len(folder) + 1 :]: uploads[-1] for k, uploads in got.items()}

    def _close_early(self) -> None:
        """Uploads not started are dropped (their archives send the files), those going
        waited for: nothing writes to the target once the engine is closed."""
        with self._lock:
            pool, self._early_pool = self._early_pool, None
            left = [u for uploads in self._early.values() for u in uploads]
            self._early.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        for u in left:
            u.link.unlink(missing_ok=True)

    def run(self, now: float, notes: list[str]) -> int:
        """Write the archives due now, or in `background` hand them to the archiving thread
        (one pass at a time) and return at once. Returns how many were written (since the
        last call, in background), their notes added to `notes`; a database error the
        thread met is raised here, stopping the tick as any other step's would."""
        if not self.background:
            return self.run_due(now, notes)
        with self._lock:
            written, self._written = self._written, 0
            notes.extend(self._notes)
            self._notes.clear()
            error, self._error = self._error, None
        if error is not None:
            raise error
        self._start(now)
        return written

    def kick(self, now: float) -> None:
        """A batch was just ingested (its archive row added): in `background`, on the engine
        lease's holder, start a pass now if none is going, instead of at the next tick's
        `run` (one tick may ingest many batches, their archives otherwise all left to the
        end of it: at 100,000 requests, the last 6 of 10 were written after the drain)."""
        if self.background and self.engine:
            self._start(now)

    def _start(self, now: float) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(
                target=self._pass, args=(now,), name="llmbatch-archive", daemon=True
            )
            self._thread.start()

    def _pass(self, now: float) -> None:
        """One pass of the archiving thread: the engine goes on polling and ingesting
        meanwhile (the store is shared; its connection is locked per statement). Once its
        archives are written, those the ingest made due meanwhile are written too (within
        `tick_seconds` in all: `close` waits for the pass)."""
        notes: list[str] = []
        written, error, started = 0, None, time.monotonic()
        try:
            while (n := self.run_due(now, notes)) > 0:
                written += n
                if time.monotonic() - started > self.settings.tick_seconds:
                    break
                now = max(now, self.clock())
        except BaseException as exc:  # handed to the engine's next tick
            error = exc
        with self._lock:
            self._written += written
            self._notes.extend(notes)
            self._error = self._error or error

    def close(self) -> None:
        """Wait for the archiving thread's pass, as the tick used to write it (within
        `tick_seconds`): a cron `run` exits with its archives written."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
            if self._error is None:
                # That pass may have read what was due before the last tick's ingest: write
                # what it missed now. A database error leaves it due for the next worker.
                with contextlib.suppress(StoreError):
                    self.run_due(self.clock(), self._notes)
        self._close_early()

    def run_due(self, now: float, notes: list[str]) -> int:
        """Write the archives due now, within `tick_seconds`; returns how many."""
        started, busy = self.clock(), time.perf_counter()
        try:
            return self._run_due(now, notes, started)
        finally:
            self.busy_seconds += time.perf_counter() - busy

    def _run_due(self, now: float, notes: list[str], started: float) -> int:
        written = 0
        for due in self.store.archive_due(now):
            if self.clock() - started > self.settings.tick_seconds:
                break
            try:
                self.archive(due.batch_id, now)
                written += 1
            except StoreError:
                raise  # the database: the tick stops, as for any other step
            except Exception as exc:  # down, a 5xx, a bug: this archive waits, not the rest
                delay = min(self.settings.backoff_seconds * 2**due.tries, MAX_BACKOFF)
                said = f"archive of batch {due.batch_id} failed (try {due.tries + 1}): {exc}"
                self.store.archive_failed(due.batch_id, now + delay, str(exc))
                notes.append(f"{said}; trying again in {delay:.0f} s")
                if isinstance(exc, ArchiveUnavailable):
                    break  # the target is down or slow: the others wait for the next tick
        return written

    def archive(self, batch_id: int, now: float) -> None:
        """Write one batch's archive, then delete the provider's files."""
        b = self.store.archive_batch(batch_id)
        if b is None:
            raise RejectedError(f"batch {batch_id} is not in the store")
        folder = batch_folder(self.store.store_id, batch_id)
        provider = self.provider(str(b["provider"]))
        early = self._early_of(folder)  # before anything: none lands after this archive
        if self.target.exists(f"{folder}/{MANIFEST}"):
            # a worker killed after the manifest, before the store knew: it says the rest
            with contextlib.closing(self.target.open(f"{folder}/{MANIFEST}")) as f:
                manifest = orjson.loads(f.read())
            from_store, ours = bool(manifest.get("from_store")), bool(manifest.get("ours", True))
        else:
            from_store, ours = self._write(b, folder, provider, early)
        where = f"{self.target.location.rstrip('/')}/{folder}"
        self.store.archive_done(batch_id, now, where, from_store)
        shutil.rmtree(self.spool(batch_id), ignore_errors=True)
        if int(b.get("intent_id") or batch_id) == batch_id:
            kept_input(self.workdir, batch_id).unlink(missing_ok=True)
        if not ours:  # not one result line of ours: not proven ours to delete (ownership.py)
            self.store.note("anomaly", batch_id, "no result line of ours: left at the provider")
        elif self.delete_files:
            ids = [b.get(k) for k in ("input_file_id", "output_file_id", "error_file_id")]
            with contextlib.suppress(TransientError, RejectedError):
                provider.delete_files([str(f) for f in ids if f])

    def _write(
        self, b: dict[str, Any], folder: str, provider: Provider, early: dict[str, _Early]
    ) -> tuple[bool, bool]:
        """Write the archive; (whether from the store, whether any result line is ours)."""
        batch_id = int(b["id"])
        attempts_of = int(b.get("intent_id") or batch_id)
        prefix = attempt_prefix(self.store.store_id, b.get("nonce"))
        work = self.workdir / f"archiving-{batch_id}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        # Each file is digested and sent in a second thread while the next one is made from
        # the store, and waited for before the manifest: the sends mostly wait on the target,
        # the making mostly on the database (both let go of the GIL).
        sends = ThreadPoolExecutor(max_workers=2, thread_name_prefix="llmbatch-archive")
        digests: dict[str, Future[dict[str, Any]]] = {}

        def send(name: str, path: Path, digest: dict[str, Any] | None = None) -> None:
            digests[name] = _taken(early.get(name), path) or sends.submit(
                self._send, f"{folder}/{name}", path, digest
            )

        try:
            self.target.abort_uploads(folder + "/")
            got, from_store = self._results(b, provider, work)
            for name, path in got.items():
                send(name, path)
            ours = not got or any(_carries(p, prefix) for p in got.values())
            send("input.jsonl", self._input(attempts_of, prefix, provider, work))
            spool = self.spool(batch_id)
            spooled = bool(got) and all(p.parent == spool for p in got.values())
            sent = early.get("attempts.jsonl") if attempts_of == batch_id else None
            carried = sent.carried if sent is not None and _taken(sent, None) else None
            (results, attempts), known, rebuilt = self._envelope(
                batch_id,
                attempts_of,
                prefix,
                work,
                spooled=spooled,
                provider=str(b["provider"]),
                carried=carried,
            )
            send("results.jsonl", results, known.get(SPOOL_RESULTS))
            if attempts is None:  # sent as the batch was (`early_attempts`)
                assert sent is not None
                digests["attempts.jsonl"] = sent.future
            else:
                send("attempts.jsonl", attempts, known.get(SPOOL_ATTEMPTS))
            manifest: dict[str, Any] = {
                "version": MANIFEST_VERSION,
                "store_id": self.store.store_id,
                "batch": batch_id,
                "attempts_of": attempts_of,
                "provider": b.get("provider"),
                "endpoint": b.get("endpoint"),
                "model": b.get("model"),
                "provider_batch_id": b.get("provider_batch_id"),
                "input_file_id": b.get("input_file_id"),
                "output_file_id": b.get("output_file_id"),
                "error_file_id": b.get("error_file_id"),
                "state": b.get("provider_status") or b.get("state"),
                "from_store": from_store,
                "ours": ours,
                "archived_at": self.clock(),
                "files": {},
            }
            if rebuilt is not None:  # successes the provider's files hold (`from_archive`)
                manifest["rebuilt"] = {"from": list(got), **rebuilt}
            for name in ("input.jsonl", *got, "results.jsonl", "attempts.jsonl"):
                manifest["files"][name] = digests[name].result()  # the first failure raises
            (work / MANIFEST).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
            self.target.put(f"{folder}/{MANIFEST}", work / MANIFEST)
            return from_store, ours
        finally:
            sends.shutdown(wait=True, cancel_futures=True)  # nothing still reads `work`
            shutil.rmtree(work, ignore_errors=True)

    def _send(self, key: str, path: Path, digest: dict[str, Any] | None) -> dict[str, Any]:
        """Digest a file (unless its digest was taken as it was written), then write it to
        the target (in a sending thread)."""
        digest = digest or _digest(path)
        self.target.put(key, path, digest["sha256"])
        return digest

    def _input(self, attempts_of: int, prefix: str, provider: Provider, work: Path) -> Path:
        kept = kept_input(self.workdir, attempts_of)
        if kept.is_file():  # the file as sent (its intent's own batch; a copy for another)
            return kept
        path = work / "input.jsonl"
        with open(path, "wb") as f:
            for attempt_id, endpoint, body in self.store.batch_lines(attempts_of):
                line = provider.request_line(f"{prefix}-{attempt_id}", endpoint, body)
                f.write(line + b"\n")
        return path

    def _results(
        self, b: dict[str, Any], provider: Provider, work: Path
    ) -> tuple[dict[str, Path], bool]:
        """The provider's result files: those ingest kept, else downloaded again; when the
        provider no longer has them, none (the archive says `from_store`)."""
        names = RESULT_NAMES
        spool = self.spool(int(b["id"]))
        if (spool / SPOOL_KINDS).is_file():
            kinds: dict[str, str] = json.loads((spool / SPOOL_KINDS).read_text())
            return {names[k]: spool / n for n, k in kinds.items() if (spool / n).is_file()}, False
        if not (b.get("output_file_id") or b.get("error_file_id")):
            return {}, False
        status = BatchStatus(
            provider_batch_id=str(b.get("provider_batch_id") or ""),
            state=str(b.get("state")),
            provider_status=str(b.get("provider_status") or b.get("state")),
            input_file_id=b.get("input_file_id"),
            output_file_id=b.get("output_file_id"),
            error_file_id=b.get("error_file_id"),
        )
        try:
            got = provider.download(status, work)
        except ResultsGone:
            return {}, True
        except RejectedError as exc:
            if "404" in str(exc) or "not found" in str(exc).lower():
                return {}, True
            raise
        return {names[f.kind]: f.path for f in got}, False

    def _envelope(
        self,
        batch_id: int,
        attempts_of: int,
        prefix: str,
        work: Path,
        *,
        spooled: bool,
        provider: str,
        carried: list[list[int]] | None = None,
    ) -> tuple[tuple[Path, Path | None], dict[str, dict[str, Any]], dict[str, Any] | None]:
        """results.jsonl and attempts.jsonl with their digests (by file name, those known),
        and the successes left to the provider's files (`rebuilt`: only when those files are
        the ones that ingest read, `spooled`): joined from what the ingest wrote when it is
        whole (`Envelope`), taken as an older worker's ingest wrote them, else from the
        store."""
        spool = self.spool(batch_id)
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            marker = json.loads((spool / SPOOL_ENVELOPE).read_text())
            rebuilt = marker["rebuilt"]
            pending = spool / SPOOL_PENDING
            # the successes it left to the provider's files need the files ingest read
            whole = spooled or not rebuilt["attempts"]
            if whole and pending.stat().st_size == marker["bytes"][SPOOL_PENDING]:
                joined = self._joined(
                    attempts_of, prefix, provider, work, pending, rebuilt["attempts"], carried
                )
                if joined is not None:
                    return joined[0], joined[1], (rebuilt if rebuilt["attempts"] else None)
            return self._from_store(attempts_of, prefix, work), {}, None
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            ours = spool / SPOOL_ENVELOPE_V2
            marker = json.loads((ours if ours.is_file() else spool / SPOOL_ENVELOPE_V1).read_text())
            sizes = marker["bytes"]
            paths = spool / SPOOL_RESULTS, spool / SPOOL_ATTEMPTS
            rebuilt = marker.get("rebuilt")  # none from an older worker: results.jsonl is all
            if rebuilt is not None and rebuilt["attempts"] and not spooled:
                raise ValueError("the files ingest read are gone")
            if all(p.stat().st_size == sizes[p.name] for p in paths):
                digests = marker.get("digests") or {}
                known = {
                    p.name: dict(digests[p.name])
                    for p in paths
                    if p.name in digests and digests[p.name].get("bytes") == sizes[p.name]
                }
                if rebuilt is not None and not rebuilt["attempts"]:
                    rebuilt = None
                return paths, known, rebuilt
        return self._from_store(attempts_of, prefix, work), {}, None

    def _joined(
        self,
        attempts_of: int,
        prefix: str,
        provider: str,
        work: Path,
        pending: Path,
        rebuilt: list[list[int]],
        carried: list[list[int]] | None = None,
    ) -> tuple[tuple[Path, Path | None], dict[str, dict[str, Any]]] | None:
        """attempts.jsonl streamed from the store's attempt map, and results.jsonl from the
        ingest's pending lines, each given the result id and custom_id of its attempt as
        the map goes by; both digested as written. With `carried` (the attempt ids the
        batch carried, as runs, from the attempts.jsonl sent early), attempts.jsonl is not
        made again (None) and only the pending lines' attempts are read from the store.
        None when the ingest's file names an attempt the batch did not carry, or names fewer
        successes than it kept: the caller reads the results from the store then."""
        heads: dict[int, bytes] = {}  # attempt id -> the start of its line, once the map has it
        with open(pending, "rb") as f:
            while header := f.readline():
                attempt, length = header.split()
                heads[int(attempt)] = b""
                f.seek(int(length), os.SEEK_CUR)
        provider_json = orjson.dumps(provider)
        results = work / "results.jsonl"
        attempts: Path | None = None
        digests: dict[str, dict[str, Any]] = {}
        if carried is None:
            attempts = work / "attempts.jsonl"
            digests[SPOOL_ATTEMPTS], whole, _ = self._map_pass(
                attempts_of, prefix, attempts, heads, rebuilt, provider_json
            )
        else:
            whole = _within(rebuilt, carried) and self._heads(attempts_of, heads, provider_json)
        if not whole or not all(heads.values()):
            return None  # a success or a result of an attempt this batch did not carry
        sha, size, lines, page = hashlib.sha256(), 0, 0, list[bytes]()
        with open(pending, "rb") as f, open(results, "wb") as out:
            while header := f.readline():
                attempt, length = header.split()
                page.append(heads[int(attempt)] + f.read(int(length)))
                if len(page) >= 4096:
                    size, lines = _written(out, sha, page, size, lines)
            size, lines = _written(out, sha, page, size, lines)
        digests[SPOOL_RESULTS] = {"lines": lines, "bytes": size, "sha256": sha.hexdigest()}
        return (results, attempts), digests

    def _map_pass(
        self,
        attempts_of: int,
        prefix: str,
        attempts: Path,
        heads: dict[int, bytes],
        runs: list[list[int]],
        provider_json: bytes,
    ) -> tuple[dict[str, Any], bool, list[list[int]]]:
        """One pass over the store's attempt map: attempts.jsonl written, the start of the
        line of each attempt in `heads`; (its digest, whether every attempt in `runs` was
        carried, the carried attempt ids as runs)."""
        sid = self.store.store_id
        run, found, carried = 0, 0, list[list[int]]()
        expected = sum(last - first + 1 for first, last in runs)
        sha, size, lines, page = hashlib.sha256(), 0, 0, list[bytes]()
        # `_attempt_line`'s bytes with one orjson call a line: the prefix and each queue are
        # encoded once (`-<digits>` never needs escaping), the result id is hex
        dumps, blake2b, sid_b = orjson.dumps, hashlib.blake2b, sid.encode()
        sent, queues = dumps(prefix)[:-1], dict[str, bytes]()
        with open(attempts, "wb") as out:
            for attempt_id, queue, custom_id in self.store.batch_attempt_map(attempts_of):
                digest = blake2b(b"%b:%d" % (sid_b, attempt_id), digest_size=16)
                rid = b"batch_req_" + digest.hexdigest().encode()  # export.result_id
                q = queues.get(queue) or queues.setdefault(queue, dumps(queue))
                cid = dumps(custom_id)
                page.append(
                    b'{"attempt":%d,"sent_as":%b-%d","queue":%b,"custom_id":%b,"result_id":"%b"}\n'
                    % (attempt_id, sent, attempt_id, q, cid, rid)
                )
                if attempt_id in heads:
                    heads[attempt_id] = jsonl_head(rid.decode(), custom_id, provider_json)
                while run < len(runs) and runs[run][1] < attempt_id:  # both in attempt order
                    run += 1
                if run < len(runs) and runs[run][0] <= attempt_id:
                    found += 1
                if carried and carried[-1][1] == attempt_id - 1:
                    carried[-1][1] = attempt_id
                else:
                    carried.append([attempt_id, attempt_id])
                if len(page) >= 4096:
                    size, lines = _written(out, sha, page, size, lines)
            size, lines = _written(out, sha, page, size, lines)
        said = {"lines": lines, "bytes": size, "sha256": sha.hexdigest()}
        return said, found == expected, carried

    def _heads(self, attempts_of: int, heads: dict[int, bytes], provider_json: bytes) -> bool:
        """The start of the line of each attempt in `heads`, read from the store for those
        attempts alone (a span of ids a query, nearby runs together); False if one of them
        was not carried by the batch."""
        sid = self.store.store_id
        for first, last in _spans(ranges(list(heads))):
            for attempt_id, custom_id in self.store.batch_custom_ids(attempts_of, first, last):
                if attempt_id in heads:
                    heads[attempt_id] = jsonl_head(
                        result_id(sid, attempt_id), custom_id, provider_json
                    )
        return all(heads.values())

    def _from_store(self, attempts_of: int, prefix: str, work: Path) -> tuple[Path, Path]:
        """results.jsonl (the envelope) and attempts.jsonl, streamed from the store."""
        sid = self.store.store_id
        results, attempts = work / "results.jsonl", work / "attempts.jsonl"
        with open(results, "wb") as out:
            for r in self.store.batch_result_rows(attempts_of):
                out.write(jsonl_line(r, sid))
        with open(attempts, "wb") as out:
            for attempt_id, queue, custom_id in self.store.batch_attempt_map(attempts_of):
                out.write(_attempt_line(sid, prefix, attempt_id, queue, custom_id))
        return results, attempts


def _attempt_line(
    sid: str, prefix: str, attempt_id: int, queue: str, custom_id: str, rid: str | None = None
) -> bytes:
    """One line of attempts.jsonl (the bytes orjson gives its object: `rid` is the result
    id, when the caller has it already)."""
    dumps = orjson.dumps
    return b'{"attempt":%d,"sent_as":%b,"queue":%b,"custom_id":%b,"result_id":%b}\n' % (
        attempt_id,
        dumps(f"{prefix}-{attempt_id}"),
        dumps(queue),
        dumps(custom_id),
        dumps(rid or result_id(sid, attempt_id)),
    )


def _carries(path: Path, prefix: str) -> bool:
    """Whether a result file has a line naming one of this intent's custom ids (read until
    the first one: the first line, for a batch of ours)."""
    needle = f'"{prefix}-'.encode()
    with open(path, "rb") as f:
        return any(needle in line for line in f)


def _written(out: IO[bytes], sha: Any, page: list[bytes], size: int, lines: int) -> tuple[int, int]:
    """Write and digest a page of whole lines (then emptied); the bytes and lines so far."""
    data = b"".join(page)
    out.write(data)
    sha.update(data)
    page.clear()
    return size + len(data), lines + data.count(b"\n")


@dataclass(frozen=True)
class _Early:
    """An upload started before the archive (`Archiver.early`): of which file, by identity."""

    future: Future[dict[str, Any]]
    sent: tuple[int, ...]  # the file's identity (`_identity`); () for one made from the store
    link: Path
    carried: list[list[int]] | None = None  # attempts.jsonl's: the attempt ids it holds


def _identity(path: Path) -> tuple[int, ...]:
    st = path.stat()
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def _taken(early: _Early | None, path: Path | None) -> Future[dict[str, Any]] | None:
    """An early upload's digest, if it succeeded and sent this very file, unchanged (or,
    `path` None, what it made from the store)."""
    if early is None or early.future.cancelled() or early.future.exception() is not None:
        return None
    if path is None:
        return early.future
    try:
        same = _identity(path) == early.sent
    except OSError:
        return None
    return early.future if same else None


def _within(runs: list[list[int]], carried: list[list[int]]) -> bool:
    """Whether every attempt id in `runs` is in `carried` (both sorted, inclusive runs)."""
    i = 0
    for first, last in runs:
        while i < len(carried) and carried[i][1] < first:
            i += 1
        if i == len(carried) or not carried[i][0] <= first <= last <= carried[i][1]:
            return False
    return True


def _spans(runs: list[list[int]], gap: int = 1000) -> list[list[int]]:
    """Runs of ids closer than `gap` merged: a query each, not one per scattered id."""
    out: list[list[int]] = []
    for first, last in runs:
        if out and first - out[-1][1] <= gap:
            out[-1][1] = last
        else:
            out.append([first, last])
    return out
