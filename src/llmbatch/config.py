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


Types = type | None  # the Python type of an option's value (str, int, float, bool); None: any

_PY_TYPES: dict[type[Any], type] = {
    click.types.StringParamType: str,
    click.Choice: str,
    click.Path: str,
    click.types.IntParamType: int,
    click.IntRange: int,
    click.types.FloatParamType: float,
    click.FloatRange: float,
    click.types.BoolParamType: bool,
}


def default_map(
    config: dict[str, Any], path: Path | None, group: click.Group, tables: tuple[str, ...]
) -> dict[str, Any]:
    """The config file as click's `default_map`, once every key is checked: top-level keys
    are the group's options, a table per command holds its options (by flag or parameter
    name, `-` or `_`), and `tables` (`[engine]`, `[providers.*]`, ...) are read elsewhere."""
    if not config:
        return {}
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
    """What the config file may set for a command: config key -> the TOML value's type."""
    params = {p.name: p for p in command.params}
    return {
        key: None if params[name].multiple else _py_type(params[name].type)
        for key, name in _names(command).items()
    }


def _py_type(kind: click.ParamType[Any]) -> Types:
    """The TOML value type a click type takes (a subclass, such as cli's Int64, as its base)."""
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
    """Refuse a key nothing reads, or a value of the wrong type, naming the file and key: the
    file's top level and each command's table against their typed models (llmbatch.settings,
    made from the commands' options).

    `options` maps "" to the global options and each command to its options, each option
    to the Python type of its value (None: any); `tables` are read elsewhere."""
    from llmbatch.settings import TABLE

    commands = sorted(set(options) - {""})
    top = {name: TABLE for name in (*tables, *commands)}
    also = f"; or a table of a command: {', '.join(commands)}"
    _check_table(config, f"{path}: ", options[""], also, extra=top)
    for key, value in config.items():
        name = key.replace("-", "_")
        if name in commands:
            _check_table(value, f"{path}: [{key}] ", options[name], "")


def _check_table(
    table: dict[str, Any],
    where: str,
    known: dict[str, Types],
    also: str,
    extra: dict[str, Any] | None = None,
) -> None:
    """One table of the file (its keys `-` or `_`) against its options' types."""
    from llmbatch.settings import ANY, SCALARS, check

    def kind(name: str) -> Any:
        if extra and name in extra:
            return extra[name]
        wanted = known[name]
        return ANY if wanted is None else SCALARS[wanted]

    kinds = {}
    for key in table:
        name = key.replace("-", "_")
        if name in known or (extra and name in extra):
            kinds[key] = kind(name)

    def unknown(key: str) -> str:
        return f"{where}unknown key {key!r}; known: {', '.join(sorted(known))}{also}"

    check(table, kinds, where, unknown)
