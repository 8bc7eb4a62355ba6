"""`llmbatch results` after a real Anthropic run: the OpenAI output shape with native bodies.

The emulator serves Message Batches over real HTTP; the engine drives it with the official
`anthropic` SDK. The exported lines are checked against what the SDK itself reads from the
same batches' results (kept at the provider: `delete_files=False`), line by line.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import anthropic
import orjson
import pytest
from anthropic.types import Message

import helpers
from helpers import cli, fast_settings, sent_ids, sql
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running

KEYS = {"id", "custom_id", "provider", "response", "error"}


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=21) as e:
        yield e


def message(i: int, model: str = "claude-haiku-4-5") -> dict[str, Any]:
    params = {"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": f"n {i}"}]}
    return {"custom_id": f"claude {i}/ü", "params": params}


def chat(i: int) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"n {i}"}]}
    return {"custom_id": f"gpt {i}", "body": body}


def enqueue(db: str, items: list[dict[str, Any]], provider: str) -> None:
    with Queue(db, "q", provider=provider) as q:
        assert q.add_many(items).added == len(items)


def drain(db: str, emu: RunningEmulator, **overrides: Any) -> None:
    helpers.drain(db, fast_settings(emu, **overrides))


def sdk_results(emu: RunningEmulator, db: str) -> dict[str, Any]:
    """custom_id (the user's) -> the SDK's result object, for every Anthropic batch."""
    client = anthropic.Anthropic(base_url=emu.url, api_key="sk-test-not-a-secret")
    sent = sent_ids(db)
    owner = {
        sent[int(a)]: str(c)
        for a, c in sql(
            db, "SELECT a.id, r.custom_id FROM attempts a JOIN requests r ON r.id = a.request_id"
        )
    }
    out: dict[str, Any] = {}
    for batch in client.messages.batches.list(limit=100):
        for res in client.messages.batches.results(batch.id):
            out[owner[res.custom_id]] = res.result
    return out


def test_results_match_what_the_sdk_reads(db: str, emu: RunningEmulator) -> None:
    items = [message(i) for i in range(6)]
    items.append(message(6, model="claude-no-such-model"))  # errored: not_found_error
    empty = message(7)
    empty["params"]["messages"] = []  # errored at the provider: invalid_request_error
    items.append(empty)
    enqueue(db, items, "anthropic")
    enqueue(db, [chat(i) for i in range(3)], "openai")
    drain(db, emu, delete_files=False)
    native = sdk_results(emu, db)
    assert len(native) == 8

    lines = [orjson.loads(x) for x in cli("--db", db, "results").stdout.splitlines()]
    assert len(lines) == 11 and all(set(ln) == KEYS for ln in lines)
    assert len({ln["id"] for ln in lines}) == 11
    by_id = {ln["custom_id"]: ln for ln in lines}
    for i in range(3):
        gpt = by_id[f"gpt {i}"]
        assert gpt["provider"] == "openai" and gpt["error"] is None
        assert gpt["response"]["body"]["object"] == "chat.completion"

    for custom_id, result in native.items():
        line = by_id[custom_id]
        assert line["provider"] == "anthropic"
        if result.type == "succeeded":
            assert line["error"] is None
            assert line["response"]["status_code"] == 200
            assert line["response"]["request_id"] == result.message.id
            assert Message.model_validate(line["response"]["body"]) == result.message
        else:
            assert result.type == "errored"
            envelope = line["response"]["body"]
            assert envelope == result.error.model_dump(mode="json", exclude_none=True)
            assert envelope["type"] == "error" and envelope["error"]["message"]
            assert line["error"]["code"] == envelope["error"]["type"]
            assert line["response"]["request_id"] == envelope.get("request_id")
    missing = by_id["claude 6/ü"]
    assert missing["response"]["status_code"] == 404
    assert missing["response"]["body"]["error"]["type"] == "not_found_error"
    assert by_id["claude 7/ü"]["response"]["status_code"] == 400
    assert by_id["claude 7/ü"]["error"]["code"] == "invalid_request_error"

    rows = list(csv.DictReader(io.StringIO(cli("--db", db, "results", "--format", "csv").stdout)))
    text = {r["custom_id"]: r["output_text"] for r in rows}
    for custom_id, result in native.items():
        if result.type == "succeeded":
            want = "".join(b.text for b in result.message.content if b.type == "text")
            assert want and text[custom_id] == want
        else:
            assert text[custom_id] == ""
    for i in range(3):
        assert (
            text[f"gpt {i}"]
            == by_id[f"gpt {i}"]["response"]["body"]["choices"][0]["message"]["content"]
        )
