"""A process that loaded an SDK exits without walking it again (issue 23).

As the interpreter exits it collects garbage over every object still alive; with an SDK's
thousands of generated classes loaded (`openai`'s types and their pydantic schemas) those
walks cost ~0.25 CPU s, a fifth of a 5,000-request job. Freezing the heap at exit (after
every `atexit` handler registered later has run) skips them. Objects are still released by
their reference counts; only cyclic garbage left at exit goes uncollected, which Python never
promised to collect (and which `gc.disable()` leaves the same way)."""

from __future__ import annotations

import atexit
import gc

_registered: list[bool] = []


def freeze_at_exit() -> None:
    """Skip the interpreter's final collections in this process (once, however often asked)."""
    if not _registered:
        _registered.append(True)
        atexit.register(gc.freeze)
