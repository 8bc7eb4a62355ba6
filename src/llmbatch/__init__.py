"""llmbatch: run non-urgent LLM requests through the providers' batch APIs at half price."""

from llmbatch.engine import Engine, EngineSettings, TickReport
from llmbatch.errors import (
    ConfigError,
    ConflictError,
    IllegalTransition,
    InputError,
    LlmbatchError,
    ProviderError,
    StoreError,
)
from llmbatch.estimate import Estimate, estimate_file, estimate_requests
from llmbatch.importer import ImportReport
from llmbatch.queue import Queue

__all__ = [
    "ConfigError",
    "ConflictError",
    "Engine",
    "EngineSettings",
    "Estimate",
    "IllegalTransition",
    "ImportReport",
    "InputError",
    "LlmbatchError",
    "ProviderError",
    "Queue",
    "StoreError",
    "TickReport",
    "estimate_file",
    "estimate_requests",
]
__version__ = "0.1.0"
