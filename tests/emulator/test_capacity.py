"""Shared capacity: a model's batches draw on one processing rate, so they queue behind
each other as at the provider — measured on the virtual clock, so the test is fast."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from emu_helpers import chat_line, upload
from llmbatch.emulator import RunningEmulator, running

CAPACITY = {"gpt-4o-mini": {"requests_per_second": 100}}


def _run(emu: RunningEmulator, sizes: list[int]) -> tuple[list[float], list[dict[str, Any]]]:
    """Create one batch per size at the same virtual moment, let a long time pass at once,
    and return how long each took to process (virtual seconds) and the batches."""
    client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
    files = [upload(client, [chat_line(i, max_tokens=20) for i in range(n)]).id for n in sizes]
    emu.control.next_batches(count=len(sizes), hold="validating")
    ids = [
        client.batches.create(
            input_file_id=f, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for f in files
    ]
    start = emu.control.now()
    for batch_id in ids:  # all start together, before any time passes
        emu.control.release(batch_id)
    for batch_id in ids:
        emu.control.wait(batch_id, "in_progress")
    emu.control.advance(3600)
    done = [emu.control.wait(i, "completed", timeout=60) for i in ids]
    ends = [emu.control.batch(i)["progress"]["last_t"] - start for i in ids]
    return ends, done


def test_two_batches_finish_no_sooner_than_one_of_both(tmp_path: Path) -> None:
    with running(tmp_path / "one", time_scale=0.0, capacity=CAPACITY) as emu:
        (one,), _ = _run(emu, [2000])
    with running(tmp_path / "two", time_scale=0.0, capacity=CAPACITY) as emu:
        two, _ = _run(emu, [1000, 1000])
    assert one == pytest.approx(20.0, abs=0.01)  # 2,000 requests at 100 a second
    assert max(two) >= one - 1e-6  # splitting buys nothing
    assert min(two) > 0.6 * one  # they take turns (chunk by chunk), not one after the other


def test_default_capacity_is_unlimited_per_model(tmp_path: Path) -> None:
    with running(tmp_path / "d", time_scale=0.0) as emu:  # frozen: no real time leaks in
        two, _ = _run(emu, [1000, 1000])
    assert max(two) < 0.1  # each batch at `rate` (100,000/s) on its own, as before


def test_tokens_per_second_bound(tmp_path: Path) -> None:
    limit = {"*": {"tokens_per_second": 5000}}
    with running(tmp_path / "d", time_scale=0.0, capacity=limit) as emu:
        (took,), (batch,) = _run(emu, [600])
    tokens = batch["usage"]["total_tokens"]
    assert took == pytest.approx(tokens / 5000, rel=1e-6)


def test_capacity_set_at_runtime_and_other_models_free(tmp_path: Path) -> None:
    with running(tmp_path / "d", time_scale=0.0) as emu:
        emu.control.set_config(capacity={"gpt-4o": {"requests_per_second": 1}})
        two, _ = _run(emu, [300, 300])  # gpt-4o-mini: not limited
        assert max(two) < 0.1
        with pytest.raises(Exception, match="400"):
            emu.control.set_config(capacity={"gpt-4o": {"requests": 1}})


def test_anthropic_batches_share_capacity(tmp_path: Path) -> None:
    def run(sizes: list[int]) -> float:
        with running(tmp_path / str(sizes), time_scale=0.0, capacity=limit) as emu:
            client = anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0)
            start = emu.control.now()
            ids = []
            for b, n in enumerate(sizes):
                params = {"model": "claude-haiku-4-5", "max_tokens": 30}
                requests = [
                    {
                        "custom_id": f"b{b}-{i}",
                        "params": params | {"messages": [{"role": "user", "content": f"q{i}"}]},
                    }
                    for i in range(n)
                ]
                ids.append(client.messages.batches.create(requests=requests).id)  # type: ignore[arg-type]
            emu.control.advance(3600)
            for i in ids:
                emu.control.wait(i, timeout=60)
            return max(emu.control.batch(i)["progress"]["last_t"] for i in ids) - start

    limit = {"claude-haiku-4-5": {"requests_per_second": 50}}
    assert run([300, 300]) >= run([600]) - 1e-6 >= 11.9


@pytest.mark.slow
def test_gemini_batches_share_capacity(tmp_path: Path) -> None:
    from gemini_helpers import FIXED, bid, inline, sdk

    def run(sizes: list[int]) -> float:
        fixed = FIXED | {"capacity": limit}
        with running(tmp_path / str(sizes), **fixed) as emu:
            client = sdk(emu)
            start = emu.control.now()
            ids = [
                bid(client.batches.create(model="gemini-2.5-flash", src=[inline(i)] * n))
                for i, n in enumerate(sizes)
            ]
            emu.control.advance(3600)
            for i in ids:
                emu.control.wait(i, timeout=60)
            return max(emu.control.batch(i)["progress"]["last_t"] for i in ids) - start

    limit = {"gemini-2.5-flash": {"requests_per_second": 50}}
    assert run([300, 300]) >= run([600]) - 1e-6 >= 11.9
