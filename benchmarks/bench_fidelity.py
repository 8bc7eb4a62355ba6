"""Emulator fidelity floors (issue 22), through the official SDKs against the emulator as a
separate process on a frozen virtual clock. Prints one JSON line.

Floors:
- 1,000 requests with a strict `json_schema` (from a pydantic model, as the SDK builds it)
  through the batch API, every output body parsed by the SDK's own `parse_chat_completion`:
  100 % parsed (and real-time `chat.completions.parse` likewise);
- 1,000 forced tool calls through the batch API: 100 % of the arguments valid (jsonschema);
- every model id in the installed SDKs' type literals accepted (a real-time call per id,
  one Anthropic batch over all of them), and every Gemini model `google-genai` names (its
  tokenizer table; one inline batch per model, Live API models excepted);
- two batches of 5,000 on one model finish no sooner together than one batch of 10,000
  under the same capacity setting (virtual seconds).
Also: the emulator's CPU per request (its process's user+system time) for plain, schema and
tool batches, so the cost of the synthesis is on record.

    python benchmarks/bench_fidelity.py            # floors, plus a 10x real-time parse run
    python benchmarks/bench_fidelity.py --small    # what CI runs (under a minute)
"""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import typing
from pathlib import Path
from typing import Any, Literal

import anthropic
import jsonschema
import openai
from google import genai
from openai.lib._parsing._completions import parse_chat_completion, type_to_response_format_param
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, Field

from llmbatch.emulator import EmulatorControl

FLOOR = 1000
CHAT = "/v1/chat/completions"


class Item(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-\d{4}$")
    quantity: int = Field(ge=1, le=99)
    price: float


class Order(BaseModel):
    id: str
    status: Literal["new", "paid", "shipped"]
    items: list[Item]
    note: str | None


class GetWeather(BaseModel):
    city: str
    unit: Literal["c", "f"]
    days: int = Field(ge=1, le=7)


def literal_ids(tp: Any) -> set[str]:
    out: set[str] = set()
    for arg in typing.get_args(tp):
        if isinstance(arg, str):
            out.add(arg)
        elif arg is not str:
            out |= literal_ids(arg)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Bench:
    def __init__(self, port: int, pid: int) -> None:
        self.control = EmulatorControl(f"http://127.0.0.1:{port}", timeout=60)
        self.client = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="bench", max_retries=0, timeout=600
        )
        self.claude = anthropic.Anthropic(
            base_url=f"http://127.0.0.1:{port}", api_key="bench", max_retries=0
        )
        self.gemini = genai.Client(
            api_key="bench", http_options={"base_url": f"http://127.0.0.1:{port}"}
        )
        self.pid = pid

    def batch(self, lines: list[dict[str, Any]], endpoint: str = CHAT) -> tuple[str, float]:
        """Run one batch to the end on the frozen clock; (its id, emulator CPU seconds)."""
        data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
        f = self.client.files.create(file=("in.jsonl", io.BytesIO(data)), purpose="batch")
        cpu = cpu_seconds(self.pid)
        batch = self.client.batches.create(
            input_file_id=f.id, endpoint=endpoint, completion_window="24h"
        )  # type: ignore[arg-type]
        self.control.wait(batch.id, "in_progress", "failed", timeout=120)
        self.control.advance(3600)
        done = self.control.wait(batch.id, timeout=300)
        assert done["status"] == "completed", done
        return batch.id, cpu_seconds(self.pid) - cpu

    def bodies(self, batch_id: str) -> list[dict[str, Any]]:
        out_id = self.client.batches.retrieve(batch_id).output_file_id
        assert out_id is not None
        text = self.client.files.content(out_id).text
        return [json.loads(x)["response"]["body"] for x in text.splitlines()]


def line(i: int, **body: Any) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Ask {i}"}], **body}
    return {"custom_id": f"r{i}", "method": "POST", "url": CHAT, "body": body}


def structured(b: Bench, realtime: int) -> dict[str, Any]:
    fmt = type_to_response_format_param(Order)
    batch_id, cpu = b.batch([line(i, response_format=fmt) for i in range(FLOOR)])
    parsed = 0
    for body in b.bodies(batch_id):
        completion = ChatCompletion.model_validate(body)
        result = parse_chat_completion(
            response_format=Order, input_tools=openai.omit, chat_completion=completion
        )
        parsed += isinstance(result.choices[0].message.parsed, Order)
    live = 0
    for i in range(realtime):
        reply = b.client.chat.completions.parse(
            model="gpt-4o-2024-08-06",
            messages=[{"role": "user", "content": f"Order {i}"}],
            response_format=Order,
        )
        live += isinstance(reply.choices[0].message.parsed, Order)
    return {
        "schema_requests": FLOOR,
        "schema_parsed": parsed,
        "schema_realtime": realtime,
        "schema_realtime_parsed": live,
        "cpu_us_per_schema_request": round(cpu / FLOOR * 1e6, 1),
    }


def tools(b: Bench) -> dict[str, Any]:
    tool = openai.pydantic_function_tool(GetWeather)
    validator = jsonschema.Draft202012Validator(tool["function"]["parameters"])  # type: ignore[typeddict-item]
    batch_id, cpu = b.batch([line(i, tools=[tool], tool_choice="required") for i in range(FLOOR)])
    valid = 0
    for body in b.bodies(batch_id):
        (call,) = body["choices"][0]["message"]["tool_calls"]
        valid += validator.is_valid(json.loads(call["function"]["arguments"]))
    return {
        "tool_calls": FLOOR,
        "tool_calls_valid": valid,
        "cpu_us_per_tool_request": round(cpu / FLOOR * 1e6, 1),
    }


def plain(b: Bench) -> dict[str, Any]:
    filler = "Summarise the following product review in one short sentence. " * 3
    lines = [line(i, max_tokens=64) for i in range(FLOOR * 2)]
    for x in lines:
        x["body"]["messages"][0]["content"] += filler
    batch_id, cpu = b.batch(lines)
    finishes = [body["choices"][0]["finish_reason"] for body in b.bodies(batch_id)]
    return {
        "cpu_us_per_plain_request": round(cpu / len(lines) * 1e6, 1),
        "length_share_at_max_tokens_64": round(finishes.count("length") / len(finishes), 4),
    }


def models(b: Bench) -> dict[str, Any]:
    from openai.types import ChatModel, EmbeddingModel, ModerationModel
    from openai.types.completion_create_params import CompletionCreateParamsBase
    from openai.types.shared import ResponsesModel

    chat = literal_ids(ChatModel)
    kinds = {
        "chat": chat,
        "responses": literal_ids(ResponsesModel) - chat,
        "completions": literal_ids(typing.get_type_hints(CompletionCreateParamsBase)["model"]),
        "embeddings": literal_ids(EmbeddingModel),
        "moderations": literal_ids(ModerationModel),
    }
    accepted = total = 0
    refused: list[str] = []
    for kind, ids in kinds.items():
        for model in sorted(ids):
            total += 1
            try:
                if kind == "chat":
                    b.client.chat.completions.create(
                        model=model, messages=[{"role": "user", "content": "hi"}]
                    )
                elif kind == "responses":
                    b.client.responses.create(model=model, input="hi")
                elif kind == "completions":
                    b.client.completions.create(model=model, prompt="hi")
                elif kind == "embeddings":
                    b.client.embeddings.create(model=model, input="hi")
                else:
                    b.client.moderations.create(model=model, input="hi")
                accepted += 1
            except openai.APIStatusError:
                refused.append(model)
    claude = sorted(literal_ids(anthropic.types.Model))
    params = [
        {"model": m, "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
        for m in claude
    ]
    requests = [{"custom_id": f"m{i}", "params": p} for i, p in enumerate(params)]
    batch = b.claude.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    gemini = sorted(m for m in gemini_listed() if "live" not in m)
    contents = [{"role": "user", "parts": [{"text": "hi"}]}]
    jobs = [b.gemini.batches.create(model=m, src=[{"contents": contents}]) for m in gemini]
    b.control.advance(60)
    counts = b.control.wait(batch.id, timeout=60)["request_counts"]
    gemini_ok = 0
    for job in jobs:
        state = b.control.wait((job.name or "").removeprefix("batches/"), timeout=60)
        gemini_ok += state["metadata"]["state"] == "BATCH_STATE_SUCCEEDED"
    return {
        "openai_sdk_models": total,
        "openai_sdk_models_accepted": accepted,
        "openai_refused": refused,
        "anthropic_sdk_models": len(claude),
        "anthropic_sdk_models_accepted": counts["succeeded"],
        "gemini_sdk_models": len(gemini),
        "gemini_sdk_models_accepted": gemini_ok,
    }


def gemini_listed() -> set[str]:
    """The Gemini models of google-genai's tokenizer table (the only list the SDK has)."""
    path = Path(genai.__file__).parent / "_local_tokenizer_loader.py"
    return set(re.findall(r'^\s*"([\w.-]+)":\s*"gemma\w*",$', path.read_text(), re.M))


def capacity(b: Bench, per_second: float) -> dict[str, Any]:
    b.control.set_config(capacity={"gpt-4o-mini": {"requests_per_second": per_second}})

    def run(sizes: list[int]) -> float:
        b.control.reset()
        b.control.next_batches(count=len(sizes), hold="validating")
        ids = []
        for n in sizes:
            data = b"".join(json.dumps(line(i, max_tokens=16)).encode() + b"\n" for i in range(n))
            f = b.client.files.create(file=("c.jsonl", io.BytesIO(data)), purpose="batch")
            ids.append(
                b.client.batches.create(
                    input_file_id=f.id, endpoint=CHAT, completion_window="24h"
                ).id
            )
        start = b.control.now()
        for i in ids:
            b.control.release(i)
        for i in ids:
            b.control.wait(i, "in_progress", timeout=120)
        b.control.advance(86_000)
        for i in ids:
            b.control.wait(i, "completed", timeout=300)
        return max(b.control.batch(i)["progress"]["last_t"] for i in ids) - start

    one, two = run([10_000]), run([5_000, 5_000])
    b.control.set_config(capacity={})
    return {
        "capacity_requests_per_second": per_second,
        "one_batch_of_10000_virtual_s": round(one, 3),
        "two_batches_of_5000_virtual_s": round(two, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--small", action="store_true", help="what CI runs")
    args = parser.parse_args()
    realtime = 100 if args.small else 1000

    work = Path(tempfile.mkdtemp(prefix="bench-fidelity-"))
    port = free_port()
    command = ["-m", "llmbatch.emulator", "--port", str(port), "--time-scale", "0"]
    server = subprocess.Popen(
        [sys.executable, *command, "--data-dir", str(work / "data")], stdout=subprocess.DEVNULL
    )
    try:
        b = Bench(port, server.pid)
        for _ in range(400):
            try:
                b.control.call("GET", "/health")
                break
            except OSError:
                time.sleep(0.05)
        started = time.perf_counter()
        result: dict[str, Any] = {}
        result |= plain(b)
        result |= structured(b, realtime)
        result |= tools(b)
        result |= models(b)
        result |= capacity(b, 500.0)
        result["seconds"] = round(time.perf_counter() - started, 1)
        result["floors_met"] = {
            "schema_100pct_parsed": result["schema_parsed"] == FLOOR
            and result["schema_realtime_parsed"] == realtime,
            "tool_calls_100pct_valid": result["tool_calls_valid"] == FLOOR,
            "every_sdk_model_accepted": result["openai_sdk_models_accepted"]
            == result["openai_sdk_models"]
            and result["anthropic_sdk_models_accepted"] == result["anthropic_sdk_models"]
            and result["gemini_sdk_models_accepted"] == result["gemini_sdk_models"] > 0,
            "two_batches_no_sooner_than_one": result["two_batches_of_5000_virtual_s"]
            >= result["one_batch_of_10000_virtual_s"] - 1e-6,
            "length_rare_by_default": result["length_share_at_max_tokens_64"] < 0.05,
        }
        print(json.dumps(result))
    finally:
        server.terminate()
        server.wait(timeout=30)
        subprocess.run(["rm", "-rf", str(work)], check=False)


if __name__ == "__main__":
    main()
