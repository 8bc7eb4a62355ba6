"""Candidates of a group that mixes models (Anthropic): every model's ready requests, merged
in packing order (priority first, then enqueue order), on both stores."""

from __future__ import annotations

from typing import Any

from llmbatch import Queue
from llmbatch.store import Store

MODELS = ["claude-3-5-haiku-latest", "claude-sonnet-4-20250514", "claude-opus-4-20250514"]


def message(i: int, model: str) -> dict[str, Any]:
    params = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": f"q{i}"}]}
    return {"custom_id": f"c{i}", "params": params}


def test_every_model_in_packing_order(db: str, store: Store) -> None:
    with Queue(db, "q", provider="anthropic") as q:
        for n, priority in enumerate([0, 5, 0, 9, 5]):
            items = [message(10 * n + i, MODELS[(n + i) % 3]) for i in range(4)]
            q.add_many(items, priority=priority)
    rows = store.candidates("anthropic", "/v1/messages", None, page=3)
    ids = [rid for rid, *_ in rows]
    per_model = [
        rid for m in MODELS for rid, *_ in store.candidates("anthropic", "/v1/messages", m)
    ]
    assert sorted(ids) == sorted(per_model) and len(ids) == 20
    prio = {0: 0, 1: 5, 2: 0, 3: 9, 4: 5}  # import n -> priority; ids grow with n
    order = sorted(ids, key=lambda r: (-prio[(r - min(ids)) // 4], r))
    assert ids == order
