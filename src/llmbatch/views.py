"""What the CLI prints for the store: status, the lists of queues and batches, one request,
and `wait`'s progress. Every listing goes through `render` (one money format, tables that
fit the terminal, the same rows as JSON or CSV); progress comes from `progress`."""

from __future__ import annotations

import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import orjson

from llmbatch import defaults, identity, receipt, render, sharing
from llmbatch.pricing import MICRO
from llmbatch.progress import Snapshot, Tracker, batch_eta, snapshot
from llmbatch.render import Column, duration, money
from llmbatch.states import REQUEST_STATES
from llmbatch.store.base import Store
from llmbatch.store.budgets import BudgetRow
from llmbatch.store.manage import BatchProgress, BatchRow, QueueRow
from llmbatch.store.types import ALL_QUEUES, Count

# -- requests per queue, model and state ---------------------------------------------------


def count_columns(counts: Sequence[Count]) -> list[Column]:
    """queue, provider, model, one column per state that occurs, and the total."""
    seen = {c.state for c in counts}
    states = [s for s in REQUEST_STATES if s in seen] or ["queued"]
    return [
        Column("queue", "queue"),
        Column("provider", "provider", drop=1),
        Column("model", "model"),
        *(Column(s, s, right=True) for s in states),
        Column("total", "total", right=True),
    ]


def count_records(counts: Sequence[Count]) -> list[dict[str, Any]]:
    """One record per queue × provider × model, and an "all" row when there are several."""
    grid: dict[tuple[str, str, str], dict[str, int]] = defaultdict(dict)
    for c in counts:
        grid[(c.queue, c.provider, c.model)][c.state] = c.n
    records: list[dict[str, Any]] = []
    for (queue, provider, model), cells in sorted(grid.items()):
        records.append({"queue": queue, "provider": provider, "model": model, **cells})
    if len(records) > 1:
        every: dict[str, int] = defaultdict(int)
        for c in counts:
            every[c.state] += c.n
        records.append({"queue": "all", "provider": "", "model": "", **every})
    for r in records:
        r["total"] = sum(int(r.get(s, 0)) for s in REQUEST_STATES)
        for s in REQUEST_STATES:
            r.setdefault(s, 0)
    return records


EMPTY_STORE = "no requests yet: enqueue some with `llmbatch enqueue FILE.jsonl`"


def counts_table(counts: Sequence[Count], *, wide: bool = False) -> str:
    if not counts:
        return EMPTY_STORE + "\n"
    return render.table(
        count_columns(counts), count_records(counts), title="requests", wide=wide, bold_last=True
    )


# -- batches -------------------------------------------------------------------------------


def _age(now: float, ts: float | None) -> str:
    return "-" if ts is None else duration(now - ts)


def _eta(v: int | None) -> str:
    """Seconds until the provider's rate says done; 0: due by now (the counts are from the
    last poll)."""
    return "-" if v is None else ("due" if v == 0 else duration(v))


# At 100 columns a provider batch id (38 characters) leaves room for the state, the counts,
# the age and the ETA; the rest gives way first (the higher `drop`, the sooner).
BATCH_COLUMNS = [
    Column("id", "batch", right=True),
    Column("provider", "provider", drop=6),
    Column("provider_batch_id", "provider batch", show=lambda v: v or "-"),
    Column("model", "model", drop=5),
    Column("provider_model", "ran", drop=7, show=lambda v: v or ""),
    Column("state", "state"),
    Column("requests", "requests", right=True),
    Column("done", "done", right=True),
    Column("failed", "failed", right=True, drop=3),
    Column("age_s", "age", right=True, drop=4, show=duration),
    Column("eta_s", "eta", right=True, drop=2, show=_eta),
    Column("note", "note", drop=1, show=lambda v: v or ""),
]


def batch_record(
    b: BatchRow | dict[str, Any], now: float, progress: BatchProgress | None = None
) -> dict[str, Any]:
    """A batch as the lists show it: `done` is what the provider counts as run (completed and
    failed), `read_back` what is recorded here, `eta_s` from the provider's rate."""
    row = b if isinstance(b, dict) else _row_dict(b)
    state = row["state"]
    shown = row.get("provider_status") or state
    if state == "ingested":
        shown = "archived" if row.get("provider_status") == "archived" else "done"
    note = "cancel requested" if row.get("cancel_requested_at") else ""
    if state == "submitting":
        note = note or "being sent"
    else:
        note = note or _batch_note(row["provider"], state) or ""
    eta = batch_eta(progress) if progress is not None else None
    started = row.get("submitted_at") or row.get("created_at")
    return {
        "id": row["id"],
        "provider": row["provider"],
        "provider_batch_id": row.get("provider_batch_id"),
        "model": row.get("model") or "several",
        "provider_model": row.get("provider_model"),  # what the provider says ran it
        "state": shown,
        "requests": row["request_count"],
        "done": row["completed_count"] + row["failed_count"],
        "failed": row["failed_count"],
        "read_back": progress.read_back if progress is not None else None,
        "age_s": None if started is None else round(max(0.0, now - started)),
        "eta_s": None if eta is None else round(max(0.0, eta.at - now)),
        "submitted_at": row.get("submitted_at"),
        "finished_at": row.get("finished_at"),
        "note": note,
    }


def _row_dict(b: BatchRow) -> dict[str, Any]:
    return {
        "id": b.id,
        "provider": b.provider,
        "model": b.model,
        "provider_model": b.provider_model,
        "state": b.state,
        "provider_batch_id": b.provider_batch_id,
        "provider_status": b.provider_status,
        "request_count": b.request_count,
        "completed_count": b.completed,
        "failed_count": b.failed,
        "created_at": b.created_at,
        "submitted_at": b.submitted_at,
        "finished_at": b.finished_at,
        "cancel_requested_at": b.cancel_requested_at,
    }


def batch_records(
    batches: Sequence[BatchRow | dict[str, Any]], progress: Sequence[BatchProgress], now: float
) -> list[dict[str, Any]]:
    by_id = {p.id: p for p in progress}
    out = []
    for b in batches:
        bid = b["id"] if isinstance(b, dict) else b.id
        out.append(batch_record(b, now, by_id.get(int(bid))))
    return out


# -- status --------------------------------------------------------------------------------


def progress_line(snap: Snapshot, eta_at: float | None, now: float) -> str:
    """`347 of 900 requests done at the provider, 120 read back; eta 12m05s (06:40 UTC)`."""
    line = (
        f"progress: {snap.done:,} of {snap.total:,} requests done at the provider, "
        f"{snap.read_back:,} read back"
    )
    if eta_at is not None:
        clock = datetime.fromtimestamp(eta_at, UTC).strftime("%H:%M UTC")
        left = "due now" if eta_at <= now else duration(eta_at - now)
        line += f"; eta {left} ({clock})"
    elif snap.batches and snap.done < snap.total:
        line += "; eta unknown until the provider reports progress"
    return line


def queue_eta(snap: Snapshot, now: float) -> float | None:
    """The whole queue's ETA from its open batches': the latest of them."""
    etas = [batch_eta(b) for b in snap.batches]
    known = [e.at for e in etas if e is not None]
    return max(known) if known and len(known) == len(etas) else None


def status_text(
    store: Store, queue: str | None, now: float, *, wide: bool = False, recent: int = 5
) -> str:
    """Requests per queue, model and state; progress and batches; deadlines and budgets."""
    counts = store.counts(queue)
    out = [counts_table(counts, wide=wide)]
    snap = snapshot(store, queue)
    batches = store.batch_overview(recent, queue)
    if batches:
        records = batch_records(batches, snap.batches, now)
        out.append("\n" + render.table(BATCH_COLUMNS, records, title="batches", wide=wide))
    if snap.batches:
        out.append(progress_line(snap, queue_eta(snap, now), now) + "\n")
    missed, at_risk = store.deadline_risk(now, now + defaults.BATCH_WINDOW_S, queue)
    if missed or at_risk:
        out.append(
            f"\ndeadlines: {missed:,} missed, {at_risk:,} at risk (a batch may take up to 24 h; "
            "real-time rescue is not built yet)\n"
        )
    out.append(budget_lines(store.budget_overview(now), store.held_reasons()))
    out += [f"waiting: {w['text']}\n" for w in waiting_for_more(counts)]
    out += [ln + "\n" for ln in receipt.status_lines(store, now, queue)]  # checks, unplanned
    out += [ln + "\n" for ln in identity.status_lines(store, now)]  # a copy, proof waits
    out += [ln + "\n" for ln in sharing.status_lines(store, now)]  # who holds what
    out.append(delivery_lines(store, now))
    return "".join(out)


def delivery_lines(store: Store, now: float) -> str:
    """Archives not yet written and webhook events not yet delivered, with the last error."""
    from llmbatch.render import duration

    lines = []
    waiting = store.archive_waiting(1000)
    if waiting:
        failed = [w for w in waiting if w[1]]
        line = f"archive: {len(waiting):,} batches waiting"
        if failed:
            batch_id, tries, next_at, error = failed[0]
            line += (
                f"; batch {batch_id} failed {tries} times, next try in "
                f"{duration(max(0.0, next_at - now))}: {error}"
            )
        lines.append(line)
    events, soonest = store.outbox_waiting()
    if events:
        when = "" if soonest is None else f", next try in {duration(max(0.0, soonest - now))}"
        lines.append(f"webhooks: {events:,} events not delivered yet{when}")
    return "".join("\n" + ln for ln in lines) + ("\n" if lines else "")


def waiting_for_more(counts: Sequence[Any]) -> list[dict[str, Any]]:
    """Models whose waiting requests are fewer than their provider's smallest batch (Cerebras
    takes no batch under 10): they are not sent until more arrive."""
    waiting: dict[tuple[str, str], int] = {}
    for c in counts:
        if c.state in ("queued", "retry_wait"):
            key = (c.provider, c.model)
            waiting[key] = waiting.get(key, 0) + c.n
    if not waiting:
        return []
    from llmbatch.providers import format_or_base

    out = []
    for (provider, model), n in sorted(waiting.items()):
        fmt = format_or_base(provider)
        if n < fmt.min_batch:
            label = fmt.label or provider
            text = (
                f"{n:,} {provider} requests of {model}: a {label} batch takes at least "
                f"{fmt.min_batch}; they are sent when more arrive"
            )
            out.append(
                dict(provider=provider, model=model, count=n, min_batch=fmt.min_batch, text=text)
            )
    return out


def budget_lines(budgets: Sequence[BudgetRow], held: Sequence[tuple[str, int]]) -> str:
    """The store's budgets, spend in the current period, and why requests wait."""
    if not budgets and not held:
        return ""
    lines = [""]
    for b in budgets:
        who = "all queues" if b.queue == ALL_QUEUES else f"queue {b.queue}"
        limit, spent = Decimal(b.limit_micro) * MICRO, Decimal(b.committed) * MICRO
        lines.append(
            f"budget {money(limit)} USD per {b.period}, {who}: {money(spent)} spent or "
            f"reserved, {money(max(Decimal(0), limit - spent))} left"
        )
    if held:  # one line: the newest reason speaks for all (they differ only in figures)
        lines.append(f"held: {sum(n for _r, n in held):,} requests: {held[0][0]}")
    return "\n".join(lines) + "\n"


def status_record(store: Store, queue: str | None, now: float) -> dict[str, Any]:
    """Everything `status` shows, as one JSON object (for scrapers and alerts)."""
    counts = store.counts(queue)
    snap = snapshot(store, queue)
    missed, at_risk = store.deadline_risk(now, now + defaults.BATCH_WINDOW_S, queue)
    eta_at = queue_eta(snap, now)
    return {
        "counts": [
            {
                "queue": c.queue,
                "provider": c.provider,
                "model": c.model,
                "state": c.state,
                "count": c.n,
            }
            for c in counts
        ],
        "total": sum(c.n for c in counts),
        "progress": {
            "total": snap.total,
            "done_at_provider": snap.done,
            "read_back": snap.read_back,
            "eta_s": None if eta_at is None else round(max(0.0, eta_at - now)),
        },
        "batches": batch_records(store.batch_overview(5, queue), snap.batches, now),
        "deadlines": {"missed": missed, "at_risk": at_risk},
        "budgets": [
            {
                "queue": None if b.queue == ALL_QUEUES else b.queue,
                "period": b.period,
                "limit_usd": str(Decimal(b.limit_micro) * MICRO),
                "committed_usd": str(Decimal(b.committed) * MICRO),
            }
            for b in store.budget_overview(now)
        ],
        "held": [{"reason": r, "count": n} for r, n in store.held_reasons()],
        "waiting_for_more": waiting_for_more(counts),
        "spend": receipt.status_record(store, now, queue),  # provider checks, unplanned spend
        "ownership": identity.status_record(store, now),  # a copy or move, proof waits
        "workers": sharing.status_record(store, now),  # who holds what, since when
        "archive": [
            {"batch": b, "tries": t, "next_try_at": n, "last_error": e}
            for b, t, n, e in store.archive_waiting(1000)
        ],
        "webhooks": {"waiting": store.outbox_waiting()[0]},
    }


COUNT_CSV = [
    Column("queue", "queue"),
    Column("provider", "provider"),
    Column("model", "model"),
    Column("state", "state"),
    Column("count", "count"),
]


def status_csv(counts: Sequence[Count]) -> str:
    return render.as_csv(
        COUNT_CSV,
        [
            {
                "queue": c.queue,
                "provider": c.provider,
                "model": c.model,
                "state": c.state,
                "count": c.n,
            }
            for c in counts
        ],
    )


# -- queues --------------------------------------------------------------------------------

QUEUE_COLUMNS = [
    Column("queue", "queue"),
    Column("requests", "requests", right=True),
    Column("waiting", "waiting", right=True),
    Column("in_flight", "in flight", right=True),
    Column("succeeded", "succeeded", right=True),
    Column("failed", "failed", right=True),
    Column("cancelled", "cancelled", right=True, drop=1),
    Column("status", "status"),
    Column("first_enqueued", "first enqueued", drop=2, show=lambda v: _when(v, short=True)),
    Column("last_change", "last change", drop=3, show=lambda v: _when(v, short=True)),
]


def queue_records(queues: Sequence[QueueRow]) -> list[dict[str, Any]]:
    out = []
    for q in queues:
        s = q.states
        waiting = s.get("queued", 0) + s.get("retry_wait", 0) + s.get("held", 0)
        in_flight = s.get("packed", 0) + s.get("submitted", 0)
        if not q.total:
            status = "purged"
        elif q.unfinished:
            status = "held" if s.get("held") and not in_flight else "running"
        else:
            status = "done"
        out.append(
            {
                "queue": q.name,
                "requests": q.total,
                "waiting": waiting,
                "in_flight": in_flight,
                "succeeded": s.get("succeeded", 0),
                "failed": s.get("failed", 0),
                "cancelled": s.get("cancelled", 0),
                "status": status,
                "first_enqueued": q.first_enqueued,
                "last_change": q.last_change,
                "results_costed": q.recorded_results,
            }
        )
    return out


# -- one request ---------------------------------------------------------------------------


def _when(ts: float | None, *, short: bool = False) -> str:
    if ts is None:
        return "-"
    fmt = "%Y-%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S UTC"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


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
            f"{req['custom_id']}  queue {req['queue']}  {req['provider']} {req['endpoint']}  "
            f"model {req['model']}"
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
            print(f"  attempt {a['id']}  batch {batch} line {a['line'] or '-'}  {a['state']}{err}")
            if a.get("provider_model") or a.get("provider_input_tokens") is not None:
                said = [f"it ran {a['provider_model']}"] if a.get("provider_model") else []
                if a.get("provider_input_tokens") is not None:
                    said.append(
                        f"the whole batch used {a['provider_input_tokens']:,} in / "
                        f"{a['provider_output_tokens']:,} out tokens"
                    )
                print(f"    provider says: {', '.join(said)}")
        res = req.get("result")
        if res is not None:
            if res.get("error_code"):
                print(f"  result     {req['state']}: {res['error_code']}: {res['error_message']}")
            else:
                print(
                    f"  result     {res['status_code']}, {res['input_tokens']} in / "
                    f"{res['output_tokens']} out tokens"
                )


# -- wait ----------------------------------------------------------------------------------


def drain_with_progress(
    engine: Any,
    queue: str | None,
    timeout: float | None,
    on_tick: Callable[[Any], None] | None = None,
    counts: Sequence[Count] | None = None,
) -> Any:
    """Run `worker.drain` with a progress bar fed by the provider's counts on a terminal, and a
    line each time something moves otherwise; both with the ETA. `counts` (the store's of
    `queue`, read just before) saves reading them again for the start."""
    from llmbatch.worker import drain

    tracker = Tracker()
    tty = sys.stderr.isatty()
    said: list[tuple[int, int, tuple[str, ...]]] = []
    with _progress_bar(tty) as bar:
        snap = snapshot(engine.store, queue, counts)
        task = bar.add_task("done", total=snap.total or 1, completed=snap.done, extra="")

        def tick(report: Any) -> None:
            now = time.time()
            snap = snapshot(engine.store, queue)
            eta = tracker.observe(snap, now)
            states = tuple(sorted(b.provider_status or b.state for b in snap.batches))
            extra = f"read back {snap.read_back:,}"
            if eta is not None:
                extra += f" · eta {duration(eta.seconds)}"
            desc = f"watching {report.held_by}" if report.held_by else "done at provider"
            bar.update(
                task, completed=snap.done, total=snap.total or 1, description=desc, extra=extra
            )
            key = (snap.done, snap.read_back, states)
            if not tty and (not said or said[-1] != key):
                said.append(key)
                where = f"; batches: {', '.join(states)}" if states else ""
                when = f"; eta {duration(eta.seconds)}" if eta is not None else ""
                print(
                    f"{snap.done:,}/{snap.total:,} done at the provider, {snap.read_back:,} read "
                    f"back{where}{when}",
                    file=sys.stderr,
                )
            if on_tick is not None:
                on_tick(report)

        return drain(engine, queue=queue, timeout=timeout, on_tick=tick)


class _NoBar:
    """The progress bar off a terminal, where the lines stand for it: rich is not imported
    (~0.04 CPU s of `wait`'s start)."""

    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def add_task(self, *args: Any, **kwargs: Any) -> int:
        return 0

    def update(self, *args: Any, **kwargs: Any) -> None:
        return None


def _progress_bar(tty: bool) -> Any:
    if not tty:
        return _NoBar()
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("{task.fields[extra]}"),
        TimeElapsedColumn(),
    )
    return Progress(*columns, console=Console(stderr=True))


def _batch_note(provider: str, state: str) -> str | None:
    """The provider's own word beside a batch (`Format.batch_note`)."""
    from llmbatch.providers import format_or_base

    return format_or_base(provider).batch_note(state)
