"""Settings from flags, `LLMBATCH_*` variables and a config file, in that order of precedence.

The config file is TOML: `llmbatch.toml` in the working directory, or the one named by
`--config` / `LLMBATCH_CONFIG`. Top-level keys are the global options (`db`,
`busy_timeout`); a table per command holds that command's options (`[enqueue] queue =
"reviews"`). Secrets are never values here: a provider names the variable that holds its key
(`api_key_env = "OPENAI_API_KEY"`).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from llmbatch import defaults
from llmbatch.errors import ConfigError

_SECRET_KEYS = ("api_key", "apikey", "key", "password", "secret", "token")


def config_path(explicit: str | None) -> Path | None:
    """The config file in force: --config, LLMBATCH_CONFIG, or ./llmbatch.toml if present."""
    named = explicit or os.environ.get("LLMBATCH_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        return path
    local = Path(defaults.CONFIG_FILE)
    return local if local.is_file() else None


def load_config(path: Path | None) -> dict[str, Any]:
    """Read and check a config file; {} when there is none."""
    if path is None:
        return {}
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    _refuse_secrets(data, path, "")
    return data


def _refuse_secrets(table: dict[str, Any], path: Path, prefix: str) -> None:
    for key, value in table.items():
        where = f"{prefix}{key}"
        if isinstance(value, dict):
            _refuse_secrets(value, path, where + ".")
        elif key.lower() in _SECRET_KEYS or key.lower().endswith(
            ("_api_key", "_password", "_secret")
        ):
            raise ConfigError(
                f"{path}: {where} holds a secret by value; name the environment variable that holds "
                f'it instead (for example api_key_env = "OPENAI_API_KEY")'
            )


Types = tuple[type, ...] | None  # the Python types an option's value may have; None: any


def check_keys(
    config: dict[str, Any], path: Path | None, options: dict[str, dict[str, Types]],
    tables: tuple[str, ...],
) -> None:  # fmt: skip
    """Refuse a key nothing reads, or a value of the wrong type, naming the file and key.

    `options` maps "" to the global options and each command to its options, each option
    to the Python types its value may have (None: any); `tables` are read elsewhere
    (`[engine]`, `[providers.*]`, ...)."""
    for key, value in config.items():
        name = key.replace("-", "_")
        if key in tables or (key in options and key):
            if not isinstance(value, dict):
                kind = type(value).__name__  # not the value: it may be a pasted secret
                raise ConfigError(f"{path}: {key} must be a table ([{key}]), got a {kind}")
            if key in options:
                _check_table(value, path, f"[{key}] ", options[key])
            continue
        _check_table({name: value}, path, "", options[""], commands=sorted(set(options) - {""}))


def _check_table(
    table: dict[str, Any], path: Path | None, where: str, known: dict[str, Types],
    commands: list[str] | None = None,
) -> None:  # fmt: skip
    for key, value in table.items():
        name = key.replace("-", "_")
        if name not in known:
            also = f"; or a table of a command: {', '.join(commands)}" if commands else ""
            raise ConfigError(
                f"{path}: {where}unknown key {key!r}; known: {', '.join(sorted(known))}{also}"
            )
        wanted = known[name]
        if wanted is not None and (
            not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted)
        ):
            kind = _KIND.get(wanted[-1], wanted[-1].__name__)
            raise ConfigError(f"{path}: {where}{key} must be {kind}, got {value!r}")


_KIND = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def click_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The config as click's `default_map`: options use underscores; tables are commands."""
    return {
        k.replace("-", "_"): click_defaults(v) if isinstance(v, dict) else v
        for k, v in config.items()
    }
