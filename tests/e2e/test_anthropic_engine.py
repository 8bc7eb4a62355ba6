"""The engine with Anthropic Message Batches: the real emulator over real HTTP, the official SDK.

Requests enqueued as `{"custom_id", "params"}` lines travel inline in the create call and
come back as `succeeded`/`errored` results; `llmbatch results` gives them in the OpenAI
output shape with the native body and `"provider": "anthropic"`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator, Sequence
from typing import Any

import anthropic
import orjson
import pytest

from helpers import E2E_KEY_ENV, cli, drain, results_per_request, sql
from helpers import fast_settings as settings
from helpers import request_states as states
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.providers.anthropic import AnthropicProvider
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=9) as e:
        yield e


def message(i: int, model: str = "claude-3-5-haiku-latest") -> dict[str, Any]:
    return {
        "custom_id": f"claude {i}/ü",  # any string: the provider only sees attempt ids
        "params": {
            "model": model,
            "max_tokens": 64,
            "messages": [{"role": "user", "content": f"request number {i}"}],
        },
    }


def chat(i: int) -> dict[str, Any]:
    return {
        "custom_id": f"gpt {i}",
        "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"n {i}"}]},
    }


anthropic_settings = settings  # fast_settings points Anthropic at the emulator too


def enqueue(db: str, items: Sequence[dict[str, Any]], provider: str) -> None:
    with Queue(db, "q", provider=provider) as q:
        assert q.add_many(items).added == len(items)


def sdk(emu: RunningEmulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.url, api_key="sk-test-not-a-secret")


def test_anthropic_queue_drains_with_native_bodies(db: str, emu: RunningEmulator) -> None:
    items = [message(i) for i in range(7)]
    enqueue(db, items, "anthropic")
    drain(db, anthropic_settings(emu))
    assert states(db) == {"succeeded": 7}
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    remote = sdk(emu).messages.batches.list().data
    assert remote == []  # ended batches are deleted once ingested
    out = [orjson.loads(x) for x in cli("--db", db, "results").stdout.splitlines()]
    assert len(out) == 7
    for row in out:
        assert row["provider"] == "anthropic"
        body = row["response"]["body"]
        assert body["type"] == "message" and body["usage"]["input_tokens"] > 0


def test_errored_results_follow_the_retry_policy(db: str, emu: RunningEmulator) -> None:
    items = [message(i) for i in range(4)] + [message(9, model="claude-no-such-model")]
    enqueue(db, items, "anthropic")
    emu.control.set_config(request_failure_rate=1.0, request_failure_status=529)
    s = anthropic_settings(emu, retry=RetryPolicy(max_attempts=2, base_seconds=0.01))
    drain(db, s)
    # overloaded_error is retried once, then fails; the unknown model is not retried
    assert states(db) == {"failed": 5}
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    out = {
        r["custom_id"]: r for r in map(orjson.loads, cli("--db", db, "results").stdout.splitlines())
    }
    assert out["claude 0/ü"]["error"]["code"] == "overloaded_error"
    assert "gave up after 2 attempts" in out["claude 0/ü"]["error"]["message"]
    assert out["claude 9/ü"]["error"]["code"] == "not_found_error"
    assert "not retryable" in out["claude 9/ü"]["error"]["message"]


def test_mixed_openai_and_anthropic_queue_drains(db: str, emu: RunningEmulator) -> None:
    enqueue(db, [message(i) for i in range(5)], "anthropic")
    enqueue(db, [chat(i) for i in range(5)], "openai")
    drain(db, anthropic_settings(emu))
    assert states(db) == {"succeeded": 10}
    providers = sorted(
        orjson.loads(x).get("provider", "openai")
        for x in cli("--db", db, "results").stdout.splitlines()
    )
    assert providers == ["anthropic"] * 5 + ["openai"] * 5


def test_two_claude_models_share_one_batch(db: str, emu: RunningEmulator) -> None:
    items = [message(i, "claude-3-5-haiku-latest") for i in range(4)]
    items += [message(i, "claude-sonnet-4-20250514") for i in range(4, 7)]
    enqueue(db, items, "anthropic")
    drain(db, anthropic_settings(emu))
    assert states(db) == {"succeeded": 7}
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    creates = [
        c
        for c in emu.control.calls()
        if c["method"] == "POST" and c["path"] == "/v1/messages/batches"
    ]
    assert len(creates) == 1
    assert sql(db, "SELECT model, request_count FROM batches") == [(None, 7)]
    models = {
        r["custom_id"]: r["response"]["body"]["model"]
        for r in map(orjson.loads, cli("--db", db, "results").stdout.splitlines())
    }
    assert models == {it["custom_id"]: it["params"]["model"] for it in items}
    # cost per model comes from each request's own model
    per_model = dict(sql(db, "SELECT model, SUM(requests) FROM cost_totals GROUP BY model"))
    assert per_model == {"claude-3-5-haiku-latest": 4, "claude-sonnet-4-20250514": 3}


def test_reconcile_takes_an_unrecorded_batch_only_once_its_results_prove_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Running, the batch cannot say whose it is: reconcile answers pending (it used to adopt
    it on its size, which took another store's batch: issue 15). Ended, its first result
    line carries the intent's nonce and an attempt in its span: it is that intent's."""

    monkeypatch.setenv(E2E_KEY_ENV, "sk-test-not-a-secret")
    with running(time_scale=0.0, seed=5) as emu:  # the batch runs until the test advances
        _prove(tmp_path, emu)


def _prove(tmp_path: Any, emu: RunningEmulator) -> None:
    from llmbatch.ownership import custom_id
    from llmbatch.providers.base import Intent

    provider = AnthropicProvider(base_url=emu.url, api_key_env=E2E_KEY_ENV)
    path = tmp_path / "b.jsonl"
    lines = [
        provider.request_line(
            custom_id("lbs", "0a1b2c3d", 10 + i), "/v1/messages", orjson.dumps(message(i)["params"])
        )
        for i in range(3)
    ]
    path.write_bytes(b"\n".join(lines) + b"\n")
    intent = Intent(
        1, "lbs", "/v1/messages", None, path, 3, time.time(), None, (10, 12), "0a1b2c3d"
    )

    class Journal:
        call_timeout = 30.0

        def uploading(self) -> None: ...
        def uploaded(self, file_id: str) -> None: ...
        def creating(self) -> None: ...
        def sending(self) -> None: ...

    ref = provider.submit(intent, Journal())
    assert provider.reconcile([intent], intent.created_at)[1].pending
    copy = dataclasses.replace(intent, nonce="ffffffff")  # a copy of the store: not its own
    assert provider.reconcile([copy], copy.created_at)[1].pending  # it cannot tell yet either
    emu.control.advance(3600)
    emu.control.wait(ref.provider_batch_id, "ended")
    found = provider.reconcile([intent], intent.created_at)[1]
    assert found.provider_batch_id == ref.provider_batch_id and not found.pending
    assert (
        AnthropicProvider(base_url=emu.url, api_key_env=E2E_KEY_ENV).reconcile(
            [copy], copy.created_at
        )
        == {}
    )  # ended and read: not the copy's, nothing to wait for
    other = Intent(2, "lbs", "/v1/messages", None, path, 4, time.time(), None, (20, 23), "11111111")
    assert provider.reconcile([other], other.created_at) == {}
    recorded = frozenset({ref.provider_batch_id})
    assert provider.reconcile([intent], intent.created_at, recorded) == {}


@pytest.mark.parametrize("mode", ["requeue", "fail"])
def test_results_archived_before_they_were_read(mode: str, db: str, emu: RunningEmulator) -> None:
    """The batch ended, then 29 virtual days passed before the engine looked: results 404
    while the batch is still there, its `archived_at` set (Anthropic's own signal, read by
    its provider). Every provider's forgotten results, batch deleted with them, run in
    tests/contract/test_ownership.py."""
    items = [message(i) for i in range(3)]
    enqueue(db, items, "anthropic")
    engine = Engine(open_store(db), anthropic_settings(emu, archived=mode))
    try:
        engine.next_poll_at = time.time() + 3600  # not polled yet: it ends unseen
        engine.tick(time.time())  # packs and creates the batch
        ((pid,),) = sql(db, "SELECT provider_batch_id FROM batches")
        emu.control.wait(pid, "ended")
        emu.control.advance(30 * 86400)
        engine.next_poll_at = 0.0
        deadline = time.monotonic() + 30
        while engine.store.unfinished_count():
            engine.tick(time.time())
            assert time.monotonic() < deadline, "not drained in time"
            time.sleep(0.02)
    finally:
        engine.close()
        engine.store.close()
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    if mode == "requeue":
        assert states(db) == {"succeeded": 3}
        assert sql(db, "SELECT COUNT(*) FROM batches")[0][0] == 2
    else:
        assert states(db) == {"failed": 3}
        codes = {
            r["error"]["code"]
            for r in map(orjson.loads, cli("--db", db, "results").stdout.splitlines())
        }
        assert codes == {"archived"}
    status = cli("--db", db, "status").stdout
    assert pid in status and "archived" in status


def test_a_model_under_a_quota_is_packed_alone(db: str, emu: RunningEmulator) -> None:
    """An enqueued-token quota counts per model, so its model does not share a batch."""
    items = [message(i, "claude-3-5-haiku-latest") for i in range(3)]
    items += [message(i, "claude-sonnet-4-20250514") for i in range(3, 5)]
    enqueue(db, items, "anthropic")
    quotas = {("anthropic", "claude-3-5-haiku-latest"): 10**9}
    drain(db, anthropic_settings(emu, quotas=quotas))
    assert states(db) == {"succeeded": 5}
    assert sorted(sql(db, "SELECT model, request_count FROM batches")) == [
        ("claude-3-5-haiku-latest", 3),
        ("claude-sonnet-4-20250514", 2),
    ]


def test_under_a_budget_each_model_is_priced_and_packed_alone(
    db: str, emu: RunningEmulator
) -> None:
    """Budgets price a batch's worst case per model, so under one models do not mix."""
    from decimal import Decimal

    from llmbatch.budget import Budget, BudgetSettings

    items = [message(i, "claude-3-5-haiku-latest") for i in range(2)]
    items += [message(i, "claude-sonnet-4-20250514") for i in range(2, 5)]
    enqueue(db, items, "anthropic")
    budgets = BudgetSettings((Budget(None, "day", Decimal("100")),), allow_unpriced=True)
    drain(db, anthropic_settings(emu, budgets=budgets))
    assert states(db) == {"succeeded": 5}
    assert sorted(sql(db, "SELECT model, request_count FROM batches")) == [
        ("claude-3-5-haiku-latest", 2),
        ("claude-sonnet-4-20250514", 3),
    ]


def test_a_request_too_large_for_any_batch_fails_alone(db: str, emu: RunningEmulator) -> None:
    """With a 10 kB batch limit a 20 kB request can never go: it fails with the limit named,
    and the group behind it (every Claude model) still drains."""
    big = message(0)
    big["params"]["messages"][0]["content"] = "x" * 20_000
    items = [big] + [message(i) for i in range(1, 4)]
    enqueue(db, items, "anthropic")
    s = anthropic_settings(emu)
    s.providers["anthropic"]["max_bytes"] = 10_000
    drain(db, s)
    assert states(db) == {"failed": 1, "succeeded": 3}
    shown = cli("--db", db, "show", "claude 0/ü").stdout
    assert "too large for one anthropic batch (limit 10,000 bytes)" in shown, shown
