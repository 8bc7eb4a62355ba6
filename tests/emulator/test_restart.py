"""A restart mid-batch loses nothing: the batch resumes and writes the same results it
would have written without the restart."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from emu_helpers import chat_line, upload, wait
from helpers import free_port
from llmbatch.emulator import EmulatorControl, running

FIXED = {"seed": 9, "clock_start": 1_800_000_000, "time_scale": 0.0, "rate": 1.0}
LINES = [chat_line(i, max_tokens=20) for i in range(100)]


def _start(client: openai.OpenAI) -> str:
    f = upload(client, LINES)
    return client.batches.create(
        input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
    ).id


def _files(client: openai.OpenAI, batch: Any) -> tuple[bytes, bytes]:
    out = client.files.content(batch.output_file_id).content
    err = client.files.content(batch.error_file_id).content if batch.error_file_id else b""
    return out, err


def test_graceful_restart_resumes_with_identical_results(tmp_path: Path) -> None:
    with running(tmp_path / "ref", request_failure_rate=0.1, **FIXED) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        batch_id = _start(client)
        wait(client, batch_id, ("in_progress",))
        emu.control.advance(1000)
        reference = wait(client, batch_id)
        expected = _files(client, reference)

    data = tmp_path / "restarted"
    with running(data, request_failure_rate=0.1, **FIXED) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        assert _start(client) == batch_id
        wait(client, batch_id, ("in_progress",))
        emu.control.advance(37)
        deadline = time.monotonic() + 10
        while (
            client.batches.retrieve(batch_id).request_counts.completed
            + client.batches.retrieve(batch_id).request_counts.failed
            < 37
        ):
            assert time.monotonic() < deadline
    with running(data, request_failure_rate=0.1, **FIXED) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
        midway = client.batches.retrieve(batch_id)
        assert midway.status == "in_progress"
        assert midway.request_counts.completed + midway.request_counts.failed == 37
        emu.control.advance(1000)
        resumed = wait(client, batch_id)
        assert resumed.request_counts == reference.request_counts
        assert resumed.usage == reference.usage
        assert _files(client, resumed) == expected


def _serve(data: Path, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmbatch.emulator",
            "--port",
            str(port),
            "--data-dir",
            str(data),
            "--seed",
            "5",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    control = EmulatorControl(f"http://127.0.0.1:{port}", timeout=2)
    deadline = time.monotonic() + 20
    while True:
        try:
            control.call("GET", "/health")
            return process
        except OSError:
            assert time.monotonic() < deadline and process.poll() is None, "emulator did not start"
            time.sleep(0.05)


def _normalised(raw: bytes) -> list[dict[str, Any]]:
    lines = [json.loads(x) for x in raw.splitlines()]
    for line in lines:
        if line["response"]:
            line["response"]["body"].pop("created", None)
    return lines


@pytest.mark.slow
def test_sigkill_mid_batch_loses_nothing(tmp_path: Path) -> None:
    lines = [chat_line(i) for i in range(3000)]

    def run(data: Path, kill_after: int | None) -> tuple[bytes, bytes]:
        port = free_port()
        process = _serve(data, port)
        try:
            control = EmulatorControl(f"http://127.0.0.1:{port}")
            control.set_config(rate=2000.0, request_failure_rate=0.05)
            client = openai.OpenAI(
                base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0
            )
            f = upload(client, lines)
            batch_id = client.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
            if kill_after is not None:
                deadline = time.monotonic() + 20
                while (control.batch(batch_id)["progress"]["done"] or 0) < kill_after:
                    assert time.monotonic() < deadline
                    time.sleep(0.01)
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
                process = _serve(data, port)
                client = openai.OpenAI(
                    base_url=f"http://127.0.0.1:{port}/v1", api_key="k", max_retries=0
                )
                # resumed where it was (a slow restart may let it finish before we look)
                assert client.batches.retrieve(batch_id).status in (
                    "in_progress",
                    "finalizing",
                    "completed",
                )
            done = wait(client, batch_id)
            assert done.status == "completed" and done.request_counts.total == 3000
            assert done.request_counts.completed + done.request_counts.failed == 3000
            return _files(client, done)
        finally:
            process.kill()
            process.wait()

    expected = run(tmp_path / "ref", None)
    got = run(tmp_path / "killed", 700)
    assert _normalised(got[0]) == _normalised(expected[0])
    assert _normalised(got[1]) == _normalised(expected[1])
    ids = [x["custom_id"] for x in _normalised(got[0]) + _normalised(got[1])]
    assert len(ids) == len(set(ids)) == 3000


def test_a_batch_validated_without_prompt_counts_still_runs_the_same(tmp_path: Path) -> None:
    """Validation keeps each line's prompt tokens beside the index (`.tok`) for the worker;
    a batch validated by an emulator that kept none (an older data dir) counts them again
    and writes the same results."""
    results = []
    for name in ("kept", "dropped"):
        data = tmp_path / name
        with running(data, request_failure_rate=0.1, **FIXED) as emu:
            client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
            batch_id = _start(client)
            wait(client, batch_id, ("in_progress",))
            counted = data / "work" / f"{batch_id}.tok"
            assert counted.stat().st_size == 4 * len(LINES)
            if name == "dropped":
                counted.unlink()
            emu.control.advance(1000)
            done = wait(client, batch_id)
            assert not counted.exists()
            results.append((done.request_counts, done.usage, _files(client, done)))
    assert results[0] == results[1]


def test_a_batch_validated_without_prepared_lines_still_runs_the_same(tmp_path: Path) -> None:
    """Validation keeps what the worker needs of each plain chat line (`.pre`, `.prx`:
    prepared.py) so it parses no JSON; a batch validated by an emulator that kept none of
    that, nor the prompt counts, reads and answers every line in full, with the same
    results, plain lines and the others (tools, several choices, bad caps) alike."""
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    lines = [
        chat_line(i, **extra)
        for i, extra in enumerate(
            [
                {},
                {"max_tokens": 7},
                {"max_completion_tokens": 30, "temperature": 0},
                {"n": 2},
                {"tools": tools},
                {"max_tokens": 10_000_000},
                {"max_tokens": "5"},
                {"n": 9},
                {"messages": []},
                {"response_format": {"type": "text"}, "max_tokens": 3},
            ]
            * 5
        )
    ]
    for i, line in enumerate(lines[::7]):
        line["custom_id"] = f'odd "id" \\ {i} \u2028 ü'
    results = []
    for name in ("kept", "dropped"):
        data = tmp_path / name
        with running(data, request_failure_rate=0.1, length_rate=0.2, **FIXED) as emu:
            client = openai.OpenAI(base_url=emu.base_url, api_key="k", max_retries=0)
            f = upload(client, lines)
            batch_id = client.batches.create(
                input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
            ).id
            wait(client, batch_id, ("in_progress",))
            kept = [data / "work" / f"{batch_id}.{suffix}" for suffix in ("pre", "prx", "tok")]
            assert all(p.exists() for p in kept)
            if name == "dropped":
                for p in kept:
                    p.unlink()
            emu.control.advance(1000)
            done = wait(client, batch_id)
            assert not any(p.exists() for p in kept)
            results.append((done.request_counts, done.usage, _files(client, done)))
    assert results[0] == results[1]
    assert results[0][0].completed > 0 and results[0][0].failed > 0
