"""`llmbatch report`: what the results cost in batch, what they would have cost in real time.

Usage is summed in the store per pricing aggregate (provider, model, endpoint, tier key, UTC
day, queue), each aggregate priced once in batch and once in real time (pricing.py), then
rolled up to the rows asked for. Results whose usage could not be read, and models with no
price, are counted as `unpriced` and left out of the sums: never added as $0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from llmbatch.errors import ConfigError
from llmbatch.pricing import Tokens, price_group, prices_version
from llmbatch.render import Column, as_csv, as_json, table
from llmbatch.store.base import Store

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
        d.update(
            savings_usd=self.savings_usd, savings_pct=self.savings_pct, prices=prices_version()
        )
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
            g.input_tokens,
            g.cached_tokens,
            g.cache_write_5m_tokens,
            g.cache_write_1h_tokens,
            g.output_tokens,
        )
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
        for f in (
            "requests",
            "succeeded",
            "failed",
            "input_tokens",
            "cached_tokens",
            "cache_write_5m_tokens",
            "cache_write_1h_tokens",
            "output_tokens",
            "batch_usd",
            "realtime_usd",
            "unpriced",
        ):
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
    "date",
    "queue",
    "model",
    "requests",
    "succeeded",
    "failed",
    "input_tokens",
    "cached_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "output_tokens",
    "batch_usd",
    "realtime_usd",
    "savings_usd",
    "savings_pct",
    "derived",
    "unpriced",
)


def _record(ln: ReportLine) -> dict[str, Any]:
    """One line with the keys of COLUMNS: raw values (Decimal amounts, exact)."""
    return {
        "date": ln.day.isoformat() if ln.day else None,
        "queue": ln.queue,
        "model": ln.model,
        "requests": ln.requests,
        "succeeded": ln.succeeded,
        "failed": ln.failed,
        "input_tokens": ln.input_tokens,
        "cached_tokens": ln.cached_tokens,
        "cache_write_5m_tokens": ln.cache_write_5m_tokens,
        "cache_write_1h_tokens": ln.cache_write_1h_tokens,
        "output_tokens": ln.output_tokens,
        "batch_usd": ln.batch_usd,
        "realtime_usd": ln.realtime_usd,
        "savings_usd": ln.savings_usd,
        "savings_pct": ln.savings_pct,
        "derived": ln.derived,
        "unpriced": ln.unpriced,
    }


def _pct(v: Any) -> str:
    return "-" if v is None else f"{v} %"


def _blank_zero(v: Any) -> str:
    return f"{v:,}" if v else ""


def _all(v: Any) -> str:
    return "all" if v is None else str(v)


# The table: key columns, then figures; `drop` says what goes first on a narrow terminal.
TABLE = [
    Column("date", "date", show=_all),
    Column("queue", "queue", show=_all),
    Column("model", "model", show=_all),
    Column("requests", "requests", right=True),
    Column("succeeded", "ok", right=True, drop=3),
    Column("failed", "failed", right=True, drop=4),
    Column("input_tokens", "input tok", right=True, drop=5),
    Column("cached_tokens", "cached tok", right=True, drop=6),
    Column("cache_write_5m_tokens", "5m write tok", right=True, drop=7),
    Column("cache_write_1h_tokens", "1h write tok", right=True, drop=7),
    Column("output_tokens", "output tok", right=True, drop=5),
    Column("batch_usd", "batch $", right=True),
    Column("realtime_usd", "real-time $", right=True),
    Column("savings_usd", "saved $", right=True),
    Column("savings_pct", "saved", right=True, drop=2, show=_pct),
    Column("derived", "price", drop=1, show=lambda v: "derived" if v else ""),
    Column("unpriced", "unpriced", right=True, drop=1, show=_blank_zero),
]


def render(lines: Sequence[ReportLine], fmt: str = "table", wide: bool = False) -> str:
    """The report as a table (rounded for display, fitted to the terminal), CSV or JSON
    (exact to 1e-6 USD)."""
    if fmt == "json":
        out = {
            "prices": prices_version(),
            "lines": [ln.record() for ln in lines],
            "total": totals(lines).record(),
        }
        return as_json(out)
    if fmt == "csv":
        cols = [Column(k, k) for k in COLUMNS]
        return as_csv(cols, [_record(ln) for ln in lines])
    if fmt != "table":
        raise ConfigError(f"unknown format {fmt!r}: use table, csv or json")
    return _table(lines, wide)


def _table(lines: Sequence[ReportLine], wide: bool) -> str:
    if not lines:
        return "no results in this period: nothing was spent.\n"
    # key columns nobody grouped by are left out, and cache writes when there are none
    records = [_record(ln) for ln in lines]
    if len(lines) > 1:
        records.append(_record(totals(lines)))
    present = {
        "date": any(ln.day for ln in lines),
        "queue": any(ln.queue is not None for ln in lines),
        "model": any(ln.model is not None for ln in lines),
        "cache_write_5m_tokens": any(ln.cache_write_5m_tokens for ln in lines),
        "cache_write_1h_tokens": any(ln.cache_write_1h_tokens for ln in lines),
        "cached_tokens": any(ln.cached_tokens for ln in lines) or wide,
        "derived": any(ln.derived for ln in lines),
        "unpriced": any(ln.unpriced for ln in lines),
    }
    cols = [c for c in TABLE if present.get(c.key, True)]
    title = f"what it cost, batch against real time (USD, {prices_version()})"
    out = table(cols, records, title=title, wide=wide, bold_last=len(lines) > 1)
    notes = []
    if any(ln.derived for ln in lines):
        notes.append("derived: no batch price in the price data; real-time price x 50 % used.")
    if any(ln.unpriced for ln in lines):
        notes.append("unpriced: unknown model or unreadable usage; left out of the costs.")
    return out + "".join(n + "\n" for n in notes)
