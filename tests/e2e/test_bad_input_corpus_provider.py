"""The bad-input corpus, provider responses (tests/data/bad_inputs/provider/cases.toml).

Each case makes the emulator answer wrongly through its control API — an HTML page, a file
cut short, a line that is not ours — and runs the real engine over real HTTP until every
request is done. Whatever the fault, no request is lost or answered twice, nothing escapes
as a traceback, the engine says what happened and to which batch, and the key is never in
what it says.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from corpus import cases

from helpers import E2E_KEY_ENV, fast_settings, request_states, results_per_request, sql
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.errors import LlmbatchError
from llmbatch.store import open_store

KEY = "sk-test-not-a-secret"  # what tests/e2e/conftest.py puts in E2E_KEY_ENV
MODELS = {"openai": "gpt-4o-mini", "azure": "gpt-4o-mini", "anthropic": "claude-haiku-4-5"}


@pytest.fixture(scope="module")
def emulator() -> Iterator[RunningEmulator]:
    with running(seed=5) as emu:
        yield emu


@pytest.fixture
def emu(emulator: RunningEmulator) -> RunningEmulator:
    emulator.control.reset()
    return emulator


def _items(provider: str, model: str, n: int) -> list[dict[str, Any]]:
    if provider == "anthropic":
        return [
            {"custom_id": f"r{i}", "params": {"model": model, "max_tokens": 50,
             "messages": [{"role": "user", "content": f"request {i}"}]}}
            for i in range(n)
        ]  # fmt: skip
    return [
        {"custom_id": f"r{i}", "body": {"model": model, "messages": [{"role": "user", "content": f"request {i}"}]}}
        for i in range(n)
    ]  # fmt: skip


def _run(engine: Engine, case: dict[str, Any], emu: RunningEmulator) -> list[str]:
    """Tick until nothing is unfinished; what the engine said (notes, a raised error)."""
    said: list[str] = []
    deadline = time.monotonic() + 20
    first = True
    while engine.store.unfinished_count():
        assert time.monotonic() < deadline, f"not done after 20 s; said: {said[-5:]}"
        try:
            said += engine.tick(time.time()).notes
        except LlmbatchError as exc:  # anything else is a bug, and fails the test as it is
            said.append(f"{type(exc).__name__}: {exc}")
            assert first and "raises" in case, said[-1]
            emu.control.clear_faults()  # the operator fixes the key
        first = False
        time.sleep(0.02)
    return said


@pytest.mark.parametrize("case", cases("provider"))
def test_provider_response(
    case: dict[str, Any], emu: RunningEmulator, sqlite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(E2E_KEY_ENV, KEY)
    provider = case.get("provider", "openai")
    n = case.get("requests", 6)
    with Queue(sqlite_db, "q", provider=provider) as q:
        q.add_many(_items(provider, case.get("model", MODELS[provider]), n))
    for rule in case.get("faults", []):
        emu.control.add_fault(**rule)
    if "next_batches" in case:
        emu.control.next_batches(**case["next_batches"])
    settings = fast_settings(emu)
    settings.providers["anthropic"] = {"base_url": emu.url, "api_key_env": E2E_KEY_ENV}
    engine = Engine(open_store(sqlite_db), settings)
    try:
        said = _run(engine, case, emu)
    finally:
        engine.close()
        engine.store.close()

    db = sqlite_db
    events = sql(db, "SELECT kind, batch_id, detail FROM events ORDER BY id")
    text = "\n".join(said + [str(d) for _k, _b, d in events])
    if "raises" in case:
        assert said and said[0].startswith(case["raises"]), said[:1]
    # none lost, none answered twice, all in the states the case expects
    assert results_per_request(db) == {f"r{i}": 1 for i in range(n)}
    assert request_states(db) == case["states"]
    failed = sql(db, "SELECT error_code, error_message FROM results WHERE error_code IS NOT NULL")
    assert sorted({c for c, _m in failed}) == sorted(case.get("errors", []))
    assert all(m for _c, m in failed), "a failed request without a reason"
    # what was said: about which batch, and never the key
    batch_ids = [p for (p,) in sql(db, "SELECT provider_batch_id FROM batches") if p]
    for expected in case.get("said", []):
        options = [expected.replace("{batch}", b) for b in batch_ids] or [expected]
        assert any(o in text for o in options), f"{expected!r} not said:\n{text}"
    if "event" in case:
        kind, wanted = case["event"]["kind"], case["event"]["text"]
        local = {b for (b,) in sql(db, "SELECT id FROM batches")}
        assert any(k == kind and b in local and wanted in str(d) for k, b, d in events), text
    if "batches" in case:
        assert len(batch_ids) == case["batches"], batch_ids
    assert KEY not in text
    assert "Traceback" not in text
    assert not any(KEY in str(m) for _c, m in failed)
