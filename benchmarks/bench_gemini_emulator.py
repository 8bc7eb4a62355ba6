"""The emulator's Gemini door, driven through the official `google-genai` SDK against the
emulator running as a separate process (`python -m llmbatch.emulator`); the same requests
through the `openai` SDK's door in the same run, for comparison. Prints one JSON line.

Figures:
- end to end, each door: upload an N-request file from a path, create, poll, download the
  results to disk (Gemini: `files.download(destination=...)`);
- get and list p99 on the Gemini door while an N-request batch is processing;
- the emulator's peak RSS once both doors have run.

    python benchmarks/bench_gemini_emulator.py                 # 50,000 requests
    python benchmarks/bench_gemini_emulator.py --small         # CI: 2,000 requests
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import openai
from google import genai
from google.genai import types

from bench_emulator import free_port, peak_rss_mb, wait_done
from llmbatch.emulator import EmulatorControl

MODEL = "gemini-2.5-flash-lite"
ENDED = ("JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_CANCELLED", "JOB_STATE_EXPIRED")
SYSTEM = "You are a concise assistant. " * 3
FILLER = "Summarise the following product review in one short sentence, keeping its tone. "


def write_inputs(gemini: Path, openai_path: Path, n: int) -> int:
    """The same n requests in each door's line format (~500 bytes each)."""
    with gemini.open("w") as g, openai_path.open("w") as o:
        for i in range(n):
            review = f"Review {i}: " + FILLER * 3
            request = {
                "system_instruction": {"parts": [{"text": SYSTEM}]},
                "contents": [{"role": "user", "parts": [{"text": review}]}],
                "generation_config": {"max_output_tokens": 64},
            }
            g.write(json.dumps({"key": f"r-{i}", "request": request}) + "\n")
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": review},
            ]
            body = {"model": "gpt-4o-mini", "max_tokens": 64, "messages": messages}
            line = {"custom_id": f"r-{i}", "method": "POST", "url": "/v1/chat/completions"}
            o.write(json.dumps(line | {"body": body}) + "\n")
    return gemini.stat().st_size


def wait_job(client: genai.Client, name: str, interval: float = 0.05) -> types.BatchJob:
    while True:
        job = client.batches.get(name=name)
        if job.state is not None and job.state.name in ENDED:
            return job
        time.sleep(interval)


def gemini_run(client: genai.Client, path: Path, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    uploaded = client.files.upload(file=path, config={"mime_type": "application/jsonl"})
    t1 = time.perf_counter()
    job = client.batches.create(model=MODEL, src=uploaded.name or "", config={"display_name": "b"})
    done = wait_job(client, job.name or "")
    t2 = time.perf_counter()
    assert done.state == "JOB_STATE_SUCCEEDED" and done.dest is not None, done
    client.files.download(file=done.dest.file_name or "", destination=str(out))
    t3 = time.perf_counter()
    return {
        "e2e_seconds": round(t3 - t0, 3),
        "upload_seconds": round(t1 - t0, 3),
        "process_seconds": round(t2 - t1, 3),
        "download_seconds": round(t3 - t2, 3),
    }


def openai_run(client: openai.OpenAI, path: Path, out: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    with path.open("rb") as handle:
        uploaded = client.files.create(file=handle, purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    batch = wait_done(client, batch.id)
    assert batch.status == "completed" and batch.output_file_id is not None, batch
    with client.files.with_streaming_response.content(batch.output_file_id) as response:
        response.stream_to_file(out)
    return {"e2e_seconds": round(time.perf_counter() - t0, 3)}


def p99(samples: list[float]) -> float:
    return statistics.quantiles(samples, n=100)[98] if len(samples) >= 2 else samples[0]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--small", action="store_true", help="2,000 requests (CI)")
    args = parser.parse_args()
    n = 2000 if args.small else args.requests

    work = Path(tempfile.mkdtemp(prefix="bench-gemini-"))
    port = free_port()
    command = [sys.executable, "-m", "llmbatch.emulator", "--port", str(port)]
    server = subprocess.Popen(
        [*command, "--data-dir", str(work / "data")], stdout=subprocess.DEVNULL
    )
    url = f"http://127.0.0.1:{port}"
    control = EmulatorControl(url, timeout=5)
    try:
        for _ in range(200):
            try:
                control.call("GET", "/health")
                break
            except OSError:
                time.sleep(0.05)
        gemini = genai.Client(api_key="bench", http_options={"base_url": url, "timeout": 600_000})
        oai = openai.OpenAI(base_url=url + "/v1", api_key="bench", max_retries=0, timeout=600)
        g_in, o_in = work / "gemini.jsonl", work / "openai.jsonl"
        result: dict[str, object] = {"requests": n, "input_bytes": write_inputs(g_in, o_in, n)}
        gemini_times = gemini_run(gemini, g_in, work / "gemini-out.jsonl")
        openai_times = openai_run(oai, o_in, work / "openai-out.jsonl")
        result |= {"gemini": gemini_times, "openai": openai_times}
        result["output_bytes"] = (work / "gemini-out.jsonl").stat().st_size

        control.set_config(rate=n / 4.0)  # stretch processing over ~4 seconds
        uploaded = gemini.files.upload(file=g_in, config={"mime_type": "application/jsonl"})
        job = gemini.batches.create(model=MODEL, src=uploaded.name or "")
        get_ms: list[float] = []
        list_ms: list[float] = []
        while True:
            s = time.perf_counter()
            current = gemini.batches.get(name=job.name or "")
            get_ms.append((time.perf_counter() - s) * 1000)
            s = time.perf_counter()
            gemini.batches.list(config={"page_size": 20})
            list_ms.append((time.perf_counter() - s) * 1000)
            if current.state is not None and current.state.name in ENDED:
                break
        _, peak = peak_rss_mb(server.pid)
        ratio = gemini_times["e2e_seconds"] / max(openai_times["e2e_seconds"], 1e-9)
        result |= {
            "gemini_over_openai": round(ratio, 2),
            "get_p99_ms": round(p99(get_ms), 2),
            "list_p99_ms": round(p99(list_ms), 2),
            "latency_samples": len(get_ms),
            "emulator_peak_rss_mb": round(peak, 1),
        }
        print(json.dumps(result))
    finally:
        server.terminate()
        server.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
