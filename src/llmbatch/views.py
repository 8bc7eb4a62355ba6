"""What the CLI prints: rich tables on a terminal, plain aligned text otherwise, JSON on request."""

from __future__ import annotations

import sys
from collections import defaultdict
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from llmbatch.budget import ALL_QUEUES, usd
from llmbatch.pricing import MICRO
from llmbatch.states import REQUEST_STATES
from llmbatch.store import Count
from llmbatch.store.budgets import BudgetRow


def _console() -> Console:
    return Console(highlight=False)


def _pivot(counts: list[Count]) -> tuple[list[str], list[list[str]]]:
    """One row per queue × provider × model, one column per state that occurs, and a total."""
    seen = {c.state for c in counts}
    states = [s for s in REQUEST_STATES if s in seen] or ["queued"]
    grid: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for c in counts:
        grid[(c.queue, c.provider, c.model)][c.state] = c.n
    header = ["queue", "provider", "model", *states, "total"]
    rows = []
    for key in sorted(grid):
        cells = grid[key]
        rows.append([*key, *(f"{cells.get(s, 0):,}" for s in states), f"{sum(cells.values()):,}"])
    if len(rows) > 1:
        totals = [sum(c.n for c in counts if c.state == s) for s in states]
        rows.append(["all", "", "", *(f"{t:,}" for t in totals), f"{sum(totals):,}"])
    return header, rows


def print_status(counts: list[Count]) -> None:
    if not counts:
        print("no requests yet: enqueue some with `llmbatch enqueue FILE.jsonl`")
        return
    header, rows = _pivot(counts)
    if sys.stdout.isatty():
        table = Table(title="llmbatch status")
        for i, h in enumerate(header):
            table.add_column(h, justify="right" if i >= 3 else "left")
        for row in rows:
            table.add_row(*row)
        _console().print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print(
            "  ".join(
                c.ljust(w) if i < 3 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ).rstrip()
        )


def status_json(
    counts: list[Count],
    batches: list[dict[str, Any]] | None = None,
    deadlines: tuple[int, int] = (0, 0),
    budgets: list[BudgetRow] | None = None,
    held: list[tuple[str, int]] | None = None,
) -> str:
    data = [
        {"queue": c.queue, "provider": c.provider, "model": c.model, "state": c.state, "count": c.n}
        for c in counts
    ]
    return orjson.dumps({
        "counts": data, "total": sum(c.n for c in counts), "batches": batches or [],
        "deadlines": {"missed": deadlines[0], "at_risk": deadlines[1]},
        "budgets": [{
            "queue": None if b.queue == ALL_QUEUES else b.queue, "period": b.period,
            "limit_usd": str(Decimal(b.limit_micro) * MICRO), "committed_usd": str(Decimal(b.committed) * MICRO),
        } for b in budgets or []],
        "held": [{"reason": r, "count": n} for r, n in held or []],
    }).decode()  # fmt: skip


def _age(now: float, ts: float | None) -> str:
    if ts is None:
        return "-"
    s = max(0, int(now - ts))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def print_batches(batches: list[dict[str, Any]], now: float) -> None:
    """Open batches (and the last few finished) with why each is where it is."""
    if not batches:
        return
    header = [
        "batch",
        "provider batch",
        "model",
        "state",
        "requests",
        "done",
        "failed",
        "age",
        "note",
    ]
    rows = []
    for b in batches:
        note = "cancel requested" if b.get("cancel_requested_at") else ""
        if b["state"] == "submitting":
            note = note or "intent committed, being sent"
        rows.append([
            str(b["id"]), b.get("provider_batch_id") or "-", b.get("model") or "-",
            b.get("provider_status") or b["state"] if b["state"] != "ingested" else _done(b),
            f"{b['request_count']:,}", f"{b['completed_count']:,}", f"{b['failed_count']:,}",
            _age(now, b.get("submitted_at") or b.get("created_at")), note,
        ])  # fmt: skip
    print()
    if sys.stdout.isatty():
        table = Table(title="batches")
        for h in header:
            table.add_column(h)
        for row in rows:
            table.add_row(*row)
        _console().print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for row in [header, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _done(b: dict[str, Any]) -> str:
    """A finished batch: done, or archived when its results were gone before they were read."""
    return "archived" if b.get("provider_status") == "archived" else "done"


def print_deadlines(missed: int, at_risk: int) -> None:
    if missed or at_risk:
        print(
            f"\ndeadlines: {missed:,} missed, {at_risk:,} at risk (a batch may take up to 24 h; "
            "real-time rescue is not built yet)"
        )


def print_budgets(budgets: list[BudgetRow], held: list[tuple[str, int]]) -> None:
    """Budgets as workers last enforced them, spend in the current period, and why requests wait."""
    if not budgets and not held:
        return
    print()
    for b in budgets:
        who = "all queues" if b.queue == ALL_QUEUES else f"queue {b.queue}"
        print(
            f"budget {usd(b.limit_micro)} USD per {b.period}, {who}: {usd(b.committed)} spent "
            f"or reserved, {usd(max(0, b.limit_micro - b.committed))} left"
        )
    if held:  # one line: the newest reason speaks for all (they differ only in figures)
        print(f"held: {sum(n for _r, n in held):,} requests: {held[0][0]}")


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _jsonable(detail: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for req in detail:
        d = {k: v for k, v in req.items() if k not in ("body", "result")}
        d["body"] = orjson.loads(req["body"])
        res = req.get("result")
        if res is not None:
            res = dict(res)
            if res.get("body") is not None:
                res["body"] = orjson.loads(bytes(res["body"]))
        d["result"] = res
        out.append(d)
    return out


def detail_json(detail: list[dict[str, Any]]) -> str:
    return orjson.dumps(_jsonable(detail), option=orjson.OPT_INDENT_2).decode()


def print_detail(detail: list[dict[str, Any]]) -> None:
    for req in detail:
        why = f" ({req['reason']})" if req.get("reason") else ""
        print(
            f"{req['custom_id']}  queue {req['queue']}  {req['provider']} {req['endpoint']}  model {req['model']}"
        )
        print(f"  state      {req['state']}{why}")
        if req["state"] == "retry_wait" and req.get("not_before") is not None:
            print(f"  next try   {_when(req['not_before'])}")
        print(
            f"  enqueued   {_when(req['created_at'])} (import {req['import_id']}, line {req['line']})"
        )
        print(f"  priority   {req['priority']}   deadline {_when(req['deadline'])}")
        print(
            f"  size       {req['text_chars']:,} characters of text, {len(req['body']):,} bytes of body"
        )
        if not req["attempts"]:
            print("  attempts   none yet")
        for a in req["attempts"]:
            batch = a.get("provider_batch_id") or a.get("batch_id") or "-"
            err = f"  {a['error_code']}: {a['error_message']}" if a.get("error_code") else ""
            print(f"  attempt {a['id']}  batch {batch} line {a['line']}  {a['state']}{err}")
        res = req.get("result")
        if res is not None:
            if res.get("error_code"):
                print(f"  result     failed: {res['error_code']}: {res['error_message']}")
            else:
                print(
                    f"  result     {res['status_code']}, {res['input_tokens']} in / {res['output_tokens']} out tokens"
                )


def drain_with_progress(engine: Any, queue: str | None, timeout: float | None) -> Any:
    """Run `worker.drain` with a progress bar on a terminal, plain lines otherwise."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from llmbatch.worker import drain, queue_progress

    done, total = queue_progress(engine.store, queue)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=Console(stderr=True), disable=not sys.stderr.isatty(),
    ) as progress:  # fmt: skip
        task = progress.add_task("requests done", total=total or 1, completed=done)

        def on_tick(report: Any) -> None:
            d, t = queue_progress(engine.store, queue)
            desc = f"watching {report.held_by}" if report.held_by else "requests done"
            progress.update(task, completed=d, total=t or 1, description=desc)
            if not sys.stderr.isatty() and (report.ingested_batches or report.submitted):
                print(f"{d:,}/{t:,} requests done", file=sys.stderr)

        return drain(engine, queue=queue, timeout=timeout, on_tick=on_tick)
