"""The Azure OpenAI flavour, through `openai.AzureOpenAI`, on both doors."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from emu_helpers import chat_line, read_jsonl, upload, validate, wait
from llmbatch.emulator import RunningEmulator, running

API_VERSION = "2024-10-21"


def legacy(emu: RunningEmulator) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=emu.url, api_key="az-key", api_version=API_VERSION, max_retries=0
    )


def v1(emu: RunningEmulator) -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        base_url=emu.url + "/openai/v1", api_key="az-key", api_version="preview", max_retries=0
    )


@pytest.mark.parametrize(
    ("door", "endpoint"),
    [(legacy, "/chat/completions"), (v1, "/chat/completions"), (v1, "/v1/chat/completions")],
)
def test_azure_lifecycle(emu: RunningEmulator, door: Any, endpoint: str) -> None:
    client = door(emu)
    lines = [chat_line(i, url=endpoint, model="gpt-4o-mini") for i in range(10)]
    f = upload(client, lines)
    validate("OpenAIFile", f)
    assert f.expires_at is None
    batch = client.batches.create(input_file_id=f.id, endpoint=endpoint, completion_window="24h")
    validate("Batch", batch)
    done = wait(client, batch.id)
    validate("Batch", done)
    assert done.status == "completed" and done.request_counts.completed == 10
    assert len(read_jsonl(client, done.output_file_id)) == 10
    error_file = client.files.retrieve(done.error_file_id)
    assert error_file.bytes == 0 and client.files.content(done.error_file_id).content == b""
    validate("ListBatchesResponse", client.batches.list().model_dump(mode="json"))
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)
    assert client.files.delete(f.id).deleted
    openai_side = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
    assert openai_side.batches.list().data == []


def test_both_azure_doors_share_one_resource(emu: RunningEmulator) -> None:
    f = upload(legacy(emu), [chat_line(0, url="/chat/completions")])
    assert v1(emu).files.retrieve(f.id).id == f.id


def test_deployments_are_the_models(tmp_path) -> None:
    with running(tmp_path, deployments={"prod-mini": "gpt-4o-mini"}) as emu:
        client = legacy(emu)
        good = [chat_line(i, url="/chat/completions", model="prod-mini") for i in range(2)]
        done = wait(
            client,
            client.batches.create(
                input_file_id=upload(client, good).id,
                endpoint="/chat/completions",
                completion_window="24h",
            ).id,
        )
        assert done.status == "completed" and done.model == "prod-mini"
        bad = [chat_line(0, url="/chat/completions", model="gpt-4o-mini")]
        failed = wait(
            client,
            client.batches.create(
                input_file_id=upload(client, bad).id,
                endpoint="/chat/completions",
                completion_window="24h",
            ).id,
        )
        assert [(e.code, e.line) for e in failed.errors.data] == [("model_not_found", 1)]
        reply = client.chat.completions.create(
            model="prod-mini", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content
        assert [m.id for m in v1(emu).models.list()] == ["prod-mini"]


def test_no_expiry_on_azure(tmp_path) -> None:
    with running(tmp_path, time_scale=0.0, rate=0.001) as emu:
        client = legacy(emu)
        f = upload(client, [chat_line(i, url="/chat/completions") for i in range(300)])
        batch = client.batches.create(
            input_file_id=f.id, endpoint="/chat/completions", completion_window="24h"
        )
        wait(client, batch.id, ("in_progress",))
        emu.control.advance(2 * 86_400)  # 172 requests' worth, well past expires_at
        deadline = time.monotonic() + 10
        while (still := client.batches.retrieve(batch.id)).request_counts.completed < 172:
            assert time.monotonic() < deadline
        assert still.status == "in_progress" and still.expired_at is None
        emu.control.advance(2 * 86_400)
        done = wait(client, batch.id)
        assert done.status == "completed" and done.request_counts.completed == 300


def test_azure_line_limit_and_file_limit(tmp_path) -> None:
    with running(tmp_path, azure_max_lines=3, azure_file_limit=3) as emu:
        client = legacy(emu)
        f = upload(client, [chat_line(i, url="/chat/completions") for i in range(4)])
        failed = wait(
            client,
            client.batches.create(
                input_file_id=f.id, endpoint="/chat/completions", completion_window="24h"
            ).id,
        )
        assert [e.code for e in failed.errors.data] == ["too_many_tasks"]
        upload(client, [chat_line(0, url="/chat/completions")])
        upload(client, [chat_line(0, url="/chat/completions")])
        with pytest.raises(openai.BadRequestError) as info:
            upload(client, [chat_line(0, url="/chat/completions")])
        assert info.value.response.json()["error"]["code"] == "file_limit_exceeded"


def test_azure_quota_per_deployment(emu: RunningEmulator) -> None:
    client = legacy(emu)
    emu.control.set_quotas(azure={"gpt-4o-mini": 10})
    f = upload(client, [chat_line(i, url="/chat/completions") for i in range(5)])
    failed = wait(
        client,
        client.batches.create(
            input_file_id=f.id, endpoint="/chat/completions", completion_window="24h"
        ).id,
    )
    assert [(e.code, e.line) for e in failed.errors.data] == [("token_limit_exceeded", None)]
    ok = upload(openai.OpenAI(base_url=emu.base_url, api_key="k"), [chat_line(0)])
    assert ok.id


def test_azure_needs_api_version_and_a_key(emu: RunningEmulator) -> None:
    assert httpx.get(emu.url + "/openai/files", headers={"api-key": "k"}).status_code == 404
    assert httpx.get(emu.url + "/openai/files?api-version=2024-10-21").status_code == 401
    assert httpx.get(emu.url + "/openai/v1/files", headers={"api-key": "k"}).status_code == 200
    assert (
        httpx.get(
            emu.url + "/openai/v1/files", headers={"authorization": "Bearer entra-token"}
        ).status_code
        == 200
    )
