"""The commands that do the work: enqueue, run, wait, worker, cancel, retry, purge, and the
demo and emulator that run it offline. Exit codes per `llmbatch.cli.app`."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any

import click

from llmbatch import defaults
from llmbatch.cli.app import (
    FAILED,
    OK,
    SECONDS,
    UNREACHABLE,
    Int64,
    ProviderName,
    budget_options,
    budget_overrides,
    check_queue,
    failed_count,
    failed_in,
    main,
    make_engine,
    open_db,
    parse_deadline,
    queue_option,
    request_scope,
    serve_queues_option,
)
from llmbatch.errors import LlmbatchError


@main.command(short_help="Add a JSONL file of requests to a queue.")
@click.argument("file", metavar="FILE.jsonl")
@click.option("--queue", "-q", default=defaults.QUEUE, envvar="LLMBATCH_QUEUE", show_default=True)
@click.option(
    "--provider",
    type=ProviderName(),
    default=defaults.PROVIDER,
    envvar="LLMBATCH_PROVIDER",
    show_default=True,
)
@click.option(
    "--skip-invalid",
    is_flag=True,
    envvar="LLMBATCH_SKIP_INVALID",
    help="Enqueue the valid lines; write the rest to a reject file (exit 1 if any).",
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
    type=Int64(),
    default=defaults.PRIORITY,
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
    ctx: click.Context,
    file: str,
    queue: str,
    provider: str,
    skip_invalid: bool,
    reject_file: str | None,
    max_line_bytes: int,
    priority: int,
    deadline: str | None,
) -> None:
    """Add the requests of a JSONL batch input file (- for standard input) to a queue.

    All or nothing: a file with any invalid line enqueues nothing (unless --skip-invalid),
    and enqueueing the same file twice adds nothing the second time.
    """
    from llmbatch.importer import enqueue_file, enqueue_stream

    store = open_db(ctx, create=True)
    options: dict[str, Any] = {
        "queue": queue,
        "provider": provider,
        "skip_invalid": skip_invalid,
        "reject_path": reject_file,
        "max_line_bytes": max_line_bytes,
        "priority": priority,
        "deadline": parse_deadline(deadline),
    }
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
    if report.rejected:
        ctx.exit(FAILED)


@main.command(short_help="One step, for cron: pack, submit, poll, ingest.")
@click.option(
    "--max-batch-requests",
    type=click.IntRange(min=1),
    envvar="LLMBATCH_MAX_BATCH_REQUESTS",
    help="Cap on requests per batch.",
)
@serve_queues_option()
@budget_options
@click.pass_context
def run(
    ctx: click.Context,
    max_batch_requests: int | None,
    queues: tuple[str, ...],
    budget_usd: str | None,
    budget_period: str,
    allow_unpriced: bool | None,
) -> None:
    """One tick, for cron: pack and submit what is ready, poll, ingest what has finished.

    Exits 3 if a provider could not be reached (or rate-limited us), 1 if requests failed
    in this step; failures already in the store do not count."""
    from llmbatch.logs import TickLog, setup
    from llmbatch.progress import snapshot

    log = setup(ctx.find_root().obj["log_format"])
    budgets = budget_overrides(budget_usd, budget_period, allow_unpriced)
    store = open_db(ctx)
    engine = make_engine(ctx, store, queues, max_batch_requests=max_batch_requests, **budgets)
    failed_before = failed_count(store)
    report = engine.tick(time.time())
    if report.held_by:
        log.info("another worker (%s) is running this queue; nothing to do", report.held_by)
        return
    TickLog(engine.holder)(report)
    counts = store.counts()
    failed = max(0, failed_in(counts) - failed_before)
    snap = snapshot(store, counts=counts)
    ahead = f" ({snap.at_provider:,} of them done at the provider)" if snap.at_provider else ""
    log.info("%s requests not finished yet%s", f"{snap.total - snap.read_back:,}", ahead)
    if report.unreachable:
        ctx.exit(UNREACHABLE)
    if failed:
        log.warning(
            "%s requests failed in this run: `llmbatch results --state failed`", f"{failed:,}"
        )
        ctx.exit(FAILED)


@main.command(short_help="Run until done, with progress and an ETA.")
@queue_option("Wait for this queue only.")
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
    help="Seconds between polls (default 30; the first comes a second after a submit).",
)
@click.option(
    "--max-batch-requests", type=click.IntRange(min=1), envvar="LLMBATCH_MAX_BATCH_REQUESTS"
)
@budget_options
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
    """Run until every request is done, with progress fed by the provider's counts.

    Exits 1 if requests failed while waiting, a budget holds the rest, or --timeout passed
    first (3 if a provider was unreachable then)."""
    from llmbatch import views

    budgets = budget_overrides(budget_usd, budget_period, allow_unpriced)
    store = open_db(ctx)
    check_queue(store, queue)
    engine = make_engine(
        ctx, store, poll_interval=poll_interval, max_batch_requests=max_batch_requests, **budgets
    )
    before = store.counts(queue)  # the failures so far, and the progress bar's start
    last: list[int] = [0]

    def seen(report: Any) -> None:
        last[0] = report.unreachable

    outcome = views.drain_with_progress(engine, queue, timeout, on_tick=seen, counts=before)
    after = store.counts(queue)
    click.echo(views.counts_table(after), nl=False)
    failed = max(0, failed_in(after) - failed_in(before))
    code = OK
    if failed:
        click.echo(f"{failed:,} requests failed: see `llmbatch results --state failed`", err=True)
        code = FAILED
    if outcome.held:
        newest = store.held_reasons()[0][0]
        click.echo(f"error: {outcome.held:,} requests held: {newest}", err=True)
        code = FAILED
    elif not outcome.finished:
        click.echo(
            f"error: not finished after {timeout:.0f} s; run `llmbatch wait` again to carry on",
            err=True,
        )
        code = UNREACHABLE if last[0] else FAILED
    ctx.exit(code)


@main.command(short_help="Serve the queue as a service (SIGTERM stops).")
@click.option(
    "--interval",
    type=SECONDS,
    envvar="LLMBATCH_WORKER_INTERVAL",
    help="Seconds between ticks (default: the poll schedule).",
)
@click.option("--poll-interval", type=SECONDS, envvar="LLMBATCH_POLL_INTERVAL")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    envvar="LLMBATCH_METRICS_PORT",
    help="Serve /metrics (Prometheus), /healthz and /readyz on this port (0: any free one).",
)
@click.option(
    "--metrics-host",
    default=defaults.HOST,
    show_default=True,
    envvar="LLMBATCH_METRICS_HOST",
    help="Address for --metrics-port (0.0.0.0 to be scraped from other machines; set "
    "LLMBATCH_METRICS_TOKEN to have scrapes send it as a bearer token).",
)
@serve_queues_option()
@budget_options
@click.pass_context
def worker(
    ctx: click.Context,
    queues: tuple[str, ...],
    interval: float | None,
    poll_interval: float | None,
    metrics_port: int | None,
    metrics_host: str,
    budget_usd: str | None,
    budget_period: str,
    allow_unpriced: bool | None,
) -> None:
    """Serve the queue until SIGINT/SIGTERM (the first finishes the current step, a second
    exits). Workers on one store share the work: each claims batches to poll and ingest and
    packing groups to submit, and takes over the claims of one that stops or hangs
    (docs/deploy.md)."""
    from llmbatch.logs import TickLog, setup
    from llmbatch.worker import Worker

    log = setup(ctx.find_root().obj["log_format"])
    budgets = budget_overrides(budget_usd, budget_period, allow_unpriced)
    if metrics_port is not None:
        from llmbatch.observe.metrics import require

        require()  # said before anything starts
    store = open_db(ctx, create=True)
    engine = make_engine(ctx, store, queues, poll_interval=poll_interval, **budgets)
    for name in engine.settings.providers:  # their SDKs load now, so "serving" means ready
        engine.provider(name)
    serving = Worker(engine, interval)
    on_tick: Callable[[Any], None] = TickLog(engine.holder)
    server = None
    if metrics_port is not None:
        from llmbatch.observe.server import TOKEN_ENV, MetricsServer

        server = MetricsServer(
            engine,
            open_db(ctx),
            open_db(ctx),
            host=metrics_host,
            port=metrics_port,
            outage_since=serving.outage_since,
            token=os.environ.get(TOKEN_ENV),
        ).start()
        log.info("metrics at %s/metrics, health at /healthz and /readyz", server.url)
        on_tick = _both(on_tick, server.on_tick)
    log.info("worker %s serving %s", engine.holder, store.location)
    try:
        serving.serve(on_tick=on_tick)
    finally:
        if server is not None:
            server.stop()
    log.info("worker stopped")


def _both(*calls: Callable[[Any], None]) -> Callable[[Any], None]:
    def call(report: Any) -> None:
        for c in calls:
            c(report)

    return call


@main.command(short_help="The whole lifecycle offline, on the emulator.")
@click.option("--keep", is_flag=True, help="Keep the demo's database and print how to read it.")
def demo(keep: bool) -> None:
    """The whole lifecycle offline: the built-in emulator, a temporary queue, example requests.
    Nothing is left behind unless --keep."""
    from llmbatch.demo import run_demo

    run_demo(keep=keep)


@main.command(short_help="Cancel waiting requests or whole batches.")
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
    from llmbatch.queue import cancel_requests

    store = open_db(ctx)
    ids = request_scope(store, custom_ids, queue, batch)
    for line in cancel_requests(store, ids, engine=lambda: make_engine(ctx, store)).lines():
        click.echo(line)


@main.command(short_help="Send failed requests again.")
@click.argument("custom_ids", nargs=-1, metavar="[CUSTOM_ID]...")
@queue_option("Retry the failed requests of this queue (all of them, without ids).")
@click.option("--batch", metavar="ID", help="Retry the failed requests of this batch.")
@click.option("--dry-run", is_flag=True, help="Say what would be retried; change nothing.")
@click.pass_context
def retry(
    ctx: click.Context,
    custom_ids: tuple[str, ...],
    queue: str | None,
    batch: str | None,
    dry_run: bool,
) -> None:
    """Put failed requests back in the queue with fresh attempts; the next run sends them.
    Their earlier results stay recorded; `results` shows the newest once they finish."""
    if not (custom_ids or queue or batch):
        raise click.UsageError("name what to retry: --queue, --batch or custom ids")
    store = open_db(ctx)
    ids = request_scope(store, custom_ids, queue, batch)
    if dry_run:
        n = store.retry_failed(ids, time.time(), dry_run=True)
        click.echo(
            f"would send {n:,} failed requests again (of {len(ids):,} in scope); nothing changed"
        )
        return
    moved = store.retry_failed(ids, time.time())
    if moved:
        click.echo(f"{moved:,} failed requests queued again; `llmbatch run` or `wait` sends them")
    else:
        click.echo(f"nothing to retry: none of the {len(ids):,} requests in scope failed")


@main.command(short_help="Delete a finished queue; keep its costs.")
@click.argument("queue")
@click.option("--dry-run", is_flag=True, help="Say what would be deleted; delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.pass_context
def purge(ctx: click.Context, queue: str, dry_run: bool, yes: bool) -> None:
    """Delete a finished queue's requests, attempts and results. Its cost totals and spend are
    kept, so `report` and budgets read the same afterwards. A queue with unfinished requests
    is refused (cancel them first)."""
    store = open_db(ctx)
    check_queue(store, queue)
    plan = store.purge_queue(queue, dry_run=True)
    what = (
        f"queue {queue!r}: {plan.requests:,} requests, {plan.attempts:,} attempts, "
        f"{plan.results:,} results"
    )
    if plan.unfinished or plan.reading_back:
        left = plan.unfinished or plan.reading_back
        raise LlmbatchError(
            f"queue {queue!r} is not finished ({left:,} requests still waiting, in flight or "
            "being read back); wait for it or `llmbatch cancel --queue` first"
        )
    if dry_run:
        click.echo(f"would delete {what}; cost totals and spend kept; nothing changed")
        return
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError("purge deletes data: pass --yes (or --dry-run to look first)")
        click.confirm(f"delete {what}?", abort=True)
    done = store.purge_queue(queue)
    click.echo(
        f"deleted queue {queue!r}: {done.requests:,} requests, {done.attempts:,} attempts, "
        f"{done.results:,} results; its cost totals and spend are kept (report and budgets "
        "unchanged)"
    )


@main.command(short_help="A local OpenAI, Azure, Anthropic and Gemini batch API.")
@click.option("--host", default=defaults.HOST, envvar="LLMBATCH_EMULATOR_HOST", show_default=True)
@click.option(
    "--port",
    default=defaults.EMULATOR_PORT,
    type=click.IntRange(0, 65535),
    envvar="LLMBATCH_EMULATOR_PORT",
    show_default=True,
    help="TCP port (0: any free one).",
)
@click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    envvar="LLMBATCH_EMULATOR_DATA_DIR",
    help="Keep files, batches and the clock here across restarts (default: a temporary "
    "folder, removed on exit).",
)
@click.option(
    "--time-scale",
    default=defaults.EMULATOR_TIME_SCALE,
    type=click.FloatRange(min=0),
    envvar="LLMBATCH_EMULATOR_TIME_SCALE",
    show_default=True,
    help="Virtual seconds per real second (0 freezes the clock; advance it through "
    "POST /_emulator/clock/advance).",
)
@click.option(
    "--models",
    "models_file",
    metavar="FILE",
    envvar="LLMBATCH_EMULATOR_MODELS",
    help="Models to add to each door's built-in catalog (JSON or TOML; see docs/emulator.md).",
)
def emulator(
    host: str, port: int, data_dir: str | None, time_scale: float, models_file: str | None
) -> None:
    """Serve a local emulator of the OpenAI and Azure OpenAI Files and Batch APIs, of
    Anthropic Message Batches and of Gemini batches, for testing batch code offline (faults,
    clock and call log under /_emulator; see docs/emulator.md)."""
    from llmbatch.emulator import serve

    extra = {"models_file": models_file} if models_file else {}
    serve(host=host, port=port, data_dir=data_dir, time_scale=time_scale, **extra)
