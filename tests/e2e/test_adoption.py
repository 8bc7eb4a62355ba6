"""Batches and uploads proven ours (store id, intent and that intent's nonce) that the store
never recorded: a batch is adopted and ingested (never ignored), an upload no intent uses is
deleted, and anything of another store — or of a copy of this one — is never touched."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import openai
import pytest

from helpers import E2E_KEY_ENV, sql
from llmbatch import EngineSettings, Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store

KEY_ENV = E2E_KEY_ENV


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=11) as e:
        yield e


def _settings(emu: RunningEmulator) -> EngineSettings:
    return EngineSettings(
        poll_interval=0.05, max_poll_interval=0.2, settle_seconds=0.5, backoff_seconds=0.1, sweep_interval=0.0,
        retry=RetryPolicy(base_seconds=0.05), providers={"openai": {"base_url": emu.base_url, "api_key_env": KEY_ENV}},
    )  # fmt: skip


def _drain(engine: Engine) -> None:
    deadline = time.monotonic() + 20
    while engine.store.has_unfinished() or any(
        b.state != "ingested" for b in engine.store.open_batches()
    ):
        engine.tick(time.time())
        assert time.monotonic() < deadline
        time.sleep(0.02)


@pytest.mark.both_backends
def test_a_second_batch_of_ours_is_adopted_ingested_and_changes_no_result(
    db: str, emu: RunningEmulator
) -> None:
    with Queue(db, "q") as q:
        q.add_many({"custom_id": f"r{i}", "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": str(i)}]}}
                   for i in range(6))  # fmt: skip
    engine = Engine(open_store(db), _settings(emu))
    try:
        _drain(engine)
        store_id = engine.store.store_id
        first = {
            str(r[0]): r[1]
            for r in sql(
                db,
                "SELECT r.custom_id, x.body FROM results x JOIN requests r ON r.id = x.request_id",
            )
        }
        # The same intent created again at the provider (the residual risk), plus an upload of
        # ours no intent uses, plus another store's batch: as a crash and a lagging list leave them.
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        intent, nonce = sql(db, "SELECT id, nonce FROM batches")[0]
        lines = b"".join(
            b'{"custom_id":"%s-%s-%d","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt-4o-mini","messages":[{"role":"user","content":"x"}]}}\n'
            % (store_id.encode(), nonce.encode(), a)
            for (a,) in sql(db, "SELECT id FROM attempts ORDER BY line")
        )
        name = f"llmbatch-{store_id}-{intent}-{nonce}.jsonl"
        again = client.files.create(file=(name, io.BytesIO(lines)), purpose="batch")
        dup = client.batches.create(input_file_id=again.id, endpoint="/v1/chat/completions", completion_window="24h",
                                    metadata={"llmbatch_store": store_id, "llmbatch_intent": str(intent),
                                              "llmbatch_nonce": nonce})  # fmt: skip
        stray = client.files.create(file=(name, io.BytesIO(lines)), purpose="batch")
        # A copy of this store (same store id, same intent numbers, its own nonces): its
        # batch and its upload name our store and intent, but not our nonce (issue 15).
        copy_name = f"llmbatch-{store_id}-{intent}-0badc0de.jsonl"
        copy_file = client.files.create(file=(copy_name, io.BytesIO(lines)), purpose="batch")
        copy = client.batches.create(input_file_id=copy_file.id, endpoint="/v1/chat/completions", completion_window="24h",
                                     metadata={"llmbatch_store": store_id, "llmbatch_intent": str(intent),
                                               "llmbatch_nonce": "0badc0de"})  # fmt: skip
        foreign_file = client.files.create(
            file=("llmbatch-lbother0000-1.jsonl", io.BytesIO(lines)), purpose="batch"
        )
        foreign = client.batches.create(input_file_id=foreign_file.id, endpoint="/v1/chat/completions",
                                        completion_window="24h", metadata={"llmbatch_store": "lbother0000"})  # fmt: skip
        emu.control.wait(dup.id)
        emu.control.wait(foreign.id)
        emu.control.wait(copy.id)
        _drain(engine)
        engine.tick(time.time())
        _drain(engine)
        rows = sql(db, f"SELECT state, intent_id FROM batches WHERE provider_batch_id = '{dup.id}'")
        assert rows == [("ingested", intent)]
        after = {
            str(r[0]): r[1]
            for r in sql(
                db,
                "SELECT r.custom_id, x.body FROM results x JOIN requests r ON r.id = x.request_id",
            )
        }
        assert after == first  # one result per request, the first one kept
        files = {f.id for f in client.files.list()}
        assert stray.id not in files  # an upload of ours no intent uses is deleted
        assert foreign_file.id in files  # another store's things are never touched
        assert client.batches.retrieve(foreign.id).status == "completed"
        assert not sql(db, f"SELECT id FROM batches WHERE provider_batch_id = '{foreign.id}'")
        # the copy's batch and upload: neither adopted nor deleted, remembered as judged
        assert not sql(db, f"SELECT id FROM batches WHERE provider_batch_id = '{copy.id}'")
        assert copy_file.id in files
        assert sql(db, "SELECT provider_batch_id FROM judged_batches") == [(copy.id,)]
    finally:
        engine.close()
        engine.store.close()
