"""A large batch's result lines read in a second process while this one records them (one
core each), as the import parses in one while the writer writes (importer.py).

What is read is what `read_items` gives in process, item for item: the child
(`python -m llmbatch.reading`) runs the same function over the same files and streams its
items back in length-prefixed chunks (marshal, or pickle for a `Finding` or an `Anomaly`); a
reader thread keeps a few chunks ready, so parsing and recording overlap. If the child
cannot start or stops short, the rest is read here, from the item it stopped at: the items,
and so every outcome recorded, are the same either way.
"""

from __future__ import annotations

import contextlib
import gc
import itertools
import pickle
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from llmbatch import handoff
from llmbatch.providers.base import ResultFile
from llmbatch.results import Anomaly, Finding, ReadsResults, Success, in_attempt_order, read_line

# a batch of fewer requests is read here: a second interpreter costs ~0.06 CPU s to start
# and ~0.2 more per 50,000 lines than reading here (the hand-off), against ~0.25 s of
# reading taken off this process per 50,000: below this the saving is in the noise
MIN_REQUESTS = 20_000
ITEMS_PER_CHUNK = 2_000  # ~1 MB of the usual line: the hand-off pipe's size

# What one result line reads as: an over-long line's length, a line that is not ours, or
# what `read_line` made of it.
Item = int | Anomaly | Success | Finding


def read_items(
    files: Sequence[ResultFile],
    cap: int,
    fmt: ReadsResults,
    prefix: str,
    endpoint: str | None,
) -> Iterator[Item]:
    """Every line of the files, in attempt order (`in_attempt_order`), as `read_line` reads
    it; an over-long line as its length, a line it refuses as its `Anomaly`."""
    for hint, line in in_attempt_order(files, cap, fmt.id_field, prefix):
        if isinstance(line, int):
            yield line
            continue
        try:
            yield read_line(line, prefix, endpoint, fmt, hint)
        except Anomaly as exc:
            yield exc


class Reader:
    """A child process started early (its start-up overlaps the download), then given the
    files to read; `items` yields what it read."""

    failed = False  # a child failed in this process: read here from then on

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        if not Reader.failed:
            try:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "llmbatch.reading"],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                )
            except OSError:
                self._proc = None

    def items(
        self,
        files: Sequence[ResultFile],
        cap: int,
        fmt: ReadsResults,
        prefix: str,
        endpoint: str | None,
    ) -> Iterator[Item]:
        """`read_items`, read by the child where it can."""
        done, job = 0, None
        if self._proc is not None:
            try:  # a plugin's format that does not pickle is read here
                job = pickle.dumps(([str(f.path) for f in files], cap, fmt, prefix, endpoint))
            except Exception:  # whatever pickle raises for it
                self.close()
        if job is not None:
            try:
                for item in self._read(job):
                    done += 1
                    yield item
                return
            except Exception:  # a child that stopped, a broken pipe, a bad chunk
                Reader.failed = True  # the rest, and later batches, are read here
            finally:
                self.close()
        yield from itertools.islice(read_items(files, cap, fmt, prefix, endpoint), done, None)

    def _read(self, job: bytes) -> Iterator[Item]:
        proc = self._proc
        assert proc is not None and proc.stdin is not None
        proc.stdin.write(job)
        proc.stdin.close()
        with handoff.frames(proc, 2, "llmbatch-result-reader") as payloads:
            for payload in payloads:
                if payload == b"E":  # the end: every line was read
                    return
                yield from handoff.loads(payload)
            raise _Stopped()  # the child stopped before the end

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()


class _Stopped(Exception):
    """The child ended before it said every line was read."""


def _main() -> None:
    # One job, then exit: what it makes is freed as it goes (no cycles), and the collector's
    # passes over the chunks' tuples cost a quarter of the reading (0.44 -> 0.33 CPU s for
    # 50,000 lines).
    gc.disable()
    paths, cap, fmt, prefix, endpoint = pickle.load(sys.stdin.buffer)
    files = [ResultFile("output", Path(p), 0) for p in paths]
    out = sys.stdout.buffer

    chunk: list[Item] = []
    for item in read_items(files, cap, fmt, prefix, endpoint):
        chunk.append(item)
        if len(chunk) >= ITEMS_PER_CHUNK:
            handoff.send(out, handoff.dumps(chunk))
            chunk = []
    if chunk:
        handoff.send(out, handoff.dumps(chunk))
    handoff.send(out, b"E")
    out.flush()


if __name__ == "__main__":
    _main()
