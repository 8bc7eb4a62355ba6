"""llmbatch: run non-urgent LLM requests through the providers' batch APIs at half price.

Two doors: `AsyncBatchClient` / `BatchClient`, shaped like the official SDK clients, for
application code; `Queue` for lines you enqueue, run and read yourself.
"""

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
