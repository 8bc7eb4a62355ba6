"""A create is sent only within its send window after it was journaled (every HTTP provider).

A worker frozen (SIGSTOP, a GC pause, a starved core) after journaling a create and checking
its lease, but before the create's bytes leave, must not send it when it wakes: meanwhile a
standby may have taken the lease over, waited out the create's timeout and the settle window
from the journal's stamp, found nothing in a lagging list, and created the batch itself. The
crash matrix's pauses did exactly that (twice in 100 on a Gemini queue, once in 100 on an
OpenAI one). The window, and the clock it is judged by, are the engine's (`Journal.sending`);
this module only puts that check right before each create's request leaves:

- every provider's HTTP client carries `before_send` as an httpx request hook (`hooks()`);
- a provider sends its create inside `creating(journal)`, which journals it and makes the
  hook ask that journal, right before the request is sent, whether it still may be.

Outside `creating`, the hook does nothing. The journal in force is a context variable, so
another thread using the same client (a poll, a download) is never held to a create's window.
What is left is the hook-to-socket instant: a connection being made, the headers written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from llmbatch.providers.base import Journal


class _Create:
    """The create in progress in this context, and the refusal its journal gave, if any."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal
        self.refused: Exception | None = None


_creating: ContextVar[_Create | None] = ContextVar("llmbatch_creating", default=None)


def before_send(request: Any) -> None:
    """The httpx request hook: inside `creating`, the journal refuses a late create."""
    create = _creating.get()
    if create is None:
        return
    try:
        create.journal.sending()
    except Exception as exc:
        create.refused = exc
        raise


def hooks() -> dict[str, list[Callable[[Any], None]]]:
    """`event_hooks` for an httpx (httpx2) client: `before_send` on every request."""
    return {"request": [before_send]}


@contextmanager
def creating(journal: Journal) -> Iterator[None]:
    """Journal a create, then hold the requests sent inside the block to its send window.
    A refusal comes out as the journal raised it, whatever the SDK wrapped it in (the
    Anthropic SDK makes any error in a hook a connection error)."""
    journal.creating()
    create = _Create(journal)
    token = _creating.set(create)
    try:
        yield
    except Exception:
        if create.refused is not None:
            raise create.refused from None
        raise
    finally:
        _creating.reset(token)
