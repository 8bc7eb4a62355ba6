"""What a batch cost, counted from its own result lines and checked against the provider.

- **We counted** (`Tally`): as ingest reads a provider batch's result lines, the usage of each
  succeeded line is summed per model and price tier (a line whose usage cannot be read is
  counted as flagged, never as 0 tokens), and recorded with the batch.
- **Provider says**: OpenAI's Batch object carries `usage` (batches created after
  2025-09-07); each poll records it. Once the batch is ingested the two are compared, and a
  difference is an anomaly `status` and `report` show side by side. Anthropic's Message
  Batches and Azure's batches give no batch total: for them there is nothing to compare.
- **Settling** (`settle`): a batch's reservation is released to the actual cost of its
  results. A result whose usage could not be read is charged its worst case (its cost is
  not known: never $0); a model without a price counts 0 and is flagged `unpriced` (it only
  spends under a budget that allows it).
- **Spend no budget planned**: a duplicate provider batch (the residual risk of exactly-once
  submission) is charged the moment it is found — its intent's worst case, reserved in the
  adoption's transaction — and settled to the cost of its own result lines, which the
  results table never holds (their requests were answered once already), split over its
  queues in proportion to their worst case.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from operator import itemgetter
from typing import TYPE_CHECKING, Any

from llmbatch.pricing import Tokens, model_prices, price_group, prices_version, to_micro, usd
from llmbatch.store.ledger import TallyRow, UsageCheck

if TYPE_CHECKING:
    from llmbatch.budget import BudgetSettings
    from llmbatch.results import Success
    from llmbatch.store.base import Store
    from llmbatch.store.batching import OpenBatch


class Tally:
    """Usage of one provider batch's result lines as ingest reads them, per model and tier."""

    def __init__(self, provider: str, model: str | None, now: float) -> None:
        self.provider, self.model = provider, model
        self.day = datetime.fromtimestamp(now, UTC).date()
        self._thresholds: dict[str, tuple[int, ...]] = {}
        self._sums: dict[tuple[str, int], list[int]] = {}

    def add_successes(self, rows: Sequence[Success]) -> None:
        """Count a chunk's succeeded lines (`results.Success` tuples) as `add` counts each:
        summed per model and tier, not line by line."""
        groups: dict[str, list[Success]] = {}
        if self.model:
            groups[self.model] = list(rows)
        else:
            for r in rows:
                groups.setdefault(r[11] or "", []).append(r)
        for model, group in groups.items():
            # priceable: usage read (cached not None), not flagged, both totals present
            good = [r for r in group if r[10] is None and r[6] is not None and r[4] is not None]
            good = [r for r in good if r[5] is not None]
            if len(good) < len(group):
                self._row(model, 0)[1] += len(group) - len(good)
            by_tier: dict[int, list[Success]] = {}
            if self._thresholds_of(model):
                for r in good:
                    by_tier.setdefault(self._tier(model, r[4] or 0), []).append(r)
            elif good:
                by_tier[0] = good
            for tier, rs in by_tier.items():
                row = self._row(model, tier)
                row[0] += len(rs)
                for at, field in enumerate((4, 6, 7, 8, 5, 9), start=2):
                    row[at] += sum(map(itemgetter(field), rs))

    def _thresholds_of(self, model: str) -> tuple[int, ...]:
        t = self._thresholds.get(model)
        if t is None:
            t = self._thresholds[model] = model_prices(self.provider, model, self.day).thresholds
        return t

    def _tier(self, model: str, input_tokens: int) -> int:
        t = self._thresholds_of(model)
        return sum(1 for x in t if input_tokens > x) if t else 0

    def _row(self, model: str, tier: int) -> list[int]:
        row = self._sums.get((model, tier))
        if row is None:
            row = self._sums[(model, tier)] = [0] * 8
        return row

    def rows(self) -> list[TallyRow]:
        return [TallyRow(m, t, *v) for (m, t), v in sorted(self._sums.items())]


def tally_cost(rows: list[TallyRow], provider: str, endpoint: str, day: date) -> tuple[int, int]:
    """The batch cost of a tally in 1e-6 USD, and how many of its results have no price."""
    cost = unpriced = 0
    for r in rows:
        unpriced += r.flagged
        if not r.results:
            continue
        tokens = Tokens(r.input, r.cached, r.write_5m, r.write_1h, r.output)
        c = price_group(provider, r.model, tokens, r.tier, day, endpoint).batch
        if c is None:
            unpriced += r.results
        else:
            cost += to_micro(c)
    return cost, unpriced


def split(total: int, weights: dict[str, int]) -> dict[str, int]:
    """`total` over the keys in proportion to their weights (equally if all are 0), so that
    the parts add up to it."""
    keys = sorted(weights)
    if not keys:
        return {}
    whole = sum(weights.values())
    out, given = {}, 0
    for i, k in enumerate(keys):
        share = (
            total - given
            if i == len(keys) - 1
            else (total * weights[k] // whole if whole else total // len(keys))
        )
        out[k], given = share, given + share
    return out


def settle(store: Store, b: OpenBatch, settings: BudgetSettings, now: float, token: int) -> None:
    """Release a batch's reservation to what its results cost (see the module docstring)."""
    day = datetime.fromtimestamp(now, UTC).date()
    if b.intent_id is not None:  # a duplicate: what its own lines cost
        queues = store.spend_queues(b.id)
        if queues:
            cost, missing = tally_cost(store.batch_tally(b.id), b.provider, b.endpoint, day)
            shares = split(cost, queues)
            store.settle(b.id, shares, now, token, split(missing, queues), prices_version())
        return
    usage = store.batch_usage(b.attempts_of)
    if usage is None:
        return  # it reserved nothing: no budget was in force
    spent: dict[str, int] = {}
    unpriced: dict[str, int] = {}
    model = b.model or ""
    for u in usage:
        spent.setdefault(u.queue, 0)
        tokens = Tokens(u.input, u.cached, u.write_5m, u.write_1h, u.output)
        c = price_group(b.provider, model, tokens, u.tier, day, b.endpoint).batch
        if c is None:
            unpriced[u.queue] = unpriced.get(u.queue, 0) + u.results
        else:
            spent[u.queue] += to_micro(c)
    flagged = store.flagged_results(b.attempts_of)
    if flagged:  # their cost is not known: charge each its worst case
        group = (b.provider, b.endpoint, model)
        from llmbatch.budget import worst_cases  # budgets only where usage was flagged

        lines, _sizes = worst_cases(store, group, [r for r, _q in flagged], settings, now)
        for ln in lines:
            spent[ln.queue] = spent.get(ln.queue, 0) + (ln.worst.micro or 0)
            unpriced[ln.queue] = unpriced.get(ln.queue, 0) + 1
    store.settle(b.attempts_of, spent, now, token, unpriced, prices_version())


def record(store: Store, b: OpenBatch, tally: Tally, now: float, token: int) -> str | None:
    """Record what a batch's lines said it used; a note if the provider says otherwise."""
    check = store.record_tally(b.id, tally.rows(), now, token)
    return mismatch(check) if check is not None and check.differs else None


def mismatch(check: UsageCheck) -> str:
    """ "batch X: provider says …; we counted …" for a batch whose totals differ."""
    s, c = check.says, check.counted
    ran = f" (it ran {check.model})" if check.model else ""
    return (
        f"batch {check.provider_batch_id or check.batch_id}: provider says {s[0]:,} input and "
        f"{s[2]:,} output tokens{ran}; we counted {c[0]:,} and {c[2]:,} from its result lines "
        f"({check.difference()})"
    )


def describe_unplanned(rows: list[Any]) -> list[str]:
    """One line per duplicate charge or unpriced result count, for status and report."""
    out = []
    for r in rows:
        amount = usd(r.spent if r.settled_at is not None else r.reserved)
        state = "settled" if r.settled_at is not None else "reserved until its results arrive"
        if r.kind == "duplicate":
            out.append(
                f"batch {r.batch_id} (queue {r.queue}): a duplicate provider batch, charged "
                f"{amount} USD ({state}); no budget planned it"
            )
        if r.unpriced:
            out.append(
                f"batch {r.batch_id} (queue {r.queue}): {r.unpriced:,} results with no known "
                "cost (unreadable usage, charged at their worst case; or a model without a "
                "price, counted 0)"
            )
    return out
