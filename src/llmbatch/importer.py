"""Enqueue as an import: stream lines in, validate them, load them in short chunks.

Rows are written in chunked transactions tagged with an import id and become visible only
when the whole import commits with one small update. A file with a bad line anywhere enqueues
nothing (unless `skip_invalid`), memory stays flat however long the file is, and other
writers are never locked out for the length of the file. A large file is parsed in a second
process while this one writes (one core each).
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Set
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, BinaryIO

import orjson

from llmbatch import handoff
from llmbatch.defaults import PROVIDER
from llmbatch.errors import ConflictError, InputError, StoreUnavailable
from llmbatch.files import open_private
from llmbatch.providers import format_of
from llmbatch.requests import LineError, Request, line_fields

if TYPE_CHECKING:  # the parser child (`python -m llmbatch.importer`) starts without the store
    from llmbatch.store.base import Store
    from llmbatch.store.types import Clash, Row

DEFAULT_MAX_LINE_BYTES = 16 * 1024 * 1024
CHUNK_ROWS = 10000  # ≈ 6 MB and well under a second of write lock
#: Imports this process could not fail when they broke off (the database was gone), per
#: store location: the next import there fails them before anything else.
_UNABORTED: dict[str, set[int]] = {}
CHUNK_SECONDS = 2.0  # flush a partial chunk from a slow stream so its heartbeat stays fresh
SHOWN_PROBLEMS = 20
PIPELINE_MIN_BYTES = 8 * 1024 * 1024  # below this a second process costs more than it saves
# the parser child's first chunk: the writer idles until it comes (a full chunk of the usual
# line is ~0.1 s of parsing)
FIRST_CHUNK_ROWS = 1000
_BOM = b"\xef\xbb\xbf"

Progress = Callable[[int], None]
# (provider, endpoint, model) -> [requests, text bytes, sum of output caps, requests without
# a cap, largest text bytes]: what `estimate.from_sizes` prices
Sizes = dict[tuple[str, str, str], list[int]]


@dataclass(slots=True)
class ImportReport:
    """What an enqueue did."""

    queue: str
    source: str
    import_id: int | None = None
    lines: int = 0
    added: int = 0
    unchanged: int = 0
    rejected: int = 0
    reject_file: str | None = None
    # cheap size stats for the estimate line (no tokenizer), as `Sizes` says
    sizes: Sizes = field(default_factory=dict)

    def summary(self) -> str:
        parts = [f"{self.added:,} added to queue {self.queue!r}"]
        if self.unchanged:
            parts.append(f"{self.unchanged:,} already enqueued (unchanged, skipped)")
        if self.rejected:
            parts.append(f"{self.rejected:,} rejected (see {self.reject_file})")
        return f"{self.source}: " + ", ".join(parts)


@dataclass(slots=True)
class Chunk:
    """Validated lines on their way to the store: rows to insert and lines rejected."""

    rows: list[Row] = field(default_factory=list)
    problems: list[tuple[int, str, bytes | None]] = field(default_factory=list)
    raws: dict[int, bytes] | None = None  # kept only for a reject file
    lines: int = 0
    # the rows' size stats (tally_sizes), taken where the chunk was parsed: the parser
    # process has the spare core, the writer has none
    sizes: Sizes | None = None


@dataclass(frozen=True, slots=True)
class RowDefaults:
    """What every row of one import shares."""

    queue: str
    import_id: int
    provider: str = PROVIDER
    priority: int = 0
    deadline: float | None = None

    def row(self, r: Request, line: int, now: float) -> Row:
        return (
            self.queue,
            r.custom_id,
            self.import_id,
            line,
            r.provider,
            r.endpoint,
            r.model,
            r.body,
            r.body_hash,
            self.priority,
            self.deadline,
            r.text_chars,
            r.text_bytes,
            r.inputs,
            now,
            now,
        )


def read_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[tuple[int, bytes | None]]:
    """(line number, content without newline) per non-blank line; None for an over-long line.

    An over-long line is skipped in pieces and never held whole. CRLF endings and a UTF-8
    byte order mark at the start of the file are accepted.
    """
    number = 0
    while True:
        raw = stream.readline(max_line_bytes + 1)
        if not raw:
            return
        number += 1
        if len(raw) > max_line_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(1 << 20)
            yield number, None
            continue
        line = raw.rstrip(b"\r\n")
        if number == 1 and line.startswith(_BOM):  # Notepad and PowerShell write one
            line = line[len(_BOM) :]
        # bytes.strip() strips only ASCII whitespace (all <= 32): a line starting above
        # that is not blank, without copying it to find out
        if (line and line[0] > 32) or line.strip():
            yield number, line


def parse_chunks(
    stream: BinaryIO,
    defaults: RowDefaults,
    *,
    max_line_bytes: int,
    keep_raw: bool = False,
    first_rows: int | None = None,
) -> Iterator[Chunk]:
    """Validate lines into chunks of at most CHUNK_ROWS rows (or CHUNK_SECONDS of input); the
    first of at most `first_rows`, so that a writer waiting for it starts sooner."""
    limit = min(first_rows or CHUNK_ROWS, CHUNK_ROWS)
    chunk = Chunk(raws={} if keep_raw else None)
    rows, raws = chunk.rows, chunk.raws
    started = time.monotonic()
    # the row is made here from the line's fields (RowDefaults.row's order): this loop runs
    # once per line of every file enqueued
    queue, import_id, provider = defaults.queue, defaults.import_id, defaults.provider
    priority, deadline = defaults.priority, defaults.deadline
    lines, clock = 0, time.time
    for number, raw in read_lines(stream, max_line_bytes):
        lines += 1
        if raw is None:
            reason = f"line is longer than {max_line_bytes:,} bytes (LLMBATCH_MAX_LINE_BYTES)"
            chunk.problems.append((number, reason, None))
            continue
        try:
            cid, prov, endpoint, model, body, digest, chars, nbytes, inputs = line_fields(
                raw, provider
            )
        except LineError as exc:
            chunk.problems.append((number, str(exc), raw))
            continue
        now = clock()
        rows.append(
            (
                queue,
                cid,
                import_id,
                number,
                prov,
                endpoint,
                model,
                body,
                digest,
                priority,
                deadline,
                chars,
                nbytes,
                inputs,
                now,
                now,
            )
        )
        if raws is not None:
            raws[number] = raw
        if len(rows) >= limit or time.monotonic() - started > CHUNK_SECONDS:
            limit = CHUNK_ROWS
            chunk.lines, lines = lines, 0
            chunk.sizes = tally_sizes({}, rows, _NONE)
            yield chunk
            chunk = Chunk(raws={} if keep_raw else None)
            rows, raws = chunk.rows, chunk.raws
            started = time.monotonic()
    chunk.lines = lines
    if chunk.lines:
        chunk.sizes = tally_sizes({}, rows, _NONE)
        yield chunk


_NONE: frozenset[int] = frozenset()

# An output cap in a canonical body (sorted keys, no spaces); a nested schema property of the
# same name is followed by an object, not a number, so it never matches.
_CAP = re.compile(rb'"max_(?:completion_|output_)?tokens":(\d+)')


def tally_sizes(sizes: Sizes, rows: list[Row], skip: Set[int]) -> Sizes:
    """Add the size stats of the rows not on a line in `skip` to `sizes`; returns it."""
    for row in rows:
        if skip and row[3] in skip:
            continue
        key = (row[4], row[5], row[6])
        s = sizes.get(key)
        if s is None:
            s = sizes[key] = [0, 0, 0, 0, 0]
        nbytes, cap = row[12], _CAP.search(row[7])
        s[0] += 1
        s[1] += nbytes
        s[4] = max(s[4], nbytes)
        if cap:
            s[2] += int(cap.group(1))
        else:
            s[3] += 1
    return sizes


def merge_sizes(sizes: Sizes, more: Sizes) -> None:
    """Add one chunk's size stats (tally_sizes) to `sizes`."""
    for key, m in more.items():
        s = sizes.get(key)
        if s is None:
            sizes[key] = list(m)
            continue
        for i in range(4):
            s[i] += m[i]
        s[4] = max(s[4], m[4])


class _Rejects:
    """The reject file of `--skip-invalid`, opened only when the first line is rejected."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._file: IO[bytes] | None = None

    def write(self, line: int, reason: str, raw: bytes | None) -> None:
        if self._file is None:
            try:
                self._file = open_private(self.path)  # 0600: it holds users' lines
            except OSError as exc:  # the import is aborted: nothing enqueued
                raise InputError(
                    f"cannot write the reject file {self.path}: {exc.strerror}; nothing was "
                    "enqueued (name a writable --reject-file)"
                ) from None
        text = None if raw is None else raw[:65536].decode("utf-8", "replace")
        self._file.write(orjson.dumps({"line": line, "reason": reason, "raw": text}) + b"\n")

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _clash_reason(c: Clash, queue: str) -> str:
    if c.kind == "duplicate":
        return f"custom_id {c.custom_id!r} appears more than once (first on line {c.other_line})"
    if c.kind == "busy":
        return (
            f"custom_id {c.custom_id!r} is being enqueued right now by import {c.other_import}; "
            "retry when it ends"
        )
    return (
        f"custom_id {c.custom_id!r} is already in queue {queue!r} with a different body "
        f"(import {c.other_import}, line {c.other_line}); use a new custom_id or another queue"
    )


class Importer:
    """One import into one queue: `start`, `add` chunks, then `finish` (commit) or `abort`."""

    def __init__(
        self,
        store: Store,
        queue: str,
        source: str,
        *,
        skip_invalid: bool = False,
        reject_path: str | None = None,
    ) -> None:
        self.store, self.queue, self.source = store, queue, source
        self.skip_invalid = skip_invalid
        self.report = ImportReport(queue, source)
        self.problems: list[str] = []
        self.invalid = 0
        self.conflicts = 0
        self._rejects = (
            _Rejects(reject_path or f"{source}.rejected.jsonl") if skip_invalid else None
        )

    def start(self) -> int:
        """Clean up after dead imports (and this process's own that could not be failed when
        they broke off), then open this one; returns its id."""
        for orphan in sorted(_UNABORTED.get(self.store.location, ())):
            self.store.abort_import(orphan, "interrupted (the database could not be reached)")
            _UNABORTED[self.store.location].discard(orphan)
        self.store.clean_dead_imports()
        self.report.import_id = self.store.begin_import(self.queue, self.source)
        return self.report.import_id

    def add(self, chunk: Chunk) -> None:
        assert self.report.import_id is not None, "start() first"
        self.report.lines += chunk.lines
        for line, reason, raw in chunk.problems:
            self._problem(line, reason, raw)
        if (self.invalid and not self.skip_invalid) or not chunk.rows:
            return  # a failing import keeps validating but stops writing
        clashes = self.store.load_rows(self.report.import_id, self.queue, chunk.rows)
        self.report.added += len(chunk.rows) - len(clashes)
        if chunk.sizes is not None and not clashes:
            merge_sizes(self.report.sizes, chunk.sizes)
        else:  # rows that did not go in are not counted
            tally_sizes(self.report.sizes, chunk.rows, {c.line for c in clashes})
        raws = chunk.raws or {}
        for c in clashes:
            if c.kind == "unchanged":
                self.report.unchanged += 1
            else:  # never inserted: a duplicate, a conflict or a race with another import
                self.conflicts += c.kind == "conflict"
                self._problem(c.line, _clash_reason(c, self.queue), raws.get(c.line))

    def _problem(self, line: int, reason: str, raw: bytes | None) -> None:
        self.invalid += 1
        if len(self.problems) < SHOWN_PROBLEMS:
            self.problems.append(f"{self.source}:{line}: {reason}")
        if self._rejects is not None:
            self._rejects.write(line, reason, raw)
            self.report.rejected += 1

    def finish(self) -> ImportReport:
        """Commit the import, or abort it and raise InputError naming every bad line."""
        if self._rejects is not None:
            self._rejects.close()
            self.report.reject_file = self._rejects.path if self.report.rejected else None
        r = self.report
        if r.lines == 0:
            self.abort("empty input")
            raise InputError(f"{self.source} is empty: no requests to enqueue")
        if self.invalid and not self.skip_invalid:
            self.abort(f"{self.invalid} invalid lines")
            raise (ConflictError if self.conflicts else InputError)(
                f"{self.source}: {self.invalid:,} of {r.lines:,} lines are invalid; nothing was "
                "enqueued (fix them, or use --skip-invalid to enqueue the rest)",
                self.problems,
                self.invalid,
            )
        assert r.import_id is not None
        self.store.commit_import(
            r.import_id, lines=r.lines, added=r.added, unchanged=r.unchanged, rejected=r.rejected
        )
        return r

    def abort(self, reason: str) -> None:
        """Fail this import and delete its rows. An import broken off by a lost connection
        would stay `loading` with a live owner, holding its custom_ids from every retry for as
        long as this process lives: the store reconnects on its next call, so try once more,
        and failing that, the next import on this store fails it first."""
        import_id = self.report.import_id
        if import_id is not None:
            for tries_left in (1, 0):
                try:
                    self.store.abort_import(import_id, reason)
                    break
                except StoreUnavailable:
                    if not tries_left:
                        _UNABORTED.setdefault(self.store.location, set()).add(import_id)
        self.report.added = 0

    def run(
        self, chunks: Callable[[int], Iterable[Chunk]], on_progress: Progress | None
    ) -> ImportReport:
        """Start, feed every chunk `chunks(import_id)` yields, finish; abort on any failure."""
        import_id = self.start()
        try:
            for chunk in chunks(import_id):
                self.add(chunk)
                if on_progress is not None:
                    on_progress(self.report.lines)
        except BaseException:
            self.abort("interrupted")
            raise
        return self.finish()


def enqueue_stream(
    store: Store,
    stream: BinaryIO,
    *,
    source: str,
    queue: str = "default",
    provider: str = PROVIDER,
    skip_invalid: bool = False,
    reject_path: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    priority: int = 0,
    deadline: float | None = None,
    on_progress: Progress | None = None,
) -> ImportReport:
    """Enqueue every line of a binary stream as one import, parsing in this process."""
    format_of(provider)  # an unknown provider is one line before anything is read
    imp = Importer(store, queue, source, skip_invalid=skip_invalid, reject_path=reject_path)

    def chunks(import_id: int) -> Iterator[Chunk]:
        defaults = RowDefaults(queue, import_id, provider, priority, deadline)
        return parse_chunks(stream, defaults, max_line_bytes=max_line_bytes, keep_raw=skip_invalid)

    return imp.run(chunks, on_progress)


def enqueue_file(
    store: Store,
    path: str | Path,
    *,
    queue: str = "default",
    provider: str = PROVIDER,
    skip_invalid: bool = False,
    reject_path: str | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    priority: int = 0,
    deadline: float | None = None,
    on_progress: Progress | None = None,
) -> ImportReport:
    """Enqueue a JSONL file; a large one is parsed in a second process while this one writes."""
    format_of(provider)  # an unknown provider is one line before anything is read
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a JSONL file")
    options = {
        "skip_invalid": skip_invalid,
        "reject_path": reject_path,
        "queue": queue,
        "provider": provider,
        "max_line_bytes": max_line_bytes,
        "priority": priority,
        "deadline": deadline,
        "on_progress": on_progress,
    }
    if path.stat().st_size < PIPELINE_MIN_BYTES:
        with open(path, "rb") as f:
            return enqueue_stream(store, f, source=str(path), **options)  # type: ignore[arg-type]
    imp = Importer(store, queue, str(path), skip_invalid=skip_invalid, reject_path=reject_path)

    def chunks(import_id: int) -> Iterator[Chunk]:
        defaults = RowDefaults(queue, import_id, provider, priority, deadline)
        return parse_in_subprocess(path, defaults, max_line_bytes, skip_invalid)

    return imp.run(chunks, on_progress)


def parse_in_subprocess(
    path: Path, defaults: RowDefaults, max_line_bytes: int, keep_raw: bool
) -> Iterator[Chunk]:
    """Chunks parsed by a child process (the two-process pipeline: one core parses, one writes).

    The child (`python -m llmbatch.importer`) streams length-prefixed chunk fields (`_pack`)
    over its stdout; a reader thread keeps a few chunks ready so parsing and writing overlap,
    and the bounded hand-off keeps memory flat. The reader only reads (the GIL is free while
    it waits on the pipe); the writer unpacks each chunk as it takes it: an unpack in the
    reader held the GIL for tens of milliseconds at a time, and the writer, which lets go of
    it for every row it inserts, waited on it (for a core too, on a loaded machine). Held
    packed, a waiting chunk is also a third of its unpacked size.
    """
    args = [
        defaults.queue,
        defaults.import_id,
        defaults.provider,
        defaults.priority,
        defaults.deadline,
    ]
    spec = orjson.dumps({"defaults": args, "max_line_bytes": max_line_bytes, "keep_raw": keep_raw})
    cmd = [sys.executable, "-m", "llmbatch.importer", str(path), spec.decode()]
    # Not in a session of its own, though on a loaded Linux desktop (autogroup) the writer
    # and the child then share one session's CPU share: a second session would take more of
    # the machine than the user's other work gets, and escape job control (Ctrl-C, `kill %1`).
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    _widen(proc.stdout)
    try:
        with handoff.frames(proc, 3, "llmbatch-import-reader") as payloads:
            for payload in payloads:
                yield _unpack(payload)
            code = proc.wait()
            if code != 0:
                err = proc.stderr.read().decode("utf-8", "replace").strip().splitlines()
                raise InputError(
                    f"{path}: the parser process failed: {err[-1] if err else f'exit {code}'}"
                )
    finally:
        proc.stdout.close()
        proc.stderr.close()


PIPE_BYTES = 1 << 20  # Linux's pipe-max-size for an unprivileged process, by default


def _widen(pipe: IO[bytes]) -> None:
    """Give the hand-off pipe 1 MiB instead of 64 KiB: a chunk is ~6 MB, and each time the
    pipe fills, the child sleeps until the reader drains it; on a loaded machine every such
    wake-up waits for a core (Linux only; elsewhere the pipe keeps its size)."""
    with contextlib.suppress(AttributeError, OSError):  # not Linux; a lower pipe-max-size
        import fcntl

        fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


def _pack(c: Chunk) -> bytes:
    """A chunk's fields for the writer (`handoff`: marshal for rows of plain values, pickle
    for a row a plugin's format made of other types)."""
    return handoff.dumps((c.rows, c.problems, c.raws, c.lines, c.sizes))


def _unpack(payload: bytes) -> Chunk:
    """The chunk `_pack` wrote."""
    return Chunk(*handoff.loads(payload))


def _parse_main(path: str, spec_json: str) -> None:
    spec = orjson.loads(spec_json)
    defaults = RowDefaults(*spec["defaults"])
    out = sys.stdout.buffer
    with open(path, "rb") as f:
        for c in parse_chunks(
            f,
            defaults,
            max_line_bytes=spec["max_line_bytes"],
            keep_raw=spec["keep_raw"],
            first_rows=FIRST_CHUNK_ROWS,
        ):
            handoff.send(out, _pack(c))
    out.flush()


def enqueue_requests(
    store: Store,
    items: Iterable[Request],
    *,
    queue: str = "default",
    source: str = "python",
    priority: int = 0,
    deadline: float | None = None,
) -> ImportReport:
    """Enqueue already-validated requests (the Python API) as one import."""

    def chunks(import_id: int) -> Iterator[Chunk]:
        defaults = RowDefaults(queue, import_id, PROVIDER, priority, deadline)
        chunk = Chunk()
        for n, r in enumerate(items, 1):
            chunk.lines += 1
            chunk.rows.append(defaults.row(r, n, time.time()))
            if len(chunk.rows) >= CHUNK_ROWS:
                yield chunk
                chunk = Chunk()
        if chunk.lines:
            yield chunk

    return Importer(store, queue, source).run(chunks, None)


if __name__ == "__main__":
    _parse_main(sys.argv[1], sys.argv[2])
