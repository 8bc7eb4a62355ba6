"""`POST /_emulator/clock/advance` answers once every batch has caught up with the new time:
what a test reads next reflects the advance, with no polling loop of its own."""

from __future__ import annotations

import io

import openai
import orjson
import pytest

from llmbatch.emulator import running


def _lines(n: int) -> bytes:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    return b"".join(
        orjson.dumps(
            {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        )
        + b"\n"
        for i in range(n)
    )


@pytest.mark.slow
def test_an_advance_returns_with_every_batch_caught_up() -> None:
    # a frozen clock and a slow rate: nothing moves until the clock is advanced, and then
    # 20,000 lines must be processed before the advance answers
    with running(time_scale=0, rate=100.0) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k")
        f = client.files.create(file=("in.jsonl", io.BytesIO(_lines(20_000))), purpose="batch")
        batches = [
            client.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            )
            for _ in range(2)
        ]
        assert all(client.batches.retrieve(b.id).status != "completed" for b in batches)
        emu.control.advance(100)  # 10,000 lines each: half done, exactly at the new time
        counts = [client.batches.retrieve(b.id).request_counts for b in batches]
        assert [c.completed for c in counts if c] == [10_000, 10_000]
        emu.control.advance(100)
        assert [client.batches.retrieve(b.id).status for b in batches] == ["completed"] * 2
