"""The issue's bad-input list: each gets the service's status and error shape, and the
emulator keeps serving."""

from __future__ import annotations

import httpx
import openai
import pytest

from emu_helpers import chat_line, upload, validate, wait
from llmbatch.emulator import RunningEmulator


def still_serving(client: openai.OpenAI) -> None:
    f = upload(client, [chat_line(0)])
    batch = client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert wait(client, batch.id).status == "completed"


AUTH = {"authorization": "Bearer k"}


@pytest.mark.parametrize(
    ("headers", "content"),
    [
        (
            {"content-type": "multipart/form-data; boundary=xyz"},
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\nabc',
        ),
        ({"content-type": "multipart/form-data"}, b"garbage"),
        ({"content-type": "application/json"}, b'{"purpose": "batch"}'),
        (
            {"content-type": "multipart/form-data; boundary=xyz"},
            b'--xyz\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nbatch\r\n--xyz--\r\n',
        ),
    ],
    ids=["truncated", "no-boundary", "not-multipart", "no-file"],
)
def test_malformed_multipart(emu: RunningEmulator, client: openai.OpenAI, headers, content) -> None:
    response = httpx.post(emu.base_url + "/files", headers=AUTH | headers, content=content)
    assert response.status_code == 400, response.text
    validate("ErrorResponse", response.json())
    still_serving(client)


def test_bad_purpose(emu: RunningEmulator) -> None:
    response = httpx.post(
        emu.base_url + "/files",
        headers=AUTH,
        files={"file": ("a.jsonl", b"{}")},
        data={"purpose": "nonsense"},
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "purpose"


def test_unknown_routes_and_methods(emu: RunningEmulator) -> None:
    for response in (
        httpx.get(emu.base_url + "/nope", headers=AUTH),
        httpx.put(emu.base_url + "/batches", headers=AUTH),
    ):
        assert response.status_code in (404, 405)
        validate("ErrorResponse", response.json())


def test_invalid_json_body(emu: RunningEmulator) -> None:
    response = httpx.post(
        emu.base_url + "/batches",
        headers=AUTH | {"content-type": "application/json"},
        content=b"{nope",
    )
    assert response.status_code == 400
    validate("ErrorResponse", response.json())
    response = httpx.post(
        emu.base_url + "/batches", headers=AUTH, json={"endpoint": "/v1/chat/completions"}
    )
    assert response.status_code == 400 and response.json()["error"]["param"] == "input_file_id"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/clock/advance", {"seconds": -5}),
        ("POST", "/clock/advance", {"seconds": "soon"}),
        ("POST", "/faults", {"op": "batches.create", "kind": "418"}),
        ("POST", "/faults", {"op": "batches.create", "kind": "500", "mode": "sometimes"}),
        ("POST", "/faults", {"op": "batches.create", "kind": "500", "rate": 2}),
        ("POST", "/faults", {"op": "batches.create", "kind": "latency"}),
        ("POST", "/faults", {"kind": "500", "bogus": 1}),
        ("PATCH", "/config", {"rate": 0}),
        ("PATCH", "/config", {"no_such_setting": 1}),
        ("PATCH", "/config", {"request_failure_rate": 1.5}),
        ("PUT", "/quotas", {"mistral": {"x": 1}}),
        ("PUT", "/quotas", {"openai": {"gpt-4o-mini": -1}}),
        ("POST", "/next-batches", {"hold": "forever"}),
        ("POST", "/next-batches", {}),
        ("POST", "/seed", {"flavor": "anthropic", "files": 1}),
        ("POST", "/seed", {"files": -1}),
    ],
)
def test_control_api_nonsense_is_a_clear_400(
    emu: RunningEmulator, client: openai.OpenAI, method, path, body
) -> None:
    response = httpx.request(method, emu.url + "/_emulator" + path, json=body)
    assert response.status_code == 400, response.text
    validate("ErrorResponse", response.json())
    assert len(response.json()["error"]["message"]) > 10
    assert httpx.post(emu.url + "/_emulator/faults", content=b"not json").status_code == 400
    assert httpx.post(emu.url + "/_emulator/batches/batch_nope/expire").status_code == 404
    still_serving(client)


@pytest.mark.slow
def test_300_mb_upload_fails_the_batch_and_serving_goes_on(
    emu: RunningEmulator, client: openai.OpenAI, tmp_path
) -> None:
    path = tmp_path / "big.jsonl"
    block = b"".join(
        (
            b'{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "'
            % i
        )
        + b"y" * 10_000
        + b'"}]}}\n'
        for i in range(1000)
    )
    with path.open("wb") as f:
        for _ in range(30):
            f.write(block)
    assert path.stat().st_size > 300_000_000
    with path.open("rb") as handle:
        uploaded = client.with_options(timeout=120).files.create(file=handle, purpose="batch")
    assert uploaded.bytes == path.stat().st_size
    path.unlink()
    batch = wait(
        client,
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    assert batch.status == "failed" and batch.errors.data[0].code == "invalid_request"
    assert "200 MB" in batch.errors.data[0].message
    client.files.delete(uploaded.id)
    still_serving(client)


def test_upload_over_the_limit_is_413(tmp_path) -> None:
    from llmbatch.emulator import running

    with running(tmp_path, max_upload_bytes=1_000_000) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.APIStatusError) as info:
            client.files.create(file=("big.jsonl", b"x" * 2_000_000), purpose="batch")
        assert info.value.status_code == 413
        validate("ErrorResponse", info.value.response.json())
        still_serving(client)
