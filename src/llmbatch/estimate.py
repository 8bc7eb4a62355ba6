"""`llmbatch estimate`: what a file of requests will cost, before anything is sent.

Per model: requests, input tokens, output tokens (expected, and the worst case bounded by each
request's `max_tokens` / `max_completion_tokens` / `max_output_tokens`, or the model's maximum
output when it has none), and the batch and real-time cost of both.

Input tokens come from a real tokenizer, and only here (enqueue keeps cheap size stats):

- OpenAI: `bpe-openai` (MIT) ships the `o200k_base` and `cl100k_base` vocabularies in its wheel,
  byte-identical to OpenAI's published files (their sha256 is tiktoken's `expected_hash`;
  tests/unit/test_estimate.py checks it and the token ids against tiktoken). Chat framing is
  OpenAI's published rule: 3 tokens a message, 1 for a name, 3 to prime the reply. Tool and
  JSON-schema definitions are counted as their JSON text; OpenAI renders them in its own
  undisclosed format, so that part is approximate.
- Anthropic has no offline tokenizer. Its count is the o200k count scaled by ANTHROPIC_RATIO, a
  calibration against the last tokenizer Anthropic published (anthropic SDK <= 0.38's
  tokenizer.json, MIT) by script: CJK text takes about half as many tokens again as in o200k;
  `benchmarks/bench_estimate.py` reports the error.

Expected output is an assumption (`expected_output` tokens a request, default
EXPECTED_OUTPUT, never above its cap); the worst case is exact given the caps.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson

from llmbatch import defaults
from llmbatch.counting import (
    ANTHROPIC_BASE as ANTHROPIC_BASE,
)
from llmbatch.counting import (
    ANTHROPIC_PER_MESSAGE as ANTHROPIC_PER_MESSAGE,
)
from llmbatch.counting import (
    NO_OUTPUT_ENDPOINTS,
    output_cap,
)
from llmbatch.counting import (
    encoding_name as encoding_name,
)
from llmbatch.counting import (
    model_max_output as model_max_output,
)
from llmbatch.counting import (
    text_tokens as text_tokens,
)
from llmbatch.defaults import PROVIDER
from llmbatch.errors import InputError
from llmbatch.pricing import Tokens, free, model_prices, prices_version
from llmbatch.providers import for_endpoint, format_of
from llmbatch.render import Column, as_csv, as_json, money, table
from llmbatch.requests import LineError, Request, from_item, parse_obj

EXPECTED_OUTPUT = defaults.EXPECTED_OUTPUT_TOKENS  # when nothing better is known
SHOWN_PROBLEMS = 20


def input_tokens(
    endpoint: str, model: str, body: dict[str, Any], provider: str | None = None
) -> int:
    """The input tokens of one request body, as its provider's format counts them (the
    provider that batches `endpoint` when none is named)."""
    if provider is None:
        serving = for_endpoint(endpoint)
        provider = serving[0] if serving else PROVIDER
    return format_of(provider).input_tokens(endpoint, model, body)


@dataclass(slots=True)
class ModelEstimate:
    """The estimate for one model: token counts and what they cost, expected and worst case."""

    provider: str
    model: str
    requests: int = 0
    input_tokens: int = 0
    expected_output_tokens: int = 0
    max_output_tokens: int = 0
    without_cap: int = 0  # requests with no output cap of their own (the model's maximum used)
    unbounded: int = 0  # ... and the model's maximum is unknown: left out of the worst case
    batch_expected_usd: Decimal | None = Decimal(0)
    batch_worst_usd: Decimal | None = Decimal(0)
    realtime_expected_usd: Decimal | None = Decimal(0)
    realtime_worst_usd: Decimal | None = Decimal(0)
    derived: bool = False
    _by_tier: dict[tuple[int, bool], Tokens] = field(default_factory=dict, repr=False)

    @property
    def priced(self) -> bool:
        return self.batch_expected_usd is not None

    def record(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("_by_tier")
        return d


@dataclass(slots=True)
class Estimate:
    """A whole file's estimate: one line per model, and the totals."""

    source: str
    models: list[ModelEstimate]
    expected_output: int = EXPECTED_OUTPUT

    @property
    def requests(self) -> int:
        return sum(m.requests for m in self.models)

    def total(self, attr: str) -> Decimal | None:
        """A cost column summed over priced models (None if no model is priced)."""
        vals = [getattr(m, attr) for m in self.models if getattr(m, attr) is not None]
        return sum(vals, Decimal(0)) if vals else None

    @property
    def unpriced(self) -> list[str]:
        return [m.model for m in self.models if not m.priced]

    def summary(self) -> str:
        """One line: requests, tokens and cost, expected and worst case."""
        inp = sum(m.input_tokens for m in self.models)
        worst = self.total("batch_worst_usd")
        parts = [
            f"{self.requests:,} requests",
            f"{inp:,} input tokens",
            f"batch ≈ {_usd(self.total('batch_expected_usd'))} expected, {_usd(worst)} worst case",
            f"real time ≈ {_usd(self.total('realtime_expected_usd'))}",
        ]
        if self.unpriced:
            parts.append(f"unpriced: {', '.join(self.unpriced)}")
        return "estimate: " + ", ".join(parts)


def _usd(v: Decimal | None) -> str:
    return "unpriced" if v is None else "$" + money(v)


Parsed = tuple[str, str, str, dict[str, Any]]  # provider, endpoint, model, body


def _parse(obj: object, provider: str = PROVIDER) -> Parsed:
    return _unpack(parse_obj(obj, provider))


def _unpack(r: Request) -> Parsed:
    return r.provider, r.endpoint, r.model, orjson.loads(r.body)


def estimate_lines(
    lines: Iterable[tuple[int, bytes]],
    *,
    source: str = "<requests>",
    expected_output: int = EXPECTED_OUTPUT,
    provider: str = PROVIDER,
) -> Estimate:
    """Estimate numbered JSONL lines in `provider`'s line shape (or one a provider claims)."""

    def parsed() -> Iterator[tuple[str, Parsed | Exception]]:
        for number, raw in lines:
            try:
                yield f"{source}:{number}", _parse(orjson.loads(raw), provider)
            except (orjson.JSONDecodeError, LineError) as exc:
                yield f"{source}:{number}", exc

    return estimate_parsed(parsed(), source=source, expected_output=expected_output, what="lines")


def estimate_parsed(
    items: Iterable[tuple[str, Parsed | Exception]],
    *,
    source: str,
    expected_output: int = EXPECTED_OUTPUT,
    what: str = "requests",
) -> Estimate:
    """Estimate already parsed requests, each named by where it came from (a problem instead
    of a request is reported under that name, and nothing is estimated)."""
    by_model: dict[tuple[str, str], ModelEstimate] = {}
    problems: list[str] = []
    bad = 0
    for where, got in items:
        if isinstance(got, Exception):
            bad += 1
            if len(problems) < SHOWN_PROBLEMS:
                problems.append(f"{where}: {got}")
            continue
        provider, endpoint, model, body = got
        m = by_model.get((provider, model))
        if m is None:
            m = by_model[(provider, model)] = ModelEstimate(provider, model)
        _add(m, endpoint, body, expected_output)
    if bad:
        raise InputError(
            f"{source}: {bad:,} {what} are invalid; nothing was estimated", problems, bad
        )
    models = [by_model[k] for k in sorted(by_model)]
    for m in models:
        _price(m)
    return Estimate(source, models, expected_output)


def _add(m: ModelEstimate, endpoint: str, body: dict[str, Any], expected_output: int) -> None:
    inp = format_of(m.provider).input_tokens(endpoint, m.model, body)
    if endpoint in NO_OUTPUT_ENDPOINTS:
        worst = expected = 0
    else:
        cap = output_cap(body)
        if cap is None:
            m.without_cap += 1
            cap = model_max_output(m.model)
        if cap is None:
            m.unbounded += 1
            worst, expected = 0, expected_output
        else:
            worst, expected = cap, min(cap, expected_output)
    m.requests += 1
    m.input_tokens += inp
    m.expected_output_tokens += expected
    m.max_output_tokens += worst
    if free(endpoint, m.model):
        return
    tier = model_prices(m.provider, m.model).tier(inp)
    for worst_case, out in ((False, expected), (True, worst)):
        key = (tier, worst_case)
        m._by_tier[key] = m._by_tier.get(key, Tokens()) + Tokens(input=inp, output=out)


def _price(m: ModelEstimate) -> None:
    """Price each (tier, case) aggregate once; a model with no price stays unpriced (None)."""
    mp = model_prices(m.provider, m.model)
    if not mp.priced and m._by_tier:
        m.batch_expected_usd = m.batch_worst_usd = None
        m.realtime_expected_usd = m.realtime_worst_usd = None
        return
    m.derived = mp.derived and bool(m._by_tier)
    for (tier, worst_case), tokens in m._by_tier.items():
        for batch in (True, False):
            v = mp.cost(tokens, tier, batch=batch)
            attr = f"{'batch' if batch else 'realtime'}_{'worst' if worst_case else 'expected'}_usd"
            setattr(m, attr, (getattr(m, attr) or Decimal(0)) + (v or Decimal(0)))


def _numbered(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as f:
        for number, raw in enumerate(f, 1):
            line = raw.rstrip(b"\r\n")
            if line.strip():
                yield number, line


def estimate_file(
    path: str | Path, *, expected_output: int = EXPECTED_OUTPUT, provider: str = PROVIDER
) -> Estimate:
    """Estimate every request of a JSONL batch input file meant for `provider`."""
    p = Path(path)
    format_of(provider)  # an unknown provider is one line before anything is read
    if not p.is_file():
        raise InputError(f"{p}: no such file")
    return estimate_lines(
        _numbered(p), source=str(p), expected_output=expected_output, provider=provider
    )


def estimate_requests(
    requests: Iterable[Mapping[str, Any]],
    *,
    provider: str = PROVIDER,
    expected_output: int = EXPECTED_OUTPUT,
) -> Estimate:
    """Estimate requests given as `Queue.add_many` takes them: batch input lines as dicts
    (either format) or the short `{"custom_id", "body"[, "url"]}`."""

    def parsed() -> Iterator[tuple[str, Parsed | Exception]]:
        for n, item in enumerate(requests, 1):
            cid = item.get("custom_id") if isinstance(item, Mapping) else None
            try:
                yield f"item {n} (custom_id {cid!r})", _unpack(from_item(item, provider))
            except LineError as exc:
                yield f"item {n} (custom_id {cid!r})", exc

    return estimate_parsed(parsed(), source="<requests>", expected_output=expected_output)


def from_sizes(
    source: str,
    sizes: dict[tuple[str, str, str], list[int]],
    *,
    expected_output: int = EXPECTED_OUTPUT,
) -> Estimate:
    """The cheap estimate printed after `enqueue`: no tokenizer, only the size stats the
    importer keeps (`importer.tally_sizes`). Input tokens come from `tokens.estimate_tokens`
    (upper-leaning), and every request is priced at the tier of the model's largest one."""
    from llmbatch.tokens import OVERHEAD_TOKENS, estimate_tokens

    models: dict[tuple[str, str], ModelEstimate] = {}
    for (provider, endpoint, model), (n, nbytes, caps, without, largest) in sorted(sizes.items()):
        m = models.setdefault((provider, model), ModelEstimate(provider, model))
        inp = estimate_tokens(nbytes) + OVERHEAD_TOKENS * (n - 1)
        worst = expected = 0
        if endpoint not in NO_OUTPUT_ENDPOINTS:
            model_max = model_max_output(model)
            worst = caps + without * (model_max or 0)
            expected = min(worst, n * expected_output) if model_max or not without else 0
            m.without_cap += without
            m.unbounded += without if model_max is None else 0
        m.requests += n
        m.input_tokens += inp
        m.expected_output_tokens += expected
        m.max_output_tokens += worst
        if free(endpoint, model):
            continue
        tier = model_prices(provider, model).tier(estimate_tokens(largest))
        for worst_case, out in ((False, expected), (True, worst)):
            m._by_tier[(tier, worst_case)] = m._by_tier.get((tier, worst_case), Tokens()) + Tokens(
                input=inp, output=out
            )
    for m in models.values():
        _price(m)
    return Estimate(source, [models[k] for k in sorted(models)], expected_output)


def _unpriced(v: Decimal | None) -> str:
    return "unpriced" if v is None else money(v)


ESTIMATE_COLUMNS = [
    Column("provider", "provider", drop=2),
    Column("model", "model"),
    Column("requests", "requests", right=True),
    Column("input_tokens", "input tok", right=True),
    Column("expected_output_tokens", "output tok", right=True, drop=3),
    Column("max_output_tokens", "max output tok", right=True, drop=4),
    Column("batch_expected_usd", "batch $", right=True, show=_unpriced),
    Column("batch_worst_usd", "batch $ worst", right=True, show=_unpriced),
    Column("realtime_expected_usd", "real-time $", right=True, drop=1, show=_unpriced),
    Column("realtime_worst_usd", "real-time $ worst", right=True, drop=1, show=_unpriced),
]


def render(est: Estimate, fmt: str = "table", wide: bool = False) -> str:
    """The estimate as a table (rounded, fitted to the terminal), CSV or JSON (exact to
    1e-6 USD)."""
    if fmt == "json":
        return as_json(
            {
                "source": est.source,
                "prices": prices_version(),
                "expected_output_per_request": est.expected_output,
                "models": [m.record() for m in est.models],
                "total": {
                    k: est.total(k)
                    for k in (
                        "batch_expected_usd",
                        "batch_worst_usd",
                        "realtime_expected_usd",
                        "realtime_worst_usd",
                    )
                },
            }
        )
    records = [m.record() for m in est.models]
    if fmt == "csv":
        return as_csv(ESTIMATE_COLUMNS, records)
    if not est.models:
        return f"{est.source}: no requests to estimate.\n"
    title = f"estimate for {est.source} (USD, {prices_version()})"
    out = table(ESTIMATE_COLUMNS, records, title=title, wide=wide)
    notes = [
        f"expected output: {est.expected_output:,} tokens a request (--expected-output), "
        "never above its own cap; worst case: every request writes its cap."
    ]
    for m in est.models:
        if m.without_cap:
            notes.append(
                f"{m.model}: {m.without_cap:,} of {m.requests:,} requests set no max_tokens / "
                "max_completion_tokens / max_output_tokens; the worst case uses the model's "
                "maximum output" + (f" ({m.unbounded:,} unknown, left out)" if m.unbounded else "")
            )
        if m.derived:
            notes.append(f"{m.model}: derived batch price (real-time price x 50 %).")
        if not m.priced:
            notes.append(f"{m.model}: unpriced (not in the price data); not $0.")
    for note in dict.fromkeys(format_of(m.provider).estimate_note for m in est.models):
        if note:
            notes.append(note)
    return out + "".join(n + "\n" for n in notes) + est.summary() + "\n"
