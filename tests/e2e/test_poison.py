"""No bad batch stops a queue, and what the provider side sends is untrusted (issue 14).

Real stores, the emulator over real HTTP, the official SDK. Each poison is served as a
deployment meets it: a batch the provider no longer knows (the key now points at another
project: a second emulator), a file the provider refuses again and again, result lines with
numbers no database integer holds, a work directory whose disk is full, a batch id that is
a path, lines longer than any result, an output file of thousands of lines that are not
ours. The worker survives each, says what happened, and keeps serving the other batches.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import openai
import orjson
import pytest

from helpers import E2E_KEY_ENV, cli, fast_settings, request_states, results_per_request, sql
from llmbatch import Queue, ownership
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.providers.base import BatchStatus, ResultFile
from llmbatch.providers.openai import AzureProvider, OpenAIProvider
from llmbatch.results import capped_lines, in_attempt_order
from llmbatch.store import open_store

CHAT: Final = "/v1/chat/completions"


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=41) as e:
        yield e


def enqueue(db: str, n: int, prefix: str = "r", model: str = "gpt-4o-mini") -> list[str]:
    items = [
        {"custom_id": f"{prefix}{i}", "body": {"model": model, "messages": [
            {"role": "user", "content": f"question {i} about {model}"}]}}
        for i in range(n)
    ]  # fmt: skip
    with Queue(db, "q") as q:
        assert q.add_many(items).added == n
    return [str(it["custom_id"]) for it in items]


def tick_until(engine: Engine, done: Any, seconds: float = 30.0, offset: float = 0.0) -> list[str]:
    """Tick (never raising: a poison must not stop the tick) until `done()`; the notes."""
    notes: list[str] = []
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"not done; last notes {notes[-5:]}"
        notes += engine.tick(time.time() + offset).notes
        time.sleep(0.02)
    return notes


def events(db: str, kind: str) -> list[str]:
    return [
        str(d) for (d,) in sql(db, "SELECT detail FROM events WHERE kind = ? ORDER BY id", [kind])
    ]


def config(path: Path, emu: RunningEmulator) -> str:
    path.write_text(
        "[engine]\npoll_interval = 0.05\nmax_poll_interval = 0.2\nsettle_seconds = 0.5\n"
        "backoff_seconds = 0.05\nsubmit_timeout = 1.0\n\n"
        f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{E2E_KEY_ENV}"\n'
    )
    return str(path)


def test_a_batch_the_provider_no_longer_knows_stops_nothing(db: str, tmp_path: Path) -> None:
    """The key now belongs to another project: the batch in flight answers 404. Each `llmbatch
    run` (a new process, as from cron) exits 0, confirms the 404 (counted in the store),
    then puts the batch's requests back in the queue; new work goes on meanwhile."""
    first = enqueue(db, 4, "old")
    with running(seed=42) as before:
        before.control.next_batches(count=1, hold="validating")
        cfg = config(tmp_path / "before.toml", before)
        while not sql(db, "SELECT 1 FROM batches WHERE provider_batch_id IS NOT NULL"):
            assert cli("--config", cfg, "--db", db, "run").exit_code == 0
    (gone,) = sql(db, "SELECT provider_batch_id FROM batches")[0]
    second = enqueue(db, 3, "new")
    with running(seed=43) as after:
        cfg = config(tmp_path / "after.toml", after)
        said = []
        for _ in range(200):
            if not sql(db, "SELECT 1 FROM requests WHERE state <> 'succeeded'"):
                break
            out = cli("--config", cfg, "--db", db, "run")
            assert out.exit_code == 0, out.output
            said.append(out.output)
            time.sleep(0.03)
    assert request_states(db) == {"succeeded": 7}
    assert results_per_request(db) == dict.fromkeys(first + second, 1)
    text = "".join(said)
    assert f"batch {gone} unknown to openai (1 of 3)" in text, text
    assert f"batch {gone} is gone at openai (404 3 times" in text, text
    (checks, state) = sql(
        db, "SELECT gone_checks, state FROM batches WHERE provider_batch_id = ?", [gone]
    )[0]
    assert state == "ingested" and int(checks) == 0  # reset when the status changed
    shown = cli("--db", db, "show", "old0")
    assert shown.exit_code == 0 and f"batch {gone} is gone at openai" in shown.output, shown.output
    assert sql(db, "SELECT expiries FROM requests WHERE custom_id = 'old0'") == [(1,)]


def test_a_file_refused_again_and_again_fails_its_requests_with_the_reason(
    db: str, emu: RunningEmulator
) -> None:
    """Every batch fails validation as a whole, five times. Each rejection is counted per
    request; a request refused three times (max_batch_rejections) fails with the reason.
    What the group learned (a smaller next batch) is kept by the store across `run`s."""
    enqueue(db, 8)
    bad = {"code": "invalid_request", "message": "the file is malformed", "line": None}
    emu.control.next_batches(count=5, fail_validation=bad)
    settings = fast_settings(emu, delete_files=False)
    for _ in range(300):
        if not sql(db, "SELECT 1 FROM requests WHERE state NOT IN ('succeeded', 'failed')"):
            break
        engine = Engine(open_store(db), settings)  # one `llmbatch run`
        try:
            engine.tick(time.time())
        finally:
            engine.close()
            engine.store.close()
        time.sleep(0.03)
    sizes = [int(n) for (n,) in sql(db, "SELECT request_count FROM batches ORDER BY id")]
    assert sizes[:3] == [8, 4, 4] and max(sizes[3:5]) <= 2, sizes  # halved, run after run
    states = request_states(db)
    assert set(states) == {"failed", "succeeded"} and sum(states.values()) == 8, states
    for (reason,) in sql(db, "SELECT reason FROM requests WHERE state = 'failed'"):
        assert "its batch failed validation (invalid_request)" in reason, reason
        assert "refused 3 times" in reason, reason
    assert sql(db, "SELECT MAX(rejections) FROM requests") == [(3,)]


def same_length(line: bytes, change: Any) -> bytes:
    """An output line changed by `change(obj)`, its reply text cut or padded so the file keeps
    its size (the download checks the size the provider reports)."""
    obj = orjson.loads(line)
    change(obj)
    message = obj["response"]["body"]["choices"][0]["message"]
    message["content"] = ""
    room = len(line) - len(orjson.dumps(obj))
    assert room >= 0, "not enough reply text to keep the line's length"
    message["content"] = "x" * room
    out = orjson.dumps(obj)
    assert len(out) == len(line)
    return out


@pytest.mark.both_backends
def test_numbers_no_database_integer_holds_are_anomalies(db: str, emu: RunningEmulator) -> None:
    """A usage count of 2^63 + 7 and a custom_id whose number is twenty digits: the first
    result is kept with its usage flagged, the second line is an anomaly (its request goes
    back and is answered again); no OverflowError stops the tick."""
    custom_ids = enqueue(db, 4)
    emu.control.next_batches(count=1, hold="finalizing")
    engine = Engine(open_store(db), fast_settings(emu, delete_files=False))
    try:
        tick_until(
            engine, lambda: sql(db, "SELECT 1 FROM batches WHERE provider_status = 'finalizing'")
        )
        (pid,) = sql(db, "SELECT provider_batch_id FROM batches")[0]
        emu.control.release(str(pid))
        out_id = emu.control.wait(str(pid))["output_file_id"]
        (path,) = list(emu.data_dir.rglob(out_id))
        lines = path.read_bytes().splitlines(keepends=True)
        store_id = engine.store.store_id

        def huge_usage(obj: dict[str, Any]) -> None:
            obj["response"]["body"]["usage"]["prompt_tokens"] = 2**63 + 7

        def huge_id(obj: dict[str, Any]) -> None:
            obj["custom_id"] = f"{store_id}-{'9' * 20}"

        flagged = str(orjson.loads(lines[0])["custom_id"])
        lines[0] = same_length(lines[0].rstrip(b"\n"), huge_usage) + b"\n"
        lines[1] = same_length(lines[1].rstrip(b"\n"), huge_id) + b"\n"
        path.write_bytes(b"".join(lines))
        tick_until(engine, lambda: not engine.store.unfinished_count(), offset=1)
    finally:
        engine.close()
        engine.store.close()
    assert results_per_request(db) == dict.fromkeys(custom_ids, 1)
    attempt = int(flagged.rsplit("-", 1)[1])
    (flag, tokens) = sql(
        db, "SELECT usage_flag, input_tokens FROM results WHERE attempt_id = ?", [attempt]
    )[0]
    assert str(flag).startswith("out of range") and tokens is None
    assert any(
        "9" * 20 in e and "not one of this store's attempt ids" in e for e in events(db, "anomaly")
    )


def plant_full_disk(workdir: Path, batch_id: int, provider_batch_id: str) -> None:
    """Make every result file of this batch land on /dev/full, where each write fails with
    ENOSPC, as on a full disk (under the names this and older versions use)."""
    folder = workdir / f"ingest-{batch_id}"
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("output", "error"):
        for name in (f"{kind}.jsonl", f"{provider_batch_id}.{kind}.jsonl"):
            target = folder / name
            if not target.is_symlink():
                target.symlink_to("/dev/full")


def test_a_full_disk_is_said_once_and_polling_goes_on(
    db: str, emu: RunningEmulator, tmp_path: Path
) -> None:
    first = enqueue(db, 3, "a", "gpt-4o-mini")
    second = enqueue(db, 3, "b", "gpt-4o")
    emu.control.next_batches(count=2, hold="validating")
    workdir = tmp_path / "work"
    workdir.mkdir()
    engine = Engine(open_store(db), fast_settings(emu, delete_files=False), workdir=workdir)
    try:
        tick_until(
            engine,
            lambda: len(sql(db, "SELECT 1 FROM batches WHERE state = 'validating'")) == 2,
        )
        rows = sql(db, "SELECT id, provider_batch_id FROM batches ORDER BY id")
        for batch_id, pid in rows:
            plant_full_disk(workdir, int(batch_id), str(pid))
            emu.control.release(str(pid))
        notes: list[str] = []
        deadline = time.monotonic() + 20
        while sql(db, "SELECT 1 FROM batches WHERE state <> 'completed'"):  # polled while full
            assert time.monotonic() < deadline
            for batch_id, pid in rows:
                plant_full_disk(workdir, int(batch_id), str(pid))
            notes += engine.tick(time.time()).notes
            time.sleep(0.05)
        for _ in range(10):  # still full: nothing is said again
            for batch_id, pid in rows:
                plant_full_disk(workdir, int(batch_id), str(pid))
            notes += engine.tick(time.time() + 700).notes
        assert sum("is full" in n for n in notes) == 1, notes
        assert len(events(db, "disk_full")) == 1
        assert request_states(db) == {"submitted": 6}
        for batch_id, _pid in rows:  # room again (a failed download took its folder away)
            folder = workdir / f"ingest-{batch_id}"
            for link in folder.iterdir() if folder.exists() else ():
                link.unlink()
        notes = tick_until(engine, lambda: not engine.store.unfinished_count(), offset=1400)
        assert sum("has room again" in n for n in notes) == 1, notes
    finally:
        engine.close()
        engine.store.close()
    assert results_per_request(db) == dict.fromkeys(first + second, 1)


@pytest.mark.parametrize("provider_class", [OpenAIProvider, AzureProvider])
def test_a_batch_id_is_never_a_path(
    emu: RunningEmulator, tmp_path: Path, provider_class: type
) -> None:
    """A provider (or a gateway in between) that names a batch `../../x` gets its bytes
    written in the folder the engine gave, under our own names, never outside it."""
    client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
    if provider_class is AzureProvider:
        client = openai.AzureOpenAI(
            azure_endpoint=emu.url, api_key="k", api_version="2024-10-21", max_retries=0
        )
    line = orjson.dumps({"custom_id": "a", "method": "POST", "url": "/chat/completions" if provider_class is AzureProvider else CHAT,
                         "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}})  # fmt: skip
    file_id = client.files.create(file=("in.jsonl", line + b"\n"), purpose="batch").id
    folder = tmp_path / "work" / "ingest-1"
    folder.mkdir(parents=True)
    provider = (
        provider_class(endpoint=emu.url, api_key_env=E2E_KEY_ENV)
        if provider_class is AzureProvider
        else provider_class(base_url=emu.base_url, api_key_env=E2E_KEY_ENV)
    )
    hostile = BatchStatus(
        "../../escaped", "completed", "completed", 1, 1, 0, output_file_id=file_id
    )
    files = provider.download(hostile, folder)
    assert [f.path.parent for f in files] == [folder]
    assert sorted(p.name for p in tmp_path.rglob("*escaped*")) == []


def test_a_line_longer_than_the_cap_is_never_read_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    big = b'{"custom_id": "x", "pad": "' + b"y" * (3 << 20) + b'"}'
    path.write_bytes(b'{"a": 1}\n' + big + b"\n\n" + b'{"b": 2}' + b"\n" + big)  # last: no newline
    got = list(capped_lines([ResultFile("output", path, path.stat().st_size)], 1 << 20))
    assert got == [b'{"a": 1}', len(big), b'{"b": 2}', len(big)]
    exact = tmp_path / "exact.jsonl"
    exact.write_bytes(b"z" * 100 + b"\n" + b"w" * 101 + b"\n")
    assert list(capped_lines([ResultFile("output", exact, 203)], 100)) == [b"z" * 100, 101]


def test_result_lines_are_read_in_attempt_order_the_rest_first(tmp_path: Path) -> None:
    """in_attempt_order: every line capped_lines gives, ours by attempt number (ingest then
    touches neighbouring rows), the others and over-long lengths first, in file order."""
    out, err = tmp_path / "output.jsonl", tmp_path / "error.jsonl"
    big = b'{"custom_id": "lb1-ab-9", "pad": "' + b"y" * 300 + b'"}'
    out.write_bytes(
        b'{"custom_id": "lb1-ab-12", "n": 1}\n{"custom_id":"lb1-ab-3"}\r\nnot json\n\n'
        + big
        + b'\n{"custom_id": "other-7"}\n{"custom_id": "lb1-ab-12", "n": 2}'
    )
    err.write_bytes(b'{"custom_id": "lb1-ab-5"}\n')
    files = [ResultFile("output", out, 0), ResultFile("error", err, 0)]
    keyed = list(in_attempt_order(files, 200, "custom_id", "lb1-ab"))
    assert [key for key, _line in keyed] == [-1, -1, -1, 3, 5, 12, 12]
    got = [line for _key, line in keyed]
    assert got == [
        b"not json",
        len(big),
        b'{"custom_id": "other-7"}',
        b'{"custom_id":"lb1-ab-3"}',
        b'{"custom_id": "lb1-ab-5"}',
        b'{"custom_id": "lb1-ab-12", "n": 1}',
        b'{"custom_id": "lb1-ab-12", "n": 2}',
    ]
    assert sorted(got, key=str) == sorted(capped_lines(files, 200), key=str)


def test_result_lines_over_the_cap_are_anomalies(db: str, emu: RunningEmulator) -> None:
    enqueue(db, 3)
    engine = Engine(open_store(db), fast_settings(emu, max_result_line_bytes=100))
    try:
        tick_until(engine, lambda: events(db, "anomaly"))
    finally:
        engine.close()
        engine.store.close()
    assert any(
        "longer than max_result_line_bytes (100): not read" in e for e in events(db, "anomaly")
    )


@pytest.mark.slow
def test_thousands_of_foreign_lines_cost_a_handful_of_writes(db: str, emu: RunningEmulator) -> None:
    """A batch tagged as ours (adopted by the sweep) whose 10,000 result lines are
    all another app's: each is an anomaly, but the event log gets the first few and a count
    per download, not a row (and a transaction) per line."""
    enqueue(db, 1)
    settings = fast_settings(emu, delete_files=False, sweep_interval=0.0)
    engine = Engine(open_store(db), settings)
    try:
        tick_until(engine, lambda: not engine.store.unfinished_count())
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        content = b"".join(
            orjson.dumps({"custom_id": f"x{i}", "method": "POST", "url": CHAT, "body": body})
            + b"\n"
            for i in range(10_000)
        )
        upload = client.files.create(file=("theirs.jsonl", content), purpose="batch")
        # our full tag (store, intent and its nonce), as a duplicate of intent 1 would carry
        nonce = engine.store.nonce_of(1)
        assert nonce
        meta = ownership.metadata(engine.store.store_id, 1, nonce)
        foreign = client.batches.create(
            input_file_id=upload.id, endpoint=CHAT, completion_window="24h", metadata=meta
        )
        emu.control.wait(foreign.id)
        started = time.monotonic()
        tick_until(
            engine,
            lambda: sql(
                db,
                "SELECT 1 FROM batches WHERE provider_batch_id = ? AND state = 'ingested'",
                [foreign.id],
            ),
            seconds=120,
        )
        elapsed = time.monotonic() - started
    finally:
        engine.close()
        engine.store.close()
    (adopted,) = sql(db, "SELECT id FROM batches WHERE provider_batch_id = ?", [foreign.id])[0]
    said = sql(db, "SELECT detail FROM events WHERE kind = 'anomaly' AND batch_id = ?", [adopted])
    # the first 20 and a count, per download, and once that no line was ours (left in place)
    assert 21 <= len(said) <= 4 * 21 + 1, len(said)
    assert any("10,000 anomalies in this batch's results" in str(d) for (d,) in said)
    assert request_states(db) == {"succeeded": 1}
    print(f"10,000 foreign lines ingested in {elapsed:.1f} s, {len(said)} anomaly events")
