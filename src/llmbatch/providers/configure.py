"""A `[providers.NAME]` table read into the provider registry: checked like any provider's,
and, for the `openai-compatible` kind, turned into the plugin of its service. A table with
`kind` and a name nobody registered declares a service; a shipped service's table changes
its values. Kept apart from the registry (providers/__init__.py), which imports no provider.
The shipped services' table (compatible.py, ~5 ms to import) is imported only for a table of
that kind or a provider of it: every command checks the config, most name no such service.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from llmbatch.errors import ConfigError
from llmbatch.providers import check_keys, check_settings, names, plugin, register

if TYPE_CHECKING:
    from llmbatch.providers.plugin import Plugin

COMPATIBLE = "llmbatch.providers.compatible"


def check_providers(tables: Any) -> None:
    """Every `[providers.NAME]` table checked (`check_table`), the error naming its table: an
    unknown provider, key or type is a ConfigError up front, not ignored. Every command runs
    this on the config, without the engine."""
    for name, options in dict(tables or {}).items():
        try:
            check_table(name, options)
        except ConfigError as exc:
            text = str(exc)
            raise ConfigError(
                text if text.startswith(f"[providers.{name}]") else f"[providers.{name}]: {text}"
            ) from None


def declare(name: str, options: Any = None) -> Plugin:
    """Register (or configure again) the OpenAI-compatible service `name` from its table;
    ConfigError in one line when the table is wrong."""
    from llmbatch.providers.compatible import plugin_for

    got = plugin_for(name, options)
    register(name, got)
    return got


def check_table(name: str, options: Any) -> None:
    """Check a `[providers.NAME]` table and bring the registry in line with it."""
    if isinstance(options, dict) and name not in names() and "kind" in options:
        from llmbatch.providers.compatible import KIND, CompatibleSettings

        if options["kind"] != KIND:
            raise ConfigError(
                f"[providers.{name}] kind {options['kind']!r} is not known; the one kind is "
                f"{KIND!r}"
            )
        check_keys(name, options, CompatibleSettings)
        declare(name, options)
        return
    check_settings(name, options)
    # a format of that kind was made by its module, so the module is loaded if it is one
    compatible = sys.modules.get(COMPATIBLE)
    if compatible is not None and isinstance(plugin(name).format, compatible.CompatibleFormat):
        declare(name, options)  # its format follows the table (endpoints, limits)
