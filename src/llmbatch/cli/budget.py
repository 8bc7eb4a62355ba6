"""`llmbatch budget`: the store's budgets — set, list, clear, and apply the config's.

The store is the only source of budgets (budget.py): every worker enforces what is here,
tightened by its own flags or config, never loosened. Bad input (a negative or non-numeric
amount, a period other than day or month, a queue that does not exist, clearing a budget
that is not there) is a usage error (ConfigError or NotFound: one line, exit code 2), with
nothing changed.
"""

from __future__ import annotations

import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import click

from llmbatch import defaults, render
from llmbatch.cli.app import check_queue, listing_options, main, open_db
from llmbatch.errors import ConfigError
from llmbatch.periods import PERIODS

if TYPE_CHECKING:
    from llmbatch.store.base import Store

# llmbatch.budget is imported by the commands that use it (`llmbatch --version` and the
# other commands start without it)


def _who(queue: str) -> str:
    from llmbatch.budget import ALL_QUEUES

    return "all queues" if queue == ALL_QUEUES else f"queue {queue}"


def _queue(store: Store, queue: str | None, *, purged_ok: bool = False) -> str:
    """The budget key of `--queue`: '*' without one; a queue that does not exist is refused
    (NotFound, as every command refuses one)."""
    from llmbatch.budget import ALL_QUEUES

    if queue is None:
        return ALL_QUEUES
    if queue == ALL_QUEUES or not queue.strip():
        raise ConfigError(
            f"--queue {queue!r} is not a queue name; leave --queue out for all queues"
        )
    check_queue(store, queue, purged_ok=purged_ok)
    return queue


@main.group(short_help="The store's budgets: set, list, clear, apply.")
def budget() -> None:
    """The store's budgets, which every worker enforces (a worker's own --budget-usd or
    [budgets] may only tighten them). Exit code 2 on bad input, with nothing changed."""


@budget.command("set")
@click.option("--queue", "-q", help="This queue alone (default: every queue together).")
@click.option("--daily-usd", metavar="USD", help="Cap per UTC day.")
@click.option("--monthly-usd", metavar="USD", help="Cap per UTC month.")
@click.option(
    "--assume-context-tokens",
    metavar="N",
    help="Context a request with previous_response_id may bring (it must set max_output_tokens).",
)
@click.option(
    "--allow-unpriced/--no-allow-unpriced",
    default=None,
    help="Whether models without a price (and hosted tools) may spend uncounted (all queues).",
)
@click.pass_context
def set_(
    ctx: click.Context,
    queue: str | None,
    daily_usd: str | None,
    monthly_usd: str | None,
    assume_context_tokens: str | None,
    allow_unpriced: bool | None,
) -> None:
    """Set budgets in the store: `llmbatch budget set --daily-usd 40 [--queue reviews]`."""
    from llmbatch.budget import ALL_QUEUES, amount, tokens, usd
    from llmbatch.pricing import MICRO

    limits = [
        (period, amount(value, f"--{flag}"))
        for period, flag, value in (
            ("day", "daily-usd", daily_usd),
            ("month", "monthly-usd", monthly_usd),
        )
        if value is not None
    ]
    context = (
        None
        if assume_context_tokens is None
        else tokens(assume_context_tokens, "--assume-context-tokens")
    )
    if not limits and context is None and allow_unpriced is None:
        raise ConfigError(
            "nothing to set: give --daily-usd, --monthly-usd, --assume-context-tokens or "
            "--allow-unpriced"
        )
    store = open_db(ctx)
    key = _queue(store, queue)
    if allow_unpriced is not None and key != ALL_QUEUES:
        raise ConfigError("--allow-unpriced applies to every queue together: leave --queue out")
    now = time.time()
    for period, value in limits:
        micro = int((value / MICRO).to_integral_value())
        was = store.set_budget(key, period, micro, now)
        before = f" (was {usd(was)} USD)" if was is not None else ""
        click.echo(f"budget: {_who(key)}, per {period}: {usd(micro)} USD{before}")
    if context is not None or allow_unpriced is not None:
        p = store.set_policy(key, now, allow_unpriced=allow_unpriced, assume_context_tokens=context)
        if context is not None:
            click.echo(
                f"budget: {_who(key)}: a previous_response_id is assumed to bring "
                f"{p.assume_context_tokens:,} context tokens"
            )
        if allow_unpriced is not None:
            click.echo(
                "budget: models without a price "
                + ("may spend uncounted" if p.allow_unpriced else "wait under a budget")
            )


LIST_COLUMNS = [
    render.Column("queue", "queue", show=lambda v: v or "all queues"),
    render.Column("period", "period"),
    render.Column("limit_usd", "limit $", right=True),
    render.Column("committed_usd", "spent or reserved $", right=True),
    render.Column("left_usd", "left $", right=True),
]


@budget.command("list")
@listing_options()
@click.pass_context
def list_(ctx: click.Context, fmt: str, wide: bool) -> None:
    """The store's budgets, with what their current period has spent or reserved."""
    from llmbatch.budget import ALL_QUEUES
    from llmbatch.pricing import MICRO

    store = open_db(ctx)
    rows = store.budget_overview(time.time())
    _rows, policies = store.stored_budgets()
    records: list[dict[str, Any]] = [
        {
            "queue": None if b.queue == ALL_QUEUES else b.queue,
            "period": b.period,
            "limit_usd": Decimal(b.limit_micro) * MICRO,
            "committed_usd": Decimal(b.committed) * MICRO,
            "left_usd": Decimal(max(0, b.limit_micro - b.committed)) * MICRO,
        }
        for b in rows
    ]
    settings = [
        {
            "queue": None if p.queue == ALL_QUEUES else p.queue,
            "assume_context_tokens": p.assume_context_tokens,
            "allow_unpriced": p.allow_unpriced,
        }
        for p in policies
    ]
    if fmt == "json":
        click.echo(render.as_json({"budgets": records, "settings": settings}), nl=False)
        return
    notes = []
    for s in settings:
        parts = []
        if s["assume_context_tokens"]:
            parts.append(
                f"previous_response_id assumed to bring {s['assume_context_tokens']:,} "
                "context tokens"
            )
        if s["allow_unpriced"] is not None:
            parts.append(
                "unpriced models " + ("may spend uncounted" if s["allow_unpriced"] else "wait")
            )
        if parts:
            notes.append(f"{s['queue'] or 'all queues'}: {'; '.join(parts)}")
    if fmt == "table" and not records:
        if not notes:
            click.echo("no budgets in this store: `llmbatch budget set --daily-usd 40` sets one")
        for note in notes:
            click.echo(note)
        return
    click.echo(render.listing(fmt, LIST_COLUMNS, records, wide=wide, notes=notes), nl=False)


@budget.command("clear")
@click.option("--queue", "-q", help="This queue's budgets (default: the all-queues budgets).")
@click.option(
    "--period",
    type=click.Choice(PERIODS),
    help="Only this period's budget (default: every period, and the queue's other settings).",
)
@click.pass_context
def clear(ctx: click.Context, queue: str | None, period: str | None) -> None:
    """Remove budgets from the store (a worker's own flags or config still hold for it)."""
    store = open_db(ctx)
    key = _queue(store, queue, purged_ok=True)  # a purged queue's budget may still go
    gone = store.clear_budgets(key, period)
    what = f"{_who(key)}" + (f", per {period}" if period else "")
    if not gone:
        raise ConfigError(f"no budget to clear for {what}: `llmbatch budget list` shows them")
    click.echo(f"cleared the budgets of {what}")


@budget.command("apply")
@click.option("--budget-usd", metavar="USD", help="A cap per --budget-period, as run takes it.")
@click.option(
    "--budget-period", type=click.Choice(PERIODS), default=defaults.BUDGET_PERIOD, show_default=True
)
@click.option("--queue", "-q", help="The queue --budget-usd applies to (default: every queue).")
@click.option("--allow-unpriced", is_flag=True, default=None, help="As run takes it.")
@click.pass_context
def apply(
    ctx: click.Context,
    budget_usd: str | None,
    budget_period: str,
    queue: str | None,
    allow_unpriced: bool | None,
) -> None:
    """Write the config's [budgets] (and --budget-usd) to the store, for every worker. Budgets
    the store has and the config does not name are kept (`budget clear` removes them)."""
    from llmbatch.budget import ALL_QUEUES, parse_budgets, usd
    from llmbatch.in_force import as_rows

    config = ctx.find_root().meta.get("llmbatch.config", {})
    mine = parse_budgets(
        config.get("budgets"),
        budget_usd=budget_usd,
        period=budget_period,
        queue=queue,
        allow_unpriced=allow_unpriced,
    )
    rows, policies = as_rows(mine)
    if not rows and not policies:
        raise ConfigError("nothing to apply: no [budgets] in the config and no --budget-usd")
    store = open_db(ctx)
    for key in sorted({r.queue for r in rows} | {p.queue for p in policies}):
        _queue(store, None if key == ALL_QUEUES else key)
    now = time.time()
    for r in rows:
        was = store.set_budget(r.queue, r.period, r.limit_micro, now)
        change = (
            "unchanged"
            if was == r.limit_micro
            else (f"was {usd(was)} USD" if was is not None else "new")
        )
        click.echo(f"budget: {_who(r.queue)}, per {r.period}: {usd(r.limit_micro)} USD ({change})")
    for p in policies:
        store.set_policy(
            p.queue,
            now,
            allow_unpriced=p.allow_unpriced,
            assume_context_tokens=p.assume_context_tokens,
        )
        click.echo(f"budget: {_who(p.queue)}: settings written")
    named = {(r.queue, r.period) for r in rows}
    kept = [b for b in store.stored_budgets()[0] if (b.queue, b.period) not in named]
    for b in kept:
        click.echo(
            f"kept: {_who(b.queue)}, per {b.period}: {usd(b.limit_micro)} USD (not in "
            "the config; `llmbatch budget clear` removes it)"
        )
