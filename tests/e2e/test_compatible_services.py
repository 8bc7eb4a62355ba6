"""OpenAI-compatible services end to end: the real engine and CLI, the emulator's door for each
service with its differences on (`/compatible/NAME/v1`), the official `openai` SDK over HTTP.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from helpers import E2E_KEY_ENV, cli, drain, fast_settings, request_states, results_per_request
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.providers.compatible import SHIPPED
from llmbatch.store import open_store


@pytest.fixture(scope="module")
def emu() -> Iterator[RunningEmulator]:
    with running(seed=20) as e:
        yield e


# a model each service hosts (the emulator's service doors run any model name)
MODELS = {
    "groq": "llama-3.3-70b-versatile",
    "together": "meta-llama/Llama-3.3-70B-Instruct-Turbo",
    "cerebras": "llama-3.3-70b",
}


def items(n: int, prefix: str = "r", model: str = "gpt-4o-mini") -> list[dict[str, object]]:
    return [
        {
            "custom_id": f"{prefix}{i}",
            "body": {"model": model, "messages": [{"role": "user", "content": f"q {i}"}]},
        }
        for i in range(n)
    ]


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_each_service_runs_a_queue_with_its_differences(
    name: str, emu: RunningEmulator, tmp_path: Path
) -> None:
    db = str(tmp_path / "q.db")
    with Queue(db, "q", provider=name) as q:
        q.add_many(items(25, model=MODELS[name]))
    drain(db, fast_settings(emu))
    assert request_states(db) == {"succeeded": 25}
    assert results_per_request(db) == {f"r{i}": 1 for i in range(25)}
    out = cli("--db", db, "results", "--queue", "q")
    lines = [orjson.loads(line) for line in out.stdout.splitlines()]
    assert {line["provider"] for line in lines} == {name}
    assert all(line["response"]["status_code"] == 200 for line in lines)
    assert {line["response"]["body"]["model"] for line in lines} == {MODELS[name]}
    report = cli("--db", db, "report", "--format", "json")
    assert report.exit_code == 0, report.output
    # what the service's door saw: its purpose, its line shape, its create
    calls = [c for c in emu.control.calls() if f"/compatible/{name}/" in c["path"]]
    assert any(c["method"] == "POST" and c["path"].endswith("/batches") for c in calls)


def test_a_service_with_a_smallest_batch_waits_for_enough_requests(
    emu: RunningEmulator, tmp_path: Path
) -> None:
    """Cerebras takes no batch under 10 requests: 4 wait (and say why), 6 more send all 10."""
    db = str(tmp_path / "q.db")
    with Queue(db, "q", provider="cerebras") as q:
        q.add_many(items(4))
    engine = Engine(open_store(db), fast_settings(emu))
    try:
        notes = engine.tick(time.time()).notes
        assert any("a batch takes at least 10: waiting for more" in n for n in notes), notes
        assert request_states(db) == {"queued": 4}
        status = cli("--db", db, "status").output
        assert (
            "waiting: 4 cerebras requests of gpt-4o-mini: a Cerebras batch takes at least 10"
            in (status)
        )
    finally:
        engine.close()
        engine.store.close()
    with Queue(db, "q", provider="cerebras") as q:
        q.add_many(items(6, "more"))
    drain(db, fast_settings(emu))
    assert request_states(db) == {"succeeded": 10}


def test_a_service_declared_in_the_config_file_runs_through_the_cli(
    emu: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`[providers.NAME] kind = "openai-compatible"`: a service llmbatch does not ship (here a
    vLLM gateway, played by the emulator's Groq door), named by the user."""
    import llmbatch.providers as registry

    # the declaration lives in this process's registry: gone again after the test
    monkeypatch.setattr(registry, "_declared", set(registry._declared))
    monkeypatch.setattr(registry, "_plugins", dict(registry._plugins))
    config = tmp_path / "llmbatch.toml"
    config.write_text(
        "[engine]\npoll_interval = 0.05\nfirst_poll = 0.05\n"
        "[providers.gateway]\n"
        'kind = "openai-compatible"\n'
        f'base_url = "{emu.url}/compatible/groq/v1"\n'
        f'api_key_env = "{E2E_KEY_ENV}"\n'
        'label = "our vLLM gateway"\n'
        "max_requests = 5\n"
        "[quotas.gateway]\n"  # a declared service takes quotas like any provider
        "gpt-4o-mini = 100000000\n"
    )
    data = tmp_path / "in.jsonl"
    rows = [{**it, "method": "POST", "url": "/v1/chat/completions"} for it in items(12)]
    data.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    db = str(tmp_path / "q.db")
    base = ("--config", str(config), "--db", db)
    added = cli(*base, "enqueue", str(data), "--provider", "gateway")
    assert added.exit_code == 0, added.output
    done = cli(*base, "wait", "--timeout", "60")
    assert done.exit_code == 0, done.output
    assert request_states(db) == {"succeeded": 12}
    batches = cli(*base, "batches", "--format", "json")
    assert len(orjson.loads(batches.stdout)) == 3  # 5 + 5 + 2: the table's max_requests
    plugins = cli(*base, "plugins", "--format", "json")
    assert "gateway" in {p["name"] for p in orjson.loads(plugins.stdout)}
    bad = rows[0] | {"custom_id": "e1", "url": "/v1/embeddings"}
    (tmp_path / "bad.jsonl").write_bytes(orjson.dumps(bad) + b"\n")
    refused = cli(*base, "enqueue", str(tmp_path / "bad.jsonl"), "--provider", "gateway")
    assert refused.exit_code == 1
    assert "url /v1/embeddings is not batched by our vLLM gateway" in refused.output


def test_the_sdk_shaped_client_sends_to_a_service(emu: RunningEmulator, tmp_path: Path) -> None:
    """`AsyncBatchClient(provider="groq")`: the SDK's call, the service's model, at batch price."""
    import asyncio

    import llmbatch

    async def ask() -> tuple[str, str]:
        async with (
            llmbatch.AsyncBatchClient(
                str(tmp_path / "q.db"), queue="t", provider="groq", settings=fast_settings(emu)
            ) as client,
            client.running(),
        ):
            reply = await client.chat.completions.create(
                model=MODELS["groq"], messages=[{"role": "user", "content": "hi"}]
            )
            return type(reply).__name__, reply.model

    assert asyncio.run(ask()) == ("ChatCompletion", MODELS["groq"])
