"""Provider registry: built-ins and plugins alike come through the `llmbatch.providers`
entry point group (see pyproject.toml), each naming a `Plugin` (plugin.py): a format, a
transport class and its settings. `names()` reads the group without importing anything;
`plugin()` and `format_of()` import plugins on first use and say in one line which one broke."""

from __future__ import annotations

import traceback
from functools import cache
from typing import TYPE_CHECKING, Any

from llmbatch.errors import ConfigError
from llmbatch.providers.base import BatchRef, BatchStatus, Intent, Limits, Provider, ResultFile
from llmbatch.providers.plugin import Format, Plugin

if TYPE_CHECKING:
    from importlib.metadata import EntryPoint

__all__ = [
    "BatchRef",
    "BatchStatus",
    "Format",
    "Intent",
    "Limits",
    "Plugin",
    "Provider",
    "ResultFile",
    "available",
    "describe",
    "format_of",
    "format_or_base",
    "formats",
    "make_provider",
    "names",
    "plugin",
]

GROUP = "llmbatch.providers"


@cache
def available() -> dict[str, EntryPoint]:
    """Provider name -> entry point, for every installed provider (nothing imported)."""
    from importlib.metadata import entry_points  # ~15 ms: only when a provider is named

    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=GROUP):
        found.setdefault(ep.name, ep)
    return found


# Services declared by a `[providers.NAME] kind = "openai-compatible"` table (configure.py).
_declared: set[str] = set()


def names() -> list[str]:
    """Every registered provider's name (and every declared service's), sorted."""
    return sorted(set(available()) | _declared)


def unknown(name: str) -> ConfigError:
    """The error for a provider name nobody registered."""
    known = ", ".join(names()) or "none installed"
    return ConfigError(
        f"unknown provider {name!r} (known: {known}); install its plugin package or use one of those"
    )


_plugins: dict[str, Plugin] = {}


def register(name: str, got: Plugin) -> None:
    """Put a plugin made from a config table in the registry as `name` (a service declared
    in llmbatch.toml, or a shipped one configured by its table; see configure.py)."""
    _plugins[name] = got
    if name not in available():
        _declared.add(name)


def plugin(name: str) -> Plugin:
    """The plugin registered as `name`, imported on first use (ConfigError if unknown or broken)."""
    got = _plugins.get(name)
    if got is not None:
        return got
    ep = available().get(name)
    if ep is None:
        raise unknown(name)
    got = _plugins[name] = _import(name, ep)
    return got


def _import(name: str, ep: EntryPoint) -> Plugin:
    where = f"entry point {GROUP}:{name} = {ep.value!r}"
    if ep.dist is not None:
        where += f" (package {ep.dist.name})"
    try:
        obj = ep.load()
    except Exception as exc:
        frames = traceback.extract_tb(exc.__traceback__)
        at = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
        raise ConfigError(
            f"provider {name!r} failed to import{at}: {type(exc).__name__}: {exc} — {where}; "
            "fix or reinstall that package, or uninstall it"
        ) from None
    # An entry point may name the Plugin, or a transport class that carries one as `plugin`.
    got = obj if isinstance(obj, Plugin) else getattr(obj, "plugin", None)
    if not isinstance(got, Plugin):
        raise ConfigError(
            f"provider {name!r}: {where} names {obj!r}, not an llmbatch Plugin; "
            "see docs/providers.md for what to register"
        )
    if got.name != name:
        raise ConfigError(
            f"provider {name!r}: {where} names the plugin of {got.name!r}; "
            f"register it as {got.name!r} or set its format's name to {name!r}"
        )
    return got


def format_of(name: str) -> Format:
    """The format of the provider registered as `name` (ConfigError if unknown or broken)."""
    got = _plugins.get(name)
    return got.format if got is not None else plugin(name).format


BASE_FORMAT = Format()


def format_or_base(name: str) -> Format:
    """A stored row's provider format; a provider no longer installed (or broken) reads as
    the base format, so its rows still show and export with what every format has."""
    try:
        return format_of(name)
    except ConfigError:
        return BASE_FORMAT


def formats() -> list[Format]:
    """Every registered provider's format that imports (each plugin once). One that fails to
    import is left out here and says why when it is asked for by name."""
    found = []
    for n in names():
        try:
            found.append(plugin(n).format)
        except ConfigError:
            continue
    return found


@cache
def claimants() -> tuple[Format, ...]:
    """Formats that claim lines in a shape of their own (`Format.claims`), deduplicated."""
    seen: dict[int, Format] = {}
    for f in formats():
        if type(f).claims is not Format.claims:
            seen.setdefault(id(type(f)), f)
    return tuple(seen.values())


def for_endpoint(endpoint: str) -> list[str]:
    """Names of the providers that batch `endpoint`."""
    return [n for n in names() if endpoint in plugin(n).format.endpoints]


def check_settings(name: str, options: Any) -> None:
    """A `[providers.NAME]` table: a known provider, a table, known keys of the right type,
    values its format accepts (`Format.check_options`)."""
    got = plugin(name)
    if not isinstance(options, dict):
        # not the value: a key pasted in the wrong place must not be echoed
        raise ConfigError(f"[providers.{name}] must be a table, got a {type(options).__name__}")
    cls = got.settings_class()
    if cls is not None:
        check_keys(name, options, cls)
    got.format.check_options(name, options)


def check_keys(name: str, options: dict[str, Any], cls: type) -> None:
    """The keys of a `[providers.NAME]` table are `cls`'s fields, each of its type (its typed
    model, llmbatch.settings)."""
    import dataclasses

    from llmbatch.settings import check_dataclass

    fields = ", ".join(f.name for f in dataclasses.fields(cls))
    where = f"[providers.{name}]"

    def unknown(key: str) -> str:
        return f"{where} has no setting {key!r}; its settings: {fields}"

    check_dataclass(options, cls, f"{where} ", unknown)


def describe(name: str) -> dict[str, Any]:
    """What `llmbatch providers` shows of one provider: its package, endpoints and the keys of
    its `[providers.NAME]` table with their defaults (or why it does not load)."""
    import dataclasses

    ep = available().get(name)
    package = (ep.dist.name if ep.dist else None) if ep is not None else "llmbatch.toml"
    out: dict[str, Any] = {"name": name, "package": package}
    try:
        got = plugin(name)
        cls = got.settings_class()
    except (ConfigError, ImportError) as exc:
        return {**out, "error": str(exc)}
    out["label"] = got.format.label or name
    out["endpoints"] = sorted(got.format.endpoints)
    settings: dict[str, Any] = {}
    for f in dataclasses.fields(cls) if cls is not None else ():
        if f.default is not dataclasses.MISSING:
            settings[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            settings[f.name] = f.default_factory()
        else:
            settings[f.name] = None
    service = getattr(got.format, "service", None)
    if service is not None:  # an OpenAI-compatible service: its own values, not None
        values = dataclasses.asdict(service)
        settings.update(
            {k: list(v) if isinstance(v, tuple) else v for k, v in values.items() if k in settings}
        )
        out["unconfirmed"] = list(service.unconfirmed)
    out["settings"] = settings
    return out


def make_provider(name: str, **settings: Any) -> Provider:
    """An instance of the provider registered as `name`, configured with `settings`."""
    cls = plugin(name).transport_class()
    try:
        provider: Provider = cls(**settings)
    except TypeError as exc:
        if "unexpected keyword argument" not in str(exc):
            raise
        setting = str(exc).rsplit("argument ", 1)[-1]
        raise ConfigError(f"[providers.{name}] has no setting {setting}") from None
    return provider
