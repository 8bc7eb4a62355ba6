"""The SDK's heap, frozen: walked neither by every full collection nor at exit (issue 23).

An SDK's import leaves thousands of long-lived objects (`openai`'s generated types and their
pydantic schemas). Python's collector walks all of them in every full collection while a
job runs (~0.2 CPU s at 20,000 results) and again in its last collections at exit (~0.25
CPU s). So a transport is imported with the collector paused (nothing it makes is garbage)
and, in a process llmbatch owns (`own_process`: every CLI command, `llmbatch worker` among
them), what is alive then is frozen (`gc.freeze`): it stays, as modules do, and is not
walked again; at exit the whole heap is frozen, after every `atexit` handler registered
later has run. Objects are still released by their reference counts; only cyclic garbage
that was alive at a freeze goes uncollected, which Python never promised to collect at exit.
In a program that imports the library nothing is frozen: whatever of the host's was alive
at a freeze would never be collected if it later became cyclic garbage."""

from __future__ import annotations

import atexit
import gc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_owned: list[bool] = []


def own_process() -> None:
    """This process is llmbatch's (a CLI command): freeze what loads, and the heap at exit."""
    if not _owned:
        _owned.append(True)
        atexit.register(gc.freeze)


def load_frozen(load: Callable[[], T]) -> T:
    """`load()` (an import that brings an SDK) with the collector paused, then, in a process
    llmbatch owns, freeze what is alive."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return load()
    finally:
        if enabled:
            gc.enable()
        if _owned:
            gc.freeze()
