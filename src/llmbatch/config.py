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
from urllib.parse import parse_qs, urlsplit

import click

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
        if key == "db" and isinstance(value, str) and _dsn_password(value):
            raise ConfigError(
                f"{path}: {where} holds a PostgreSQL password; keep it out of the config file: "
                "set PGPASSWORD, use ~/.pgpass, or put the whole DSN in the LLMBATCH_DB "
                "environment variable"
            )
        if isinstance(value, dict):
            _refuse_secrets(value, path, where + ".")
        elif key.lower() in _SECRET_KEYS or key.lower().endswith(
            ("_api_key", "_password", "_secret", "_access_key", "_secret_key")
        ):
            raise ConfigError(
                f"{path}: {where} holds a secret by value; name the environment variable that holds "
                f'it instead (for example api_key_env = "OPENAI_API_KEY")'
            )


def _dsn_password(db: str) -> bool:
    """Whether a postgresql:// URL carries a password (as user:password@ or ?password=)."""
    if not db.startswith(("postgresql://", "postgres://")):
        return False
    try:
        parts = urlsplit(db)
        return bool(parts.password) or "password" in {k.lower() for k in parse_qs(parts.query)}
    except ValueError:
        return ":" in db.split("://", 1)[1].split("@", 1)[0] and "@" in db


Types = tuple[type, ...] | None  # the Python types an option's value may have; None: any

_PY_TYPES: dict[type[Any], tuple[type, ...]] = {
    click.types.StringParamType: (str,),
    click.Choice: (str,),
    click.Path: (str,),
    click.types.IntParamType: (int,),
    click.IntRange: (int,),
    click.types.FloatParamType: (int, float),
    click.FloatRange: (int, float),
    click.types.BoolParamType: (bool,),
}
_KIND = {str: "a string", int: "an integer", float: "a number", bool: "true or false"}


def default_map(
    config: dict[str, Any], path: Path | None, group: click.Group, tables: tuple[str, ...]
) -> dict[str, Any]:
    """The config file as click's `default_map`, once every key is checked: top-level keys
    are the group's options, a table per command holds its options (by flag or parameter
    name, `-` or `_`), and `tables` (`[engine]`, `[providers.*]`, ...) are read elsewhere."""
    options = {"": _types(group)} | {name: _types(c) for name, c in group.commands.items()}
    check_keys(config, path, options, tables)
    out: dict[str, Any] = {}
    top = _names(group)
    for key, value in config.items():
        key = key.replace("-", "_")
        if key in tables:
            continue
        command = group.commands.get(key)
        if command is not None:
            names = _names(command)
            out[key] = {names[k.replace("-", "_")]: v for k, v in value.items()}
        else:
            out[top[key]] = value
    return out


def _names(command: click.Command) -> dict[str, str]:
    """Config key -> parameter name: an option is set by its flag (`format` for `--format`)
    or by its parameter name (`fmt`)."""
    names = {}
    for p in command.params:
        if p.name and p.expose_value:
            names[p.name] = p.name
            for opt in p.opts:
                if opt.startswith("--"):
                    names[opt[2:].replace("-", "_")] = p.name
    return names


def _types(command: click.Command) -> dict[str, Types]:
    """What the config file may set for a command: config key -> the TOML value types."""
    params = {p.name: p for p in command.params}
    return {
        key: None if params[name].multiple else _py_types(params[name].type)
        for key, name in _names(command).items()
    }


def _py_types(kind: click.ParamType[Any]) -> Types:
    """The TOML value types a click type takes (a subclass, such as cli's Int64, as its base)."""
    for cls in type(kind).__mro__:
        if cls in _PY_TYPES:
            return _PY_TYPES[cls]
    return None


def check_keys(
    config: dict[str, Any],
    path: Path | None,
    options: dict[str, dict[str, Types]],
    tables: tuple[str, ...],
) -> None:
    """Refuse a key nothing reads, or a value of the wrong type, naming the file and key.

    `options` maps "" to the global options and each command to its options, each option
    to the Python types its value may have (None: any); `tables` are read elsewhere."""
    for key, value in config.items():
        name = key.replace("-", "_")
        if name in tables or (name in options and name):
            if not isinstance(value, dict):
                kind = type(value).__name__  # not the value: it may be a pasted secret
                raise ConfigError(f"{path}: {key} must be a table ([{key}]), got a {kind}")
            if name in options:
                _check_table(value, path, f"[{key}] ", options[name])
            continue
        _check_table({key: value}, path, "", options[""], commands=sorted(set(options) - {""}))


def _check_table(
    table: dict[str, Any],
    path: Path | None,
    where: str,
    known: dict[str, Types],
    commands: list[str] | None = None,
) -> None:
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
