"""Values handed from a child process of ours to its parent over the child's stdout: the
import's parser (importer.py) and a large batch's result reader (reading.py) each work on one
core while the parent records on the other.

A value goes as one frame: its length, then marshal (tuples of str, bytes, int, float and
None, written and read in about half pickle's time) or pickle for anything else, the first
byte saying which. The parent reads the frames in a thread a few ahead, so the child's work
and its own overlap. Both ends are the same interpreter, and what is unpickled is what our
own child wrote.
"""

from __future__ import annotations

import contextlib
import marshal
import pickle
import queue
import subprocess
import threading
from collections.abc import Iterator
from typing import IO, Any


def dumps(value: Any) -> bytes:
    """`value` as a frame's payload: marshal where it can, else pickle."""
    try:
        return b"M" + marshal.dumps(value)
    except ValueError:  # an object marshal does not write (a plugin's type, an exception)
        return b"P" + pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)


def loads(payload: bytes) -> Any:
    """The value `dumps` wrote."""
    data = memoryview(payload)[1:]
    return marshal.loads(data) if payload[:1] == b"M" else pickle.loads(data)


def send(out: IO[bytes], payload: bytes) -> None:
    """One frame: its length, then the payload."""
    out.write(len(payload).to_bytes(8, "little"))
    out.write(payload)


@contextlib.contextmanager
def frames(proc: subprocess.Popen[bytes], ahead: int, name: str) -> Iterator[Iterator[bytes]]:
    """The payloads of the child's frames, read by a thread up to `ahead` frames before they
    are taken, until its stdout ends. On leaving, a child still running is killed and the
    thread let go (it may wait on a full hand-off)."""
    stdout = proc.stdout
    assert stdout is not None
    ready: queue.Queue[bytes | None] = queue.Queue(maxsize=ahead)

    def reader() -> None:
        try:
            while len(head := stdout.read(8)) == 8:
                ready.put(stdout.read(int.from_bytes(head, "little")))
        finally:
            ready.put(None)

    def payloads() -> Iterator[bytes]:
        while (payload := ready.get()) is not None:
            yield payload

    thread = threading.Thread(target=reader, name=name, daemon=True)
    thread.start()
    try:
        yield payloads()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        while thread.is_alive():
            with contextlib.suppress(queue.Empty):
                ready.get(timeout=0.1)
