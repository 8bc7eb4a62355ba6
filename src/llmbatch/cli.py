"""The `llmbatch` command: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import sys
import time
import traceback
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn

import click
from click.core import ParameterSource

from llmbatch import defaults, views
from llmbatch.config import config_path, default_map, load_config
from llmbatch.errors import ConfigError, LlmbatchError
from llmbatch.store import Store, open_store

if TYPE_CHECKING:
    from llmbatch.engine import Engine, TickReport

ENGINE_TABLES = ("engine", "providers", "quotas", "budgets")
BATCH_WINDOW_S = 24 * 3600  # the completion window: a batch sent now may finish this late
PRIORITY = click.IntRange(-(2**63), 2**63 - 1)  # what both stores hold (a 64-bit integer)
SECONDS = click.FloatRange(min=0, min_open=True)  # an interval: 0 would spin


class Cli(click.Group):
    """Turns every LlmbatchError into one clear line and a non-zero exit (traceback with --debug)."""

    def invoke(self, ctx: click.Context) -> Any:
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
    sys.exit(1)


def _load_defaults(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """Read the config file before the other options, so it supplies their defaults."""
    try:
        path = config_path(value)
        config = load_config(path)
        assert isinstance(ctx.command, click.Group)
        ctx.default_map = default_map(config, path, ctx.command, ENGINE_TABLES)
        ctx.meta["llmbatch.config"] = config
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    return value


@click.group(cls=Cli, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config", "config_file", metavar="FILE", envvar="LLMBATCH_CONFIG", is_eager=True,
    expose_value=False, callback=_load_defaults, help="Config file (default: ./llmbatch.toml if present).",
)  # fmt: skip
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
@click.option("--debug", is_flag=True, envvar="LLMBATCH_DEBUG", help="Show tracebacks.")
@click.version_option(package_name="llmbatch")
@click.pass_context
def main(ctx: click.Context, db: str | None, busy_timeout: float, debug: bool) -> None:
    """Run LLM requests through the providers' batch APIs at half price.

    Enqueue JSONL batch input files, let llmbatch pack, submit, poll and ingest them, and read
    every result back. Every option also reads an LLMBATCH_* variable and llmbatch.toml.
    """
    # argv is readable by every local user (ps, /proc/PID/cmdline) for the whole run; said once
    # the store is open, so a failure stays one line
    warn = (
        bool(db)
        and ctx.get_parameter_source("db") == ParameterSource.COMMANDLINE
        and _has_password(db or "")
    )
    ctx.obj = {"db": db, "busy_timeout": busy_timeout, "debug": debug, "warn_password": warn}


def _has_password(db: str) -> bool:
    if not db.startswith(("postgresql://", "postgres://")):
        return False
    import psycopg

    try:
        return bool(psycopg.conninfo.conninfo_to_dict(db).get("password"))
    except psycopg.ProgrammingError:
        return False


def _store(ctx: click.Context) -> Store:
    obj = ctx.find_root().obj
    store = open_store(obj["db"], busy_timeout=obj["busy_timeout"])
    if obj.pop("warn_password", False):
        click.echo(
            "warning: the --db DSN carries a password on the command line, where `ps` shows it; "
            "set LLMBATCH_DB instead, or keep the password in PGPASSWORD or ~/.pgpass",
            err=True,
        )
    ctx.call_on_close(store.close)
    return store


def _deadline(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time such as 2026-11-27T06:00Z"
        ) from None


@main.command()
@click.argument("file", metavar="FILE.jsonl")
@click.option("--queue", "-q", default=defaults.QUEUE, envvar="LLMBATCH_QUEUE", show_default=True)
@click.option(
    "--provider",
    type=click.Choice(["openai", "azure", "anthropic"]),
    default=defaults.PROVIDER,
    envvar="LLMBATCH_PROVIDER",
    show_default=True,
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    envvar="LLMBATCH_SKIP_INVALID",
    help="Enqueue the valid lines; write the rest to a reject file.",
)
@click.option(
    "--reject-file",
    metavar="PATH",
    envvar="LLMBATCH_REJECT_FILE",
    help="Where --skip-invalid writes rejected lines (default FILE.rejected.jsonl).",
)
@click.option(
    "--max-line-bytes",
    type=click.IntRange(min=1),
    default=defaults.MAX_LINE_BYTES,
    envvar="LLMBATCH_MAX_LINE_BYTES",
    show_default=True,
)
@click.option(
    "--priority",
    type=PRIORITY,
    default=0,
    envvar="LLMBATCH_PRIORITY",
    help="Higher is packed first.",
)
@click.option(
    "--deadline",
    metavar="TIME",
    envvar="LLMBATCH_DEADLINE",
    help="ISO 8601 time the results are needed by.",
)
@click.pass_context
def enqueue(
    ctx: click.Context, file: str, queue: str, provider: str, skip_invalid: bool, reject_file: str | None,
    max_line_bytes: int, priority: int, deadline: str | None,
) -> None:  # fmt: skip
    """Add the requests of a JSONL batch input file (- for standard input) to a queue.

    All or nothing: a file with any invalid line enqueues nothing (unless --skip-invalid),
    and enqueueing the same file twice adds nothing the second time.
    """
    from llmbatch.importer import enqueue_file, enqueue_stream

    store = _store(ctx)
    options: dict[str, Any] = {
        "queue": queue, "provider": provider, "skip_invalid": skip_invalid, "reject_path": reject_file,
        "max_line_bytes": max_line_bytes, "priority": priority, "deadline": _deadline(deadline),
    }  # fmt: skip
    if file == "-":
        if skip_invalid and not reject_file:
            options["reject_path"] = "stdin.rejected.jsonl"
        report = enqueue_stream(store, sys.stdin.buffer, source="<stdin>", **options)
    else:
        report = enqueue_file(store, file, **options)
    click.echo(report.summary())
    if report.added:
        from llmbatch.estimate import from_sizes

        est = from_sizes(report.source, report.sizes)
        # on stderr: stdout stays the one summary line scripts parse
        click.echo(
            f"{est.summary()} (from sizes; `llmbatch estimate FILE` counts tokens)", err=True
        )


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--expected-output", type=click.IntRange(min=0), default=500, show_default=True,
    envvar="LLMBATCH_EXPECTED_OUTPUT", help="Output tokens a request is assumed to write (never above its cap).",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    envvar="LLMBATCH_ESTIMATE_FORMAT",
)  # fmt: skip
def estimate(file: str, expected_output: int, fmt: str) -> None:
    """What a JSONL file of requests will cost per model, expected and worst case, before
    sending it: tokens counted with OpenAI's tokenizer (Anthropic's calibrated)."""
    from llmbatch.estimate import estimate_file, render

    click.echo(render(estimate_file(file, expected_output=expected_output), fmt), nl=False)


@main.command()
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--exclude-tag", "exclude_tags", multiple=True, metavar="TAG", envvar="LLMBATCH_EXCLUDE_TAGS",
    help="A tag (or project) whose calls must stay real time; repeatable.",
)  # fmt: skip
@click.option(
    "--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True,
    envvar="LLMBATCH_ANALYZE_FORMAT",
)  # fmt: skip
def analyze(file: str, exclude_tags: tuple[str, ...], fmt: str) -> None:
    """What past usage already batches, and what moving the rest would save per model and tag:
    OpenAI usage API pages (group_by=model,batch) or per-call JSONL records."""
    from llmbatch.analyze import analyze_file, render

    click.echo(render(analyze_file(file, exclude_tags=exclude_tags), fmt), nl=False)


@main.command()
@click.option("--queue", "-q", envvar="LLMBATCH_QUEUE", help="Only this queue.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    envvar="LLMBATCH_FORMAT",
)
@click.pass_context
def status(ctx: click.Context, queue: str | None, fmt: str) -> None:
    """Requests per queue, model and state; batches in flight; deadlines at risk."""
    store = _store(ctx)
    counts = store.counts(queue)
    batches = store.batch_overview()
    now = time.time()
    deadlines = store.deadline_risk(now, now + BATCH_WINDOW_S, queue)
    budgets, held = store.budget_overview(now), store.held_reasons()
    if fmt == "json":
        import orjson

        from llmbatch.receipt import status_record

        data = orjson.loads(views.status_json(counts, batches, deadlines, budgets, held))
        data["spend"] = status_record(store, now, queue)  # provider checks, unplanned spend
        click.echo(orjson.dumps(data, default=str).decode())
    else:
        from llmbatch.receipt import status_lines

        views.print_status(counts)
        views.print_batches(batches, now)
        views.print_deadlines(*deadlines)
        views.print_budgets(budgets, held)
        for line in status_lines(store, now, queue):  # provider checks, unplanned spend
            click.echo(line)


@main.command()
@click.argument("custom_id")
@click.option("--queue", "-q", envvar="LLMBATCH_QUEUE", help="The queue, if the id is in several.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def show(ctx: click.Context, custom_id: str, queue: str | None, fmt: str) -> None:
    """One request: what it is, every attempt, and its result."""
    found = _store(ctx).request_detail(custom_id, queue)
    if not found:
        where = f" in queue {queue!r}" if queue else ""
        raise LlmbatchError(f"no request with custom_id {custom_id!r}{where}")
    if fmt == "json":
        click.echo(views.detail_json(found))
    else:
        views.print_detail(found)


@main.command()
@click.option("--queue", "-q", envvar="LLMBATCH_QUEUE", help="Only this queue.")
@click.option("--state", type=click.Choice(["succeeded", "failed"]), help="Only this outcome.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    envvar="LLMBATCH_RESULTS_FORMAT",
)
@click.option(
    "--after", "after", type=int, default=0, metavar="CURSOR", help="Resume after this cursor."
)
@click.option(
    "--output",
    "-o",
    type=click.File("w"),
    default="-",
    help="Write here instead of standard output.",
)
@click.pass_context
def results(
    ctx: click.Context, queue: str | None, state: str | None, fmt: str, after: int, output: Any
) -> None:
    """Stream results in the OpenAI batch output shape (or CSV); print the next cursor on stderr."""
    from llmbatch.export import csv_rows, jsonl_line

    cursor = after
    rows = _store(ctx).iter_results(queue=queue, state=state, after=after)

    def tracked() -> Any:
        nonlocal cursor
        for r in rows:
            cursor = r.cursor
            yield r

    if fmt == "csv":
        for chunk in csv_rows(tracked()):
            output.write(chunk)
    else:
        raw = output.buffer if hasattr(output, "buffer") else None
        for r in tracked():
            line = jsonl_line(r)
            if raw is not None:
                raw.write(line)
            else:
                output.write(line.decode())
    output.flush()
    click.echo(f"cursor: {cursor}  (resume with --after {cursor})", err=True)


def _budget_options(f: Any) -> Any:
    """--budget-usd, --budget-period and --allow-unpriced (see llmbatch.budget)."""
    f = click.option(
        "--allow-unpriced", is_flag=True, default=None, envvar="LLMBATCH_ALLOW_UNPRICED",
        help="Let models without a price spend under a budget (uncounted).",
    )(f)  # fmt: skip
    f = click.option(
        "--budget-period", type=click.Choice(["day", "month"]), default="day",
        envvar="LLMBATCH_BUDGET_PERIOD", show_default=True, help="The UTC period of --budget-usd.",
    )(f)  # fmt: skip
    return click.option(
        "--budget-usd", metavar="USD", envvar="LLMBATCH_BUDGET_USD",
        help="Hard cap on batch spend per --budget-period, all queues together (overrides "
        "[budgets]); requests over it wait as held.",
    )(f)  # fmt: skip


def _budgets(usd: str | None, period: str, allow_unpriced: bool | None) -> dict[str, Any]:
    return {"budget_usd": usd, "budget_period": period, "allow_unpriced": allow_unpriced}


def _engine(ctx: click.Context, store: Store, **overrides: Any) -> Engine:
    from llmbatch.engine import Engine
    from llmbatch.worker import engine_settings

    engine = Engine(store, engine_settings(ctx.meta.get("llmbatch.config", {}), **overrides))
    ctx.call_on_close(engine.close)
    notes: list[str] = []  # budgets: the store's, and how this worker's own differ (once)
    engine.budgets.refresh(store, time.time(), notes)
    for note in notes:
        click.echo(f"budget: {note}", err=True)
    return engine


def _print_tick(report: TickReport) -> None:
    if report.held_by:
        return
    parts = []
    if report.intents:
        parts.append(f"packed {report.packed:,} requests into {report.intents} batch(es)")
    if report.submitted:
        parts.append(f"submitted {report.submitted}")
    if report.ingested_batches:
        parts.append(f"ingested {report.ingested_batches} batch(es), {report.outcomes:,} results")
    for note in report.notes:
        parts.append(note)
    if parts:
        click.echo("; ".join(parts), err=True)


@main.command()
@click.option(
    "--max-batch-requests",
    type=click.IntRange(min=1),
    envvar="LLMBATCH_MAX_BATCH_REQUESTS",
    help="Cap on requests per batch.",
)
@_budget_options
@click.pass_context
def run(
    ctx: click.Context,
    max_batch_requests: int | None,
    budget_usd: str | None,
    budget_period: str,
    allow_unpriced: bool | None,
) -> None:
    """One tick, for cron: pack and submit what is ready, poll, ingest what has finished."""
    budgets = _budgets(budget_usd, budget_period, allow_unpriced)
    store = _store(ctx)
    engine = _engine(ctx, store, max_batch_requests=max_batch_requests, **budgets)
    report = engine.tick(time.time())
    if report.held_by:
        click.echo(
            f"another worker ({report.held_by}) is running this queue; nothing to do", err=True
        )
        return
    _print_tick(report)
    click.echo(f"{store.unfinished_count():,} requests not finished yet", err=True)


@main.command()
@click.option("--queue", "-q", envvar="LLMBATCH_QUEUE", help="Wait for this queue only.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0),
    envvar="LLMBATCH_WAIT_TIMEOUT",
    help="Give up after this many seconds.",
)
@click.option(
    "--poll-interval",
    type=SECONDS,
    envvar="LLMBATCH_POLL_INTERVAL",
    help="Seconds between polls (default 30).",
)
@click.option(
    "--max-batch-requests", type=click.IntRange(min=1), envvar="LLMBATCH_MAX_BATCH_REQUESTS"
)
@_budget_options
@click.pass_context
def wait(
    ctx: click.Context,
    queue: str | None,
    timeout: float | None,
    poll_interval: float | None,
    max_batch_requests: int | None,
    budget_usd: str | None,
    budget_period: str,
    allow_unpriced: bool | None,
) -> None:
    """Run until every request is done, with a progress bar; exit 1 if any failed or a budget
    holds the rest."""
    budgets = _budgets(budget_usd, budget_period, allow_unpriced)
    store = _store(ctx)
    engine = _engine(
        ctx, store, poll_interval=poll_interval, max_batch_requests=max_batch_requests, **budgets
    )
    outcome = views.drain_with_progress(engine, queue, timeout)
    views.print_status(store.counts(queue))
    if outcome.held:
        newest = store.held_reasons()[0][0]
        raise LlmbatchError(f"{outcome.held:,} requests held: {newest}")
    failed = sum(c.n for c in store.counts(queue) if c.state == "failed")
    if not outcome.finished:
        raise LlmbatchError(
            f"not finished after {timeout:.0f} s; run `llmbatch wait` again to carry on"
        )
    if failed:
        click.echo(f"{failed:,} requests failed: see `llmbatch results --state failed`", err=True)
        sys.exit(1)


@main.command()
@click.option(
    "--interval",
    type=SECONDS,
    envvar="LLMBATCH_WORKER_INTERVAL",
    help="Seconds between ticks (default: the poll schedule).",
)
@click.option("--poll-interval", type=SECONDS, envvar="LLMBATCH_POLL_INTERVAL")
@_budget_options
@click.pass_context
def worker(
    ctx: click.Context, interval: float | None, poll_interval: float | None,
    budget_usd: str | None, budget_period: str, allow_unpriced: bool | None,
) -> None:  # fmt: skip
    """Serve the queue until SIGINT/SIGTERM (the first finishes the current step, a second exits)."""
    budgets = _budgets(budget_usd, budget_period, allow_unpriced)
    from llmbatch.worker import Worker

    store = _store(ctx)
    engine = _engine(ctx, store, poll_interval=poll_interval, **budgets)
    for name in engine.settings.providers:  # their SDKs load now, so "serving" means ready
        engine.provider(name)
    click.echo(f"llmbatch worker {engine.holder} serving {store.location}", err=True)
    Worker(engine, interval).serve(on_tick=_print_tick)
    click.echo("worker stopped", err=True)


@main.command()
@click.option("--keep", is_flag=True, help="Keep the demo database (its path is printed).")
@click.pass_context
def demo(ctx: click.Context, keep: bool) -> None:
    """The whole lifecycle offline: the built-in emulator, a temporary queue, example requests."""
    from llmbatch.demo import run_demo

    run_demo(keep=keep)


@main.command()
@click.argument("custom_ids", nargs=-1, metavar="[CUSTOM_ID]...")
@click.option(
    "--queue", "-q", envvar="LLMBATCH_QUEUE", help="Cancel in this queue (all of it, without ids)."
)
@click.option("--batch", metavar="ID", help="Cancel this batch (local or provider batch id).")
@click.pass_context
def cancel(
    ctx: click.Context, custom_ids: tuple[str, ...], queue: str | None, batch: str | None
) -> None:
    """Cancel requests: waiting ones at once; in-flight batches at the provider when every
    request in them is in scope. Finished results are kept; nothing cancelled is retried."""
    if not (custom_ids or queue or batch):
        raise click.UsageError("name what to cancel: --queue, --batch or custom ids")
    store = _store(ctx)
    ids = store.scope_request_ids(queue, list(custom_ids), batch)
    if not ids:
        raise LlmbatchError("nothing matches: no request in that scope")
    now = time.time()
    plan = store.request_cancel(ids, now)
    click.echo(f"cancelled {plan.cancelled:,} waiting requests")
    if plan.batches:
        report = _engine(ctx, store).tick(now)
        where = f"; {report.held_by} will send it" if report.held_by else ""
        click.echo(
            f"cancelling {len(plan.batches)} batch(es) at the provider ({plan.in_batches:,} requests){where}; finished results are kept"
        )
    if plan.left_running:
        click.echo(
            f"{plan.left_running:,} requests share a batch with requests outside this scope and will run"
        )


@main.command()
@click.option("--host", default="127.0.0.1", envvar="LLMBATCH_EMULATOR_HOST", show_default=True)
@click.option("--port", default=8000, type=int, envvar="LLMBATCH_EMULATOR_PORT", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="LLMBATCH_EMULATOR_DATA_DIR")
@click.option("--time-scale", default=1.0, type=float, envvar="LLMBATCH_EMULATOR_TIME_SCALE")
def emulator(host: str, port: int, data_dir: str | None, time_scale: float) -> None:
    """Serve a local emulator of the OpenAI and Azure OpenAI Files and Batch APIs."""
    from llmbatch.emulator import serve

    serve(host=host, port=port, data_dir=data_dir, time_scale=time_scale)


@main.command()
@click.option("--since", envvar="LLMBATCH_REPORT_SINCE", help="From this UTC date (YYYY-MM-DD).")
@click.option("--until", envvar="LLMBATCH_REPORT_UNTIL", help="Up to (not including) this date.")
@click.option(
    "--group-by",
    type=click.Choice(["day", "model", "queue"]),
    multiple=True,
    envvar="LLMBATCH_REPORT_GROUP_BY",
    help="Roll up to these (repeatable); default: day, queue and model.",
)
@click.option("--queue", "-q", envvar="LLMBATCH_QUEUE", help="Only this queue.")
@click.option(
    "--batch", "batch_ref", metavar="ID", help="The receipt of one batch (local or provider id)."
)
@click.option("--day", metavar="YYYY-MM-DD", help="The receipt of one UTC day, a line per batch.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    envvar="LLMBATCH_REPORT_FORMAT",
    show_default=True,
)
@click.pass_context
def report(
    ctx: click.Context,
    since: str | None,
    until: str | None,
    group_by: tuple[str, ...],
    queue: str | None,
    batch_ref: str | None,
    day: str | None,
    fmt: str,
) -> None:
    """What the results cost in batch and in real time, and what batch saved; with --batch or
    --day, a receipt (list price, paid, saved, the price data, what the provider says)."""
    from llmbatch import receipt
    from llmbatch import report as costs

    store = _store(ctx)
    if batch_ref is not None or day is not None:
        if batch_ref is not None:
            r = receipt.for_batch(store, batch_ref)
        else:
            r = receipt.for_day(store, receipt.parse_day(day or ""), queue)
        click.echo(receipt.render(r, fmt), nl=False)
        return
    lines = costs.build(
        store,
        since=costs.parse_day(since),
        until=costs.parse_day(until),
        group_by=group_by or costs.GROUPINGS,
        queue=queue,
    )
    click.echo(costs.render(lines, fmt), nl=fmt != "table")
    if fmt == "table":  # what the provider disagrees with, and spend no budget planned
        since_at, until_at = costs.parse_day(since), costs.parse_day(until)
        for line in receipt.report_notes(store, since_at, until_at, queue):
            click.echo(line)


def _add_budget_commands() -> None:
    from llmbatch.budget_cli import budget

    main.add_command(budget)


_add_budget_commands()
