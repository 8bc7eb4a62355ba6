"""A store found away from its home: copied or moved, as the user says (docs/reliability.md).

A store records where it lives when it is made (store/ownership.py). Opened elsewhere with
work in flight, it cannot tell a copy (a backup restored beside the original, dev cloned
from prod: both carry on, and must never take each other's batches) from a move or a
restore (the original is gone: this one carries on). So it serves new work — its intents
carry their own nonces — and touches nothing created before, until the user says:

- `new_identity` (a copy): the work in flight before the copy is the original's. Its
  requests go back to the queue here, uncharged, to be sent again under new intents; the
  batches are closed without reading or deleting anything at the provider.
- `keep_identity` (a move, a restore): the frozen work carries on as if nothing happened.
"""

from __future__ import annotations

from llmbatch.errors import ConfigError, StoreError
from llmbatch.store.base import Store
from llmbatch.store.batching import Outcome
from llmbatch.store.sqlstore import owner_tag

COPIED = "copied_store"


def _pending(store: Store) -> int:
    moved = store.moved()
    if moved is None:
        raise ConfigError(
            f"{store.location} is where it was made (or was told so): there is no copy or "
            "move to name"
        )
    return moved.before


def keep_identity(store: Store, now: float) -> str:
    """A move or a restore: the work frozen since the move carries on here."""
    before = _pending(store)
    store.resolve_move("keep", now)
    return f"kept this store's identity: its batches up to {before} carry on here"


def new_identity(store: Store, now: float) -> str:
    """A copy: give the work in flight before the copy back to the queue (uncharged) and
    close its batches here, leaving them to the original store."""
    from llmbatch import ledger  # the price data and budgets: not for `status`
    from llmbatch.budget import BudgetSettings

    before = _pending(store)
    holder = f"{owner_tag()}/store-new-identity"
    token = store.acquire_lease("engine", holder, 120.0, now)
    if token is None:
        who = store.lease_holder("engine", now) or "another worker"
        raise StoreError(
            f"{who} holds the engine lease of {store.location}; stop it, then run "
            "`llmbatch store new-identity` again"
        )
    requeued = closed = 0
    try:
        frozen = {b.id: b for b in store.open_batches() if b.id <= before}
        for batch_id, intent_id in store.open_before(before):
            b = frozen.get(batch_id)
            if b is None:
                continue
            if intent_id is None:
                why = "its batch belongs to the store this one was copied from; sent again"
                outs = [
                    Outcome(a, "requeue", error_code=COPIED, error_message=why)
                    for a, _r, _l in store.unfinished_attempts(batch_id)
                ]
                if b.cancel_requested_at is not None:
                    outs = [Outcome(o.attempt_id, "cancelled", error_code=COPIED) for o in outs]
                store.apply_outcomes(batch_id, outs, now, token)
                requeued += len(outs)
            ledger.settle(store, b, BudgetSettings(), now, token)
            store.mark_ingested(batch_id, now, token, "left to the store this one was copied from")
            closed += 1
        store.resolve_move("new", now)
    finally:
        store.release_lease("engine", holder)
    return (
        f"new identity: {closed} batches made before the copy are left to the original; "
        f"{requeued} of their requests are queued again here"
    )


def status_lines(store: Store, now: float) -> list[str]:
    """What `status` says about the store's identity and proof of ownership: a copy or move
    to name, intents waiting for proof and how long they may still wait, double creates."""
    from llmbatch.render import duration

    out = []
    moved = store.moved()
    if moved is not None:
        out.append(
            f"copied or moved: this store was made at {moved.describe()}; its batches up to "
            f"{moved.before} wait until you run `llmbatch store new-identity` (a copy) or "
            "`llmbatch store keep-identity` (a move or a restore)"
        )
    for w in store.proof_waits():
        out.append(
            f"waiting for proof: batch {w.batch_id} ({w.provider}, {w.request_count:,} "
            f"requests) may have been created; a running {w.provider} batch of its size must "
            f"end and say whose it is; it may wait {duration(max(0.0, w.until - now))} more, "
            "then is sent again"
        )
    residual = store.residual_double_creates()
    if residual:
        out.append(f"residual double creates: {residual} (sent again after max_proof_wait)")
    return out


def status_record(store: Store, now: float) -> dict[str, object]:
    moved = store.moved()
    return {
        "moved": None
        if moved is None
        else {"before": moved.before, "home": moved.home, "found": moved.found},
        "proof_waits": [
            {
                "batch": w.batch_id,
                "provider": w.provider,
                "requests": w.request_count,
                "may_wait_s": round(max(0.0, w.until - now)),
            }
            for w in store.proof_waits()
        ],
        "residual_double_creates": store.residual_double_creates(),
    }
