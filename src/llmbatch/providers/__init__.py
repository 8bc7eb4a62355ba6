"""Provider registry: built-ins and plugins alike come through the `llmbatch.providers`
entry point group (see pyproject.toml), each naming a class that takes keyword settings."""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Any

from llmbatch.errors import ConfigError
from llmbatch.providers.base import BatchRef, BatchStatus, Intent, Limits, Provider, ResultFile

__all__ = [
    "BatchRef",
    "BatchStatus",
    "Intent",
    "Limits",
    "Provider",
    "ResultFile",
    "available",
    "make_provider",
]


@cache
def available() -> dict[str, Any]:
    """Provider name -> entry point, for every installed provider."""
    return {ep.name: ep for ep in entry_points(group="llmbatch.providers")}


def make_provider(name: str, **settings: Any) -> Provider:
    """An instance of the provider registered as `name`, configured with `settings`."""
    ep = available().get(name)
    if ep is None:
        known = ", ".join(sorted(available())) or "none installed"
        raise ConfigError(f"unknown provider {name!r} (known: {known})")
    try:
        provider: Provider = ep.load()(**settings)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        setting = str(exc).rsplit("argument ", 1)[-1]
        raise ConfigError(f"[providers.{name}] has no setting {setting}") from None
    return provider
