"""The mechanics every door's processing shares: a batch's request lines read by position,
and result files appended chunk by chunk.

A batch's requests live in a JSONL file (an uploaded input file, or the requests of an
inline batch written under the work dir) with a `.idx` file beside the batch: the byte
offset of each request line plus the end offset, as unsigned 64-bit integers. Lines run in a
processing order (the identity, or a permutation seeded by the batch id so that a restart
reproduces it). How many lines a batch may run per step, on the virtual clock and within
its model's shared capacity, is `capacity.py`'s, for every door.

The OpenAI/Azure and Anthropic workers predate this module and still carry their own copy
of these pieces; new doors (Gemini) use it.
"""

from __future__ import annotations

import os
import random
from array import array
from collections.abc import Callable, Iterable
from pathlib import Path


def write_index(path: Path, offsets: array[int]) -> None:
    """Store line offsets (plus the end offset) for `Lines` to read."""
    with path.open("wb") as f:
        offsets.tofile(f)


def processing_order(total: int, seed: str | None) -> array[int]:
    """The order a batch's `total` lines run in: the identity, or a permutation seeded by
    `seed` (the batch id), the same after a restart."""
    order = list(range(total))
    if seed is not None:
        random.Random(seed).shuffle(order)
    return array("I", order)


class Lines:
    """One batch's request lines, read by position in processing order."""

    def __init__(self, index: Path, data: Path, *, shuffle_seed: str | None) -> None:
        self.offsets = array("Q")
        self.offsets.frombytes(index.read_bytes())
        self.order = processing_order(len(self.offsets) - 1, shuffle_seed)
        self.fd = os.open(data, os.O_RDONLY)

    @property
    def total(self) -> int:
        return len(self.order)

    def index(self, position: int) -> int:
        """The request's place in the batch as submitted (0-based)."""
        return self.order[position]

    def line(self, position: int) -> bytes:
        i = self.order[position]
        start, end = self.offsets[i], self.offsets[i + 1]
        return os.pread(self.fd, end - start, start)

    def close(self) -> None:
        os.close(self.fd)


class OpenLines:
    """The lines of the batches being run, each opened once and kept until released."""

    def __init__(self) -> None:
        self._open: dict[str, Lines] = {}

    def get(self, batch_id: str, opener: Callable[[], Lines]) -> Lines:
        lines = self._open.get(batch_id)
        if lines is None:
            lines = self._open[batch_id] = opener()
        return lines

    def release(self, batch_id: str) -> None:
        lines = self._open.pop(batch_id, None)
        if lines is not None:
            lines.close()

    def close(self) -> None:
        for lines in self._open.values():
            lines.close()
        self._open.clear()


def append(path: Path, lines: Iterable[bytes]) -> int:
    """Append encoded lines to a work file; returns its new size (the progress to save)."""
    with path.open("ab") as f:
        f.write(b"".join(lines))
        return f.tell()


def truncate(path: Path, size: int) -> None:
    """Cut a work file back to the size saved with the last progress (after a restart)."""
    if path.exists():
        with path.open("r+b") as f:
            f.truncate(size)
