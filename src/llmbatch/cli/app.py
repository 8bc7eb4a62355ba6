"""The `llmbatch` command: parse, call the library, print. No logic of its own.

Exit codes describe this invocation, the highest that applies (README, "Exit codes"):
0 done; 1 this invocation failed requests, refused input, or did not finish (a budget holds
the rest, a timeout); 2 usage — an option, a setting or a name (queue, batch, request,
database) is wrong and nothing was done; 3 a provider or the store could not be reached or
used. `run` never exits 1 for failures that were already in the store.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from click.core import ParameterSource

from llmbatch import __version__, defaults, render
from llmbatch.config import config_path, default_map, load_config
from llmbatch.errors import ConfigError, LlmbatchError, NotFound
from llmbatch.heap import own_process

if TYPE_CHECKING:
    from llmbatch.engine import Engine
    from llmbatch.store.base import Store
    from llmbatch.store.types import Count

ENGINE_TABLES = ("engine", "providers", "quotas", "budgets", "archive", "webhooks")
SECONDS = click.FloatRange(min=0, min_open=True)  # an interval: 0 would spin
OK, FAILED, USAGE, UNREACHABLE = 0, 1, 2, 3
F = TypeVar("F", bound=Callable[..., Any])


class ProviderName(click.Choice[str]):
    """`--provider`: the registered providers (`llmbatch.providers` entry points), read when
    the option is first checked or shown, so a plugin package adds its name here too."""

    def __init__(self) -> None:
        super().__init__((), case_sensitive=True)

    @property
    def choices(self) -> tuple[str, ...]:
        from llmbatch.providers import names

        return tuple(names())

    @choices.setter
    def choices(self, value: object) -> None:
        pass  # click sets it in __init__; the registry is the source


class Int64(click.IntRange):
    """What both stores hold (a 64-bit integer); said in words, not as 19-digit bounds."""

    def __init__(self) -> None:
        super().__init__(-(2**63), 2**63 - 1)

    def _describe_range(self) -> str:
        return "64-bit"


class Cli(click.Group):
    """Turns every LlmbatchError into one clear line and its exit code (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
        own_process()  # a command's process is ours: its SDKs' heap frozen, and all at exit
        try:
            return super().invoke(ctx)
        except LlmbatchError as exc:
            _fail(ctx, exc)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            sys.exit(130)


def _fail(ctx: click.Context, exc: LlmbatchError) -> NoReturn:
    if (ctx.obj or {}).get("debug"):
        traceback.print_exc()
    click.echo(f"error: {exc}", err=True)
    sys.exit(exc.exit_code)


def _load_defaults(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Read and check the config file before the other options, so it supplies their
    defaults; its engine tables are checked here too, so every command refuses a typo (the
    engine is imported only when a table other than `[providers.*]` is there to check: a
    command starts without it)."""
    try:
        path = config_path(value)
        config = load_config(path)
        assert isinstance(ctx.command, click.Group)
        ctx.default_map = default_map(config, path, ctx.command, ENGINE_TABLES)
        where = f"{path}: " if path else ""
        tables = [table for table in ENGINE_TABLES if table in config]
        try:
            if tables == ["providers"]:  # the usual config: checked without the engine
                from llmbatch.providers.configure import check_providers

                check_providers(config["providers"])
            elif tables:
                from llmbatch.worker import engine_settings

                engine_settings(config)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None
        ctx.meta["llmbatch.config"] = config
    except ConfigError as exc:
        raise BadConfig(str(exc)) from None
    return value


class BadConfig(click.ClickException):
    """A config file or setting is wrong: one `error:` line, like every other error, and the
    usage exit code (nothing was done)."""

    exit_code = 2

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    metavar="FILE",
    envvar="LLMBATCH_CONFIG",
    is_eager=True,
    expose_value=False,
    callback=_load_defaults,
    help="Config file (default: ./llmbatch.toml if present).",
)
@click.option(
    "--db",
    envvar="LLMBATCH_DB",
    metavar="DB",
    help="A path, sqlite:///PATH or postgresql://… (default ./llmbatch.db).",
)
@click.option(
    "--busy-timeout",
    type=click.FloatRange(min=0),
    default=defaults.BUSY_TIMEOUT_S,
    envvar="LLMBATCH_BUSY_TIMEOUT",
    show_default=True,
    help="Seconds to wait for a locked SQLite file.",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    default="text",
    envvar="LLMBATCH_LOG_FORMAT",
    show_default=True,
    help="Log lines of run and worker: timestamped text, or one JSON object a line.",
)
@click.option("--debug", is_flag=True, envvar="LLMBATCH_DEBUG", help="Show tracebacks.")
# the version written in the package, not read from its metadata: importlib.metadata alone
# costs `--version` a fifth of its time (a test checks the two agree)
@click.version_option(__version__, prog_name="llmbatch")
@click.pass_context
def main(
    ctx: click.Context, db: str | None, busy_timeout: float, log_format: str, debug: bool
) -> None:
    """Run LLM requests through the providers' batch APIs at half price.

    Enqueue JSONL batch input files, let llmbatch pack, submit, poll and ingest them, and read
    every result back. Every option also reads an LLMBATCH_* variable and llmbatch.toml.

    Exit codes: 0 done; 1 requests failed, input was refused or the work did not finish; 2 a
    usage error (an option, setting or name is wrong; nothing was done); 3 a provider or the
    store could not be reached.
    """
    # argv is readable by every local user (ps, /proc/PID/cmdline) for the whole run; said once
    # the store is open, so a failure stays one line
    warn = (
        bool(db)
        and ctx.get_parameter_source("db") == ParameterSource.COMMANDLINE
        and _has_password(db or "")
    )
    ctx.obj = {
        "db": db,
        "busy_timeout": busy_timeout,
        "debug": debug,
        "warn_password": warn,
        "log_format": log_format,
    }


def _has_password(db: str) -> bool:
    if not db.startswith(("postgresql://", "postgres://")):
        return False
    import psycopg

    try:
        return bool(psycopg.conninfo.conninfo_to_dict(db).get("password"))
    except psycopg.ProgrammingError:
        return False


def open_db(ctx: click.Context, *, create: bool = False) -> Store:
    """The store `--db` names. Only commands that add work (`enqueue`, `worker`) create one:
    for the others a misspelt path is an error, not a new empty database."""
    from llmbatch.store import open_store

    obj = ctx.find_root().obj
    store = open_store(obj["db"], busy_timeout=obj["busy_timeout"], create=create)
    if obj.pop("warn_password", False):
        click.echo(
            "warning: the --db DSN carries a password on the command line, where `ps` shows it; "
            "set LLMBATCH_DB instead, or keep the password in PGPASSWORD or ~/.pgpass",
            err=True,
        )
    ctx.call_on_close(store.close)
    return store


def check_queue(store: Store, queue: str | None, *, purged_ok: bool = False) -> None:
    """A queue named by -q must exist (a typo must not print an empty, successful answer)."""
    if queue is None or store.has_requests(queue):
        return  # the usual case, one index probe: `queues` counts every request of every queue
    queues = store.queues()
    names = [q.name for q in queues if q.total or purged_ok]
    if queue not in names and any(q.name == queue for q in queues):
        raise NotFound(
            f"queue {queue!r} was purged: its requests and results are gone; its costs remain "
            "in `llmbatch report`"
        )
    if queue not in names:
        import difflib

        near = difflib.get_close_matches(queue, names, n=1)
        hint = f"; did you mean {near[0]!r}?" if near else ""
        known = f" (queues: {', '.join(names)})" if names and len(names) <= 10 else ""
        raise NotFound(f"no queue {queue!r} in {store.location}{hint}{known}")


def parse_deadline(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-11-27T06:00Z"
        ) from None


def listing_options(*formats: str, env: str = "LLMBATCH_FORMAT") -> Callable[[F], F]:
    """--format (table, json, csv) and --wide, for a command that prints a listing."""

    def deco(f: F) -> F:
        f = click.option(
            "--wide",
            is_flag=True,
            envvar="LLMBATCH_WIDE",
            help="Every column, however wide (a table leaves some out to fit the terminal).",
        )(f)
        return click.option(
            "--format",
            "fmt",
            type=click.Choice(list(formats or render.FORMATS)),
            default="table",
            show_default=True,
            envvar=env,
        )(f)

    return deco


def queue_option(help: str = "Only this queue.") -> Callable[[F], F]:
    return click.option("--queue", "-q", envvar="LLMBATCH_QUEUE", help=help)


def serve_queues_option() -> Callable[[F], F]:
    """`--queue Q` (repeatable): the engine packs, submits, polls and ingests only the work of
    these queues; other workers share the rest (docs/deploy.md)."""
    return click.option(
        "--queue",
        "-q",
        "queues",
        multiple=True,
        envvar="LLMBATCH_QUEUES",
        help="Serve only this queue (repeatable; default: every queue). Workers on one store "
        "share the work: see docs/deploy.md.",
    )


def budget_options(f: Any) -> Any:
    """--budget-usd, --budget-period and --allow-unpriced (see llmbatch.budget)."""
    f = click.option(
        "--allow-unpriced",
        is_flag=True,
        default=None,
        envvar="LLMBATCH_ALLOW_UNPRICED",
        help="Let models without a price spend under a budget (uncounted).",
    )(f)
    f = click.option(
        "--budget-period",
        type=click.Choice(["day", "month"]),
        default=defaults.BUDGET_PERIOD,
        envvar="LLMBATCH_BUDGET_PERIOD",
        show_default=True,
        help="The UTC period of --budget-usd.",
    )(f)
    return click.option(
        "--budget-usd",
        metavar="USD",
        envvar="LLMBATCH_BUDGET_USD",
        help="Hard cap on batch spend per --budget-period, all queues together; written to a "
        "store that has no budgets, otherwise it may only tighten the store's (`llmbatch "
        "budget`). Requests over it wait as held.",
    )(f)


def budget_overrides(usd: str | None, period: str, allow_unpriced: bool | None) -> dict[str, Any]:
    return {"budget_usd": usd, "budget_period": period, "allow_unpriced": allow_unpriced}


def make_engine(
    ctx: click.Context, store: Store, queues: Sequence[str] = (), **overrides: Any
) -> Engine:
    """The engine of a command; with `queues`, it serves only those (`--queue`, repeatable)."""
    from llmbatch.engine import Engine
    from llmbatch.worker import engine_settings

    settings = engine_settings(ctx.meta.get("llmbatch.config", {}), **overrides)
    engine = Engine(store, settings, queues=list(queues) or None)
    ctx.call_on_close(engine.close)
    notes: list[str] = []  # budgets: the store's, and how this worker's own differ (once)
    engine.budgets.refresh(store, time.time(), notes)
    for note in notes:
        click.echo(f"budget: {note}", err=True)
    return engine


def failed_count(store: Store, queue: str | None = None) -> int:
    return failed_in(store.counts(queue))


def failed_in(counts: Sequence[Count]) -> int:
    """The failed requests of `counts` (the store's, read once for several uses: each read
    counts every request of the store)."""
    return sum(c.n for c in counts if c.state == "failed")


def request_scope(
    store: Store, custom_ids: tuple[str, ...], queue: str | None, batch: str | None
) -> list[int]:
    check_queue(store, queue)
    ids = store.scope_request_ids(queue, list(custom_ids), batch)
    if not ids:
        what = ", ".join(
            p
            for p in (
                f"queue {queue!r}" if queue else "",
                f"batch {batch!r}" if batch else "",
                f"custom ids {', '.join(map(repr, custom_ids))}" if custom_ids else "",
            )
            if p
        )
        raise NotFound(f"nothing matches: no request in {what}")
    return ids
