"""The commands that look: status, the lists of queues and batches, one request, the results
export, and what things cost (report, estimate, analyze). They never create a database."""

from __future__ import annotations

import sys
import time
from typing import Any

import click

from llmbatch import defaults, render
from llmbatch.cli.app import (
    ProviderName,
    check_queue,
    listing_options,
    main,
    open_db,
    queue_option,
)
from llmbatch.errors import ConfigError, NotFound


@main.command(short_help="What a JSONL file will cost, before sending it.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--expected-output",
    type=click.IntRange(min=0),
    default=defaults.EXPECTED_OUTPUT_TOKENS,
    show_default=True,
    envvar="LLMBATCH_EXPECTED_OUTPUT",
    help="Output tokens a request is assumed to write (never above its cap).",
)
@click.option(
    "--provider",
    type=ProviderName(),
    default=defaults.PROVIDER,
    envvar="LLMBATCH_PROVIDER",
    show_default=True,
    help="Whose line shape the file is in (a line in a shape of its own goes to its provider).",
)
@listing_options(env="LLMBATCH_ESTIMATE_FORMAT")
def estimate(file: str, expected_output: int, provider: str, fmt: str, wide: bool) -> None:
    """What a JSONL file of requests will cost per model, expected and worst case, before
    sending it: tokens counted with OpenAI's tokenizer (Anthropic's calibrated)."""
    from llmbatch.estimate import estimate_file, render

    est = estimate_file(file, expected_output=expected_output, provider=provider)
    click.echo(render(est, fmt, wide), nl=False)


# not `providers`: a config table is named after its command, and [providers.*] is taken
@main.command(short_help="The registered providers and their settings.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    envvar="LLMBATCH_PLUGINS_FORMAT",
)
def plugins(fmt: str) -> None:
    """Every provider installed (the `llmbatch.providers` entry points, built-ins and plugins
    alike): its package, the endpoints it batches, and the keys its `[providers.NAME]` table
    in llmbatch.toml takes, with their defaults."""
    from llmbatch.providers import describe, names

    found = [describe(n) for n in names()]
    if fmt == "json":
        click.echo(render.as_json(found), nl=False)
        return
    for p in found:
        if "error" in p:
            click.echo(f"{p['name']}: does not load: {p['error']}")
            continue
        click.echo(f"{p['name']} ({p['label']}, package {p['package']})")
        click.echo(f"  endpoints: {', '.join(p['endpoints'])}")
        click.echo(f"  [providers.{p['name']}]")
        for key, default in p["settings"].items():
            shown = "(unset)" if default is None else repr(default)
            click.echo(f"    {key} = {shown}")
        for fact in p.get("unconfirmed", []):
            click.echo(f"  not confirmed in its published docs: {fact}")


@main.command(short_help="What moving past usage to batch would save.")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option(
    "--exclude-tag",
    "exclude_tags",
    multiple=True,
    metavar="TAG",
    envvar="LLMBATCH_EXCLUDE_TAGS",
    help="A tag (or project) whose calls must stay real time; repeatable.",
)
@listing_options(env="LLMBATCH_ANALYZE_FORMAT")
def analyze(file: str, exclude_tags: tuple[str, ...], fmt: str, wide: bool) -> None:
    """What past usage already batches, and what moving the rest would save per model and tag.

    FILE holds pages of OpenAI's organization usage API (GET /v1/organization/usage/
    completions?group_by=model,batch), or per-call records, one JSON object a line:
    {"timestamp": "2026-11-01T09:00:00Z", "model": "gpt-4o-mini", "input_tokens": 812,
    "output_tokens": 95, "tag": "support-bot", "batch": false} (tag, endpoint, batch and
    cached_tokens optional). See docs/analyze.md for examples of both.
    """
    from llmbatch.analyze import analyze_file, render

    click.echo(render(analyze_file(file, exclude_tags=exclude_tags), fmt, wide), nl=False)


@main.command(short_help="Requests per queue and state; batches; progress.")
@queue_option("Only this queue (its requests and its batches).")
@listing_options()
@click.option("--watch", is_flag=True, help="Show it again every --interval seconds until Ctrl-C.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=defaults.WATCH_INTERVAL_S,
    show_default=True,
    envvar="LLMBATCH_WATCH_INTERVAL",
    help="Seconds between two screens of --watch.",
)
@click.pass_context
def status(
    ctx: click.Context, queue: str | None, fmt: str, wide: bool, watch: bool, interval: float
) -> None:
    """Requests per queue, model and state; batches in flight with what the provider reports
    done and an ETA; deadlines at risk; budgets and what they hold. With --watch, the same
    screen again every few seconds, as the dashboard shows it."""
    from llmbatch import views

    store = open_db(ctx)
    check_queue(store, queue)
    if watch:
        if fmt != "table":
            raise click.UsageError("--watch shows the table; --format json or csv reads once")
        _watch(store, queue, wide, interval)
        return
    now = time.time()
    if fmt == "json":
        click.echo(render.as_json(views.status_record(store, queue, now)), nl=False)
    elif fmt == "csv":
        click.echo(views.status_csv(store.counts(queue)), nl=False)
    else:
        click.echo(views.status_text(store, queue, now, wide=wide), nl=False)


def _watch(store: Any, queue: str | None, wide: bool, interval: float) -> None:
    """Clear and print the status screen every `interval` seconds until Ctrl-C (exit 0)."""
    from datetime import UTC, datetime

    from llmbatch import views

    try:
        while True:
            now = time.time()
            screen = views.status_text(store, queue, now, wide=wide)
            stamp = datetime.fromtimestamp(now, UTC).strftime("%H:%M:%S UTC")
            click.clear()
            click.echo(f"{store.location}, {stamp}, every {interval:g} s (Ctrl-C stops)\n")
            click.echo(screen, nl=False)
            time.sleep(interval)
    except KeyboardInterrupt:
        click.echo()


@main.command(short_help="List the queues.")
@listing_options()
@click.pass_context
def queues(ctx: click.Context, fmt: str, wide: bool) -> None:
    """Every queue: its requests by state, whether it is done, when it began and last changed.
    Purged queues are listed while their costs are recorded."""
    from llmbatch import views

    store = open_db(ctx)
    records = views.queue_records(store.queues())
    empty = views.EMPTY_STORE
    click.echo(render.listing(fmt, views.QUEUE_COLUMNS, records, wide=wide, empty=empty), nl=False)


@main.command(short_help="List batches, newest first.")
@queue_option("Only batches holding requests of this queue.")
@click.option("--open", "open_only", is_flag=True, help="Only batches not yet read back.")
@click.option(
    "--limit", type=click.IntRange(min=1), default=defaults.BATCHES_LIMIT, show_default=True
)
@listing_options()
@click.pass_context
def batches(
    ctx: click.Context, queue: str | None, open_only: bool, limit: int, fmt: str, wide: bool
) -> None:
    """Batches newest first: state at the provider, requests done there, age and ETA."""
    from llmbatch import views

    store = open_db(ctx)
    check_queue(store, queue)
    now = time.time()
    rows = store.batches(queue, open_only=open_only, limit=limit)
    records = views.batch_records(rows, store.batch_progress(queue), now)
    empty = "no batches yet: `llmbatch run` packs and sends what is queued"
    click.echo(render.listing(fmt, views.BATCH_COLUMNS, records, wide=wide, empty=empty), nl=False)


@main.command(short_help="One request: its attempts and result.")
@click.argument("custom_id")
@click.option("--queue", "-q", envvar="LLMBATCH_QUEUE", help="The queue, if the id is in several.")
@click.option("--format", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.pass_context
def show(ctx: click.Context, custom_id: str, queue: str | None, fmt: str) -> None:
    """One request: what it is, every attempt, and its result."""
    from llmbatch import views

    store = open_db(ctx)
    check_queue(store, queue)
    found = store.request_detail(custom_id, queue)
    if not found:
        where = f" in queue {queue!r}" if queue else ""
        raise NotFound(f"no request with custom_id {custom_id!r}{where}")
    if fmt == "json":
        click.echo(views.detail_json(found))
    else:
        views.print_detail(found)


@main.command(short_help="Every result, in OpenAI's batch output shape.")
@queue_option()
@click.option(
    "--state", type=click.Choice(["succeeded", "failed", "cancelled"]), help="Only this outcome."
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    default="jsonl",
    envvar="LLMBATCH_RESULTS_FORMAT",
    show_default=True,
)
@click.option(
    "--order",
    type=click.Choice(["recorded", "input"]),
    default="recorded",
    envvar="LLMBATCH_RESULTS_ORDER",
    show_default=True,
    help="As the results were recorded, or as the requests were enqueued.",
)
@click.option(
    "--after",
    type=click.IntRange(min=0),
    default=0,
    metavar="CURSOR",
    help="Only what was recorded after this cursor (printed by the last export).",
)
@click.option(
    "--output",
    "-o",
    "path",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="-",
    help="Write here instead of standard output (a new file is created 0600).",
)
@click.option(
    "--from-archive",
    "archive_url",
    metavar="URL",
    envvar="LLMBATCH_FROM_ARCHIVE",
    help="Read the results from an archive (s3://bucket/prefix or file:///path) alone, not "
    "the store; [archive] endpoint_url, region and checksums apply.",
)
@click.pass_context
def results(
    ctx: click.Context,
    queue: str | None,
    state: str | None,
    fmt: str,
    order: str,
    after: int,
    path: str,
    archive_url: str | None,
) -> None:
    """One line per finished request (succeeded, failed or cancelled) in OpenAI's batch output
    shape, with a "provider" field; or CSV. The cursor to resume from goes to stderr."""
    from llmbatch.export import export, write
    from llmbatch.files import open_private

    if archive_url is not None:
        _results_from_archive(ctx, archive_url, queue, state, fmt, path)
        return
    store = open_db(ctx)
    check_queue(store, queue)
    if path == "-":
        output: Any = sys.stdout
    else:
        try:
            output = open_private(path)  # bytes: write() streams raw lines
        except OSError as exc:
            raise ConfigError(f"--output: cannot write {path}: {exc.strerror}") from None
        ctx.call_on_close(output.close)
    ex = export(store, queue=queue, state=state, after=after, order=order)
    write(ex, output, fmt)
    left = store.unfinished_count(queue)
    waiting = f"; {left:,} requests not finished yet" if left else ""
    click.echo(
        f"cursor: {ex.cursor}  (resume with --after {ex.cursor}; {ex.count:,} results{waiting})",
        err=True,
    )


def _results_from_archive(
    ctx: click.Context, url: str, queue: str | None, state: str | None, fmt: str, path: str
) -> None:
    """`results --from-archive`: the envelope lines an archive holds (JSONL only)."""
    from llmbatch.archive import from_archive
    from llmbatch.files import open_private

    if fmt != "jsonl":
        raise ConfigError("--from-archive gives the results envelope: use --format jsonl")
    table = dict(ctx.meta.get("llmbatch.config", {}).get("archive") or {})
    options = {k: table[k] for k in ("endpoint_url", "region", "checksums") if k in table}
    out: Any = sys.stdout.buffer if path == "-" else None
    if out is None:
        try:
            out = open_private(path)
        except OSError as exc:
            raise ConfigError(f"--output: cannot write {path}: {exc.strerror}") from None
        ctx.call_on_close(out.close)
    count = 0
    for line in from_archive(url, queue=queue, state=state, **options):
        out.write(line)
        count += 1
    out.flush()
    click.echo(f"{count:,} results from {url}", err=True)


@main.command(short_help="What results cost in batch and in real time.")
@click.option("--since", envvar="LLMBATCH_REPORT_SINCE", help="From this UTC date (YYYY-MM-DD).")
@click.option("--until", envvar="LLMBATCH_REPORT_UNTIL", help="Up to (not including) this date.")
@click.option(
    "--group-by",
    type=click.Choice(["day", "model", "queue"]),
    multiple=True,
    envvar="LLMBATCH_REPORT_GROUP_BY",
    help="Roll up to these (repeatable); default: day, queue and model.",
)
@queue_option()
@click.option(
    "--batch", "batch_ref", metavar="ID", help="The receipt of one batch (local or provider id)."
)
@click.option("--day", metavar="YYYY-MM-DD", help="The receipt of one UTC day, a line per batch.")
@listing_options(env="LLMBATCH_REPORT_FORMAT")
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
    wide: bool,
) -> None:
    """What the results cost in batch and in real time, and what batch saved; with --batch or
    --day, a receipt (list price, paid, saved, the price data, what the provider says)."""
    from llmbatch import receipt
    from llmbatch import report as costs

    store = open_db(ctx)
    check_queue(store, queue, purged_ok=True)
    if batch_ref is not None or day is not None:
        if batch_ref is not None and day is not None:
            raise ConfigError("--batch and --day are two receipts: give one of them")
        if batch_ref is not None:
            r = receipt.for_batch(store, batch_ref)
        else:
            r = receipt.for_day(store, receipt.parse_day(day or ""), queue)
        click.echo(receipt.render(r, fmt, wide), nl=False)
        return
    since_at, until_at = costs.parse_day(since), costs.parse_day(until)
    lines = costs.build(
        store, since=since_at, until=until_at, group_by=group_by or costs.GROUPINGS, queue=queue
    )
    click.echo(costs.render(lines, fmt, wide), nl=False)
    if fmt == "table":  # what the provider disagrees with, and spend no budget planned
        for line in receipt.report_notes(store, since_at, until_at, queue):
            click.echo(line)


@main.command(short_help="A read-only web dashboard over the store.")
@click.option(
    "--host",
    default=defaults.HOST,
    show_default=True,
    envvar="LLMBATCH_DASHBOARD_HOST",
    help="Address to serve on; any but a local one needs LLMBATCH_DASHBOARD_TOKEN.",
)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=defaults.DASHBOARD_PORT,
    show_default=True,
    envvar="LLMBATCH_DASHBOARD_PORT",
    help="Port (0: any free one).",
)
@click.pass_context
def dashboard(ctx: click.Context, host: str, port: int) -> None:
    """Serve a page that shows the queue live: requests per queue and state, batches in
    flight with the provider's progress, ETA and timeline, budgets and held requests, cost
    and savings per day, deadlines at risk, recent failures and events, and one request by
    custom_id. Read-only; nothing it loads comes from the internet."""
    import os

    from llmbatch.observe.dashboard import TOKEN_ENV, check_host, serve

    token = os.environ.get(TOKEN_ENV) or None
    check_host(host, token)  # before the store is opened: a refusal changes nothing
    store = open_db(ctx)
    serve(store, host, port, token)
