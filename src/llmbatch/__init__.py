"""llmbatch: run non-urgent LLM requests through the providers' batch APIs at half price."""

from llmbatch.errors import (
    ConfigError,
    ConflictError,
    IllegalTransition,
    InputError,
    LlmbatchError,
    ProviderError,
    StoreError,
)

__all__ = [
    "ConfigError",
    "ConflictError",
    "IllegalTransition",
    "InputError",
    "LlmbatchError",
    "ProviderError",
    "StoreError",
]
__version__ = "0.1.0"
