"""Anthropic Message Batches on the emulator, through the official `anthropic` SDK over
real HTTP: lifecycle, envelope errors, per-request results, cache usage, faults, restart."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import openai
import pytest

from llmbatch.emulator import RunningEmulator, running

KEY = "sk-ant-test-secret"
MODEL = "claude-haiku-4-5"
DAY = 86_400
FIXED: dict[str, Any] = {"seed": 7, "clock_start": 1_800_000_000, "time_scale": 0.0}


def req(i: int, **params: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 300,
        "messages": [{"role": "user", "content": f"Question number {i}: why?"}],
    }
    body.update(params)
    return {"custom_id": f"req-{i}", "params": {k: v for k, v in body.items() if v is not None}}


def sdk(emu: RunningEmulator) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=emu.url, api_key=KEY, max_retries=0)


def ended(client: anthropic.Anthropic, batch_id: str, timeout: float = 10) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        assert time.monotonic() < deadline, f"{batch_id} stuck in {batch.processing_status}"
        time.sleep(0.01)


def done(emu: RunningEmulator, batch_id: str, n: int) -> None:
    """Wait until the emulator has run `n` requests of the batch (counts stay hidden)."""
    deadline = time.monotonic() + 10
    while (emu.control.batch(batch_id)["progress"]["done"] or 0) < n:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def results(client: anthropic.Anthropic, batch_id: str) -> dict[str, Any]:
    return {r.custom_id: r.result for r in client.messages.batches.results(batch_id)}


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[RunningEmulator]:
    with running(tmp_path / "data", **FIXED) as e:
        yield e


@pytest.fixture
def client(emu: RunningEmulator) -> anthropic.Anthropic:
    return sdk(emu)


def test_full_lifecycle(emu: RunningEmulator, client: anthropic.Anthropic) -> None:
    batch = client.messages.batches.create(requests=[req(i) for i in range(30)])
    assert batch.id.startswith("msgbatch_") and batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.processing == 30 and batch.results_url is None
    assert (batch.expires_at - batch.created_at).total_seconds() == DAY
    assert batch.ended_at is None and batch.archived_at is None
    raw = httpx2.get(f"{emu.url}/v1/messages/batches/{batch.id}", headers=_headers()).json()
    assert raw["created_at"].endswith("Z") and raw["expires_at"].endswith("Z")

    emu.control.advance(1)
    final = ended(client, batch.id)
    assert final.request_counts.succeeded == 30
    assert final.request_counts.processing == 0 and final.ended_at is not None
    assert final.results_url == f"{emu.url}/v1/messages/batches/{batch.id}/results"
    got = results(client, batch.id)
    assert sorted(got) == sorted(f"req-{i}" for i in range(30))
    for result in got.values():
        assert result.type == "succeeded"
        message = result.message
        assert message.usage.service_tier == "batch" and message.role == "assistant"
        assert message.usage.output_tokens == len(message.content[0].text.split())
        assert message.stop_reason in ("end_turn", "max_tokens")
        assert message.usage.output_tokens <= 300
    # A cap is the length the caller expects: replies fit under it (`length_rate` runs into it).
    capped = client.messages.batches.create(requests=[req(0, max_tokens=3)])
    emu.control.advance(1)
    ended(client, capped.id)
    (only,) = results(client, capped.id).values()
    assert only.message.stop_reason == "end_turn" and only.message.usage.output_tokens < 3
    emu.control.set_config(length_rate=1.0)
    capped = client.messages.batches.create(requests=[req(1, max_tokens=3)])
    emu.control.advance(1)
    ended(client, capped.id)
    (only,) = results(client, capped.id).values()
    assert only.message.stop_reason == "max_tokens" and only.message.usage.output_tokens == 3
    emu.control.set_config(length_rate=0.01)

    # Deleting: not while processing; after cancel and end, yes.
    running_batch = client.messages.batches.create(requests=[req(1)])
    with pytest.raises(anthropic.BadRequestError) as info:
        client.messages.batches.delete(running_batch.id)
    assert info.value.body["error"]["type"] == "invalid_request_error"
    canceled = client.messages.batches.cancel(running_batch.id)
    assert canceled.cancel_initiated_at is not None
    assert ended(client, running_batch.id).request_counts.canceled == 1
    deleted = client.messages.batches.delete(running_batch.id)
    assert deleted.type == "message_batch_deleted" and deleted.id == running_batch.id
    with pytest.raises(anthropic.NotFoundError):
        client.messages.batches.retrieve(running_batch.id)
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.cancel(batch.id)  # ended

    # 29 virtual days after the end the results are archived.
    emu.control.advance(29 * DAY - 10)
    assert client.messages.batches.retrieve(batch.id).archived_at is None
    emu.control.advance(20)
    archived = client.messages.batches.retrieve(batch.id)
    assert archived.archived_at is not None
    assert (archived.archived_at - archived.ended_at).total_seconds() == 29 * DAY
    with pytest.raises(anthropic.NotFoundError):
        list(client.messages.batches.results(batch.id))


def test_list_pagination_newest_first(emu: RunningEmulator, client: anthropic.Anthropic) -> None:
    ids = [client.messages.batches.create(requests=[req(i)]).id for i in range(5)]
    newest_first = ids[::-1]
    page = client.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == newest_first[:2] and page.has_more
    assert page.first_id == newest_first[0] and page.last_id == newest_first[1]
    assert [b.id for b in client.messages.batches.list(limit=2)] == newest_first
    after = client.messages.batches.list(limit=2, after_id=newest_first[1])
    assert [b.id for b in after.data] == newest_first[2:4]
    before = client.messages.batches.list(limit=2, before_id=newest_first[3])
    assert [b.id for b in before.data] == newest_first[1:3] and before.has_more
    assert [b.id for b in client.messages.batches.list(before_id=newest_first[3])] == (
        newest_first[:3]
    )
    for bad in (0, 1001):
        with pytest.raises(anthropic.BadRequestError):
            client.messages.batches.list(limit=bad)
    foreign = emu.control.seed("anthropic", batches=2)["batches"]
    assert [b.id for b in client.messages.batches.list(limit=2).data] == foreign[::-1]


def _headers(key: str | None = KEY) -> dict[str, str]:
    headers = {"anthropic-version": "2023-06-01", "content-type": "application/json"}
    if key is not None:
        headers["x-api-key"] = key
    return headers


@pytest.mark.parametrize(
    ("requests", "needle"),
    [
        ([], "at least 1 item"),
        ([{"custom_id": "has space", "params": req(0)["params"]}], "custom_id"),
        ([{"custom_id": "x" * 65, "params": req(0)["params"]}], "custom_id"),
        ([req(0), req(0)], "Duplicate custom_id"),
        ([{"custom_id": "a"}], "params: Field required"),
        ([req(i) for i in range(4)], "at most 3 items"),
    ],
)
def test_envelope_errors_are_400(tmp_path: Path, requests: list[Any], needle: str) -> None:
    with running(tmp_path / "d", anthropic_max_requests=3, **FIXED) as emu:
        response = httpx2.post(
            f"{emu.url}/v1/messages/batches", json={"requests": requests}, headers=_headers()
        )
        assert response.status_code == 400
        body = response.json()
        assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"
        assert needle in body["error"]["message"]
        assert sdk(emu).messages.batches.list().data == []


def test_size_limit_key_and_version(tmp_path: Path) -> None:
    with running(tmp_path / "d", anthropic_max_batch_bytes=2_000, **FIXED) as emu:
        url = f"{emu.url}/v1/messages/batches"
        big = {"requests": [req(i) for i in range(40)]}
        response = httpx2.post(url, json=big, headers=_headers())
        assert response.status_code == 413
        assert response.json()["error"]["type"] == "request_too_large"
        response = httpx2.post(url, json={"requests": [req(0)]}, headers=_headers(None))
        assert response.status_code == 401
        assert response.json() == {
            "type": "error",
            "error": {"type": "authentication_error", "message": "x-api-key header is required"},
            "request_id": "req_emulator",
        }
        no_version = {"x-api-key": KEY}
        assert httpx2.post(url, json={"requests": [req(0)]}, headers=no_version).status_code == 400
        assert httpx2.get(f"{emu.url}/v1/messages/nope", headers=_headers()).json()["type"] == (
            "error"
        )
        assert KEY not in str(emu.control.calls())


def test_per_request_errors_are_errored_results(
    emu: RunningEmulator, client: anthropic.Anthropic
) -> None:
    requests = [
        req(0),
        req(1, max_tokens=None),
        req(2, model="claude-nonexistent-9"),
        req(3, messages=[]),
        req(4, max_tokens=0),
        req(5, stream=True),
        req(6),
    ]
    batch = client.messages.batches.create(requests=requests)
    emu.control.advance(1)
    final = ended(client, batch.id)
    counts = final.request_counts
    assert (counts.succeeded, counts.errored, counts.processing) == (2, 5, 0)
    got = results(client, batch.id)
    assert {k for k, r in got.items() if r.type == "succeeded"} == {"req-0", "req-6"}
    missing = got["req-1"].error
    assert missing.type == "error" and missing.request_id
    assert missing.error.type == "invalid_request_error"
    assert missing.error.message == "max_tokens: Field required"
    assert got["req-2"].error.error.type == "not_found_error"
    assert "claude-nonexistent-9" in got["req-2"].error.error.message


def test_cancel_and_expiry_leave_canceled_and_expired(tmp_path: Path) -> None:
    with running(tmp_path / "d", rate=1.0, cancelling_seconds=2.0, **FIXED) as emu:
        client = sdk(emu)
        batch = client.messages.batches.create(requests=[req(i) for i in range(10)])
        emu.control.advance(3)
        done(emu, batch.id, 3)
        middle = client.messages.batches.retrieve(batch.id)
        assert middle.request_counts.processing == 10, "counts move only when the batch ends"
        assert client.messages.batches.cancel(batch.id).processing_status == "canceling"
        assert client.messages.batches.cancel(batch.id).processing_status == "canceling"
        emu.control.advance(2)
        final = ended(client, batch.id)
        assert (final.request_counts.succeeded, final.request_counts.canceled) == (5, 5)
        kinds = [r.type for r in results(client, batch.id).values()]
        assert kinds.count("canceled") == 5 and len(kinds) == 10

        forced = client.messages.batches.create(requests=[req(i) for i in range(10)])
        emu.control.advance(4)
        done(emu, forced.id, 4)
        emu.control.expire(forced.id)
        assert ended(client, forced.id).request_counts.expired == 6

    with running(tmp_path / "slow", rate=0.0001, **FIXED) as emu:
        client = sdk(emu)
        batch = client.messages.batches.create(requests=[req(i) for i in range(10)])
        emu.control.advance(DAY + 100)
        final = ended(client, batch.id)
        assert (final.request_counts.succeeded, final.request_counts.expired) == (8, 2)
        assert sum(1 for r in results(client, batch.id).values() if r.type == "expired") == 2


def _cached(i: int, ttl: str | None = None) -> dict[str, Any]:
    control: dict[str, Any] = {"type": "ephemeral"} | ({"ttl": ttl} if ttl else {})
    system = [{"type": "text", "text": "You answer questions. " * 50, "cache_control": control}]
    return req(i, system=system)


def test_cache_usage(emu: RunningEmulator, client: anthropic.Anthropic) -> None:
    requests = [_cached(0), _cached(1), _cached(2, "1h"), req(3)]
    batch = client.messages.batches.create(requests=requests)
    emu.control.advance(1)
    ended(client, batch.id)
    got = {k: r.message.usage for k, r in results(client, batch.id).items()}
    first, second, hour, plain = got["req-0"], got["req-1"], got["req-2"], got["req-3"]
    prefix = first.cache_creation_input_tokens
    assert prefix > 100 and first.cache_read_input_tokens == 0
    assert first.cache_creation.ephemeral_5m_input_tokens == prefix
    assert first.cache_creation.ephemeral_1h_input_tokens == 0
    assert second.cache_read_input_tokens == prefix and second.cache_creation_input_tokens == 0
    assert second.input_tokens == first.input_tokens == plain.input_tokens
    assert hour.cache_creation.ephemeral_1h_input_tokens == prefix  # another prefix (ttl differs)
    assert plain.cache_creation_input_tokens == plain.cache_read_input_tokens == 0

    # Real time: the first call writes the prefix, the next one within 5 minutes reads it.
    params = _cached(9)["params"]
    write = client.messages.create(**params).usage
    read = client.messages.create(**params).usage
    assert write.cache_creation_input_tokens == prefix and write.service_tier == "standard"
    assert read.cache_read_input_tokens == prefix and read.cache_creation_input_tokens == 0
    emu.control.advance(301)
    assert client.messages.create(**params).usage.cache_read_input_tokens == 0
    assert client.messages.count_tokens(
        model=MODEL, messages=params["messages"], system=params["system"]
    ).input_tokens == (write.input_tokens + prefix)


def test_faults_and_list_lag(emu: RunningEmulator, client: anthropic.Anthropic) -> None:
    emu.control.add_fault("messages.batches.create", "500", mode="after", count=1)
    with pytest.raises(anthropic.InternalServerError) as info:
        client.messages.batches.create(requests=[req(0)])
    assert info.value.body["error"]["type"] == "api_error"
    assert len(client.messages.batches.list().data) == 1, "created although the call failed"

    emu.control.add_fault("messages.batches.create", "529", count=1)
    with pytest.raises(anthropic.APIStatusError) as overloaded:
        client.messages.batches.create(requests=[req(0)])
    assert overloaded.value.status_code == 529
    assert overloaded.value.body["error"]["type"] == "overloaded_error"
    assert len(client.messages.batches.list().data) == 1

    emu.control.add_fault("messages.batches.*", "429", retry_after=3, count=1, flavor="anthropic")
    with pytest.raises(anthropic.RateLimitError) as limited:
        client.messages.batches.list()
    assert limited.value.response.headers["retry-after"] == "3"

    old = client.messages.batches.list().data[0].id
    emu.control.advance(120)
    emu.control.add_fault("messages.batches.list", "list_lag", seconds=60)
    new = client.messages.batches.create(requests=[req(1)])
    assert [b.id for b in client.messages.batches.list().data] == [old]
    assert client.messages.batches.retrieve(new.id).id == new.id
    emu.control.advance(61)
    assert [b.id for b in client.messages.batches.list().data] == [new.id, old]

    emu.control.add_fault("messages.batches.results", "drop", count=1)
    with pytest.raises((httpx2.HTTPError, anthropic.APIConnectionError)):
        list(client.messages.batches.results(new.id))
    assert len(list(client.messages.batches.results(new.id))) == 1
    assert KEY not in str(emu.control.calls())


def test_models_answer_per_door(emu: RunningEmulator, client: anthropic.Anthropic) -> None:
    models = [m.id for m in client.models.list(limit=1000)]
    # Listed once, under the dated id; the alias is accepted and retrieves the dated model.
    assert MODEL not in models and "claude-haiku-4-5-20251001" in models
    assert all(m.startswith("claude") for m in models)
    assert [m.id for m in client.models.list(limit=3)] == models
    dated = client.models.retrieve(MODEL)
    assert dated.type == "model" and dated.id == "claude-haiku-4-5-20251001"
    assert dated.display_name == "Claude Haiku 4.5" and dated.max_input_tokens == 200_000
    with pytest.raises(anthropic.NotFoundError):
        client.models.retrieve("gpt-4o")
    oai = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
    assert "gpt-4o-mini" in [m.id for m in oai.models.list()]


def test_restart_mid_batch_gives_identical_results(tmp_path: Path) -> None:
    requests = [req(i) if i % 9 else req(i, max_tokens=None) for i in range(100)]
    fixed = FIXED | {"rate": 1.0, "request_failure_rate": 0.1}

    with running(tmp_path / "ref", **fixed) as emu:
        client = sdk(emu)
        batch_id = client.messages.batches.create(requests=requests).id
        emu.control.advance(1000)
        reference = ended(client, batch_id)
        expected = _raw_results(emu, batch_id)

    data = tmp_path / "restarted"
    with running(data, **fixed) as emu:
        assert sdk(emu).messages.batches.create(requests=requests).id == batch_id
        emu.control.advance(37)
        done(emu, batch_id, 37)
    with running(data, **fixed) as emu:
        client = sdk(emu)
        assert client.messages.batches.retrieve(batch_id).processing_status == "in_progress"
        assert emu.control.batch(batch_id)["progress"]["done"] == 37
        emu.control.advance(1000)
        resumed = ended(client, batch_id)
        assert resumed.request_counts == reference.request_counts
        assert resumed.request_counts.errored >= 11
        assert _raw_results(emu, batch_id) == expected


def _raw_results(emu: RunningEmulator, batch_id: str) -> bytes:
    url = f"{emu.url}/v1/messages/batches/{batch_id}/results"
    return httpx2.get(url, headers=_headers() | {"accept": "application/binary"}).content
