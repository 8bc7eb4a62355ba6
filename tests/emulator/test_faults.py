"""Every fault mode of the control API, seen through the official SDK."""

from __future__ import annotations

import time

import httpx2
import openai
import pytest

from emu_helpers import chat_line, read_jsonl, upload, wait
from llmbatch.emulator import RunningEmulator, running

ENDPOINT = "/v1/chat/completions"


def create(client: openai.OpenAI, file_id: str) -> openai.types.Batch:
    return client.batches.create(input_file_id=file_id, endpoint=ENDPOINT, completion_window="24h")


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_error_before_does_nothing(
    emu: RunningEmulator, client: openai.OpenAI, status: int
) -> None:
    f = upload(client, [chat_line(0)])
    emu.control.add_fault("batches.create", str(status), count=1)
    with pytest.raises(openai.APIStatusError) as info:
        create(client, f.id)
    assert info.value.status_code == status
    assert client.batches.list().data == []
    assert create(client, f.id).status == "validating"  # the rule retired after one hit


def test_server_error_after_creates_the_batch_anyway(
    emu: RunningEmulator, client: openai.OpenAI
) -> None:
    f = upload(client, [chat_line(0)])
    emu.control.add_fault("batches.create", "500", mode="after", count=1)
    with pytest.raises(openai.InternalServerError):
        create(client, f.id)
    assert len(client.batches.list().data) == 1, "the batch exists although the call failed"

    emu.control.add_fault("files.create", "503", mode="after", count=1)
    with pytest.raises(openai.APIStatusError):
        upload(client, [chat_line(1)])
    assert len(client.files.list(purpose="batch").data) == 2


def test_sdk_retry_after_an_after_fault_makes_a_duplicate(emu: RunningEmulator) -> None:
    retrying = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=1)
    f = upload(retrying, [chat_line(0)])
    emu.control.add_fault("batches.create", "502", mode="after", count=1)
    create(retrying, f.id)
    assert len(retrying.batches.list().data) == 2


def test_429_sends_retry_after_in_real_seconds(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.add_fault("batches.list", "429", retry_after=7, count=1)
    with pytest.raises(openai.RateLimitError) as info:
        client.batches.list()
    assert info.value.response.headers["retry-after"] == "7"
    emu.control.add_fault("batches.list", "429", retry_after=0.05, count=1)
    retrying = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=1)
    since = emu.control.calls()[-1]["seq"]
    retrying.batches.list()
    assert [c["status"] for c in emu.control.calls(since)] == [429, 200]


def test_latency(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.add_fault("files.list", "latency", seconds=0.3, count=1)
    start = time.monotonic()
    client.files.list()
    assert time.monotonic() - start >= 0.3
    start = time.monotonic()
    client.files.list()
    assert time.monotonic() - start < 0.3


def test_slow_before_acting_a_client_that_gives_up_still_creates(
    emu: RunningEmulator, client: openai.OpenAI
) -> None:
    """`delay_before` holds the call before the work: a client that times out meanwhile
    has not stopped the create, which acts after it left, and the call log says when the
    call arrived, when it was answered, and which batch it made."""
    f = upload(client, [chat_line(0)])
    emu.control.add_fault(
        "batches.create", "latency", mode="after", seconds=0.01, delay_before=0.6, count=1
    )
    impatient = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0, timeout=0.2)
    with pytest.raises(openai.APITimeoutError):
        create(impatient, f.id)
    assert client.batches.list().data == [], "not created yet: the call is still held"
    deadline = time.monotonic() + 10
    while not client.batches.list().data:
        assert time.monotonic() < deadline, "the held create never acted"
        time.sleep(0.05)
    (made,) = client.batches.list().data
    (call,) = [
        c for c in emu.control.calls() if c["method"] == "POST" and c["path"] == "/v1/batches"
    ]
    assert call["made"] == made.id and call["status"] == 200
    assert call["at"] - call["started"] >= 0.6
    uploads = [c for c in emu.control.calls() if c["method"] == "POST" and c["path"] == "/v1/files"]
    assert [c["made"] for c in uploads] == [f.id]


def test_call_log_names_what_a_failed_create_made(
    emu: RunningEmulator, client: openai.OpenAI
) -> None:
    f = upload(client, [chat_line(0)])
    emu.control.add_fault("batches.create", "500", mode="after", count=1)
    with pytest.raises(openai.InternalServerError):
        create(client, f.id)
    emu.control.add_fault("batches.create", "503", count=1)
    with pytest.raises(openai.APIStatusError):
        create(client, f.id)
    (made,) = client.batches.list().data
    creates = [
        c for c in emu.control.calls() if c["method"] == "POST" and c["path"] == "/v1/batches"
    ]
    assert [(c["status"], c["made"]) for c in creates] == [(500, made.id), (503, None)]


def test_delay_before_is_checked(emu: RunningEmulator) -> None:
    with pytest.raises(Exception, match="delay_before"):
        emu.control.add_fault("batches.create", "500", delay_before=-1)


def test_connection_dropped_mid_download(
    emu: RunningEmulator, client: openai.OpenAI, tmp_path
) -> None:
    done = wait(client, create(client, upload(client, [chat_line(i) for i in range(300)]).id).id)
    size = client.files.retrieve(done.output_file_id).bytes
    emu.control.add_fault("files.content", "drop", count=1)
    received = bytearray()
    with (
        pytest.raises((httpx2.HTTPError, openai.APIConnectionError)),
        client.files.with_streaming_response.content(done.output_file_id) as response,
    ):
        for chunk in response.iter_bytes():
            received.extend(chunk)
    assert 0 < len(received) < size
    assert len(client.files.content(done.output_file_id).content) == size


def test_drop_after_batch_create(emu: RunningEmulator, client: openai.OpenAI) -> None:
    f = upload(client, [chat_line(0)])
    emu.control.add_fault("batches.create", "drop", mode="after", count=1)
    with pytest.raises(openai.APIConnectionError):
        create(client, f.id)
    assert len(client.batches.list().data) == 1


def test_list_lag_hides_new_batches(emu: RunningEmulator, client: openai.OpenAI) -> None:
    f = upload(client, [chat_line(0)])
    old = create(client, f.id)
    emu.control.advance(120)
    emu.control.add_fault("batches.list", "list_lag", seconds=60)
    new = create(client, f.id)
    assert [b.id for b in client.batches.list().data] == [old.id]
    assert client.batches.retrieve(new.id).id == new.id
    emu.control.advance(61)
    assert [b.id for b in client.batches.list().data] == [new.id, old.id]


def test_fault_rate_and_flavor_filter(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.add_fault("files.*", "500", rate=0.5, flavor="openai")
    outcomes = []
    for _ in range(40):
        try:
            client.files.list()
            outcomes.append(True)
        except openai.InternalServerError:
            outcomes.append(False)
    assert 5 < outcomes.count(False) < 35
    azure = openai.AzureOpenAI(
        azure_endpoint=emu.url, api_key="k", api_version="2024-10-21", max_retries=0
    )
    for _ in range(10):
        azure.files.list()
    emu.control.clear_faults()
    assert emu.control.faults() == []


def test_per_request_failure_rate(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.set_config(request_failure_rate=0.3, request_failure_status=503)
    lines = [chat_line(i) for i in range(60)]
    first = wait(client, create(client, upload(client, lines).id).id)
    second = wait(client, create(client, upload(client, lines).id).id)
    assert 5 < first.request_counts.failed < 40
    # The dice depend on the batch, so a failed request can succeed when resubmitted.
    failed = sorted(e["custom_id"] for e in read_jsonl(client, first.error_file_id))
    assert failed != sorted(e["custom_id"] for e in read_jsonl(client, second.error_file_id))
    assert read_jsonl(client, first.error_file_id)[0]["response"]["status_code"] == 503


def test_forced_validation_failure(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.next_batches(
        fail_validation={
            "code": "invalid_json_line",
            "message": "Line 4512 is not JSON.",
            "line": 4512,
        }
    )
    failed = wait(client, create(client, upload(client, [chat_line(0)]).id).id)
    assert failed.status == "failed"
    assert [(e.code, e.line, e.message) for e in failed.errors.data] == [
        ("invalid_json_line", 4512, "Line 4512 is not JSON.")
    ]
    emu.control.next_batches(hold="validating")
    held = create(client, upload(client, [chat_line(0)]).id)
    time.sleep(0.1)
    assert client.batches.retrieve(held.id).status == "validating"
    emu.control.fail(held.id, "model_not_found", line=1)
    failed = wait(client, held.id)
    assert [(e.code, e.line) for e in failed.errors.data] == [("model_not_found", 1)]
    with pytest.raises(Exception, match="409"):
        emu.control.fail(held.id, "x")


def test_a_reset_forgets_the_directives_no_batch_took(
    emu: RunningEmulator, client: openai.OpenAI
) -> None:
    """A hold set for a batch that was never created (an Anthropic create takes none) held
    the next test's batch after `reset` (the provider contract suite, azure, on one module
    emulator): a reset forgets it as it forgets faults."""
    emu.control.next_batches(hold="validating")
    emu.control.reset()
    batch = create(client, upload(client, [chat_line(0)]).id)
    assert wait(client, batch.id).status == "completed"


def test_hold_in_finalizing_then_release(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.next_batches(hold="finalizing")
    batch = create(client, upload(client, [chat_line(i) for i in range(3)]).id)
    batch = wait(client, batch.id, ("finalizing",))
    time.sleep(0.1)
    batch = client.batches.retrieve(batch.id)
    assert (
        batch.status == "finalizing"
        and batch.request_counts.completed == 3
        and batch.output_file_id is None
    )
    emu.control.release(batch.id)
    assert wait(client, batch.id).status == "completed"


def test_expiry_on_the_virtual_clock(tmp_path) -> None:
    with running(tmp_path, time_scale=0.0, rate=0.001) as emu:  # one request per 1000 virtual s
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        batch = create(client, upload(client, [chat_line(i) for i in range(200)]).id)
        wait(client, batch.id, ("in_progress",))
        emu.control.advance(86_400 + 5)  # a day: 86 requests run, the rest expire
        done = wait(client, batch.id)
        assert done.status == "expired" and done.expired_at >= done.expires_at
        outputs = read_jsonl(client, done.output_file_id)
        unrun = read_jsonl(client, done.error_file_id)
        assert len(outputs) == 86 and len(unrun) == 114
        assert {u["error"]["code"] for u in unrun} == {"batch_expired"}
        assert {o["custom_id"] for o in outputs}.isdisjoint(u["custom_id"] for u in unrun)


def test_forced_expiry_and_cancel_via_control(emu: RunningEmulator, client: openai.OpenAI) -> None:
    emu.control.set_config(rate=20.0)
    batch = create(client, upload(client, [chat_line(i) for i in range(100)]).id)
    wait(client, batch.id, ("in_progress",))
    emu.control.expire(batch.id)
    done = wait(client, batch.id)
    assert done.status == "expired"
    assert len(read_jsonl(client, done.error_file_id)) + (done.request_counts.completed) == 100
    other = create(client, upload(client, [chat_line(i) for i in range(100)]).id)
    wait(client, other.id, ("in_progress",))
    emu.control.cancel(other.id)
    assert wait(client, other.id).status == "cancelled"


def test_cancelling_lingers_on_the_virtual_clock(tmp_path) -> None:
    with running(tmp_path, time_scale=0.0, rate=1.0, cancelling_seconds=600) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        batch = create(client, upload(client, [chat_line(i) for i in range(10)]).id)
        wait(client, batch.id, ("in_progress",))
        client.batches.cancel(batch.id)
        time.sleep(0.1)
        assert client.batches.retrieve(batch.id).status == "cancelling"
        assert client.batches.cancel(batch.id).status == "cancelling"  # idempotent
        emu.control.advance(601)
        assert wait(client, batch.id).status == "cancelled"


def test_seed_foreign_objects(emu: RunningEmulator, client: openai.OpenAI) -> None:
    seeded = emu.control.seed(files=3, batches=2)
    assert len(seeded["files"]) == 3 and len(seeded["batches"]) == 2
    batches = client.batches.list().data
    assert {b.id for b in batches} == set(seeded["batches"])
    assert all(b.metadata == {"owner": "another-app"} for b in batches)
    assert len(client.files.list(purpose="batch").data) == 5
    for batch_id in seeded["batches"]:
        assert wait(client, batch_id).status == "completed"
    emu.control.seed(flavor="azure", batches=1)
    assert len(client.batches.list().data) == 2, "azure objects stay on the azure side"


def test_faults_and_settings_survive_restart(tmp_path) -> None:
    with running(tmp_path) as emu:
        emu.control.add_fault("files.list", "503")
        emu.control.set_config(length_rate=0.5)
    with running(tmp_path) as emu:
        assert emu.control.faults()[0]["kind"] == "503"
        assert emu.control.config()["length_rate"] == 0.5
        emu.control.reset()
        assert emu.control.faults() == []
