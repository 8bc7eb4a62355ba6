"""`llmbatch analyze`: what past usage already sends through batch, and what moving the rest
would save, per model and tag, before writing any code.

Two inputs, told apart by their first JSON value:

- Pages of OpenAI's organization usage API, `GET /v1/organization/usage/completions?
  group_by=model,batch` (`{"object": "page", "data": [buckets]}`), one page a line or
  concatenated. A result's tag is its `project_id` when the pages are also grouped by it.
- Per-call records, one JSON object a line: `timestamp` (Unix seconds or ISO 8601), `model`,
  `input_tokens`, `output_tokens`, optional `cached_tokens`, `tag`, `endpoint`, `batch`.
  Examples of both are in docs/analyze.md.

The input is read once, streamed: time linear in its size, memory bounded by the aggregates
(one per model, tag, endpoint and tier) and one JSON value.

What could move is every non-batched token minus the `--exclude-tag` groups: an upper bound,
since some calls need an answer in seconds. Costs are at today's prices (pricing.py, batch
and real time); the period is the span the input covers, scaled to a 30-day month. Usage
pages carry no per-request sizes, so they are priced at the base tier; per-call records at
each call's own tier.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from llmbatch.errors import InputError
from llmbatch.pricing import Tokens, model_prices, price_group, prices_version, quantize
from llmbatch.render import Column, as_csv, as_json, money, table

MONTH_DAYS = Decimal(30)
DAY_S = 86400
PAGE_SHAPE = (
    'an OpenAI usage page {"object": "page", "data": [...]} from GET '
    "/v1/organization/usage/completions?group_by=model,batch"
)
RECORD_SHAPE = (
    'a per-call record {"timestamp", "model", "input_tokens", "output_tokens"} '
    '(optional "tag", "endpoint", "batch", "cached_tokens")'
)


@dataclass(slots=True)
class Usage:
    """Usage of one model and tag, batched or not, in one tier."""

    model: str
    tag: str | None
    batch: bool
    tier: int
    requests: int
    tokens: Tokens
    endpoint: str | None = None


@dataclass(slots=True)
class Line:
    """One row of the analysis: a model and tag over the whole period."""

    model: str
    tag: str | None
    requests: int = 0
    batched_requests: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    batched_input_tokens: int = 0
    batched_output_tokens: int = 0
    batched_usd: Decimal = Decimal(0)  # what the batched usage cost, at batch prices
    batched_saved_usd: Decimal = Decimal(0)  # ... and saved against real time
    movable: bool = True  # False: an --exclude-tag group
    movable_realtime_usd: Decimal = Decimal(0)  # the non-batched usage at real-time prices
    movable_batch_usd: Decimal = Decimal(0)  # ... and at batch prices
    unpriced: bool = False
    derived: bool = False

    @property
    def savings_usd(self) -> Decimal:
        return self.movable_realtime_usd - self.movable_batch_usd if self.movable else Decimal(0)


@dataclass(slots=True)
class Analysis:
    """The whole analysis: lines per model and tag, the period, and the monthly scale."""

    source: str
    kind: str  # "usage pages" or "per-call records"
    lines: list[Line]
    start: datetime | None
    end: datetime | None
    excluded: tuple[str, ...] = ()

    @property
    def days(self) -> Decimal:
        if self.start is None or self.end is None:
            return Decimal(0)
        seconds = max((self.end - self.start).total_seconds(), DAY_S)  # at least a day
        return Decimal(str(seconds)) / DAY_S

    def monthly(self, v: Decimal) -> Decimal:
        return quantize(v * MONTH_DAYS / self.days) if self.days else Decimal(0)

    def total(self, attr: str) -> Decimal:
        return sum((getattr(ln, attr) for ln in self.lines), Decimal(0))

    def record(self) -> dict[str, object]:
        return {
            "source": self.source,
            "kind": self.kind,
            "prices": prices_version(),
            "start": self.start.isoformat() if self.start else None,
            "end": self.end.isoformat() if self.end else None,
            "days": str(self.days),
            "excluded_tags": list(self.excluded),
            "lines": [
                {
                    "model": ln.model,
                    "tag": ln.tag,
                    "requests": ln.requests,
                    "batched_requests": ln.batched_requests,
                    "input_tokens": ln.input_tokens,
                    "output_tokens": ln.output_tokens,
                    "batched_usd": ln.batched_usd,
                    "batched_saved_usd": ln.batched_saved_usd,
                    "movable": ln.movable,
                    "movable_realtime_usd": ln.movable_realtime_usd,
                    "movable_batch_usd": ln.movable_batch_usd,
                    "savings_usd": ln.savings_usd,
                    "monthly_savings_usd": self.monthly(ln.savings_usd),
                    "unpriced": ln.unpriced,
                    "derived": ln.derived,
                }
                for ln in self.lines
            ],
            "total": {
                "batched_usd": self.total("batched_usd"),
                "movable_realtime_usd": self.total("movable_realtime_usd"),
                "savings_usd": self.total("savings_usd"),
                "monthly_savings_usd": self.monthly(self.total("savings_usd")),
                "upper_bound": True,
            },
        }


def _values(source: str, lines: Iterable[bytes]) -> Iterator[tuple[int, Any]]:
    """(line number, value) of each JSON value, streamed in one pass: one value a line (the
    fast path), or values spread over lines (pretty-printed or concatenated pages).

    A value spread over lines is parsed from a buffer of whole lines that holds that value
    only, tried again only when the buffer has doubled, so the work stays linear."""
    dec = json.JSONDecoder()
    parts: list[str] = []  # the lines of the value being read (joined only to parse)
    size = start = tried = 0
    for n, raw in enumerate(lines, 1):
        if not parts:
            if not raw.strip():
                continue
            try:
                yield n, orjson.loads(raw)
                continue
            except orjson.JSONDecodeError:
                start, size, tried = n, 0, 0
        text = _decode(source, n, raw)
        parts.append(text)
        size += len(text)
        if size >= 2 * tried:
            rest, start = yield from _drain(dec, source, "".join(parts), start, final=False)
            parts, size, tried = ([rest], len(rest), len(rest)) if rest else ([], 0, 0)
    if parts:
        yield from _drain(dec, source, "".join(parts), start, final=True)


def _decode(source: str, line: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{source}:{line}: not UTF-8 text (byte {exc.start + 1})") from None


def _drain(
    dec: json.JSONDecoder, source: str, buf: str, start: int, *, final: bool
) -> Generator[tuple[int, Any], None, tuple[str, int]]:
    """Yield the complete values at the front of `buf`; return what is left and its line."""
    i = 0
    while True:
        while i < len(buf) and buf[i] in " \t\r\n":
            i += 1
        if i >= len(buf):
            return "", 0
        line = start + buf.count("\n", 0, i)
        try:
            value, i = dec.raw_decode(buf, i)
        except json.JSONDecodeError as exc:
            # whole lines are added, so a value cut short fails only at the buffer's end
            if not final and exc.pos >= len(buf.rstrip()):
                return buf[i:], line
            # an error at the very end is on the last line that holds anything
            where = start + buf.count("\n", 0, min(exc.pos, len(buf.rstrip())))
            snippet = buf[i : i + 60].split("\n", 1)[0]
            raise InputError(
                f"{source}:{where}: not JSON ({exc.msg}): {snippet!r}; expected {PAGE_SHAPE}, "
                f"or {RECORD_SHAPE}"
            ) from None
        yield line, value


def _unknown(source: str, line: int, value: object, why: str = "") -> InputError:
    shown = orjson.dumps(value).decode()[:80]
    return InputError(
        f"{source}:{line}: unknown usage shape{why}: {shown}; expected {PAGE_SHAPE}, "
        f"or {RECORD_SHAPE}"
    )


def _int(source: str, line: int, obj: dict[str, Any], key: str, default: int | None = None) -> int:
    v = obj.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise InputError(f"{source}:{line}: {key} must be a whole number >= 0, got {v!r}")
    return v


def read_pages(source: str, values: Iterable[tuple[int, Any]]) -> tuple[list[Usage], list[int]]:
    """Usage of usage pages summed per (model, project, batch), and the first and last bucket
    bounds (Unix seconds) that hold any."""
    sums: dict[tuple[str, str | None, bool], list[int]] = {}
    lo, hi = None, None
    for line, page in values:
        if not isinstance(page, dict) or page.get("object") != "page":
            raise _unknown(source, line, page, " (every value must be a usage page)")
        for bucket in page.get("data") or ():
            results = bucket.get("results") or ()
            if results:  # empty buckets say nothing about what was used
                start = _int(source, line, bucket, "start_time")
                end = _int(source, line, bucket, "end_time")
                lo, hi = min(start, lo if lo is not None else start), max(end, hi or end)
            for r in results:
                if r.get("object") != "organization.usage.completions.result":
                    raise _unknown(source, line, r, " (not a completions usage result)")
                if r.get("model") is None or r.get("batch") is None:
                    raise InputError(
                        f"{source}:{line}: usage results are not grouped by model and batch "
                        "(model or batch is null); fetch the pages with group_by=model,batch"
                    )
                inp = _int(source, line, r, "input_tokens")
                tag = r.get("project_id")
                key = (str(r["model"]), None if tag is None else str(tag), bool(r["batch"]))
                s = sums.setdefault(key, [0, 0, 0, 0])
                s[0] += _int(source, line, r, "num_model_requests")
                s[1] += inp
                s[2] += min(_int(source, line, r, "input_cached_tokens", 0), inp)
                s[3] += _int(source, line, r, "output_tokens")
    out = [
        Usage(model, tag, batch, 0, n, Tokens(input=i, cached=c, output=o))
        for (model, tag, batch), (n, i, c, o) in sums.items()
    ]
    return out, ([] if lo is None or hi is None else [lo, hi])


def _timestamp(source: str, line: int, v: object) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, str):
        try:
            dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    raise InputError(f"{source}:{line}: timestamp must be Unix seconds or ISO 8601, got {v!r}")


def read_records(source: str, values: Iterable[tuple[int, Any]]) -> tuple[list[Usage], list[int]]:
    """Per-call records summed per (model, tag, endpoint, batch, tier)."""
    sums: dict[tuple[str, str | None, str | None, bool, int], list[int]] = {}
    lo, hi = float("inf"), float("-inf")
    for line, rec in values:
        if not isinstance(rec, dict) or not {"model", "input_tokens", "output_tokens"} <= set(rec):
            raise _unknown(source, line, rec, " (a record needs timestamp, model and tokens)")
        at = _timestamp(source, line, rec.get("timestamp"))
        lo, hi = min(lo, at), max(hi, at)
        model = rec["model"]
        if not isinstance(model, str) or not model:
            raise InputError(f"{source}:{line}: model must be a non-empty string")
        inp = _int(source, line, rec, "input_tokens")
        tag, endpoint = rec.get("tag"), rec.get("endpoint")
        tier = model_prices(_provider(model), model).tier(inp)
        key = (model, None if tag is None else str(tag), endpoint, bool(rec.get("batch")), tier)
        s = sums.setdefault(key, [0, 0, 0, 0])
        s[0] += 1
        s[1] += inp
        s[2] += min(_int(source, line, rec, "cached_tokens", 0), inp)
        s[3] += _int(source, line, rec, "output_tokens")
    out = [
        Usage(m, tag, b, tier, n, Tokens(input=i, cached=c, output=o), ep)
        for (m, tag, ep, b, tier), (n, i, c, o) in sums.items()
    ]
    return out, ([] if not sums else [int(lo), int(hi)])


def _provider(model: str) -> str:
    """The provider whose model names `model` starts with (the default provider otherwise)."""
    from llmbatch.defaults import PROVIDER
    from llmbatch.providers import formats

    for f in formats():
        if f.model_prefixes and model.startswith(f.model_prefixes):
            return f.name
    return PROVIDER


def analyze_lines(
    lines: Iterable[bytes],
    *,
    source: str = "<usage>",
    exclude_tags: Sequence[str] = (),
    today: date | None = None,
) -> Analysis:
    """Analyse usage pages or per-call records, read once from `lines` (bytes, with or without
    their newlines): linear in the input, memory bounded by the aggregates and one value."""
    values = _values(source, lines)
    excluded = tuple(exclude_tags)
    first = next(values, None)
    if first is None:
        return Analysis(source, "empty", [], None, None, excluded)
    line, value = first
    again = itertools.chain([first], values)
    if isinstance(value, dict) and value.get("object") == "page":
        kind, (usage, bounds) = "usage pages", read_pages(source, again)
    elif isinstance(value, dict) and "model" in value and "input_tokens" in value:
        kind, (usage, bounds) = "per-call records", read_records(source, again)
    else:
        raise _unknown(source, line, value)
    start = datetime.fromtimestamp(min(bounds), UTC) if bounds else None
    end = datetime.fromtimestamp(max(bounds), UTC) if bounds else None
    return Analysis(source, kind, _lines(usage, excluded, today), start, end, excluded)


def analyze_text(
    text: str,
    *,
    source: str = "<usage>",
    exclude_tags: Sequence[str] = (),
    today: date | None = None,
) -> Analysis:
    """Analyse usage pages or per-call records given as text."""
    lines = (ln.encode() for ln in text.splitlines())
    return analyze_lines(lines, source=source, exclude_tags=exclude_tags, today=today)


def _lines(usage: list[Usage], excluded: tuple[str, ...], today: date | None) -> list[Line]:
    day = today or datetime.now(UTC).date()
    lines: dict[tuple[str, str | None], Line] = {}
    for u in usage:
        ln = lines.setdefault((u.model, u.tag), Line(u.model, u.tag))
        ln.requests += u.requests
        ln.input_tokens += u.tokens.input
        ln.output_tokens += u.tokens.output
        ln.movable = u.tag not in excluded
        cost = price_group(_provider(u.model), u.model, u.tokens, u.tier, day, u.endpoint)
        if cost.batch is None or cost.real is None:
            ln.unpriced = True
        ln.derived = ln.derived or cost.derived
        if u.batch:
            ln.batched_requests += u.requests
            ln.batched_input_tokens += u.tokens.input
            ln.batched_output_tokens += u.tokens.output
            ln.batched_usd += cost.batch or 0
            ln.batched_saved_usd += (cost.real or 0) - (cost.batch or 0)
        else:
            ln.movable_realtime_usd += cost.real or 0
            ln.movable_batch_usd += cost.batch or 0
    return [lines[k] for k in sorted(lines, key=lambda k: (k[0], k[1] or ""))]


def analyze_file(
    path: str | Path, *, exclude_tags: Sequence[str] = (), today: date | None = None
) -> Analysis:
    """Analyse a usage file (see the module docstring for the two shapes), streamed."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    with open(p, "rb") as f:
        return analyze_lines(f, source=str(p), exclude_tags=exclude_tags, today=today)


def _cell(ln: Line, v: Decimal, *, movable_only: bool = False) -> str:
    if ln.unpriced:
        return "unpriced"
    if movable_only and not ln.movable:
        return "-"
    return money(v)


COLUMNS = [
    Column("model", "model"),
    Column("tag", "tag"),
    Column("requests", "requests", right=True),
    Column("batched_share", "batched", right=True, drop=4),
    Column("input_tokens", "input tok", right=True, drop=5),
    Column("output_tokens", "output tok", right=True, drop=5),
    Column("batched_usd", "batched $", right=True, drop=3),
    Column("batched_saved_usd", "batch saved $", right=True, drop=3),
    Column("movable_realtime_usd", "real-time $", right=True),
    Column("movable_batch_usd", "as batch $", right=True, drop=2),
    Column("savings_usd", "could save $", right=True, drop=1),
    Column("monthly_savings_usd", "could save $/mo", right=True),
]


def render(a: Analysis, fmt: str = "table", wide: bool = False) -> str:
    """The analysis as a table (rounded, fitted to the terminal), CSV or JSON (exact to
    1e-6 USD)."""
    if fmt == "json":
        return as_json(a.record())
    records = a.record()["lines"]
    assert isinstance(records, list)
    if fmt == "csv":
        cols = (
            [Column(k, k) for k in records[0]]
            if records
            else [Column(c.key, c.key) for c in COLUMNS]
        )
        return as_csv(cols, records)
    if not a.lines:
        return f"{a.source}: no usage in this period: nothing to analyse.\n"
    assert a.start is not None and a.end is not None
    rows = []
    for ln in a.lines:
        rows.append(
            {
                "model": ln.model,
                "tag": (ln.tag or "-") + ("" if ln.movable else " (excluded)"),
                "requests": ln.requests,
                "batched_share": f"{ln.batched_requests / ln.requests:.0%}" if ln.requests else "-",
                "input_tokens": ln.input_tokens,
                "output_tokens": ln.output_tokens,
                "batched_usd": _cell(ln, ln.batched_usd),
                "batched_saved_usd": _cell(ln, ln.batched_saved_usd),
                "movable_realtime_usd": _cell(ln, ln.movable_realtime_usd),
                "movable_batch_usd": _cell(ln, ln.movable_batch_usd, movable_only=True),
                "savings_usd": _cell(ln, ln.savings_usd, movable_only=True),
                "monthly_savings_usd": _cell(ln, a.monthly(ln.savings_usd), movable_only=True),
            }
        )
    period = f"{a.start:%Y-%m-%d} to {a.end:%Y-%m-%d}, {a.days:.1f} days"
    title = f"{a.source} ({a.kind}, {period}; USD at today's prices, {prices_version()})"
    out = table(COLUMNS, rows, title=title, wide=wide)
    saved = a.total("savings_usd")
    outside = f" outside {', '.join(a.excluded)}" if a.excluded else ""
    notes = [
        "real-time $: what the calls not sent through batch cost; could save $: what they would "
        "have saved as batch.",
        f"already batched: {money(a.total('batched_usd'))} USD, which saved "
        f"{money(a.total('batched_saved_usd'))} USD against real time.",
        f"could move to batch: up to {money(saved)} USD saved in this period, about "
        f"{money(a.monthly(saved))} USD a month — an upper bound: it counts every non-batched "
        f"call{outside}, and some need an answer in seconds.",
    ]
    if a.kind == "usage pages":
        notes.append("usage pages hold no per-request sizes: priced at each model's base tier.")
    if any(ln.unpriced for ln in a.lines):
        notes.append("unpriced: model not in the price data; left out of the sums, not $0.")
    if any(ln.derived for ln in a.lines):
        notes.append("derived: no batch price in the price data; real-time price x 50 % used.")
    return out + "".join(n + "\n" for n in notes)
