"""What the Anthropic fault storm found (benchmarks/bench_faults.py --provider anthropic),
reduced to two creates: intent A's create fails *before* creating anything (a 502), intent
B's (same size) fails *after* creating its batch (a 500). Reconcile matched unrecorded
intents of one size to unrecorded batches of that size oldest first, so A adopted B's batch;
B would find nothing, wait the settle delay and create again: B's requests paid twice, and
A's back in the queue as `missing_result` once "its" batch held only B's lines.

It used to (xfail); now a candidate that may be either intent's is matched to neither while
it runs, and once it has ended the first line of its results says whose it is.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import anthropic

from helpers import drain, fast_settings, results_per_request, sent_ids, sql
from llmbatch import Queue
from llmbatch.emulator import running


def message(i: int) -> dict[str, Any]:
    params = {"model": "claude-haiku-4-5", "max_tokens": 16,
              "messages": [{"role": "user", "content": f"storm {i}"}]}  # fmt: skip
    return {"custom_id": f"m{i}", "params": params}


def test_a_failed_create_does_not_adopt_the_batch_of_a_create_that_failed_after(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "q.db")
    with Queue(db, "q", provider="anthropic") as q:
        q.add_many([message(i) for i in range(20)])
    with running(seed=3) as emu:
        emu.control.add_fault("messages.batches.create", "502", count=1)
        emu.control.add_fault("messages.batches.create", "500", mode="after", count=1)
        drain(db, fast_settings(emu, max_batch_requests=10, delete_files=False), 30)
        sent = sent_ids(db)
        intent_of = {sent[int(a)]: int(b) for a, b in sql(db, "SELECT id, batch_id FROM attempts")}
        client = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=2)
        per_intent: Counter[int] = Counter()
        for b in client.messages.batches.list(limit=100):
            ids = {r.custom_id for r in client.messages.batches.results(b.id)}
            per_intent.update({intent_of[i] for i in ids})
    assert results_per_request(db) == {f"m{i}": 1 for i in range(20)}
    assert max(per_intent.values()) == 1, f"message batches per intent: {dict(per_intent)}"
    requeued = sql(db, "SELECT COUNT(*) FROM attempts WHERE error_code = 'missing_result'")
    assert requeued[0][0] == 0
