"""Prices from `genai-prices` (offline): what usage costs in batch and in real time.

- Batch prices come from the price data's own `{"processing": "batch"}` variant. genai-prices
  silently answers with the real-time price when a model has none, so we look for that
  variant in the data (active at the time priced) instead of comparing totals; without one,
  the provider's 50 % batch discount is applied to the token prices and the figure is marked
  `derived`.
- A model with no price at all is *unpriced* (None), never $0. Moderations are free.
- Prices are tiered by each request's own input tokens (a 300k-token request costs more per
  token than two of 150k), so usage is aggregated per tier key (`ModelPrices.tier`) and each
  aggregate priced at its tier's flat rates. One `calc_price` costs ~0.1 ms: price aggregates,
  never rows.
- Decimal throughout; figures are kept at 1e-6 USD (`MICRO`) and rounded only for display.

Nothing here calls genai-prices' network update; `llmbatch prices --update` is the opt-in.
The price data (genai-prices, pydantic and its ~1 MB table) loads when something is first
priced, not when this module is imported: a command that prices nothing starts without it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal
from functools import cache, lru_cache
from typing import TYPE_CHECKING

from llmbatch.heap import load_frozen
from llmbatch.usage import FREE_ENDPOINTS as FREE_ENDPOINTS
from llmbatch.usage import Tokens as Tokens

if TYPE_CHECKING:
    from genai_prices.data_snapshot import DataSnapshot
    from genai_prices.types import ModelInfo, ModelPrice, Tier, TieredPrices

BATCH = {"processing": "batch"}
BATCH_DISCOUNT = Decimal("0.5")  # every provider we support halves token prices in batch
MICRO = Decimal("0.000001")


@dataclass(frozen=True, slots=True)
class ModelPrices:
    """A model's resolved prices on one day: batch and real time, and its tier thresholds."""

    provider: str
    model: str
    real: ModelPrice | None  # None: unpriced
    batch: ModelPrice | None
    derived: bool  # batch = real-time token prices x 50 %, the data has no batch price
    thresholds: tuple[int, ...]  # input-token tier starts, ascending (a tier applies above it)

    @property
    def priced(self) -> bool:
        return self.real is not None

    def tier(self, input_tokens: int) -> int:
        """The tier key of one request: how many thresholds its input tokens exceed."""
        if not self.thresholds:  # most models: ingest asks once per result line
            return 0
        return sum(1 for t in self.thresholds if input_tokens > t)

    def cost(self, tokens: Tokens, tier: int = 0, *, batch: bool) -> Decimal | None:
        """What `tokens` of requests all in tier `tier` cost, at 1e-6 USD; None if unpriced."""
        prices = self.batch if batch else self.real
        if prices is None:
            return None
        flat = _flatten(prices, self.thresholds, tier)
        return quantize(flat.calc_price(tokens.usage())["total_price"])


@dataclass(frozen=True, slots=True)
class Cost:
    """Batch and real-time cost of the same usage."""

    batch: Decimal | None
    real: Decimal | None
    derived: bool

    @property
    def savings(self) -> Decimal | None:
        return None if self.batch is None or self.real is None else self.real - self.batch


@cache
def prices_version() -> str:
    """Which price data priced a figure (`genai-prices X.Y.Z`), recorded beside it."""
    from importlib.metadata import version

    return f"genai-prices {version('genai-prices')}"


def quantize(v: Decimal) -> Decimal:
    return v.quantize(MICRO, rounding=ROUND_HALF_EVEN)


def to_micro(usd: Decimal) -> int:
    """USD as an integer count of 1e-6 USD, rounded up (a reservation never falls short)."""
    return int((usd / MICRO).to_integral_value(rounding=ROUND_CEILING))


def usd(micro: int) -> str:
    """Micro-USD for display: 2 decimals, or up to 6 where 2 would hide a small amount."""
    v = Decimal(micro) * MICRO
    if v == v.quantize(Decimal("0.01")) or abs(v) >= 1:
        return f"{v:.2f}"
    return f"{v:.6f}".rstrip("0")


def prices_key(provider: str) -> str:
    """The genai-prices provider id for one of ours (its format's `price_key`: Azure OpenAI
    bills like OpenAI); a name no plugin registers is taken as the id itself."""
    from llmbatch.providers import format_or_base

    fmt = format_or_base(provider)
    return fmt.price_key or fmt.name or provider


def model_prices(provider: str, model: str, day: date | datetime | None = None) -> ModelPrices:
    """The prices in force for `model` on `day` (UTC; today if omitted)."""
    if isinstance(day, datetime):
        day = day.astimezone(UTC).date()
    return _model_prices(provider, model, day or datetime.now(UTC).date())


def free(endpoint: str | None, model: str) -> bool:
    """Moderations cost nothing on every provider that offers them."""
    return endpoint in FREE_ENDPOINTS or "moderation" in model


def snapshot() -> DataSnapshot:
    """The price data in force; its first load (~75,000 objects that live as long as the
    process) is made with the collector paused and frozen after (heap.py)."""

    def load() -> DataSnapshot:
        from genai_prices import data_snapshot

        return data_snapshot.get_snapshot()

    if _LOADED:
        return load()
    _LOADED.append(True)
    return load_frozen(load)


_LOADED: list[bool] = []


@lru_cache(maxsize=4096)
def _model_prices(provider: str, model: str, day: date) -> ModelPrices:
    at = datetime.combine(day, time(12), tzinfo=UTC)
    snap = snapshot()
    try:
        p, info = snap.find_provider_model(model, None, prices_key(provider), None)
    except LookupError:
        return ModelPrices(provider, model, None, None, False, ())
    real = info.get_prices(at)
    own = any(info is m for m in p.models)  # genai-prices ignores variants of borrowed models
    if own and has_batch_price(info, at):
        batch, derived = info.get_prices(at, BATCH), False
    else:
        batch, derived = _halve(real), True
    if not _priced_keys(real):
        # genai-prices knows the model but lists no price (e.g. moderation): free, not unknown
        derived = False
    thresholds = tuple(sorted({t.start for mp in (real, batch) for t in _tiers(mp)}))
    return ModelPrices(provider, model, real, batch, derived, thresholds)


def has_batch_price(info: ModelInfo, at: datetime) -> bool:
    """Whether the price data holds a batch price for this model at `at` (not a fallback)."""
    for v in info.price_variants or ():
        if v.when == BATCH and (v.constraint is None or v.constraint.active(at)):
            return True
    return False


def _priced_keys(mp: ModelPrice) -> dict[str, Decimal | TieredPrices]:
    return {k: v for k, v in vars(mp).items() if not k.startswith("_") and v is not None}


def _tiers(mp: ModelPrice) -> Iterable[Tier]:
    from genai_prices.types import TieredPrices

    for v in _priced_keys(mp).values():
        if isinstance(v, TieredPrices):
            yield from v.tiers


def _halve(mp: ModelPrice) -> ModelPrice:
    """Token prices at the provider's batch discount; per-request fees (web search) unchanged."""
    from genai_prices.types import ModelPrice, TieredPrices

    out: dict[str, Decimal | TieredPrices | None] = {}
    for k, v in _priced_keys(mp).items():
        if not k.endswith("_mtok"):
            out[k] = v
        elif isinstance(v, TieredPrices):
            tiers = [dataclasses.replace(t, price=t.price * BATCH_DISCOUNT) for t in v.tiers]
            out[k] = TieredPrices(base=v.base * BATCH_DISCOUNT, tiers=tiers)
        else:
            out[k] = v * BATCH_DISCOUNT
    return ModelPrice(**out)


def _flatten(mp: ModelPrice, thresholds: tuple[int, ...], tier: int) -> ModelPrice:
    """The flat prices of one tier: what a request with input just above the tier's start pays."""
    if not thresholds:
        return mp
    from genai_prices.types import ModelPrice, TieredPrices

    above = thresholds[tier - 1] + 1 if tier > 0 else 0
    out: dict[str, Decimal | TieredPrices | None] = {}
    for k, v in _priced_keys(mp).items():
        if isinstance(v, TieredPrices):
            rate = v.base
            for t in v.tiers:
                if above > t.start:
                    rate = t.price
            out[k] = rate
        else:
            out[k] = v
    return ModelPrice(**out)


def cost(
    provider: str, model: str, input_tokens: int, output_tokens: int, *, batch: bool
) -> Decimal | None:
    """The price of one request's usage (tier from its own input), or None when unpriced."""
    mp = model_prices(provider, model)
    tokens = Tokens(input=input_tokens, output=output_tokens)
    return mp.cost(tokens, mp.tier(input_tokens), batch=batch)


def price_group(
    provider: str, model: str, tokens: Tokens, tier: int, day: date, endpoint: str | None = None
) -> Cost:
    """Batch and real-time cost of an aggregate of requests of one tier, completed on `day`."""
    if free(endpoint, model):
        return Cost(Decimal(0), Decimal(0), False)
    mp = model_prices(provider, model, day)
    return Cost(mp.cost(tokens, tier, batch=True), mp.cost(tokens, tier, batch=False), mp.derived)
