"""Hard budgets: caps in USD per UTC day or month, for all queues together or for one queue.

**The store is the only source of budgets.** `llmbatch budget set|list|clear|apply` writes
and reads them; a worker's own (`--budget-usd`, `[budgets]`) are written to a store that has
none the first time it runs, and otherwise only tighten the store's for that worker
(in_force.py). Every reservation checks the store's budgets as they are when it commits
(store/budgets.py), so workers with different configurations cannot pass the store's cap
together.

The arithmetic lives here, as pure functions; the store reserves and settles.

- A batch's *worst case* (worst.py: every multiplier the provider bills) is reserved in the
  transaction that commits its intent, at the batch price of each request's own tier, and
  settled to the actual cost of its results at ingest (ledger.py).
- A batch counts against the UTC day (and month) its intent was committed, from the
  reservation until it is settled.
- A request that cannot be bounded waits under a budget, with the reason: an unpriced model
  or a hosted tool unless `allow_unpriced` (then it spends uncounted, and says so), a
  context of unknown size (`previous_response_id`) unless it caps its output and its queue
  has `assume_context_tokens`.

Config (`llmbatch.toml`), written to the store by `llmbatch budget apply` (or on first use)::

    [budgets]
    daily_usd = 40              # every queue together, per UTC day
    monthly_usd = 500           # every queue together, per UTC month
    allow_unpriced = false
    assume_context_tokens = 8000  # context a previous_response_id may bring, every queue

    [budgets.queues.reviews]
    daily_usd = 10              # this queue alone
    assume_context_tokens = 20000
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

import orjson

from llmbatch import defaults
from llmbatch.errors import ConfigError
from llmbatch.packing import LINE_OVERHEAD
from llmbatch.periods import PERIODS as PERIODS
from llmbatch.periods import epoch_day, period_days
from llmbatch.pricing import MICRO, model_prices, prices_key
from llmbatch.pricing import to_micro as to_micro
from llmbatch.pricing import usd as usd
from llmbatch.store.budgets import Check, Reservation
from llmbatch.store.types import ALL_QUEUES as ALL_QUEUES
from llmbatch.tokens import estimate_tokens
from llmbatch.worst import UNKNOWN_MAX, Rates, WorstCase, worst_case

if TYPE_CHECKING:
    from llmbatch.store.base import Store

PERIOD_KEYS = {"daily_usd": "day", "monthly_usd": "month"}


@dataclass(frozen=True, slots=True)
class Budget:
    """A cap of `limit` USD per UTC `period` on one queue (None: all queues together)."""

    queue: str | None
    period: str  # day | month
    limit: Decimal

    @property
    def key(self) -> str:
        return self.queue if self.queue is not None else ALL_QUEUES

    @property
    def limit_micro(self) -> int:
        return to_micro(self.limit)

    def applies(self, queue: str) -> bool:
        return self.queue is None or self.queue == queue

    def describe(self, now: float) -> str:
        who = "all queues" if self.queue is None else f"queue {self.queue}"
        day = datetime.fromtimestamp(now, UTC).date()
        when = day.isoformat() if self.period == "day" else day.strftime("%Y-%m")
        return f"{who}, {when}"


@dataclass(frozen=True, slots=True)
class BudgetSettings:
    """Every budget in force; whether unpriced models may spend under them; the context a
    request with `previous_response_id` is assumed to bring, per queue ('*': every queue)."""

    budgets: tuple[Budget, ...] = ()
    allow_unpriced: bool = False
    assume_context: Mapping[str, int] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.budgets)

    def context_for(self, queue: str) -> int | None:
        return self.assume_context.get(queue, self.assume_context.get(ALL_QUEUES))


def amount(value: Any, where: str) -> Decimal:
    """A budget amount in USD; 0, negative or not a number is a clear error."""
    try:
        d = Decimal(str(value)) if not isinstance(value, bool) else Decimal("nan")
    except InvalidOperation:
        d = Decimal("nan")
    if not d.is_finite():
        raise ConfigError(f"{where}: {value!r} is not an amount in USD (for example 40 or 12.50)")
    if d <= 0:
        raise ConfigError(
            f"{where}: a budget must be more than 0 USD, not {value}; to stop spending, stop the "
            "worker or cancel the queue, and to lift a budget clear it (llmbatch budget clear)"
        )
    if d < MICRO:
        raise ConfigError(f"{where}: {value} USD is below 0.000001 USD, the smallest amount kept")
    return d


def tokens(value: Any, where: str) -> int:
    """A positive whole number of tokens; anything else is a clear error."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(f"{where}: {value!r} is not a whole number of tokens")
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(f"{where}: {value!r} is not a whole number of tokens") from None
    if n <= 0:
        raise ConfigError(f"{where}: must be more than 0 tokens, not {value}")
    return n


def parse_budgets(
    table: Mapping[str, Any] | None,
    *,
    budget_usd: Any = None,
    period: str = defaults.BUDGET_PERIOD,
    queue: str | None = None,
    allow_unpriced: bool | None = None,
) -> BudgetSettings:
    """Budgets from the config's `[budgets]` table, and `--budget-usd` (per `period`, over
    `queue` or all queues), which replaces the config's budget of the same scope and period."""
    table = dict(table or {})
    found: dict[tuple[str | None, str], Decimal] = {}
    context: dict[str, int] = {}
    unpriced = table.pop("allow_unpriced", False)
    if not isinstance(unpriced, bool):
        raise ConfigError(f"[budgets] allow_unpriced must be true or false, not {unpriced!r}")
    queues = table.pop("queues", {}) or {}
    _settings(table, None, "[budgets]", found, context)
    if not isinstance(queues, Mapping):
        raise ConfigError("[budgets.queues] must be a table of queues: [budgets.queues.NAME]")
    for name, sub in queues.items():
        if not isinstance(sub, Mapping):
            raise ConfigError(
                f"[budgets.queues.{name}] must be a table (daily_usd, monthly_usd, "
                "assume_context_tokens)"
            )
        _settings(dict(sub), str(name), f"[budgets.queues.{name}]", found, context)
    if budget_usd is not None:
        if period not in PERIODS:
            raise ConfigError(f"--budget-period must be day or month, not {period!r}")
        found[(queue, period)] = amount(budget_usd, "--budget-usd")
    if allow_unpriced is not None:
        unpriced = allow_unpriced or unpriced
    budgets = tuple(Budget(q, p, v) for (q, p), v in sorted(found.items(), key=_order))
    return BudgetSettings(budgets, unpriced, context)


def _order(item: tuple[tuple[str | None, str], Decimal]) -> tuple[str, str]:
    (q, p), _v = item
    return (q or "", p)


def _settings(
    table: dict[str, Any],
    queue: str | None,
    where: str,
    found: dict[tuple[str | None, str], Decimal],
    context: dict[str, int],
) -> None:
    for key, value in table.items():
        if key == "assume_context_tokens":
            context[queue or ALL_QUEUES] = tokens(value, f"{where} {key}")
            continue
        period = PERIOD_KEYS.get(key)
        if period is None:
            raise ConfigError(
                f"{where} has no setting {key!r}; known: daily_usd, monthly_usd, "
                "assume_context_tokens" + (", allow_unpriced, queues" if queue is None else "")
            )
        found[(queue, period)] = amount(value, f"{where} {key}")


# -- fitting a batch under the budgets ---------------------------------------------------
@dataclass(slots=True)
class Fit:
    """What of a cut may go, what each queue reserves, and what must wait and why."""

    ids: list[int] = field(default_factory=list)
    reserve: dict[str, int] = field(default_factory=dict)  # queue -> micro-USD
    held: dict[str, list[int]] = field(default_factory=dict)  # reason -> request ids


@dataclass(frozen=True, slots=True)
class Line:
    """One candidate request as budgets see it."""

    request_id: int
    queue: str
    worst: WorstCase


def fit(
    lines: Sequence[Line],
    settings: BudgetSettings,
    committed: Mapping[tuple[str, str], int],
    now: float,
    model: str,
) -> Fit:
    """Take lines in order while every budget over them has room; hold the others.

    `committed` is micro-USD already spent or reserved per (budget key, period) in the
    current period. Once a budget refuses a request, later requests under it are held too,
    so a batch never jumps the queue's order."""
    out = Fit()
    used = {(b.key, b.period): committed.get((b.key, b.period), 0) for b in settings.budgets}
    blocked: dict[tuple[str, str], int] = {}  # budget -> worst case of what it refused
    refused: dict[int, tuple[str, str] | str] = {}
    for ln in lines:
        over = [b for b in settings.budgets if b.applies(ln.queue)]
        if not over:
            out.ids.append(ln.request_id)
            continue
        w = ln.worst
        if w.hold is not None and not (w.allowable and settings.allow_unpriced):
            refused[ln.request_id] = f"{model}: {w.hold}"
            continue
        if w.micro is None and not settings.allow_unpriced:
            refused[ln.request_id] = (
                f"model {model} has no price, so no budget can bound it; set [budgets] "
                "allow_unpriced = true (llmbatch budget set --allow-unpriced) to let it spend "
                "uncounted"
            )
            continue
        cost = w.micro or 0
        stop = next((b for b in over if (b.key, b.period) in blocked), None)
        if stop is None:
            stop = next((b for b in over if used[(b.key, b.period)] + cost > b.limit_micro), None)
        if stop is not None:
            k = (stop.key, stop.period)
            blocked[k] = blocked.get(k, 0) + cost
            refused[ln.request_id] = k
            continue
        for b in over:
            used[(b.key, b.period)] += cost
        out.ids.append(ln.request_id)
        out.reserve[ln.queue] = out.reserve.get(ln.queue, 0) + cost
    by_key = {(b.key, b.period): b for b in settings.budgets}
    unknown = any(ln.worst.bound == "unknown maximum" for ln in lines)
    for rid, why in refused.items():
        if isinstance(why, tuple):
            b = by_key[why]
            text = hold_reason(b, used[why], blocked[why], now, unknown)
        else:
            text = why
        out.held.setdefault(text, []).append(rid)
    return out


def hold_reason(b: Budget, spent: int, worst: int, now: float, unknown_max: bool = False) -> str:
    """Why requests wait: "budget 50.00 USD (all queues, 2026-11-26): 49.12 spent, next
    batch worst case 3.40; raise the budget to send it"."""
    note = (
        " (some requests set no output limit and the model's maximum is unknown: each is "
        f"counted at {UNKNOWN_MAX:,} output tokens)"
        if unknown_max
        else ""
    )
    return (
        f"budget {usd(b.limit_micro)} USD ({b.describe(now)}): {usd(spent)} spent, next batch worst "
        f"case {usd(worst)}{note}; raise the budget to send it"
    )


def context_window(provider: str, model: str) -> int | None:
    """The model's context window from genai-prices' data, if it records one."""
    from llmbatch.pricing import snapshot

    try:
        _p, info = snapshot().find_provider_model(model, None, prices_key(provider), None)
    except LookupError:
        return None
    return info.context_window


def parse_body(raw: bytes) -> dict[str, Any]:
    """A stored request body (the provider's JSON object)."""
    obj = orjson.loads(raw)
    return obj if isinstance(obj, dict) else {}


# -- what the engine asks --------------------------------------------------------------------
@dataclass(slots=True)
class Plan:
    """A cut weighed against the budgets: what goes, its reservation, what waits."""

    fit: Fit
    reservation: Reservation
    input_bytes: int
    est_tokens: int


def worst_cases(
    store: Store,
    group: tuple[str, str, str],
    request_ids: Sequence[int],
    settings: BudgetSettings,
    now: float,
) -> tuple[list[Line], dict[int, tuple[int, int]]]:
    """Each request's worst case (worst.py), and its line bytes and estimated tokens."""
    from llmbatch.estimate import model_max_output

    provider, endpoint, model = group
    prices = model_prices(provider, model, datetime.fromtimestamp(now, UTC))
    window = context_window(provider, model)
    most = model_max_output(model)
    cache: dict[int, Rates | None] = {}
    lines, sizes = [], {}
    for rid, queue, text_bytes, raw in store.budget_lines(request_ids):
        worst = worst_case(
            prices,
            endpoint,
            parse_body(raw),
            window,
            max_output=most,
            assume_context=settings.context_for(queue),
            cache=cache,
        )
        lines.append(Line(rid, queue, worst))
        sizes[rid] = (len(raw) + LINE_OVERHEAD, estimate_tokens(text_bytes))
    return lines, sizes


def plan(
    store: Store,
    group: tuple[str, str, str],
    request_ids: Sequence[int],
    settings: BudgetSettings,
    now: float,
) -> Plan:
    """Price the worst case of each request of a cut and fit them under the budgets."""
    lines, sizes = worst_cases(store, group, request_ids, settings, now)
    committed: dict[tuple[str, str], int] = {}
    checks: list[Check] = []
    for b in settings.budgets:
        first, end = period_days(now, b.period)
        committed[(b.key, b.period)] = store.committed(b.key, first, end)
        checks.append(Check(b.key, b.period, b.limit_micro, first, end))
    f = fit(lines, settings, committed, now, group[2])
    taken = set(f.ids)
    queues = {ln.queue for ln in lines if ln.request_id in taken}
    per_queue = {q: f.reserve.get(q, 0) for q in queues}
    used = [c for c in checks if c.queue == ALL_QUEUES or c.queue in queues]
    return Plan(
        f,
        Reservation(epoch_day(now), per_queue, used),
        sum(sizes[r][0] for r in f.ids),
        sum(sizes[r][1] for r in f.ids),
    )


def state(store: Store, settings: BudgetSettings, now: float) -> tuple[object, ...]:
    """What decides holds: each budget's limit and committed spend in its current period,
    and the other settings. When it changes (a budget raised, a new day, a reservation
    settled, a context size assumed), held requests are weighed again."""
    out: list[object] = [settings.allow_unpriced, tuple(sorted(settings.assume_context.items()))]
    for b in settings.budgets:
        first, end = period_days(now, b.period)
        out.append((b.key, b.period, b.limit_micro, first, store.committed(b.key, first, end)))
    return tuple(out)
