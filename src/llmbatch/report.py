"""`llmbatch report`: what the results cost in batch, what they would have cost in real time.

Usage is summed in the store per pricing aggregate (provider, model, endpoint, tier key, UTC
day, queue), each aggregate priced once in batch and once in real time (pricing.py), then
rolled up to the rows asked for. Results whose usage could not be read, and models with no
price, are counted as `unpriced` and left out of the sums: never added as $0.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import orjson

from llmbatch.errors import ConfigError
from llmbatch.pricing import PRICES_VERSION, Tokens, price_group
from llmbatch.store import Store

GROUPINGS = ("day", "model", "queue")
EPOCH = date(1970, 1, 1)
FAR_FUTURE = 86400.0 * 10**7  # a UTC midnight, so an open-ended report reads the running totals


@dataclass(slots=True)
class ReportLine:
    """One row of the report; `None` in day/queue/model means "all"."""

    day: date | None
    queue: str | None
    model: str | None
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    input_tokens: int = 0
    cached_tokens: int = 0  # cache reads
    cache_write_5m_tokens: int = 0  # Anthropic cache writes, by TTL (inside input_tokens)
    cache_write_1h_tokens: int = 0
    output_tokens: int = 0
    batch_usd: Decimal = Decimal(0)
    realtime_usd: Decimal = Decimal(0)
    unpriced: int = 0  # succeeded requests left out of the costs (unknown model or bad usage)
    derived: bool = False  # some batch prices are real-time x 50 %, not from the price data

    @property
    def savings_usd(self) -> Decimal:
        return self.realtime_usd - self.batch_usd

    @property
    def savings_pct(self) -> Decimal | None:
        if not self.realtime_usd:
            return None
        return (self.savings_usd / self.realtime_usd * 100).quantize(Decimal("0.1"))

    def record(self) -> dict[str, object]:
        d = asdict(self)
        d["day"] = self.day.isoformat() if self.day else None
        d.update(savings_usd=self.savings_usd, savings_pct=self.savings_pct, prices=PRICES_VERSION)
        return d


def build(
    store: Store,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    group_by: Sequence[str] = GROUPINGS,
    queue: str | None = None,
) -> list[ReportLine]:
    """Report lines for results recorded in [since, until), grouped by `group_by`."""
    bad = [g for g in group_by if g not in GROUPINGS]
    if bad:
        raise ConfigError(f"cannot group by {bad[0]!r}: use one of {', '.join(GROUPINGS)}")
    lo = since.timestamp() if since else 0.0
    hi = until.timestamp() if until else FAR_FUTURE
    lines: dict[tuple[object, ...], ReportLine] = {}
    for g in store.cost_groups(lo, hi, queue):
        day = EPOCH + timedelta(days=g.day)
        key_day = day if "day" in group_by else None
        key_queue = g.queue if "queue" in group_by else None
        key_model = g.model if "model" in group_by else None
        line = lines.setdefault(
            (key_day, key_queue, key_model), ReportLine(key_day, key_queue, key_model)
        )
        line.requests += g.requests
        line.succeeded += g.succeeded
        line.failed += g.requests - g.succeeded
        line.input_tokens += g.input_tokens
        line.cached_tokens += g.cached_tokens
        line.cache_write_5m_tokens += g.cache_write_5m_tokens
        line.cache_write_1h_tokens += g.cache_write_1h_tokens
        line.output_tokens += g.output_tokens
        line.unpriced += g.flagged
        tokens = Tokens(
            g.input_tokens, g.cached_tokens, g.cache_write_5m_tokens, g.cache_write_1h_tokens,
            g.output_tokens,
        )  # fmt: skip
        cost = price_group(g.provider, g.model, tokens, g.price_tier, day, g.endpoint)
        if cost.batch is None or cost.real is None:
            line.unpriced += g.succeeded - g.flagged
            continue
        line.batch_usd += cost.batch
        line.realtime_usd += cost.real
        line.derived = line.derived or cost.derived
    return [lines[k] for k in sorted(lines, key=lambda k: tuple(str(v) for v in k))]


def totals(lines: Sequence[ReportLine]) -> ReportLine:
    t = ReportLine(None, None, None)
    for ln in lines:
        for f in ("requests", "succeeded", "failed", "input_tokens", "cached_tokens",
                  "cache_write_5m_tokens", "cache_write_1h_tokens", "output_tokens", "batch_usd",
                  "realtime_usd", "unpriced"):  # fmt: skip
            setattr(t, f, getattr(t, f) + getattr(ln, f))
        t.derived = t.derived or ln.derived
    return t


def parse_day(value: str | None, *, end: bool = False) -> datetime | None:
    """A `--since`/`--until` value: YYYY-MM-DD (UTC midnight) or an ISO timestamp."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(f"{value!r} is not a date: use YYYY-MM-DD or an ISO timestamp") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


COLUMNS = (
    "date", "queue", "model", "requests", "succeeded", "failed", "input_tokens", "cached_tokens",
    "cache_write_5m_tokens", "cache_write_1h_tokens", "output_tokens", "batch_usd", "realtime_usd",
    "savings_usd", "savings_pct", "derived", "unpriced",
)  # fmt: skip


def _cells(ln: ReportLine, *, display: bool) -> list[str]:
    def usd(v: Decimal) -> str:
        if not display:
            return str(v)
        return f"{v:,.2f}" if abs(v) >= 1 else f"{v:.6f}".rstrip("0").rstrip(".")

    pct = ln.savings_pct
    return [
        ln.day.isoformat() if ln.day else ("all" if display else ""),
        ln.queue if ln.queue is not None else ("all" if display else ""),
        ln.model if ln.model is not None else ("all" if display else ""),
        f"{ln.requests:,}" if display else str(ln.requests),
        f"{ln.succeeded:,}" if display else str(ln.succeeded),
        f"{ln.failed:,}" if display else str(ln.failed),
        f"{ln.input_tokens:,}" if display else str(ln.input_tokens),
        f"{ln.cached_tokens:,}" if display else str(ln.cached_tokens),
        f"{ln.cache_write_5m_tokens:,}" if display else str(ln.cache_write_5m_tokens),
        f"{ln.cache_write_1h_tokens:,}" if display else str(ln.cache_write_1h_tokens),
        f"{ln.output_tokens:,}" if display else str(ln.output_tokens),
        usd(ln.batch_usd),
        usd(ln.realtime_usd),
        usd(ln.savings_usd),
        ("-" if display else "") if pct is None else (f"{pct} %" if display else str(pct)),
        ("derived" if ln.derived else "") if display else str(ln.derived).lower(),
        (f"{ln.unpriced:,}" if ln.unpriced else "") if display else str(ln.unpriced),
    ]


def render(lines: Sequence[ReportLine], fmt: str = "table") -> str:
    """The report as a table (rounded for display), CSV or JSON (exact to 1e-6 USD)."""
    if fmt == "json":
        out = {"prices": PRICES_VERSION, "lines": [ln.record() for ln in lines],
               "total": totals(lines).record()}  # fmt: skip
        return orjson.dumps(out, default=str, option=orjson.OPT_INDENT_2).decode()
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(COLUMNS)
        for ln in lines:
            w.writerow(_cells(ln, display=False))
        return buf.getvalue()
    if fmt != "table":
        raise ConfigError(f"unknown format {fmt!r}: use table, csv or json")
    return _table(lines)


def _key(ln: ReportLine, i: int) -> object:
    return (ln.day, ln.queue, ln.model)[i]


def _table(lines: Sequence[ReportLine]) -> str:
    from rich.console import Console
    from rich.table import Table

    if not lines:
        return "no results in this period: nothing was spent."
    table = Table(title=f"what it cost, batch against real time (USD, {PRICES_VERSION})")
    heads = ("date", "queue", "model", "requests", "ok", "failed", "input tok", "cached tok",
             "5m write tok", "1h write tok", "output tok", "batch $", "real-time $", "saved $",
             "saved", "price", "unpriced")  # fmt: skip
    # key columns nobody grouped by are left out, and cache writes when there are none
    writes = {8: any(ln.cache_write_5m_tokens for ln in lines),
              9: any(ln.cache_write_1h_tokens for ln in lines)}  # fmt: skip
    keep = [i for i in range(len(heads)) if writes.get(i, True)
            if i >= 3 or any(_key(ln, i) is not None for ln in lines)]  # fmt: skip
    for i in keep:
        table.add_column(heads[i], justify="left" if i < 3 else "right")
    for ln in lines:
        cells = _cells(ln, display=True)
        table.add_row(*(cells[i] for i in keep))
    if len(lines) > 1:
        cells = _cells(totals(lines), display=True)
        table.add_row(*(cells[i] for i in keep), style="bold")
    # as wide as the table needs: a narrow terminal wraps lines, it must not cut figures
    wide = Console(width=1000)
    need = wide.measure(table, options=wide.options).maximum
    console = Console(width=max(Console().width, need), highlight=False)
    with console.capture() as cap:
        console.print(table)
    notes = []
    if any(ln.derived for ln in lines):
        notes.append("derived: no batch price in the price data; real-time price x 50 % used.")
    if any(ln.unpriced for ln in lines):
        notes.append("unpriced: unknown model or unreadable usage; left out of the costs.")
    return cap.get() + "".join(n + "\n" for n in notes)
