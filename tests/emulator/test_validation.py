"""Both kinds of validation: 400 at create, and `failed` with coded, lined errors after
`validating`."""

from __future__ import annotations

import io
from typing import Any

import openai
import pytest

from emu_helpers import chat_line, upload, validate, wait
from llmbatch.emulator import RunningEmulator, running

ENDPOINT = "/v1/chat/completions"


def create(client: openai.OpenAI, file_id: str, **kw: Any) -> Any:
    params = {"input_file_id": file_id, "endpoint": ENDPOINT, "completion_window": "24h"} | kw
    return client.batches.create(**params)


def failed_errors(
    client: openai.OpenAI, lines: list[Any], endpoint: str = ENDPOINT
) -> list[tuple[str, int | None]]:
    f = upload(client, lines)
    batch = wait(client, create(client, f.id, endpoint=endpoint).id)
    validate("Batch", batch)
    assert batch.status == "failed" and batch.failed_at is not None, batch
    assert batch.output_file_id is None and batch.in_progress_at is None
    return [(e.code, e.line) for e in batch.errors.data]


@pytest.mark.parametrize(
    ("kw", "param", "fragment"),
    [
        ({"completion_window": "48h"}, "completion_window", "Supported values are: '24h'"),
        ({"endpoint": "/v1/fine_tuning/jobs"}, "endpoint", "Supported values"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata", "at most 16"),
        ({"metadata": {"k" * 65: "v"}}, "metadata", "longer than 64"),
        ({"metadata": {"k": "v" * 513}}, "metadata", "maximum length 512"),
        (
            {"output_expires_after": {"anchor": "created_at", "seconds": 60}},
            "output_expires_after",
            "3600",
        ),
    ],
)
def test_create_time_400(
    client: openai.OpenAI, kw: dict[str, Any], param: str, fragment: str
) -> None:
    f = upload(client, [chat_line(0)])
    with pytest.raises(openai.BadRequestError) as info:
        create(client, f.id, **kw)
    body = info.value.response.json()
    validate("ErrorResponse", body)
    assert body["error"]["param"] == param and fragment in body["error"]["message"]
    assert info.value.response.headers["x-should-retry"] == "false"
    assert client.batches.list().data == []


def test_sixteen_metadata_pairs_are_fine(client: openai.OpenAI) -> None:
    f = upload(client, [chat_line(0)])
    batch = create(client, f.id, metadata={f"k{i}": "v" * 512 for i in range(16)})
    assert len(batch.metadata) == 16


def test_unknown_deleted_and_wrong_purpose_files(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        create(client, "file-doesnotexist")
    assert info.value.response.json()["error"]["param"] == "input_file_id"
    f = upload(client, [chat_line(0)])
    client.files.delete(f.id)
    with pytest.raises(openai.BadRequestError):
        create(client, f.id)
    other = client.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as info:
        create(client, other.id)
    assert "purpose" in info.value.message


GOOD = chat_line(0)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([GOOD, "{not json", chat_line(2)], [("invalid_json_line", 2)]),
        ([GOOD, "[1, 2]"], [("invalid_json_line", 2)]),
        (
            [GOOD, {"method": "POST", "url": ENDPOINT, "body": GOOD["body"]}],
            [("invalid_request", 2)],
        ),
        ([GOOD, chat_line(1) | {"method": "GET"}], [("invalid_request", 2)]),
        ([GOOD, {"custom_id": "x", "method": "POST", "url": ENDPOINT}], [("invalid_request", 2)]),
        (
            [GOOD, {"custom_id": "x", "method": "POST", "url": ENDPOINT, "body": {"messages": []}}],
            [("invalid_request", 2)],
        ),
        ([GOOD, chat_line(1, stream=True)], [("invalid_request", 2)]),
        ([GOOD, chat_line(1, url="/v1/embeddings")], [("url_mismatch", 2)]),
        (
            [GOOD, chat_line(1, model="gpt-4.1"), chat_line(2, model="gpt-4.1")],
            [("model_mismatch", 2), ("model_mismatch", 3)],
        ),
        ([GOOD, chat_line(0)], [("duplicate_custom_id", 2)]),
        (
            [chat_line(0, model="gpt-unknown"), chat_line(1, model="gpt-unknown")],
            [("model_not_found", 1)],
        ),
        ([GOOD, "", chat_line(0)], [("duplicate_custom_id", 3)]),
        (
            [GOOD, "{bad", chat_line(0), chat_line(3, url="/v1/x")],
            [("invalid_json_line", 2), ("duplicate_custom_id", 3), ("url_mismatch", 4)],
        ),
    ],
    ids=[
        "json",
        "not-object",
        "no-custom-id",
        "method",
        "no-body",
        "no-model",
        "stream",
        "url",
        "model-mismatch",
        "duplicate",
        "model-not-found",
        "blank-lines-count",
        "every-bad-line",
    ],
)
def test_validating_failures_have_code_and_line(
    client: openai.OpenAI, lines: list[Any], expected: list[tuple[str, int]]
) -> None:
    assert failed_errors(client, lines) == expected


def test_empty_file(client: openai.OpenAI) -> None:
    f = client.files.create(file=("empty.jsonl", io.BytesIO(b"")), purpose="batch")
    assert f.bytes == 0
    batch = wait(client, create(client, f.id).id)
    assert batch.status == "failed" and [(e.code, e.line) for e in batch.errors.data] == [
        ("empty_file", None)
    ]


def test_url_must_match_endpoint_for_all_lines(client: openai.OpenAI) -> None:
    lines = [chat_line(i) for i in range(3)]
    errors = failed_errors(client, lines, endpoint="/v1/embeddings")
    assert errors == [("url_mismatch", 1), ("url_mismatch", 2), ("url_mismatch", 3)]


def test_file_level_limits(tmp_path) -> None:
    with running(
        tmp_path, openai_max_lines=3, max_batch_file_bytes=2000, max_embedding_inputs=4
    ) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        assert failed_errors(client, [chat_line(i) for i in range(4)]) == [("too_many_tasks", None)]
        assert failed_errors(client, [chat_line(i, pad="x" * 1000) for i in range(2)]) == [
            ("invalid_request", None)
        ]
        emb = [
            {
                "custom_id": f"e{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": ["a", "b", "c"]},
            }
            for i in range(2)
        ]
        assert failed_errors(client, emb, endpoint="/v1/embeddings") == [("invalid_request", None)]
        ok = upload(client, [chat_line(i) for i in range(3)])
        assert wait(client, create(client, ok.id).id).status == "completed"


def test_token_limit_exceeded(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.set_config(rate=1.0)
    first = wait(
        client,
        create(client, upload(client, [chat_line(i) for i in range(5)]).id).id,
        ("in_progress",),
    )
    used = emu.control.batch(first.id)["progress"]["tokens"]
    assert used > 0
    emu.control.set_quotas(openai={"gpt-4o-mini": used + 5})
    second = wait(client, create(client, upload(client, [chat_line(i) for i in range(5)]).id).id)
    assert second.status == "failed"
    assert [(e.code, e.line) for e in second.errors.data] == [("token_limit_exceeded", None)]
    other_model = wait(
        client,
        create(client, upload(client, [chat_line(0, model="gpt-4.1")]).id).id,
        ("in_progress", "completed"),
    )
    assert other_model.status != "failed"
