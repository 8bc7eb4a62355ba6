"""The SDK's heap, frozen: walked neither by every full collection nor at exit (issue 23).

An SDK's import leaves thousands of long-lived objects (`openai`'s generated types and their
pydantic schemas). Python's collector walks all of them in every full collection while a
job runs (~0.2 CPU s at 20,000 results) and again in its last collections at exit (~0.25
CPU s). So a transport is imported with the collector paused (nothing it makes is garbage)
and what is alive then is frozen (`gc.freeze`): it stays, as modules do, and is not walked
again. At exit the whole heap is frozen, after every `atexit` handler registered later has
run. Objects are still released by their reference counts; only cyclic garbage that was
alive at a freeze goes uncollected, which Python never promised to collect at exit."""

from __future__ import annotations

import atexit
import gc
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")
_registered: list[bool] = []


def freeze_at_exit() -> None:
    """Skip the interpreter's final collections in this process (once, however often asked)."""
    if not _registered:
        _registered.append(True)
        atexit.register(gc.freeze)


def load_frozen(load: Callable[[], T]) -> T:
    """`load()` (an import that brings an SDK) with the collector paused, then freeze what
    is alive, and the heap again at exit."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return load()
    finally:
        if enabled:
            gc.enable()
        gc.freeze()
        freeze_at_exit()
