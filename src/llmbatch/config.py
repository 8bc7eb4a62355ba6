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


def click_defaults(config: dict[str, Any]) -> dict[str, Any]:
    """The config as click's `default_map`: options use underscores; tables are commands."""
    return {
        k.replace("-", "_"): click_defaults(v) if isinstance(v, dict) else v
        for k, v in config.items()
    }
