"""The exception tree. Every error says what went wrong, where, and what to do.

The number after each is the exit code the `llmbatch` command gives it (`exit_code`; the
README's exit-code policy: 1 this invocation failed or refused something, 2 usage, 3 a
provider or the store could not be reached or used):

LlmbatchError                1
├── ConfigError              2  a setting, flag or config file is wrong
│   └── NotFound             2  a queue, batch or request named does not exist
├── StoreError               3  the database cannot be opened or used
│   ├── StoreUnavailable     3    it cannot be reached right now: a worker waits and reconnects
│   └── IllegalTransition    3    a state change the transition table forbids
├── InputError               1  enqueued lines are invalid (carries every FILE:LINE problem)
│   ├── ConflictError        1    a custom_id already holds a different request
│   └── NotBatchable         1    a client endpoint the batch APIs do not take (an AttributeError)
├── RequestFailed            1  a request ended without an answer to give back (a client's await)
│   ├── RequestExpired       1    its batches expired more times than the retry policy allows
│   ├── RequestCancelled     1    it, its batch or its queue was cancelled
│   └── BudgetHeld           1    a budget holds it; it is sent when the budget allows
├── WaitTimeout              1  a wait ran out of time (also a TimeoutError), saying why
└── ProviderError            3  a provider (or the emulator) refused or failed a call
    ├── AuthError            3    the key is missing, wrong or lacks permission: stop, fail nothing
    ├── TransientError       3    outage, 429, 5xx, timeout, truncated download: back off, retry
    └── RejectedError        1    the provider refused this call for good (400, 404, 409)
"""

from __future__ import annotations


class LlmbatchError(Exception):
    """Base of every error llmbatch raises on purpose; the CLI prints it as one line and
    exits with `exit_code`."""

    exit_code: int = 1


class ConfigError(LlmbatchError):
    """A setting, flag, environment variable or config file is wrong: nothing was done."""

    exit_code = 2


class NotFound(ConfigError):
    """A queue, batch or request the invocation names does not exist (a typo must not look
    like an empty success)."""


class StoreError(LlmbatchError):
    """The database cannot be opened, migrated or written."""

    exit_code = 3


class StoreUnavailable(StoreError):
    """The database cannot be reached right now (refused, restarted, connection dropped);
    what the failed call meant to write may or may not have been committed."""


class IllegalTransition(StoreError):
    """A state change that the transition table does not allow."""

    def __init__(self, kind: str, old: str, new: str) -> None:
        super().__init__(f"illegal {kind} transition {old!r} -> {new!r}")
        self.kind, self.old, self.new = kind, old, new


class InputError(LlmbatchError):
    """Enqueued input is invalid; `problems` holds every `FILE:LINE: reason` found."""

    def __init__(self, message: str, problems: list[str] | None = None, total: int = 0) -> None:
        self.problems = problems or []
        self.total = total or len(self.problems)
        super().__init__(message)

    def __str__(self) -> str:
        head = super().__str__()
        if not self.problems:
            return head
        lines = [head, *self.problems]
        if self.total > len(self.problems):
            lines.append(f"... and {self.total - len(self.problems)} more")
        return "\n".join(lines)


class ConflictError(InputError):
    """A custom_id is already in the queue with a different body."""


class RequestFailed(LlmbatchError):
    """A request a client waits for ended without a response to give back: nothing answered
    it (an expiry, a cancel, a budget, a request too large for any batch). A provider's HTTP
    error is raised as the SDK's own status error instead. Names the request."""

    def __init__(
        self, message: str, *, custom_id: str | None, queue: str, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.custom_id, self.queue, self.code = custom_id, queue, code


class RequestExpired(RequestFailed):
    """Its batches expired at the provider more times than the retry policy allows."""


class RequestCancelled(RequestFailed):
    """It was cancelled (`llmbatch cancel`, `Queue.cancel`), alone or with its batch or queue."""


class BudgetHeld(RequestFailed):
    """A budget holds it: it stays in the queue and is sent once the budget allows (a new
    day or month, a raised budget); wait on it again then."""


class WaitTimeout(LlmbatchError, TimeoutError):
    """A wait ran out of time; the message says where things stand (no worker running, the
    batch at the provider and its progress). Nothing was cancelled: wait again later."""


class NotBatchable(InputError, AttributeError):
    """A client attribute for an endpoint no batch API takes (`client.images`, `.stream`):
    an AttributeError, so `hasattr` stays honest, that says what is batchable."""


class ProviderError(LlmbatchError):
    """A provider call failed in a way the caller must hear about."""

    exit_code = 3


class AuthError(ProviderError):
    """The key is missing, wrong or lacks permission: stop the worker, fail nothing."""


class TransientError(ProviderError):
    """Worth retrying later: an outage, a rate limit, a timeout, a truncated download."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class RejectedError(ProviderError):
    """The provider refused this call for good; retrying the same call cannot help."""

    exit_code = 1
