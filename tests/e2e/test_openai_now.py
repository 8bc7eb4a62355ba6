"""OpenAI's batch API as it is now, end to end: image endpoints batched and ingested, videos
refused at the door, output files set to expire, the Batch object's model and usage read."""

from __future__ import annotations

from pathlib import Path

import orjson

from helpers import cli, drain, fast_settings, request_states, sql
from llmbatch import Queue
from llmbatch.emulator import running
from llmbatch.providers.openai import OUTPUT_EXPIRES_AFTER


def test_image_batches_run_and_output_files_expire(tmp_path: Path) -> None:
    db = str(tmp_path / "q.db")
    prompt = {"model": "gpt-image-1", "prompt": "a red square", "size": "1024x1024"}
    with Queue(db, "q") as q:
        q.add_many(
            [
                {"custom_id": "g1", "method": "POST", "url": "/v1/images/generations", "body": prompt},
                {"custom_id": "g2", "method": "POST", "url": "/v1/images/generations", "body": {**prompt, "prompt": "a blue circle"}},
                {"custom_id": "e1", "method": "POST", "url": "/v1/images/edits", "body": {**prompt, "image": "https://example.com/a.png"}},
                {"custom_id": "c1", "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}},
            ]
        )  # fmt: skip
    with running(seed=21) as emu:
        drain(db, fast_settings(emu))
        batches = [
            emu.control.batch(str(p)) for (p,) in sql(db, "SELECT provider_batch_id FROM batches")
        ]
    assert request_states(db) == {"succeeded": 4}
    assert {b["batch"]["endpoint"] for b in batches} == {
        "/v1/images/generations", "/v1/images/edits", "/v1/chat/completions",
    }  # fmt: skip
    for b in batches:  # sent with every create: the output files do not outlive their use
        assert b["progress"]["output_expires_after"] == {
            "anchor": "created_at",
            "seconds": OUTPUT_EXPIRES_AFTER,
        }
    out = cli("--db", db, "results", "--queue", "q")
    by_id = {r["custom_id"]: r for r in map(orjson.loads, out.stdout.splitlines())}
    assert by_id["g1"]["response"]["body"]["data"][0]["b64_json"]
    assert sql(db, "SELECT DISTINCT model FROM provider_usage ORDER BY model") == [
        ("gpt-4o-mini",),
        ("gpt-image-1",),
    ]


def test_videos_are_refused_at_the_door_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "v.jsonl"
    line = {"custom_id": "v", "method": "POST", "url": "/v1/videos", "body": {"model": "sora-2"}}
    path.write_bytes(orjson.dumps(line) + b"\n")
    db = str(tmp_path / "q.db")
    got = cli("--db", db, "enqueue", str(path))
    assert got.exit_code == 1
    assert (
        "url /v1/videos cannot be batched: the Videos API was shut down on 2026-09-24" in got.output
    )
