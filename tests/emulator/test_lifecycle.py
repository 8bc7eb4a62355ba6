"""The whole lifecycle through the official SDK over real HTTP, with every body checked
against the spec's schemas."""

from __future__ import annotations

import io
import json

import httpx
import openai
import pytest

from emu_helpers import chat_line, read_jsonl, upload, validate, wait
from llmbatch.emulator import RunningEmulator


def test_full_lifecycle(emu: RunningEmulator, client: openai.OpenAI, tmp_path) -> None:
    lines = [chat_line(i, max_tokens=30) for i in range(40)]
    emu.control.set_config(request_failure_rate=0.2)
    f = upload(client, lines)
    validate("OpenAIFile", f)
    assert (f.purpose, f.status, f.bytes) == (
        "batch",
        "processed",
        len(b"".join(json.dumps(x).encode() + b"\n" for x in lines)),
    )
    assert f.expires_at == f.created_at + 30 * 86400
    validate("OpenAIFile", client.files.retrieve(f.id))

    batch = client.batches.create(
        input_file_id=f.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    validate("Batch", batch)
    assert batch.status == "validating"
    assert batch.expires_at == batch.created_at + 86400
    assert batch.in_progress_at is None and batch.output_file_id is None and batch.model is None

    done = wait(client, batch.id)
    validate("Batch", done)
    assert done.status == "completed"
    assert done.model == "gpt-4o-mini"
    assert done.metadata == {"job": "nightly"}
    counts = done.request_counts
    assert counts.total == 40 and counts.completed + counts.failed == 40 and counts.failed > 0
    assert (
        done.in_progress_at is not None
        and done.finalizing_at is not None
        and done.completed_at is not None
    )
    assert done.failed_at is None and done.cancelled_at is None and done.errors is None

    out_file = client.files.retrieve(done.output_file_id)
    err_file = client.files.retrieve(done.error_file_id)
    for file in (out_file, err_file):
        validate("OpenAIFile", file)
        assert file.purpose == "batch_output"

    path = tmp_path / "out.jsonl"
    with client.files.with_streaming_response.content(done.output_file_id) as response:
        response.stream_to_file(path)
    outputs = [json.loads(x) for x in path.read_text().splitlines()]
    errors = read_jsonl(client, done.error_file_id)
    assert len(outputs) == counts.completed and len(errors) == counts.failed
    assert sorted(o["custom_id"] for o in outputs + errors) == sorted(x["custom_id"] for x in lines)
    assert [o["custom_id"] for o in outputs] != sorted(o["custom_id"] for o in outputs), (
        "output is shuffled"
    )

    first = outputs[0]
    assert set(first) == {"id", "custom_id", "response", "error"} and first["error"] is None
    assert first["id"].startswith("batch_req_") and first["response"]["status_code"] == 200
    body = first["response"]["body"]
    # The reply names the dated snapshot the alias runs as, as the service does.
    assert body["object"] == "chat.completion" and body["model"] == "gpt-4o-mini-2024-07-18"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] <= 30
    assert {"cached_tokens"} <= set(usage["prompt_tokens_details"])
    assert {"reasoning_tokens"} <= set(usage["completion_tokens_details"])
    assert errors[0]["response"]["status_code"] == 500
    assert errors[0]["response"]["body"]["error"]["type"] == "server_error"

    total_in = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in outputs)
    total_out = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in outputs)
    assert done.usage.input_tokens == total_in and done.usage.output_tokens == total_out
    assert done.usage.total_tokens == total_in + total_out

    deleted = client.files.delete(f.id)
    validate("DeleteFileResponse", deleted)
    assert deleted.deleted is True
    with pytest.raises(openai.NotFoundError) as info:
        client.files.retrieve(f.id)
    validate(
        "ErrorResponse",
        info.value.body if "error" in (info.value.body or {}) else {"error": info.value.body},
    )


def test_request_counts_advance_while_in_progress(tmp_path) -> None:
    from llmbatch.emulator import running

    with running(tmp_path, time_scale=0.0, rate=10.0) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        f = upload(client, [chat_line(i) for i in range(50)])
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch = wait(client, batch.id, ("in_progress",))
        assert batch.request_counts.total == 50 and batch.request_counts.completed == 0
        emu.control.advance(2.0)  # 20 requests at 10/s
        for _ in range(200):
            batch = client.batches.retrieve(batch.id)
            if batch.request_counts.completed == 20:
                break
        assert batch.status == "in_progress" and batch.request_counts.completed == 20
        assert batch.usage.input_tokens > 0
        validate("Batch", batch)
        emu.control.advance(10.0)
        done = wait(client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 50


def test_list_pagination(emu: RunningEmulator, client: openai.OpenAI) -> None:
    f = upload(client, [chat_line(0)])
    ids = [
        client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id
        for _ in range(5)
    ]
    page = client.batches.list(limit=2)
    validate("ListBatchesResponse", page.model_dump(mode="json"))
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]  # auto-pagination
    last = client.batches.list(limit=2, after=ids[1])
    assert [b.id for b in last.data] == [ids[0]] and not last.has_more

    for i in range(3):
        upload(client, [chat_line(i)], name=f"f{i}.jsonl")
    files = client.files.list(limit=2, purpose="batch")
    validate("ListFilesResponse", files.model_dump(mode="json"))
    assert files.has_more and len(files.data) == 2
    assert len(list(client.files.list(limit=2, purpose="batch"))) == 4
    asc = client.files.list(order="asc")
    assert asc.data[0].id == f.id
    empty = client.files.list(purpose="fine-tune")
    validate("ListFilesResponse", empty.model_dump(mode="json"))
    assert empty.data == [] and not empty.has_more
    with pytest.raises(openai.BadRequestError):
        client.batches.list(limit=101)


def test_cancel_then_409(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.set_config(rate=50.0)
    f = upload(client, [chat_line(i) for i in range(200)])
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    wait(client, batch.id, ("in_progress",))
    cancelling = client.batches.cancel(batch.id)
    validate("Batch", cancelling)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    done = wait(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    outputs = read_jsonl(client, done.output_file_id) if done.output_file_id else []
    unrun = read_jsonl(client, done.error_file_id)
    assert len(outputs) + len(unrun) == 200 and len(unrun) > 0
    assert {u["error"]["code"] for u in unrun} == {"batch_cancelled"}
    assert all(u["response"] is None for u in unrun)

    f2 = upload(client, [chat_line(0)])
    finished = client.batches.create(
        input_file_id=f2.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    emu.control.set_config(rate=100000.0)
    wait(client, finished.id)
    with pytest.raises(openai.ConflictError) as info:
        client.batches.cancel(finished.id)
    assert info.value.response.headers["x-should-retry"] == "false"
    assert "Cannot cancel a batch with status 'completed'" in info.value.message
    validate("ErrorResponse", info.value.response.json())
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_missing_key_is_401_and_keys_are_never_logged(emu: RunningEmulator) -> None:
    response = httpx.get(emu.base_url + "/batches")
    assert response.status_code == 401
    validate("ErrorResponse", response.json())
    response = httpx.get(emu.base_url + "/files", headers={"authorization": "Basic abc"})
    assert response.status_code == 401
    ok = httpx.get(emu.base_url + "/files", headers={"authorization": "Bearer sk-very-secret"})
    assert ok.status_code == 200
    azure = httpx.get(
        emu.url + "/openai/files?api-version=2024-10-21", headers={"api-key": "az-very-secret"}
    )
    assert azure.status_code == 200
    calls = emu.control.calls()
    assert [c["status"] for c in calls] == [401, 401, 200, 200]
    keys = {"seq", "at", "method", "path", "query", "status", "body_sha256", "started", "made"}
    assert set(calls[0]) == keys
    assert "very-secret" not in json.dumps(calls)
    db = (emu.data_dir / "emulator.sqlite3").read_bytes()
    assert b"very-secret" not in db


def test_models_and_realtime_endpoints(client: openai.OpenAI) -> None:
    models = [m.id for m in client.models.list()]
    assert "gpt-4o-mini" in models and "text-embedding-3-small" in models
    chat = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi there!"}], max_tokens=5
    )
    assert chat.usage.prompt_tokens == 3 + 3 + 3 and chat.usage.completion_tokens <= 5
    again = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi there!"}], max_tokens=5
    )
    assert again.choices[0].message.content == chat.choices[0].message.content
    resp = client.responses.create(model="gpt-4.1-mini", input="Say hi.")
    assert resp.usage.input_tokens > 0 and resp.output_text
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b c"], dimensions=8)
    assert len(emb.data) == 2 and len(emb.data[0].embedding) == 8 and emb.usage.prompt_tokens == 3
    mod = client.moderations.create(input="hello")
    assert mod.results[0].flagged is False
    comp = client.completions.create(model="gpt-3.5-turbo-instruct", prompt="Once upon")
    assert comp.usage.completion_tokens <= 16
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="gpt-nope", messages=[{"role": "user", "content": "x"}]
        )
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="gpt-4o-mini", messages=[])


@pytest.mark.parametrize(
    ("endpoint", "body", "check"),
    [
        (
            "/v1/responses",
            {"model": "gpt-5-mini", "input": "Why is the sky blue?", "max_output_tokens": 64},
            lambda b: (
                b["object"] == "response"
                and b["usage"]["output_tokens_details"]["reasoning_tokens"] > 0
            ),
        ),
        (
            "/v1/embeddings",
            {"model": "text-embedding-3-small", "input": ["one", "two"]},
            lambda b: len(b["data"]) == 2 and b["usage"]["total_tokens"] == 2,
        ),
        (
            "/v1/completions",
            {"model": "gpt-3.5-turbo-instruct", "prompt": "Hello"},
            lambda b: b["object"] == "text_completion" and b["usage"]["completion_tokens"] <= 16,
        ),
        (
            "/v1/moderations",
            {"model": "omni-moderation-latest", "input": "hello"},
            lambda b: b["results"][0]["flagged"] is False,
        ),
    ],
)
def test_batch_endpoints_have_their_real_shape(
    client: openai.OpenAI, endpoint, body, check
) -> None:
    lines = [
        {"custom_id": f"c{i}", "method": "POST", "url": endpoint, "body": body | {"user": str(i)}}
        for i in range(3)
    ]
    f = upload(client, lines)
    done = wait(
        client,
        client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h").id,
    )
    assert done.status == "completed" and done.request_counts.completed == 3
    for line in read_jsonl(client, done.output_file_id):
        assert check(line["response"]["body"]), line


def test_length_rate_hits_the_cap(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.set_config(length_rate=1.0)
    f = upload(client, [chat_line(i, max_completion_tokens=7) for i in range(5)])
    done = wait(
        client,
        client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    for line in read_jsonl(client, done.output_file_id):
        body = line["response"]["body"]
        assert (
            body["choices"][0]["finish_reason"] == "length"
            and body["usage"]["completion_tokens"] == 7
        )


def test_processing_bad_body_goes_to_error_file(client: openai.OpenAI) -> None:
    lines = [
        chat_line(0),
        {
            "custom_id": "bad",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": "nope"},
        },
    ]
    done = wait(
        client,
        client.batches.create(
            input_file_id=upload(client, lines).id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
        ).id,
    )
    assert done.status == "completed" and done.request_counts.failed == 1
    [err] = read_jsonl(client, done.error_file_id)
    assert err["custom_id"] == "bad" and err["response"]["status_code"] == 400
    assert err["response"]["body"]["error"]["param"] == "messages"


def test_file_upload_with_expires_after(client: openai.OpenAI) -> None:
    f = client.files.create(
        file=("x.jsonl", io.BytesIO(b"{}\n")),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert f.expires_at == f.created_at + 3600
    with pytest.raises(openai.BadRequestError):
        client.files.create(
            file=("x.jsonl", io.BytesIO(b"{}\n")),
            purpose="batch",
            expires_after={"anchor": "created_at", "seconds": 5},
        )


def test_an_upload_is_written_as_it_arrives_without_a_thread_hop_a_piece(
    emu: RunningEmulator, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """starlette spools a file part and writes each piece past its first MB through a
    thread hop, and each hop waits for the GIL behind the worker's validation of another
    batch: a 25 MB upload took seconds. The file is written as it arrives, byte for byte,
    and nothing is left behind by uploads refused."""
    import starlette.datastructures

    hops = 0
    real = starlette.datastructures.run_in_threadpool

    async def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal hops
        hops += 1
        return await real(*args, **kwargs)

    monkeypatch.setattr(starlette.datastructures, "run_in_threadpool", counted)
    data = b"".join(b'{"n": %d}\n' % i for i in range(250_000))  # ~2.6 MB
    f = client.files.create(file=("big.jsonl", io.BytesIO(data)), purpose="batch")
    assert hops <= 2  # closing the file, not a hop a piece
    assert f.bytes == len(data) and client.files.content(f.id).content == data
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.jsonl", io.BytesIO(data)), purpose="nonsense")  # type: ignore[arg-type]
    assert sorted(p.name for p in (emu.data_dir / "files").iterdir()) == [f.id]


def test_a_batch_completes_in_the_round_that_ran_its_last_line(tmp_path) -> None:
    """Finalizing and completing (when due) follow the last line in the same step: a round
    later each, they waited for every other batch's step, and validating another large
    batch took seconds (at 100,000 requests, the first batch's completion waited ~2 s on
    the second's validation)."""
    from llmbatch.emulator.config import make_config
    from llmbatch.emulator.core import Emulator
    from llmbatch.emulator.surfaces import OPENAI
    from llmbatch.emulator.worker import Worker

    emu = Emulator(tmp_path, 0.0, make_config({"seed": 3, "clock_start": 1.8e9}), Worker)
    try:
        ids = []
        for name in ("first", "second"):
            file_id = f"file-{name}"
            lines = [chat_line(i, max_tokens=5) for i in range(20)]
            emu.state.file_path(file_id).write_bytes(
                b"".join(json.dumps(x).encode() + b"\n" for x in lines)
            )
            emu.state.add_file(OPENAI.name, emu.file_object(file_id, 1, name, "batch", None))
            params = {"input_file_id": file_id, "endpoint": "/v1/chat/completions"}
            params |= {"completion_window": "24h", "metadata": None}
            ids.append(emu.create_batch(OPENAI, params | {"output_expires_after": None}).id)
            if name == "first":
                emu.worker.tick(emu.now())  # validated, nothing run on a frozen clock
                emu.clock.advance(1)

        def statuses() -> list[str | None]:
            return [getattr(emu.state.get_batch(i), "status", None) for i in ids]

        assert statuses() == ["in_progress", "validating"]
        emu.worker.tick(emu.now())  # the first batch's lines, then the second's validation
        assert statuses() == ["completed", "in_progress"]
    finally:
        emu.close()
