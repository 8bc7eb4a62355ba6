"""The batch engine end to end: real stores, the real emulator over real HTTP, the official SDK.

Nothing of ours is mocked. Where a real limit (50,000 lines, 200 MB) is too big to reach in a
test, the provider is a subclass of the real one with smaller `limits`, and the emulator is
started with the same small limits so that it, not the test, judges every batch we send.
Faults come through the emulator's control API.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest

from helpers import RefusingService, attempt_of, results_per_request, sent_ids, sql
from helpers import fast_settings as settings
from helpers import request_states as states
from llmbatch import Queue, TickReport
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.errors import AuthError
from llmbatch.ingest import MAX_DOWNLOAD_TRIES
from llmbatch.providers import Limits, Provider
from llmbatch.providers.openai import OpenAIProvider
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store
from llmbatch.tokens import estimate_tokens

KEY_ENV = "LLMBATCH_E2E_KEY"
CHAT = "/v1/chat/completions"


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=5) as e:
        yield e


def chat(i: int, model: str = "gpt-4o-mini", text: str | None = None) -> dict[str, Any]:
    content = text if text is not None else f"request number {i}"
    return {
        "custom_id": f"req {i}/ü",  # any string: the provider only ever sees attempt ids
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    }


def enqueue(db: str, items: Sequence[dict[str, Any]], provider: str = "openai") -> None:
    with Queue(db, "q", provider=provider) as q:
        report = q.add_many(items)
        assert report.added == len(items)


def drive(
    engine: Engine,
    *,
    until: Any = None,
    max_seconds: float = 20.0,
    step: float = 0.02,
    offset: float = 0.0,
) -> list[TickReport]:
    """Tick with the real clock (moved on by `offset`) until `until(engine)` (default:
    nothing unfinished)."""
    done = until or (lambda e: e.store.unfinished_count() == 0)
    reports: list[TickReport] = []
    deadline = time.monotonic() + max_seconds
    while True:
        reports.append(engine.tick(time.time() + offset))
        if done(engine):
            return reports
        if time.monotonic() > deadline:
            notes = [n for r in reports for n in r.notes][-5:]
            raise AssertionError(f"not done after {max_seconds} s; last notes: {notes}")
        time.sleep(step)


def batch_sizes(db: str) -> list[int]:
    return [int(n) for (n,) in sql(db, "SELECT request_count FROM batches ORDER BY id")]


def events(db: str, kind: str) -> list[str]:
    return [
        str(d) for (d,) in sql(db, "SELECT detail FROM events WHERE kind = ? ORDER BY id", [kind])
    ]


def calls(emu: RunningEmulator, since: int = 0) -> list[dict[str, Any]]:
    return emu.control.calls(since)


def last_seq(emu: RunningEmulator) -> int:
    log = emu.control.calls()
    return int(log[-1]["seq"]) if log else 0


def sdk(emu: RunningEmulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url, api_key="k")


def check_lines(db: str, store_id: str, client: openai.OpenAI) -> None:
    """Each attempt's recorded line is where its custom_id sits in the file we uploaded."""
    for batch_id, file_id in sql(db, "SELECT id, input_file_id FROM batches ORDER BY id"):
        sent = [orjson.loads(x) for x in client.files.content(file_id).content.splitlines()]
        rows = sql(db, "SELECT id, line FROM attempts WHERE batch_id = ? ORDER BY line", [batch_id])
        assert [int(ln) for _a, ln in rows] == list(range(1, len(sent) + 1))
        assert [sent_ids(db)[a] for a, _l in rows] == [s["custom_id"] for s in sent]


class Tight(OpenAIProvider):
    """The real OpenAI provider with small limits, so the tests can reach them."""

    def __init__(self, limits: Limits, **options: Any) -> None:
        super().__init__(**options)
        self._limits = limits

    def limits(self, endpoint: str, model: str | None) -> Limits:
        return self._limits


# -- the happy path --------------------------------------------------------------------------


@pytest.mark.both_backends
def test_end_to_end(db: str, emu: RunningEmulator) -> None:
    items = [chat(i) for i in range(23)]
    enqueue(db, items)
    with Queue(db, "q", settings=settings(emu, max_batch_requests=10, delete_files=False)) as q:
        assert q.run(timeout=30)
        got = list(q.results())
        store_id = q.store.store_id
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    assert states(db) == {"succeeded": 23}
    assert batch_sizes(db) == [10, 10, 3]
    check_lines(db, store_id, sdk(emu))

    assert sorted(r.custom_id for r in got) == sorted(it["custom_id"] for it in items)
    for r in got:
        out = r.envelope()
        assert out["error"] is None and out["response"]["status_code"] == 200
        assert out["response"]["request_id"].startswith("req_")
        body = out["response"]["body"]
        assert body["object"] == "chat.completion" and body["choices"][0]["message"]["content"]
        # tokens recorded from the provider's usage, exactly
        assert (r.input_tokens, r.output_tokens) == (
            body["usage"]["prompt_tokens"],
            body["usage"]["completion_tokens"],
        )
        assert (r.input_tokens or 0) > 0 and (r.output_tokens or 0) > 0


def test_clean_up_deletes_our_files_at_the_provider(emu: RunningEmulator, sqlite_db: str) -> None:
    # enough requests that some succeed and some fail (an output and an error file) whatever
    # the dice: with 5 a run had all of one kind about one time in sixteen
    enqueue(sqlite_db, [chat(i) for i in range(40)])
    emu.control.set_config(request_failure_rate=0.5, request_failure_status=400)
    with Queue(sqlite_db, "q", settings=settings(emu)) as q:
        assert q.run(timeout=30)
    assert list(sdk(emu).files.list()) == []
    deleted = [c for c in calls(emu) if c["method"] == "DELETE"]
    assert len(deleted) == 3  # input, output and error file


# -- splitting at each limit -------------------------------------------------------------------

BIG = 200 * 1024 * 1024
SPLITS: dict[str, tuple[dict[str, Any], Limits | None, dict[str, Any], int, list[int] | None]] = {
    # limit: (engine settings, provider limits or None, emulator config, requests, sizes)
    "lines": ({}, Limits(5, BIG), {"openai_max_lines": 5}, 12, [5, 5, 2]),
    "bytes": ({}, Limits(50_000, 2400), {"max_batch_file_bytes": 2400}, 12, None),
    "embedding inputs": (
        {},
        Limits(50_000, BIG, 10),
        {"max_embedding_inputs": 10},
        10,
        [3, 3, 3, 1],
    ),
    "user cap": ({"max_batch_requests": 4}, None, {}, 10, [4, 4, 2]),
}


@pytest.mark.parametrize("limit", SPLITS)
def test_split_at_each_limit(limit: str, sqlite_db: str) -> None:
    overrides, limits, emu_config, n, sizes = SPLITS[limit]
    if limit == "embedding inputs":
        items = [
            {"custom_id": f"e{i}", "url": "/v1/embeddings",
             "body": {"model": "text-embedding-3-small", "input": [f"a{i}", f"b{i}", f"c{i}"]}}
            for i in range(n)
        ]  # fmt: skip
    else:
        items = [chat(i, text=f"{i:03d} " + "x" * 300) for i in range(n)]
    enqueue(sqlite_db, items)
    with running(seed=1, **emu_config) as emu:
        s = settings(emu, delete_files=False, **overrides)
        store = open_store(sqlite_db)
        providers: dict[str, Provider] = {}
        if limits is not None:
            providers["openai"] = Tight(limits, base_url=emu.base_url, api_key_env=KEY_ENV)
        engine = Engine(store, s, providers=providers)
        try:
            drive(engine)
        finally:
            engine.close()
        # the emulator, holding the same limits, accepted every batch
        remote = [b for b in sdk(emu).batches.list(limit=100)]
        assert {b.status for b in remote} == {"completed"}
        check_lines(sqlite_db, store.store_id, sdk(emu))
        uploaded = [f.bytes for f in sdk(emu).files.list(purpose="batch")]
        store.close()
    got = batch_sizes(sqlite_db)
    assert len(remote) == len(got) > 1
    assert states(sqlite_db) == {"succeeded": n}
    if sizes is not None:
        assert got == sizes
    else:  # bytes: as many lines as fit under the limit less the margin
        assert max(uploaded) <= 2400
        assert sum(got) == n and got[0] >= 3


def test_mixed_models_one_batch_per_model(db: str, emu: RunningEmulator) -> None:
    models = ["gpt-4o-mini", "gpt-4.1-nano", "gpt-5-nano"]
    items = [chat(i, model=models[i % 3]) for i in range(12)]
    enqueue(db, items)
    engine = Engine(open_store(db), settings(emu))
    try:
        drive(engine)
    finally:
        engine.close()
        engine.store.close()
    assert sorted(m for (m,) in sql(db, "SELECT model FROM batches")) == sorted(models)
    mixed = sql(
        db,
        "SELECT a.batch_id FROM attempts a JOIN requests r ON r.id = a.request_id "
        "JOIN batches b ON b.id = a.batch_id WHERE r.model <> b.model",
    )
    assert mixed == []
    assert states(db) == {"succeeded": 12}
    assert {b.model for b in sdk(emu).batches.list()} == set(models)


def test_quota_holds_back_until_batches_finish(db: str, emu: RunningEmulator) -> None:
    items = [chat(i) for i in range(7)]
    enqueue(db, items)
    (text_bytes,) = {int(b) for (b,) in sql(db, "SELECT text_bytes FROM requests")}
    quota = int(estimate_tokens(text_bytes) * 2.5)  # two requests' worth in flight at a time
    emu.control.next_batches(count=100, hold="validating")
    engine = Engine(open_store(db), settings(emu, quotas={("openai", "gpt-4o-mini"): quota}))
    seen_in_flight: list[int] = []
    try:
        while engine.store.unfinished_count():
            reports = [engine.tick(time.time()) for _ in range(3)]
            in_flight = sql(
                db, "SELECT provider_batch_id, est_tokens FROM batches WHERE ingested_at IS NULL"
            )
            assert sum(int(t) for _b, t in in_flight) <= quota
            assert len(in_flight) <= 1
            if states(db).get("queued"):
                assert any("quota" in n for r in reports for n in r.notes)
            seen_in_flight.append(len(in_flight))
            for pid, _t in in_flight:
                emu.control.release(pid)
            drive(
                engine,
                until=lambda e: not sql(db, "SELECT 1 FROM batches WHERE ingested_at IS NULL"),
            )
            assert len(seen_in_flight) < 10
    finally:
        engine.close()
        engine.store.close()
    assert batch_sizes(db) == [2, 2, 2, 1]
    assert states(db) == {"succeeded": 7}


def test_results_readable_mid_run(db: str, emu: RunningEmulator) -> None:
    items = [chat(i) for i in range(10)]
    enqueue(db, items)
    emu.control.next_batches(count=1, hold="validating")  # the first batch lingers
    with Queue(db, "q", settings=settings(emu, max_batch_requests=5)) as q:
        drive(q.engine, until=lambda e: states(db).get("succeeded") == 5)
        # a reader with its own connection sees the finished half while the rest still runs
        with Queue(db, "q") as reader:
            early = list(reader.results())
            assert len(early) == 5 and {r.state for r in early} == {"succeeded"}
            assert {c.state: c.n for c in reader.status()} == {"succeeded": 5, "submitted": 5}
        (held,) = sql(db, "SELECT provider_batch_id FROM batches WHERE ingested_at IS NULL")
        emu.control.release(held[0])
        assert q.run(timeout=20)
        after = list(q.results(after=early[-1].cursor))
    assert len(after) == 5
    assert {r.custom_id for r in early} | {r.custom_id for r in after} == {
        i["custom_id"] for i in items
    }


def test_truncated_download_is_fetched_again(db: str, emu: RunningEmulator) -> None:
    items = [chat(i) for i in range(30)]
    enqueue(db, items)
    emu.control.add_fault("files.content", "drop", count=1)
    engine = Engine(open_store(db), settings(emu))
    try:
        reports = drive(engine)
    finally:
        engine.close()
        engine.store.close()
    downloads = [c for c in calls(emu) if c["path"].endswith("/content")]
    assert len(downloads) == 2 and downloads[0]["path"] == downloads[1]["path"]
    assert any("broke mid-response" in n for r in reports for n in r.notes)
    assert any("broke mid-response" in d for d in events(db, "transient"))
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    assert states(db) == {"succeeded": 30}


def test_foreign_batches_ignored_and_one_poll_is_at_most_two_calls(
    sqlite_db: str, emu: RunningEmulator
) -> None:
    emu.control.seed(batches=25)  # older than ours
    enqueue(sqlite_db, [chat(i) for i in range(24)])
    emu.control.next_batches(count=12, hold="validating")
    engine = Engine(open_store(sqlite_db), settings(emu, max_batch_requests=2))
    try:
        t = time.time()
        engine.tick(t)
        assert states(sqlite_db) == {"submitted": 24}
        emu.control.seed(batches=25)  # newer than ours: they come first in the list
        seq = last_seq(emu)
        report = engine.tick(t + 3600)  # a poll is due
        assert report.polled == 12
        poll_calls = [c for c in calls(emu, seq) if "/batches" in c["path"]]
        assert len(poll_calls) <= 2, poll_calls
        ours = {str(p) for (p,) in sql(sqlite_db, "SELECT provider_batch_id FROM batches")}
        for pid in ours:
            emu.control.release(pid)
        drive(engine, offset=3600)
    finally:
        engine.close()
        engine.store.close()
    foreign = [b for b in sdk(emu).batches.list(limit=100) if b.id not in ours]
    assert len(foreign) == 50
    assert all((b.metadata or {}).get("owner") == "another-app" for b in foreign)
    touched = [c for c in calls(emu) if any(b.id in c["path"] for b in foreign)]
    touched += [c for c in calls(emu) if c["method"] == "DELETE" and "other-app" in c["path"]]
    assert touched == []
    assert sql(sqlite_db, "SELECT COUNT(*) FROM batches")[0][0] == 12
    assert states(sqlite_db) == {"succeeded": 24}


def test_azure_end_to_end_with_deployment_names(db: str) -> None:
    with running(
        seed=3, deployments={"team-mini": "gpt-4o-mini", "team-nano": "gpt-4.1-nano"}
    ) as emu:
        items = [chat(i, model=("team-mini", "team-nano")[i % 2]) for i in range(8)]
        enqueue(db, items, provider="azure")
        with Queue(db, "q", settings=settings(emu)) as q:
            assert q.run(timeout=30)
            got = list(q.results())
        log = calls(emu)
    assert {r.state for r in got} == {"succeeded"} and len(got) == 8
    assert {r.provider for r in got} == {"azure"}
    assert all(c["path"].startswith("/openai/") for c in log)
    assert sorted(m for (m,) in sql(db, "SELECT model FROM batches")) == ["team-mini", "team-nano"]
    assert all(r.input_tokens and r.output_tokens for r in got)


# -- bad input ---------------------------------------------------------------------------------


def test_missing_api_key_is_one_clear_error_and_loses_nothing(
    db: str, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    items = [chat(i) for i in range(6)]
    enqueue(db, items)
    monkeypatch.delenv(KEY_ENV)
    engine = Engine(open_store(db), settings(emu))
    try:
        with pytest.raises(AuthError, match=KEY_ENV):
            engine.tick(time.time())
        assert "failed" not in states(db)
        monkeypatch.setenv(KEY_ENV, "sk-now-set")
        drive(engine)
    finally:
        engine.close()
        engine.store.close()
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    assert states(db) == {"succeeded": 6}


def test_wrong_api_key_refused_by_the_service(
    db: str, emu: RunningEmulator, refusing: RefusingService
) -> None:
    items = [chat(i) for i in range(6)]
    enqueue(db, items)
    wrong = {"openai": {"base_url": refusing.url + "/v1", "api_key_env": KEY_ENV}}
    store = open_store(db)
    engine = Engine(store, settings(emu, providers=wrong))
    try:
        with pytest.raises(AuthError, match=rf"HTTP 401.*\${KEY_ENV}") as caught:
            engine.tick(time.time())
        assert "sk-test-not-a-secret" not in str(caught.value)
        assert refusing.seen == ["POST /v1/files"]  # refused once; not retried
        with pytest.raises(AuthError):
            engine.tick(time.time() + 60)  # still refused: still nothing failed or lost
        assert "failed" not in states(db) and sum(states(db).values()) == 6
    finally:
        engine.close()
    engine = Engine(store, settings(emu))  # the right key: the same intent goes through once
    try:
        drive(engine)
    finally:
        engine.close()
        store.close()
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    assert len([c for c in calls(emu) if c["method"] == "POST" and c["path"] == "/v1/batches"]) == 1


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_provider_unreachable_backs_off_and_loses_nothing(db: str, emu: RunningEmulator) -> None:
    items = [chat(i) for i in range(6)]
    enqueue(db, items)
    nowhere = {
        "openai": {"base_url": f"http://127.0.0.1:{closed_port()}/v1", "api_key_env": KEY_ENV}
    }
    store = open_store(db)
    engine = Engine(store, settings(emu, providers=nowhere, backoff_seconds=30.0))
    t = time.time()
    try:
        report = engine.tick(t)
        assert any("cannot reach" in n and "again in 30 s" in n for n in report.notes), report.notes
        assert report.submitted == 0
        assert any("cannot reach" in d for d in events(db, "transient"))
        quiet = engine.tick(t + 1)  # backing off: no new attempt yet
        assert quiet.submitted == 0 and not quiet.notes
        assert len(events(db, "transient")) == 1
        assert "failed" not in states(db)
    finally:
        engine.close()
    # the same store, the provider back: the interrupted intent is finished once the back-off
    # the store recorded is over (a new process keeps it too), nothing doubled
    engine = Engine(store, settings(emu))
    try:
        assert engine.tick(time.time()).submitted == 0
        drive(engine, offset=31)
    finally:
        engine.close()
        store.close()
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    assert len(sdk(emu).batches.list().data) == 1


@pytest.mark.parametrize("lasting", [False, True], ids=["once", "every download"])
def test_garbage_and_foreign_result_lines_are_anomalies_and_the_batch_is_fetched_again(
    db: str, emu: RunningEmulator, lasting: bool
) -> None:
    """The emulator serves what is on its disk: we swap two lines of a finished output file
    for a garbage line and a line with another app's custom_id, both the same length (so the
    size check passes), and put the good file back after the first download (`once`), or
    never (the two requests then fail with a reason: never silently dropped)."""
    items = [chat(i) for i in range(8)]
    enqueue(db, items)
    emu.control.next_batches(count=1, hold="finalizing")
    engine = Engine(open_store(db), settings(emu, backoff_seconds=0.2))
    try:
        drive(
            engine,
            until=lambda e: sql(db, "SELECT provider_status FROM batches")[0][0] == "finalizing",
        )
        (pid,) = sql(db, "SELECT provider_batch_id FROM batches")[0]
        emu.control.release(pid)
        out_id = emu.control.wait(pid)["output_file_id"]
        (path,) = list(emu.data_dir.rglob(out_id))
        good = path.read_bytes()
        lines = good.splitlines(keepends=True)
        first = lines[0]
        custom = orjson.loads(first)["custom_id"]
        garbled = orjson.loads(lines[1])["custom_id"]
        foreign = "z" * len(custom)
        lines[0] = first.replace(custom.encode(), foreign.encode())
        lines[1] = b"#" * (len(lines[1]) - 1) + b"\n"
        path.write_bytes(b"".join(lines))
        assert len(path.read_bytes()) == len(good)

        report = engine.tick(time.time() + 1)  # a poll is due: it sees the batch completed
        assert report.anomalies == 2
        assert states(db) == {"succeeded": 6, "submitted": 2}  # not dropped, not failed
        if not lasting:
            path.write_bytes(good)
        drive(engine, offset=1)
    finally:
        engine.close()
        engine.store.close()
    downloads = MAX_DOWNLOAD_TRIES if lasting else 2
    anomalies = events(db, "anomaly")
    assert len(anomalies) == 2 * (downloads - 1 if not lasting else downloads)
    assert any(foreign in a for a in anomalies) and any("not JSON" in a for a in anomalies)
    assert len([c for c in calls(emu) if c["path"].endswith(f"{out_id}/content")]) == downloads
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    assert states(db) == {"succeeded": 8}
    if not lasting:
        return
    # Lines that stayed unreadable never count against the request: it goes back to the
    # queue without using an attempt and succeeds in a new batch.
    lost = {attempt_of(custom), attempt_of(garbled)}
    rows = sql(db, "SELECT id, state, error_code FROM attempts WHERE error_code IS NOT NULL")
    assert {int(a) for a, _s, _c in rows} == lost
    assert {(s, c) for _a, s, c in rows} == {("requeue", "missing_result")}
    assert sql(db, "SELECT COUNT(*) FROM requests WHERE attempts > 0") == [(0,)]


def test_batch_stuck_in_finalizing_is_polled_not_resubmitted(db: str, emu: RunningEmulator) -> None:
    items = [chat(i) for i in range(4)]
    enqueue(db, items)
    emu.control.next_batches(count=1, hold="finalizing")
    engine = Engine(open_store(db), settings(emu))
    t = time.time()
    try:
        for hour in range(0, 30):  # more than a day of engine time
            engine.tick(t + hour * 3600)
        assert sql(db, "SELECT state, provider_status FROM batches") == [
            ("finalizing", "finalizing")
        ]
        assert states(db) == {"submitted": 4}
        log = calls(emu)
        assert len([c for c in log if c["method"] == "POST" and c["path"] == "/v1/batches"]) == 1
        assert len([c for c in log if c["method"] == "GET" and "/batches" in c["path"]]) >= 25
        (pid,) = sql(db, "SELECT provider_batch_id FROM batches")[0]
        emu.control.release(pid)
        drive(engine, offset=30 * 3600)
    finally:
        engine.close()
        engine.store.close()
    assert states(db) == {"succeeded": 4}


@pytest.mark.parametrize("status", [400, 500])
def test_completed_batch_without_output_file(db: str, emu: RunningEmulator, status: int) -> None:
    """Every request fails: OpenAI completes the batch with an error file and no output file."""
    items = [chat(i) for i in range(5)]
    enqueue(db, items)
    emu.control.set_config(request_failure_rate=1.0, request_failure_status=status)
    engine = Engine(
        open_store(db), settings(emu, retry=RetryPolicy(max_attempts=2, base_seconds=0.01))
    )
    try:
        drive(engine)
    finally:
        engine.close()
        engine.store.close()
    remote = sdk(emu).batches.list().data
    assert remote and all(b.status == "completed" and b.output_file_id is None for b in remote)
    assert len(remote) == (1 if status == 400 else 2)  # a 500 is retried once
    assert states(db) == {"failed": 5}
    assert results_per_request(db) == {it["custom_id"]: 1 for it in items}
    for code, message, status_code in sql(
        db, "SELECT error_code, error_message, status_code FROM results"
    ):
        assert status_code == status and code and message


# -- the commands ----------------------------------------------------------------------------


def write_config(tmp_path: Path, emu: RunningEmulator) -> Path:
    path = tmp_path / "llmbatch.toml"
    path.write_text(
        f"[engine]\npoll_interval = 0.05\nmax_poll_interval = 0.2\nsettle_seconds = 0.5\n\n"
        f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{KEY_ENV}"\n'
    )
    return path


def test_run_and_wait_commands(
    tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    from click.testing import CliRunner

    from llmbatch.cli import main

    monkeypatch.chdir(tmp_path)
    config = str(write_config(tmp_path, emu))
    db = str(tmp_path / "q.db")
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b"".join(
            orjson.dumps(
                {"custom_id": f"c{i}", "method": "POST", "url": CHAT, "body": chat(i)["body"]}
            )
            + b"\n"
            for i in range(9)
        )
    )
    cli = CliRunner()

    def run(*args: str) -> Any:
        result = cli.invoke(main, ["--config", config, "--db", db, *args])
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result

    assert run("enqueue", str(source)).exit_code == 0
    emu.control.next_batches(count=1, hold="validating")
    first = run("run", "--max-batch-requests", "4")
    assert first.exit_code == 0, first.output
    assert "packed 9 requests into 3 batch(es)" in first.stderr
    assert "requests not finished yet" in first.stderr
    waited = run("wait", "--timeout", "1")
    assert waited.exit_code == 1 and "not finished after 1 s" in waited.stderr  # one is held
    (held,) = sql(db, "SELECT provider_batch_id FROM batches WHERE ingested_at IS NULL")[0]
    emu.control.release(held)
    waited = run("wait", "--timeout", "20")
    assert waited.exit_code == 0, waited.output
    out = run("results")
    lines = [orjson.loads(x) for x in out.stdout.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == [f"c{i}" for i in range(9)]
    assert all(x["response"]["status_code"] == 200 and x["error"] is None for x in lines)

    # wait exits non-zero when anything failed
    emu.control.set_config(request_failure_rate=1.0, request_failure_status=400)
    source.write_bytes(
        orjson.dumps({"custom_id": "bad", "method": "POST", "url": CHAT, "body": chat(99)["body"]})
        + b"\n"
    )
    assert run("enqueue", str(source)).exit_code == 0
    failed = run("wait", "--timeout", "20")
    assert failed.exit_code == 1 and "1 requests failed" in failed.stderr
    assert not (tmp_path / "llmbatch.db").exists()


@pytest.mark.slow
def test_demo_command(tmp_path: Path) -> None:
    import subprocess
    import sys

    exe = str(Path(sys.executable).parent / "llmbatch")
    cwd, scratch = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    scratch.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "COLUMNS": "160", "TMPDIR": str(scratch)}
    started = time.monotonic()
    done = subprocess.run(
        [exe, "demo", "--keep"], cwd=cwd, capture_output=True, text=True, timeout=90, env=env
    )
    took = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    assert took < 60
    out = done.stdout
    assert "succeeded" in out and "what it cost" in out and "real-time $" in out
    command = next(ln.strip() for ln in out.splitlines() if "results --queue demo" in ln)
    assert list(cwd.iterdir()) == []  # never ./llmbatch.db
    assert [p.name.startswith("llmbatch-demo-") for p in scratch.iterdir()] == [True]  # kept
    argv = command.split()
    assert argv[0] == "llmbatch"
    shown = subprocess.run([exe, *argv[1:]], capture_output=True, timeout=30, cwd=cwd)
    assert shown.returncode == 0, shown.stderr
    results = [orjson.loads(x) for x in shown.stdout.splitlines()]
    examples = Path(__file__).resolve().parents[2] / "src/llmbatch/examples/requests.jsonl"
    assert len(results) == len(examples.read_bytes().splitlines())
    assert {r["error"] is None for r in results} == {True}
