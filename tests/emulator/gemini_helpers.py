"""Helpers of the Gemini door's tests: the official SDK pointed at an emulator, request
lines, polling on the virtual clock."""

from __future__ import annotations

import io
import json
import time
from typing import Any

import httpx
from google import genai
from google.genai import types

from llmbatch.emulator import RunningEmulator

KEY = "gemini-test-secret-key"
MODEL = "gemini-2.5-flash"
HOUR = 3600
FIXED: dict[str, Any] = {"seed": 11, "clock_start": 1_800_000_000, "time_scale": 0.0}
ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")


def request(i: int, **config: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": f"Question number {i}: why?"}]}]
    }
    if config:
        body["generation_config"] = config
    return body


def lines(n: int, **config: Any) -> bytes:
    return b"".join(
        json.dumps({"key": f"req-{i}", "request": request(i, **config)}).encode() + b"\n"
        for i in range(n)
    )


def sdk(emu: RunningEmulator, **options: Any) -> genai.Client:
    return genai.Client(api_key=KEY, http_options={"base_url": emu.url, **options})


def upload(client: genai.Client, data: bytes, name: str = "input") -> types.File:
    config = {"mime_type": "application/jsonl", "display_name": name}
    return client.files.upload(file=io.BytesIO(data), config=config)


def inline(i: int, **config: Any) -> dict[str, Any]:
    item: dict[str, Any] = {
        "contents": [{"role": "user", "parts": [{"text": f"Inline question {i}?"}]}],
        "metadata": {"key": f"in-{i}"},
    }
    if config:
        item["config"] = config
    return item


def wait(client: genai.Client, name: str, *states: str, timeout: float = 10) -> types.BatchJob:
    wanted = states or ENDED
    deadline = time.monotonic() + timeout
    while True:
        job = client.batches.get(name=name)
        assert job.state is not None
        if job.state.name in wanted:
            return job
        assert time.monotonic() < deadline, f"{name} stuck in {job.state}"
        time.sleep(0.01)


def raw(emu: RunningEmulator, method: str, path: str, **kw: Any) -> httpx.Response:
    headers = {"x-goog-api-key": KEY} | kw.pop("headers", {})
    return httpx.request(method, emu.url + path, headers=headers, **kw)


def bid(job: types.BatchJob) -> str:
    assert job.name is not None
    return job.name.removeprefix("batches/")
