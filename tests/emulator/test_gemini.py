"""The Gemini door through the official `google-genai` SDK, unmodified, over real HTTP:
uploads, batches from a file and inline, polling, list paging, downloads, embeddings,
cancel, delete, 48 h expiry on the virtual clock, the 429 of a full queue, bad input."""

from __future__ import annotations

import json
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from gemini_helpers import (
    FIXED,
    HOUR,
    KEY,
    MODEL,
    bid,
    inline,
    lines,
    raw,
    request,
    sdk,
    upload,
    wait,
)
from google import genai
from google.genai import errors

from llmbatch.emulator import RunningEmulator, running
from llmbatch.emulator.gemini_worker import GeminiWorker


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[RunningEmulator]:
    with running(tmp_path / "data", **FIXED) as e:
        yield e


@pytest.fixture
def client(emu: RunningEmulator) -> genai.Client:
    return sdk(emu)


def test_file_batch_lifecycle_through_env_settings(
    emu: RunningEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", emu.url)
    monkeypatch.setenv("GEMINI_API_KEY", KEY)
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    client = genai.Client()
    source = tmp_path / "requests.jsonl"
    source.write_bytes(lines(20, max_output_tokens=60))
    uploaded = client.files.upload(file=source, config={"mime_type": "application/jsonl"})
    assert uploaded.name is not None and uploaded.name.startswith("files/")
    assert uploaded.size_bytes == source.stat().st_size and uploaded.state == "ACTIVE"
    assert uploaded.source == "UPLOADED" and uploaded.download_uri is None
    assert uploaded.expiration_time is not None and uploaded.create_time is not None
    assert (uploaded.expiration_time - uploaded.create_time).total_seconds() == 48 * HOUR

    job = client.batches.create(model=MODEL, src=uploaded.name, config={"display_name": "nightly"})
    assert job.state == "JOB_STATE_PENDING" and job.display_name == "nightly"
    assert job.model == f"models/{MODEL}" and job.dest is None
    emu.control.advance(1)
    done = wait(client, job.name or "")
    assert done.state == "JOB_STATE_SUCCEEDED" and done.end_time is not None
    assert done.dest is not None and done.dest.file_name == f"files/batch-{bid(job)}"

    op = raw(emu, "GET", f"/v1/{job.name}").json()  # what the SDK drops
    assert op["done"] is True and op["metadata"]["batchStats"] == {
        "requestCount": "20",
        "successfulRequestCount": "20",
    }
    assert op["response"]["responsesFile"] == done.dest.file_name

    results = client.files.get(name=done.dest.file_name)
    assert results.source == "GENERATED" and results.download_uri is not None
    target = tmp_path / "results.jsonl"
    assert client.files.download(file=results, destination=str(target)) is None
    got = [json.loads(x) for x in target.read_text().splitlines()]
    assert client.files.download(file=done.dest.file_name) == target.read_bytes()
    assert [g["key"] for g in got] == [f"req-{i}" for i in range(20)]  # request order
    for line in got:
        response = line["response"]
        usage = response["usageMetadata"]
        text = response["candidates"][0]["content"]["parts"][0]["text"]
        assert usage["candidatesTokenCount"] == len(text.split())
        assert usage["promptTokenCount"] == 6  # Question number N : why ?
        assert usage["candidatesTokenCount"] + usage.get("thoughtsTokenCount", 0) <= 60
        assert usage["totalTokenCount"] == 6 + usage["candidatesTokenCount"] + usage.get(
            "thoughtsTokenCount", 0
        )
        assert response["modelVersion"] == MODEL
    assert any(g["response"]["candidates"][0]["finishReason"] == "MAX_TOKENS" for g in got)
    # The downloadUri the service gives works with the key too.
    url = results.download_uri.removeprefix(emu.url)
    assert raw(emu, "GET", url).content == target.read_bytes()

    calls = emu.control.calls()
    assert {c["path"].split("/")[1] for c in calls} <= {"v1", "upload", "download"}
    assert KEY not in json.dumps(calls)


def test_inline_batch_maps_by_metadata_key_and_v1beta(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_GENAI_API_VERSION", "beta")
    with running(tmp_path / "d", gemini_shuffle_results=True, **FIXED) as emu:
        client = sdk(emu)
        src = [inline(i, max_output_tokens=5 if i == 3 else 400) for i in range(30)]
        job = client.batches.create(model="gemini-2.0-flash", src=src)
        assert job.display_name is None
        emu.control.advance(1)
        done = wait(client, job.name or "")
        assert done.dest is not None and done.dest.inlined_responses is not None
        responses = done.dest.inlined_responses
        keys = [r.metadata["key"] for r in responses if r.metadata]
        assert sorted(keys) == sorted(f"in-{i}" for i in range(30))
        assert keys != [f"in-{i}" for i in range(30)]  # out of order, as reported
        by_key = {r.metadata["key"]: r.response for r in responses if r.metadata}
        capped = by_key["in-3"]
        assert capped is not None and capped.usage_metadata is not None
        assert capped.usage_metadata.candidates_token_count == 5
        assert capped.usage_metadata.thoughts_token_count is None  # 2.0 does not think
        assert capped.candidates and capped.candidates[0].finish_reason == "MAX_TOKENS"
        assert {c["path"].split("/")[1] for c in emu.control.calls()} == {"v1beta"}

        # Without the setting, results come back in request order.
        emu.control.set_config(gemini_shuffle_results=False)
        ordered = client.batches.create(model=MODEL, src=src[:10])
        emu.control.advance(1)
        inlined = wait(client, ordered.name or "").dest
        assert inlined is not None and inlined.inlined_responses is not None
        got = [r.metadata["key"] for r in inlined.inlined_responses if r.metadata]
        assert got == [f"in-{i}" for i in range(10)]


def test_list_pages_through_everything_and_hides_deleted(
    emu: RunningEmulator, client: genai.Client
) -> None:
    names = [
        client.batches.create(model=MODEL, src=[inline(i)], config={"display_name": f"b{i}"}).name
        for i in range(5)
    ]
    foreign = emu.control.seed("gemini", batches=2)["batches"]
    pager = client.batches.list(config={"page_size": 3})
    assert len(pager.page) == 3 and pager.config["page_token"]
    listed = [job.name for job in pager]
    assert listed == [f"batches/{b}" for b in foreign[::-1]] + names[::-1]  # newest first
    raw_page = raw(emu, "GET", "/v1beta/batches", params={"pageSize": 7}).json()
    assert len(raw_page["operations"]) == 7 and "nextPageToken" not in raw_page
    token = raw(emu, "GET", "/v1/batches", params={"pageSize": 2}).json()["nextPageToken"]
    client.batches.delete(name=names[3])  # the item a token points past stays usable
    page = raw(emu, "GET", "/v1/batches", params={"pageSize": 2, "pageToken": token}).json()
    assert [op["name"] for op in page["operations"]] == [names[4], names[2]]
    assert names[3] not in [job.name for job in client.batches.list()]
    with pytest.raises(errors.ClientError) as info:
        client.batches.list(config={"page_token": "bm90LWEtYmF0Y2g"})
    assert info.value.code == 400 and info.value.status == "INVALID_ARGUMENT"
    files = [upload(client, lines(1), f"f{i}") for i in range(3)]
    assert [f.name for f in client.files.list(config={"page_size": 2})] == [
        f.name for f in files[::-1]
    ]
    with pytest.raises(errors.ClientError) as info:  # uploads cannot be downloaded
        client.files.download(file=files[0].name or "")
    assert info.value.code == 400 and info.value.status == "FAILED_PRECONDITION"
    client.files.delete(name=files[1].name or "")
    assert len(list(client.files.list())) == 2


def test_cancel_delete_and_their_errors(tmp_path: Path) -> None:
    with running(tmp_path / "d", rate=1.0, **FIXED) as emu:
        client = sdk(emu)
        data = upload(client, lines(10))
        job = client.batches.create(model=MODEL, src=data.name or "")
        wait(client, job.name or "", "JOB_STATE_RUNNING")
        emu.control.advance(4)
        deadline = time.monotonic() + 10
        while emu.control.batch(bid(job))["progress"]["done"] < 4:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        assert client.batches.cancel(name=job.name or "") is None
        cancelled = wait(client, job.name or "")
        assert cancelled.state == "JOB_STATE_CANCELLED"
        stats = raw(emu, "GET", f"/v1/{job.name}").json()["metadata"]["batchStats"]
        assert stats == {
            "requestCount": "10",
            "successfulRequestCount": "4",
            "pendingRequestCount": "6",
        }
        assert cancelled.dest is not None and cancelled.dest.file_name
        partial = client.files.download(file=cancelled.dest.file_name).decode().splitlines()
        assert [json.loads(x)["key"] for x in partial] == [f"req-{i}" for i in range(4)]
        with pytest.raises(errors.ClientError) as info:
            client.batches.cancel(name=job.name or "")
        assert info.value.code == 400 and info.value.status == "FAILED_PRECONDITION"

        # Delete works in any state (the LRO delete); the batch is gone at once.
        running_job = client.batches.create(model=MODEL, src=[inline(0), inline(1)])
        client.batches.delete(name=running_job.name or "")
        client.batches.delete(name=job.name or "")
        for name in (running_job.name, job.name):
            with pytest.raises(errors.ClientError) as info:
                client.batches.get(name=name or "")
            assert info.value.code == 404 and info.value.status == "NOT_FOUND"
        emu.control.advance(100)
        assert not any(
            p.name.startswith(bid(running_job)) for p in (emu.data_dir / "work").iterdir()
        )


def test_embeddings_batch_inline_and_file(emu: RunningEmulator, client: genai.Client) -> None:
    warnings.simplefilter("ignore", category=genai._common.ExperimentalWarning)
    job = client.batches.create_embeddings(
        model="gemini-embedding-001",
        src={
            "inlined_requests": {
                "contents": ["one two", "three"],
                "config": {"output_dimensionality": 8},
            }
        },
        config={"display_name": "vectors"},
    )
    text = {"parts": [{"text": "embed me please"}]}
    body = {"content": text, "output_dimensionality": 4}
    data = json.dumps({"key": "e-1", "request": body}).encode() + b"\n"
    from_file = client.batches.create_embeddings(
        model="gemini-embedding-001", src={"file_name": upload(client, data).name}
    )
    with pytest.raises(errors.ClientError) as info:  # a generate model does not embed
        client.batches.create_embeddings(model=MODEL, src={"file_name": "files/x"})
    assert info.value.code == 404 and "asyncBatchEmbedContent" in (info.value.message or "")
    emu.control.advance(1)
    done = wait(client, job.name or "")
    assert done.dest is not None and done.dest.inlined_embed_content_responses is not None
    vectors = [r.response for r in done.dest.inlined_embed_content_responses]
    assert [len(v.embedding.values or []) for v in vectors if v and v.embedding] == [8, 8]
    assert [v.token_count for v in vectors if v] == [2, 1]
    filed = wait(client, from_file.name or "").dest
    assert filed is not None and filed.file_name is not None
    (line,) = [json.loads(x) for x in client.files.download(file=filed.file_name).splitlines()]
    assert line["key"] == "e-1" and len(line["response"]["embedding"]["values"]) == 4


def test_expiry_after_48_virtual_hours(tmp_path: Path) -> None:
    with running(tmp_path / "d", rate=0.001, **FIXED) as emu:  # 1 request per 1000 s
        client = sdk(emu)
        data = upload(client, lines(400))
        slow = client.batches.create(model=MODEL, src=data.name or "")
        wait(client, slow.name or "", "JOB_STATE_RUNNING")
        emu.control.next_batches(hold="validating")
        held = client.batches.create(model=MODEL, src=[inline(0)])
        emu.control.advance(48 * HOUR - 10)
        assert client.batches.get(name=slow.name or "").state == "JOB_STATE_RUNNING"
        assert client.files.get(name=data.name or "").name == data.name
        emu.control.advance(20)
        expired = wait(client, slow.name or "")
        assert expired.state == "JOB_STATE_EXPIRED"
        assert wait(client, held.name or "").state == "JOB_STATE_EXPIRED"
        stats = raw(emu, "GET", f"/v1/{slow.name}").json()["metadata"]["batchStats"]
        assert stats == {
            "requestCount": "400",
            "successfulRequestCount": "172",
            "pendingRequestCount": "228",
        }
        assert expired.dest is not None and expired.dest.file_name
        assert len(client.files.download(file=expired.dest.file_name).splitlines()) == 172
        with pytest.raises(errors.ClientError) as info:  # the upload is gone after 48 h
            client.files.get(name=data.name or "")
        assert info.value.code == 403 and info.value.status == "PERMISSION_DENIED"
        assert data.name not in [f.name for f in client.files.list()]
        with pytest.raises(errors.ClientError) as info:
            client.batches.create(model=MODEL, src=data.name or "")
        assert info.value.code == 400 and "upload it again" in (info.value.message or "")


def test_full_queue_answers_429_at_create_after_the_upload(
    emu: RunningEmulator, client: genai.Client
) -> None:
    emu.control.set_quotas(gemini={MODEL: 100})
    emu.control.next_batches(hold="validating")  # it stays queued until released
    first = client.batches.create(model=MODEL, src=upload(client, lines(10)).name or "")  # 60
    second = upload(client, lines(10))
    with pytest.raises(errors.ClientError) as info:
        client.batches.create(model=MODEL, src=second.name or "")
    assert info.value.code == 429 and info.value.status == "RESOURCE_EXHAUSTED"
    assert "split the batch" in (info.value.message or "")
    assert client.files.get(name=second.name or "").name == second.name  # the upload stays
    assert len(list(client.batches.list())) == 1
    other = client.batches.create(model="gemini-2.5-pro", src=second.name or "")  # its own queue
    emu.control.release(bid(first))
    emu.control.advance(1)
    wait(client, first.name or "")
    wait(client, other.name or "")
    assert client.batches.create(model=MODEL, src=second.name or "").name


def test_a_batch_first_stepped_after_a_clock_advance_runs_from_when_it_was_due(
    emu: RunningEmulator, client: genai.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded machine's worker may reach a new batch only after the test advanced the
    clock: it must run from creation (validation takes no time here), not from that late
    step, or on a frozen clock it earns no credit and stays RUNNING (CI's flaky
    `test_bad_input`)."""
    late = threading.Event()
    step = GeminiWorker.step
    monkeypatch.setattr(GeminiWorker, "step", lambda w, b, now: late.is_set() and step(w, b, now))
    job = client.batches.create(model=MODEL, src=upload(client, lines(3)).name or "")
    emu.control.advance(1)  # the worker has not stepped the batch yet
    late.set()
    emu.control.advance(0)
    assert wait(client, job.name or "", timeout=5).state == "JOB_STATE_SUCCEEDED"


def test_bad_input(emu: RunningEmulator, client: genai.Client) -> None:
    with pytest.raises(errors.ClientError) as info:
        client.batches.create(model="gemini-9-ultra", src=[inline(0)])
    assert info.value.code == 404 and info.value.status == "NOT_FOUND"
    assert "models/gemini-9-ultra is not found for API version v1" in (info.value.message or "")
    bad = b'{"key": "a", "request": ' + json.dumps(request(0)).encode() + b"}\n\nnot json\n"
    broken = client.batches.create(model=MODEL, src=upload(client, bad).name or "")
    mixed = [
        {"key": "ok", "request": request(1)},
        {"key": "empty", "request": {"contents": []}},
        {"key": "other-model", "request": request(2) | {"model": "models/gemini-2.5-pro"}},
        {"key": "cap", "request": request(3, maxOutputTokens=0)},
    ]
    data = b"".join(json.dumps(m).encode() + b"\n" for m in mixed)
    per_request = client.batches.create(model=MODEL, src=upload(client, data).name or "")
    emu.control.advance(1)
    failed = wait(client, broken.name or "")
    assert failed.state == "JOB_STATE_FAILED" and failed.error is None  # the SDK drops it
    error = raw(emu, "GET", f"/v1/{broken.name}").json()["error"]
    assert error["code"] == 400 and "line 3 is not valid JSON" in error["message"]
    done = wait(client, per_request.name or "")
    assert done.dest is not None and done.dest.file_name
    results = {
        r["key"]: r
        for r in map(json.loads, client.files.download(file=done.dest.file_name).splitlines())
    }
    assert "response" in results["ok"]
    for key in ("empty", "other-model", "cap"):
        assert results[key]["error"]["code"] == 400
        assert results[key]["error"]["status"] == "INVALID_ARGUMENT"
    stats = raw(emu, "GET", f"/v1/{per_request.name}").json()["metadata"]["batchStats"]
    assert stats == {"requestCount": "4", "successfulRequestCount": "1", "failedRequestCount": "3"}

    url = f"/v1/models/{MODEL}:batchGenerateContent"
    for body, needle in (
        ({"batch": {}}, "input_config is required"),
        ({"batch": {"inputConfig": {"requests": {"requests": []}}}}, "non-empty"),
        ({"batch": {"inputConfig": {"requests": {"requests": [{"metadata": {}}]}}}}, ".request"),
        ({"batch": {"inputConfig": {"fileName": "files/nope"}}}, "does not exist"),
    ):
        answer = raw(emu, "POST", url, json=body)
        assert answer.status_code == 400, body
        assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"
        assert needle in answer.json()["error"]["message"]
    no_key = httpx.get(f"{emu.url}/v1beta/batches")
    assert no_key.status_code == 403
    assert no_key.json()["error"]["status"] == "PERMISSION_DENIED"
    assert raw(emu, "GET", "/v1beta/nothing-here").json()["error"]["code"] == 404


def test_inline_create_body_limit(tmp_path: Path) -> None:
    with running(tmp_path / "d", gemini_max_inline_bytes=4_000, **FIXED) as emu:
        client = sdk(emu)
        with pytest.raises(errors.ClientError) as info:
            client.batches.create(model=MODEL, src=[inline(i) for i in range(60)])
        assert info.value.code == 400
        assert "payload size exceeds the limit: 4000 bytes" in (info.value.message or "")
        assert list(client.batches.list()) == []
