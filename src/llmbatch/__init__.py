"""llmbatch: run non-urgent LLM requests through the providers' batch APIs at half price.

Two doors: `AsyncBatchClient` / `BatchClient`, shaped like the official SDK clients, for
application code; `Queue` for lines you enqueue, run and read yourself.
"""

import typing as _typing

if _typing.TYPE_CHECKING:
    from llmbatch.blocking import BatchClient, CallHandle
    from llmbatch.budget import Budget, BudgetSettings
    from llmbatch.client import AsyncBatchClient, PendingCall
    from llmbatch.engine import Engine, EngineSettings, TickReport
    from llmbatch.errors import (
        BudgetHeld,
        ConfigError,
        ConflictError,
        IllegalTransition,
        InputError,
        LlmbatchError,
        NotBatchable,
        NotFound,
        ProviderError,
        RequestCancelled,
        RequestExpired,
        RequestFailed,
        StoreError,
        WaitTimeout,
    )
    from llmbatch.estimate import Estimate, estimate_file, estimate_requests
    from llmbatch.export import Result
    from llmbatch.importer import ImportReport
    from llmbatch.queue import Cancelled, Queue, RequestHandle, Waited
    from llmbatch.report import ReportLine
    from llmbatch.retry import RetryPolicy

# Each name is imported on first use (PEP 562), so `import llmbatch` and every `llmbatch`
# command start without the engine, the price data or an SDK they do not need.
_WHERE = {
    "AsyncBatchClient": "llmbatch.client",
    "BatchClient": "llmbatch.blocking",
    "Budget": "llmbatch.budget",
    "BudgetHeld": "llmbatch.errors",
    "BudgetSettings": "llmbatch.budget",
    "CallHandle": "llmbatch.blocking",
    "Cancelled": "llmbatch.queue",
    "ConfigError": "llmbatch.errors",
    "ConflictError": "llmbatch.errors",
    "Engine": "llmbatch.engine",
    "EngineSettings": "llmbatch.engine",
    "Estimate": "llmbatch.estimate",
    "IllegalTransition": "llmbatch.errors",
    "ImportReport": "llmbatch.importer",
    "InputError": "llmbatch.errors",
    "LlmbatchError": "llmbatch.errors",
    "NotBatchable": "llmbatch.errors",
    "NotFound": "llmbatch.errors",
    "PendingCall": "llmbatch.client",
    "ProviderError": "llmbatch.errors",
    "Queue": "llmbatch.queue",
    "ReportLine": "llmbatch.report",
    "RequestCancelled": "llmbatch.errors",
    "RequestExpired": "llmbatch.errors",
    "RequestFailed": "llmbatch.errors",
    "RequestHandle": "llmbatch.queue",
    "Result": "llmbatch.export",
    "RetryPolicy": "llmbatch.retry",
    "StoreError": "llmbatch.errors",
    "TickReport": "llmbatch.engine",
    "WaitTimeout": "llmbatch.errors",
    "Waited": "llmbatch.queue",
    "estimate_file": "llmbatch.estimate",
    "estimate_requests": "llmbatch.estimate",
}

__all__ = [
    "AsyncBatchClient",
    "BatchClient",
    "Budget",
    "BudgetHeld",
    "BudgetSettings",
    "CallHandle",
    "Cancelled",
    "ConfigError",
    "ConflictError",
    "Engine",
    "EngineSettings",
    "Estimate",
    "IllegalTransition",
    "ImportReport",
    "InputError",
    "LlmbatchError",
    "NotBatchable",
    "NotFound",
    "PendingCall",
    "ProviderError",
    "Queue",
    "ReportLine",
    "RequestCancelled",
    "RequestExpired",
    "RequestFailed",
    "RequestHandle",
    "Result",
    "RetryPolicy",
    "StoreError",
    "TickReport",
    "WaitTimeout",
    "Waited",
    "estimate_file",
    "estimate_requests",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> _typing.Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'llmbatch' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
