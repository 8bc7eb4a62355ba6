"""Receipts: what one batch — or one queue's day — cost, line by line, and how we know.

`llmbatch report --batch ID` and `llmbatch report --day YYYY-MM-DD [--queue Q]`. A line is a
model and price tier of one batch: its requests, tokens, the list price (real time), what
batch paid, what it saved. Below the lines: the price data's version, lines whose batch
price is derived (real time x 50 %) or that have no price at all (never shown as $0), the
budget's reservation and settlement, the provider's own total beside ours ("provider says"
/ "we counted"), and spend no budget planned (a duplicate provider batch, charged when found).

`status_lines` gives `llmbatch status` the same checks: anomalies, unplanned spend, and the
distinct reasons requests are held.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from llmbatch.errors import ConfigError, NotFound
from llmbatch.ledger import describe_unplanned, mismatch, tally_cost
from llmbatch.periods import period_days
from llmbatch.pricing import MICRO, Tokens, price_group, prices_version, usd
from llmbatch.render import Column, as_csv, as_json, money, table
from llmbatch.render import width as terminal_width
from llmbatch.store.ledger import UsageCheck

if TYPE_CHECKING:
    from llmbatch.store.base import Store

EPOCH = date(1970, 1, 1)
ALL_DAYS = (0, 10**7)
WIDTH = 100  # receipts fit a 100-column terminal


@dataclass(slots=True)
class ReceiptLine:
    """One model and price tier of one batch."""

    batch_id: int
    model: str
    tier: int
    requests: int = 0
    succeeded: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    list_usd: Decimal | None = Decimal(0)  # real time; None: unpriced
    paid_usd: Decimal | None = Decimal(0)  # batch
    derived: bool = False
    unpriced: int = 0  # succeeded results with no known cost (left out of the sums)

    @property
    def saved_usd(self) -> Decimal | None:
        if self.list_usd is None or self.paid_usd is None:
            return None
        return self.list_usd - self.paid_usd

    def record(self) -> dict[str, Any]:
        return {
            "batch": self.batch_id,
            "model": self.model,
            "tier": self.tier,
            "requests": self.requests,
            "succeeded": self.succeeded,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "list_usd": self.list_usd,
            "paid_usd": self.paid_usd,
            "saved_usd": self.saved_usd,
            "derived": self.derived,
            "unpriced": self.unpriced,
        }


@dataclass(slots=True)
class Receipt:
    """A receipt for one batch, or for one queue's (or every queue's) UTC day."""

    title: str
    lines: list[ReceiptLine] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    checks: list[UsageCheck] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # budget, duplicates (JSON only)

    def total(self, attr: str) -> Decimal:
        return sum((getattr(ln, attr) or Decimal(0) for ln in self.lines), Decimal(0))

    def record(self) -> dict[str, Any]:
        return {
            "receipt": self.title,
            "prices": prices_version(),
            "lines": [ln.record() for ln in self.lines],
            "total": {
                "list_usd": self.total("list_usd"),
                "paid_usd": self.total("paid_usd"),
                "saved_usd": self.total("list_usd") - self.total("paid_usd"),
                "unpriced": sum(ln.unpriced for ln in self.lines),
            },
            "provider_checks": [
                {
                    "batch": c.batch_id,
                    "provider_batch_id": c.provider_batch_id,
                    "provider_says": dict(
                        zip(("input", "cached", "output", "reasoning"), c.says, strict=True)
                    ),
                    "we_counted": dict(
                        zip(("input", "cached", "output", "reasoning"), c.counted, strict=True)
                    ),
                    "differs": c.differs,
                }
                for c in self.checks
            ],
            "notes": self.notes,
            **self.extra,
        }


def _lines(
    store: Store, first: int, end: int, batch_id: int | None, queue: str | None
) -> list[ReceiptLine]:
    """Receipt lines from the store's groups: tokens summed over queues first, so each
    aggregate (batch, model, tier, day) is priced once (a price costs ~0.1 ms)."""
    out: dict[tuple[int, str, int], ReceiptLine] = {}
    sums: dict[tuple[int, str, str, str, int, int], list[int]] = {}
    for g in store.receipt_groups(first, end, batch_id=batch_id, queue=queue):
        ln = out.setdefault(
            (g.batch_id, g.model, g.price_tier), ReceiptLine(g.batch_id, g.model, g.price_tier)
        )
        ln.requests += g.requests
        ln.succeeded += g.succeeded
        ln.input_tokens += g.input_tokens
        ln.output_tokens += g.output_tokens
        ln.unpriced += g.flagged
        key = (g.batch_id, g.provider, g.model, g.endpoint, g.price_tier, g.day)
        acc = sums.setdefault(key, [0, 0, 0, 0, 0])
        acc[0] += g.input_tokens
        acc[1] += g.cached_tokens
        acc[2] += g.cache_write_5m_tokens
        acc[3] += g.cache_write_1h_tokens
        acc[4] += g.output_tokens
    for (batch, provider, model, endpoint, tier, day), acc in sums.items():
        ln = out[(batch, model, tier)]
        tokens = Tokens(*acc)
        cost = price_group(provider, model, tokens, tier, EPOCH + timedelta(days=day), endpoint)
        if cost.batch is None or cost.real is None:  # a model without a price: never $0
            ln.unpriced = ln.succeeded
            ln.list_usd = ln.paid_usd = None
            continue
        if ln.paid_usd is not None and ln.list_usd is not None:
            ln.paid_usd += cost.batch
            ln.list_usd += cost.real
        ln.derived = ln.derived or cost.derived
    return [out[k] for k in sorted(out)]


def for_batch(store: Store, ref: str) -> Receipt:
    """The receipt of one batch (a local id or the provider's batch id)."""
    b = store.find_batch(ref)
    if b is None:
        raise NotFound(f"no batch {ref!r} in this store: `llmbatch batches` lists them")
    bid = int(b["id"])
    when = b["ingested_at"] or b["submitted_at"] or b["created_at"]
    title = (
        f"batch {bid} ({b['provider_batch_id'] or 'not sent'}; {b['provider']}, "
        f"{b['model'] or 'several models'}, {b['state']}, {_when(when)})"
    )
    r = Receipt(title, _lines(store, *ALL_DAYS, bid, None))
    spend = store.batch_spend(bid)
    if spend:
        worst = sum(s.worst or 0 for s in spend)
        settled = all(s.settled_at is not None for s in spend)
        paid = sum(s.spent for s in spend) if settled else None
        kind = "a duplicate no budget planned" if spend[0].kind == "duplicate" else "budgeted"
        r.notes.append(
            f"budget ({kind}): reserved {usd(worst)} USD worst case; "
            + (
                f"settled at {usd(paid or 0)} USD ({spend[0].prices or 'older prices'})"
                if settled
                else "not settled yet"
            )
        )
        r.notes += describe_unplanned([s for s in spend if s.unpriced])
        r.extra["budget"] = [
            {
                "queue": s.queue,
                "worst_usd": _usd(s.worst),
                "spent_usd": _usd(s.spent),
                "settled": s.settled_at is not None,
                "kind": s.kind,
                "unpriced": s.unpriced,
            }
            for s in spend
        ]
    if b["intent_id"] is not None:
        cost, missing = tally_cost(store.batch_tally(bid), b["provider"], b["endpoint"], _day(when))
        r.notes.append(
            f"a duplicate provider batch of batch {b['intent_id']}: its results answer requests "
            f"already answered; its own lines cost {usd(cost)} USD in batch"
            + (f", {missing} results without a price" if missing else "")
        )
    for dup_id, dup_ref in b["duplicates"]:
        r.notes.append(
            f"duplicate: batch {dup_id} ({dup_ref}) ran these requests again; see "
            f"`llmbatch report --batch {dup_id}`"
        )
    r.extra["duplicates"] = [{"batch": d, "provider_batch_id": p} for d, p in b["duplicates"]]
    r.checks = store.usage_checks(bid, every=True)
    _notes(r, b["provider"])
    return r


def for_day(store: Store, day: date, queue: str | None = None) -> Receipt:
    """The receipt of one UTC day (of one queue): a line per batch, model and tier."""
    first = (day - EPOCH).days
    who = f"queue {queue}" if queue else "all queues"
    r = Receipt(
        f"{who}, {day.isoformat()} (UTC, by the day results were recorded)",
        _lines(store, first, first + 1, None, queue),
    )
    batches = sorted({ln.batch_id for ln in r.lines})
    r.checks = [c for b in batches for c in store.usage_checks(b, every=True)]
    r.notes += describe_unplanned(store.unplanned_spend(first, first + 1, queue))
    _notes(r, None)
    return r


def _notes(r: Receipt, provider: str | None) -> None:
    for c in r.checks:
        if c.differs:
            r.notes.append("DIFFERS: " + mismatch(c))
        else:
            ran = f" (it ran {c.model})" if c.model else ""
            r.notes.append(
                f"batch {c.batch_id}: provider says {c.says[0]:,} input and {c.says[2]:,} "
                f"output tokens{ran}, as we counted"
            )
    if provider is not None and not r.checks and not _gives_total(provider):
        r.notes.append(f"{provider} gives no batch total: nothing to check our count against")
    if any(ln.derived for ln in r.lines):
        r.notes.append("derived: no batch price in the price data; real-time price x 50 % used")
    unpriced = sum(ln.unpriced for ln in r.lines)
    if unpriced:
        r.notes.append(
            f"unpriced: {unpriced:,} results without a known cost (an unknown model or "
            "unreadable usage); left out of the sums, not counted as $0"
        )
    r.notes.append(f"prices: {prices_version()}")


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _day(ts: float | None) -> date:
    return datetime.fromtimestamp(ts or 0, UTC).date()


def _usd(micro: int | None) -> Decimal | None:
    return None if micro is None else Decimal(micro) * MICRO


def _amount(v: Decimal | None) -> str:
    """An amount in the one money format (`render.money`); no price is "unpriced", never $0."""
    return "unpriced" if v is None else money(v)


def _blank_zero(v: Any) -> str:
    return f"{v:,}" if v else ""


# The table: key columns, then figures; `drop` says what goes first on a narrow terminal.
COLUMNS = [
    Column("batch", "batch"),
    Column("model", "model"),
    Column("tier", "tier", right=True, drop=5),
    Column("requests", "requests", right=True),
    Column("succeeded", "ok", right=True, drop=4),
    Column("input_tokens", "input tok", right=True, drop=2),
    Column("output_tokens", "output tok", right=True, drop=2),
    Column("list_usd", "list $", right=True, show=_amount),
    Column("paid_usd", "paid $", right=True, show=_amount),
    Column("saved_usd", "saved $", right=True, show=_amount),
    Column("derived", "price", drop=3, show=lambda v: "derived" if v else ""),
    Column("unpriced", "unpriced", right=True, drop=3, show=_blank_zero),
]


def render(r: Receipt, fmt: str = "table", wide: bool = False) -> str:
    """A receipt as a table fitted to the terminal (every column with `wide`) with its notes
    folded to 100 columns, as JSON, or as CSV (its lines)."""
    if fmt == "json":
        return as_json(r.record())
    records = [ln.record() for ln in r.lines]
    if fmt == "csv":
        return as_csv(COLUMNS, records)
    if fmt != "table":
        raise ConfigError(f"unknown format {fmt!r}: use table, csv or json")
    if len(r.lines) > 1:
        listed, paid = r.total("list_usd"), r.total("paid_usd")
        records.append(
            {
                "batch": "total",
                "model": "",
                "tier": "",
                **{
                    k: sum(getattr(ln, k) for ln in r.lines)
                    for k in ("requests", "succeeded", "input_tokens", "output_tokens")
                },
                "list_usd": listed,
                "paid_usd": paid,
                "saved_usd": listed - paid,
                "unpriced": sum(ln.unpriced for ln in r.lines),
            }
        )
    out = _wrap(f"receipt: {r.title}") + "\n"
    if records:
        out += table(COLUMNS, records, wide=wide, bold_last=len(r.lines) > 1)
    else:
        out += "no results recorded\n"
    return out + "".join(_wrap(n) + "\n" for n in r.notes)


def _wrap(text: str, width: int | None = None) -> str:
    """A note folded at spaces to the terminal (at most 100 columns), continued lines
    indented."""
    width = width or min(WIDTH, terminal_width())
    words, lines, cur = text.split(" "), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = "  " + w
        else:
            cur = f"{cur} {w}" if cur else w
    lines.append(cur)
    return "\n".join(lines)


def parse_day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"--day {value!r} is not a date: use YYYY-MM-DD (UTC)") from None


# -- what status shows ---------------------------------------------------------------------
def status_lines(store: Store, now: float, queue: str | None = None) -> list[str]:
    """Anomalies (provider says / we counted), spend no budget planned this month, and every
    distinct reason requests are held: lines for `llmbatch status`."""
    out = []
    for c in store.usage_checks(limit=5):
        out.append("anomaly: " + mismatch(c))
    first, end = period_days(now, "month")
    out += ["unplanned: " + t for t in describe_unplanned(store.unplanned_spend(first, end, queue))]
    reasons = store.held_reasons()
    kinds: dict[str, tuple[str, int]] = {}
    for reason, n in reasons:
        kind = reason.split(":", 1)[0] if not reason.startswith("budget ") else "budget"
        seen = kinds.get(kind)
        kinds[kind] = (seen[0], seen[1] + n) if seen else (reason, n)
    if len(kinds) > 1:  # print_budgets says the newest; say the other kinds too
        for reason, n in list(kinds.values())[1:]:
            out.append(f"held: {n:,} requests: {reason}")
    return [_wrap(t) for t in out]


def report_notes(
    store: Store, since: datetime | None, until: datetime | None, queue: str | None = None
) -> list[str]:
    """What `llmbatch report` adds below its table: batches whose provider says otherwise
    than we counted, and spend no budget planned (a duplicate batch) in the period."""
    first = int(since.timestamp() // 86400) if since else ALL_DAYS[0]
    end = int(-(-until.timestamp() // 86400)) if until else ALL_DAYS[1]
    out = ["anomaly: " + mismatch(c) for c in store.usage_checks(limit=5)]
    out += ["unplanned: " + t for t in describe_unplanned(store.unplanned_spend(first, end, queue))]
    return [_wrap(t) for t in out]


def status_record(store: Store, now: float, queue: str | None = None) -> dict[str, Any]:
    """`status --format json`'s spend checks: batches whose provider total differs from what
    we counted, and this month's spend no budget planned or could not price."""
    first, end = period_days(now, "month")
    keys = ("input", "cached", "output", "reasoning")
    return {
        "provider_checks": [
            {
                "batch": c.batch_id,
                "provider_batch_id": c.provider_batch_id,
                "provider_says": dict(zip(keys, c.says, strict=True)),
                "we_counted": dict(zip(keys, c.counted, strict=True)),
            }
            for c in store.usage_checks(limit=20)
        ],
        "unplanned": [
            {
                "batch": r.batch_id,
                "queue": r.queue,
                "kind": r.kind,
                "usd": _usd(r.spent if r.settled_at is not None else r.reserved),
                "settled": r.settled_at is not None,
                "unpriced_results": r.unpriced,
            }
            for r in store.unplanned_spend(first, end, queue)
        ],
    }


def _gives_total(provider: str) -> bool:
    from llmbatch.providers import format_or_base

    return format_or_base(provider).gives_batch_total
