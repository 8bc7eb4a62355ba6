"""The Gemini door under the control API: faults as the SDK sees them, list lag, the call log
without keys, the OpenAI door on the same `/v1` paths, and restarts (batches and upload
sessions carry on where they were, byte for byte)."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path
from typing import Any

import httpx
import httpx2
import openai
import pytest
from gemini_helpers import (
    FIXED,
    KEY,
    MODEL,
    bid,
    inline,
    lines,
    raw,
    sdk,
    upload,
    wait,
)
from google import genai
from google.genai import errors

from llmbatch.emulator import ControlError, RunningEmulator, running


@pytest.fixture
def emu(tmp_path: Path) -> Any:
    with running(tmp_path / "data", **FIXED) as e:
        yield e


def test_faults_surface_as_sdk_errors(emu: RunningEmulator) -> None:
    client = sdk(emu)
    ctl = emu.control

    # Created, then the answer fails: the batch exists though the SDK raised.
    ctl.add_fault("batches.create", "500", mode="after", count=1, flavor="gemini")
    with pytest.raises(errors.ServerError) as server:
        client.batches.create(model=MODEL, src=[inline(0)], config={"display_name": "ghost"})
    assert server.value.code == 500 and server.value.status == "INTERNAL"
    assert [job.display_name for job in client.batches.list()] == ["ghost"]

    # A failed data call ends the upload at once (x-goog-upload-status on the error).
    ctl.add_fault("files.upload", "503", count=1)
    started = time.monotonic()
    with pytest.raises(errors.ServerError) as unavailable:
        upload(client, lines(3))
    assert unavailable.value.code == 503 and time.monotonic() - started < 0.9
    assert list(client.files.list()) == []

    ctl.add_fault("files.create", "401", count=1, flavor="gemini")
    with pytest.raises(errors.ClientError) as bad_key:
        upload(client, lines(3))
    assert bad_key.value.code == 400 and bad_key.value.status == "INVALID_ARGUMENT"
    assert bad_key.value.details["error"]["details"][0]["reason"] == "API_KEY_INVALID"

    job = client.batches.create(model=MODEL, src=upload(client, lines(4)).name or "")
    ctl.add_fault("batches.get", "429", retry_after=7, count=1)
    with pytest.raises(errors.ClientError) as limited:
        client.batches.get(name=job.name or "")
    assert limited.value.code == 429 and limited.value.status == "RESOURCE_EXHAUSTED"
    retry = limited.value.details["error"]["details"][0]
    assert retry["@type"].endswith("RetryInfo") and retry["retryDelay"] == "7s"

    ctl.add_fault("batches.get", "502_html", count=1)
    with pytest.raises(errors.ServerError) as html:
        client.batches.get(name=job.name or "")
    assert html.value.code == 502 and "Bad Gateway" in str(html.value.details)

    ctl.advance(1)
    done = wait(client, job.name or "")
    ctl.add_fault("batches.get", "no_output_file", count=1)
    assert client.batches.get(name=job.name or "").dest is None
    assert done.dest is not None and done.dest.file_name
    name = done.dest.file_name
    whole = client.files.download(file=name)
    ctl.add_fault("files.download", "truncate", count=1)
    assert client.files.download(file=name) == whole[: len(whole) // 2]
    ctl.add_fault("files.download", "foreign_line", count=1)
    foreign = client.files.download(file=name).splitlines()
    assert len(foreign[0]) == len(whole.splitlines()[0])
    assert json.loads(foreign[0])["key"] == "zzzzz"
    ctl.add_fault("files.download", "drop", count=1)
    with pytest.raises((httpx.HTTPError, httpx2.HTTPError)):  # the SDK's transport error
        client.files.download(file=name)
    assert client.files.download(file=name) == whole


def test_list_lag_hides_new_batches(emu: RunningEmulator) -> None:
    client = sdk(emu)
    old = client.batches.create(model=MODEL, src=[inline(0)])
    emu.control.advance(100)
    emu.control.add_fault("batches.list", "list_lag", seconds=60, flavor="gemini")
    new = client.batches.create(model=MODEL, src=[inline(1)])
    assert [job.name for job in client.batches.list()] == [old.name]
    assert client.batches.get(name=new.name or "").name == new.name  # get is not lagged
    emu.control.advance(61)
    assert [job.name for job in client.batches.list()] == [new.name, old.name]


def test_keys_never_logged_and_openai_shares_v1(emu: RunningEmulator) -> None:
    client = sdk(emu)
    job = client.batches.create(model=MODEL, src=upload(client, lines(2)).name or "")
    by_query = httpx.get(f"{emu.url}/v1/batches", params={"key": KEY, "pageSize": 5})
    assert by_query.status_code == 200 and by_query.json()["operations"][0]["name"] == job.name
    calls = emu.control.calls()
    assert calls[-1]["query"] == "pageSize=5"
    assert {c["status"] for c in calls} == {200}
    emu.control.advance(1)
    wait(client, job.name or "")

    oai = openai.OpenAI(base_url=emu.base_url, api_key="sk-openai", max_retries=0)
    assert oai.batches.list().data == [] and oai.files.list().data == []
    up = oai.files.create(file=("x.jsonl", io.BytesIO(b"{}\n")), purpose="batch")
    assert oai.files.retrieve(up.id).id == up.id
    assert all(f.name != f"files/{up.id}" for f in client.files.list())
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve(bid(job))

    for path in emu.data_dir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def _results(emu: RunningEmulator, client: genai.Client, names: list[str]) -> list[bytes]:
    out = []
    for name in names:
        job = wait(client, name)
        if job.dest is not None and job.dest.file_name:
            out.append(client.files.download(file=job.dest.file_name))
        else:  # inline: the responses (the Operation's timestamps differ between runs)
            output = raw(emu, "GET", f"/v1/{name}").json()["metadata"]["output"]
            out.append(json.dumps(output).encode())
    return out


@pytest.mark.slow
def test_restart_mid_batch_gives_identical_results(tmp_path: Path) -> None:
    fixed = FIXED | {"rate": 1.0, "request_failure_rate": 0.1}

    def submit(client: genai.Client) -> list[str]:
        file_job = client.batches.create(model=MODEL, src=upload(client, lines(60)).name or "")
        inline_job = client.batches.create(model=MODEL, src=[inline(i) for i in range(40)])
        return [file_job.name or "", inline_job.name or ""]

    with running(tmp_path / "ref", **fixed) as emu:
        client = sdk(emu)
        names = submit(client)
        emu.control.advance(100)
        expected = _results(emu, client, names)

    data = tmp_path / "restarted"
    with running(data, **fixed) as emu:
        client = sdk(emu)
        assert submit(client) == names
        for name in names:
            wait(client, name, "JOB_STATE_RUNNING")
        emu.control.advance(25)
        for name in names:
            deadline = time.monotonic() + 10
            while emu.control.batch(name.split("/")[1])["progress"]["done"] < 25:
                assert time.monotonic() < deadline
                time.sleep(0.01)
    for name in names:  # a crash left bytes after the saved progress
        with (data / "work" / f"{name.split('/')[1]}.out").open("ab") as f:
            f.write(b'{"key": "half a line')
    with running(data, **fixed) as emu:
        client = sdk(emu)
        assert [client.batches.get(name=n).state for n in names] == ["JOB_STATE_RUNNING"] * 2
        emu.control.advance(100)
        assert _results(emu, client, names) == expected


def test_upload_session_survives_a_restart(tmp_path: Path) -> None:
    data = lines(5)
    headers = {
        "x-goog-upload-protocol": "resumable",
        "x-goog-upload-command": "start",
        "x-goog-upload-header-content-length": str(len(data)),
        "x-goog-upload-header-content-type": "application/jsonl",
    }
    with running(tmp_path / "d", **FIXED) as emu:
        start = raw(emu, "POST", "/upload/v1beta/files", headers=headers, json={"file": {}})
        url = start.headers["x-goog-upload-url"]
        assert url.startswith(emu.url + "/upload/v1beta/files?upload_id=")
        cut = 100
        first = httpx.post(
            url,
            content=data[:cut],
            headers={"x-goog-upload-command": "upload", "x-goog-upload-offset": "0"},
        )
        assert first.headers["x-goog-upload-status"] == "active"
        wrong = httpx.post(
            url,
            content=b"xx",
            headers={"x-goog-upload-command": "upload", "x-goog-upload-offset": "7"},
        )
        assert wrong.status_code == 400 and wrong.headers["x-goog-upload-status"] == "final"
        port = emu.url.rsplit(":", 1)[1]
    with running(tmp_path / "d", **FIXED) as emu:
        url = url.replace(port, emu.url.rsplit(":", 1)[1])
        query = httpx.post(url, headers={"x-goog-upload-command": "query"})
        assert query.headers["x-goog-upload-size-received"] == str(cut)
        final = httpx.post(
            url,
            content=data[cut:],
            headers={"x-goog-upload-command": "upload, finalize", "x-goog-upload-offset": str(cut)},
        )
        assert final.headers["x-goog-upload-status"] == "final"
        name = final.json()["file"]["name"]
        client = sdk(emu)
        job = client.batches.create(model=MODEL, src=name)
        emu.control.advance(1)
        assert wait(client, job.name or "").state == "JOB_STATE_SUCCEEDED"
        stats = raw(emu, "GET", f"/v1/{job.name}").json()["metadata"]["batchStats"]
        assert stats["successfulRequestCount"] == "5"


def test_control_actions_on_gemini_batches(emu: RunningEmulator) -> None:
    client = sdk(emu)
    ctl = emu.control
    ctl.next_batches(hold="validating", fail_validation={"code": "x", "message": "no thanks"})
    refused = client.batches.create(model=MODEL, src=[inline(0)])
    assert client.batches.get(name=refused.name or "").state == "JOB_STATE_PENDING"
    ctl.release(bid(refused))
    assert wait(client, refused.name or "").state == "JOB_STATE_FAILED"
    assert raw(emu, "GET", f"/v1/{refused.name}").json()["error"]["message"] == "no thanks"

    ctl.next_batches(hold="validating")
    held = client.batches.create(model=MODEL, src=[inline(1)])
    ctl.hold(bid(held), "finalizing")
    ctl.release(bid(held))
    ctl.hold(bid(held), "finalizing")
    ctl.advance(1)
    deadline = time.monotonic() + 10
    while ctl.batch(bid(held))["progress"]["done"] < 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert client.batches.get(name=held.name or "").state == "JOB_STATE_RUNNING"
    ctl.release(bid(held))
    assert wait(client, held.name or "").state == "JOB_STATE_SUCCEEDED"
    assert ctl.wait(bid(held))["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    with pytest.raises(ControlError) as info:
        ctl.expire(bid(held))
    assert info.value.status == 409

    ctl.next_batches(hold="validating")
    doomed = client.batches.create(model=MODEL, src=[inline(2)])
    ctl.expire(bid(doomed))
    assert wait(client, doomed.name or "").state == "JOB_STATE_EXPIRED"
    ctl.next_batches(hold="validating")
    stopped = client.batches.create(model=MODEL, src=[inline(3)])
    ctl.cancel(bid(stopped))
    assert wait(client, stopped.name or "").state == "JOB_STATE_CANCELLED"
