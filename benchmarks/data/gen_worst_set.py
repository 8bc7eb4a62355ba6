"""Generate benchmarks/data/worst_set.jsonl: 1,200 varied requests for the worst-case floor.

    python benchmarks/data/gen_worst_set.py  (seeded: the same file every time)

The estimate set's requests (English, CJK, code, tools, schemas, chat, responses, embeddings,
Anthropic messages), with every multiplier a provider bills added at random: `n` choices,
legacy completions with `n` and `best_of`, images by URL (every `detail`) and inline (a PNG
header of a random size), files and PDFs by URL, file id and inline, Anthropic 5-minute and
1-hour cache writes on tools, system and messages, tool choices, and the vision models of
both image rules (tiles and patches). tests/unit/test_worst_floor.py and
benchmarks/bench_worst_case.py check that the reserved worst case of each is at least what
the emulator bills for it.
"""

from __future__ import annotations

import base64
import random
import struct
import sys
import zlib
from pathlib import Path
from typing import Any

import orjson

sys.path.insert(0, str(Path(__file__).parent))
from gen_estimate_set import SYSTEM, TOOL, request, text

OUT = Path(__file__).with_name("worst_set.jsonl")
N = 1200
SEED = 20261207
VISION = (
    "gpt-4o",
    "gpt-4o-mini",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4.1-nano",
    "o4-mini",
    "gpt-5",
    "gpt-5-nano",
    "o3",
)
DETAILS = (None, "low", "high", "auto")


def png(width: int, height: int) -> str:
    """A data: URL of a PNG whose header says width x height (the pixels are not needed)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    body = struct.pack(">I", len(ihdr)) + chunk + struct.pack(">I", zlib.crc32(chunk))
    raw = b"\x89PNG\r\n\x1a\n" + body + b"\x00\x00\x00\x00IEND\xaeB`\x82"
    return "data:image/png;base64," + base64.b64encode(raw).decode()


def pdf(pages: int) -> str:
    """Base64 of a small PDF-like file with `pages` page objects."""
    objs = b"".join(b"%d 0 obj << /Type /Page >> endobj\n" % (i + 3) for i in range(pages))
    raw = b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n2 0 obj << /Type /Pages >> endobj\n"
    return base64.b64encode(raw + objs + b"%%EOF\n").decode()


def image_ref(rng: random.Random, i: int, k: int) -> str:
    if rng.random() < 0.3:
        return png(rng.randint(16, 5000), rng.randint(16, 5000))
    return f"https://images.example.com/{i}/{k}.jpg"


def openai_parts(rng: random.Random, i: int, responses: bool) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for k in range(rng.choice((0, 1, 1, 2, 3))):
        detail = rng.choice(DETAILS)
        ref = image_ref(rng, i, k)
        if responses:
            part: dict[str, Any] = {"type": "input_image", "image_url": ref}
            if detail:
                part["detail"] = detail
        else:
            spec: dict[str, Any] = {"url": ref}
            if detail:
                spec["detail"] = detail
            part = {"type": "image_url", "image_url": spec}
        parts.append(part)
    if rng.random() < 0.15:
        how = rng.choice(("url", "id", "inline"))
        if responses:
            ref = {
                "url": {"file_url": f"https://docs.example.com/{i}.pdf"},
                "id": {"file_id": f"file-{i:06d}"},
                "inline": {
                    "file_data": "data:application/pdf;base64," + pdf(rng.randint(1, 9)),
                    "filename": "a.pdf",
                },
            }[how]
            parts.append({"type": "input_file", **ref})
        else:
            f = (
                {"file_id": f"file-{i:06d}"}
                if how != "inline"
                else {
                    "file_data": "data:application/pdf;base64," + pdf(rng.randint(1, 9)),
                    "filename": "a.pdf",
                }
            )
            parts.append({"type": "file", "file": f})
    return parts


def with_parts(messages: list[dict[str, Any]], parts: list[dict[str, Any]], kind: str) -> None:
    """Add content parts to the last user message (its text becomes a part)."""
    if not parts:
        return
    last = next(m for m in reversed(messages) if m["role"] == "user")
    content = last["content"]
    head = [{"type": kind, "text": content}] if isinstance(content, str) else list(content)
    last["content"] = head + parts


def anthropic_parts(rng: random.Random, i: int) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for k in range(rng.choice((0, 0, 1, 2))):
        if rng.random() < 0.4:
            data = png(rng.randint(16, 5000), rng.randint(16, 5000)).split(",", 1)[1]
            source = {"type": "base64", "media_type": "image/png", "data": data}
        else:
            source = {"type": "url", "url": f"https://images.example.com/a{i}/{k}.png"}
        parts.append({"type": "image", "source": source})
    if rng.random() < 0.12:
        how = rng.choice(("url", "inline", "text"))
        source = {
            "url": {"type": "url", "url": f"https://docs.example.com/a{i}.pdf"},
            "inline": {
                "type": "base64",
                "media_type": "application/pdf",
                "data": pdf(rng.randint(1, 12)),
            },
            "text": {
                "type": "text",
                "media_type": "text/plain",
                "data": text(rng, "en", rng.randint(5, 40)),
            },
        }[how]
        parts.append({"type": "document", "source": source})
    return parts


def cache(rng: random.Random) -> dict[str, str]:
    return {"type": "ephemeral", "ttl": "1h"} if rng.random() < 0.5 else {"type": "ephemeral"}


def worst_request(rng: random.Random, i: int) -> dict[str, Any]:
    base = request(rng, i)
    if "params" in base:
        params = base["params"]
        assert isinstance(params, dict)
        with_parts(params["messages"], anthropic_parts(rng, i), "text")
        if rng.random() < 0.4:  # cache writes, 5-minute or 1-hour, at one to three places
            if params.get("tools"):
                params["tools"][-1]["cache_control"] = cache(rng)
            system = params.get("system") or SYSTEM * 2
            params["system"] = [{"type": "text", "text": system, "cache_control": cache(rng)}]
            if rng.random() < 0.5:
                last = params["messages"][-1]
                if isinstance(last["content"], str):
                    last["content"] = [{"type": "text", "text": last["content"]}]
                last["content"][-1]["cache_control"] = cache(rng)
        if params.get("tools") and rng.random() < 0.5:
            params["tool_choice"] = rng.choice(({"type": "any"}, {"type": "auto"}))
        return base
    body = base["body"]
    assert isinstance(body, dict)
    url = base["url"]
    if url == "/v1/embeddings":
        return base
    if rng.random() < 0.1:  # legacy completions: n and best_of are billed
        best_of = rng.choice((1, 2, 3, 5))
        completion: dict[str, Any] = {
            "model": "gpt-3.5-turbo-instruct",
            "prompt": text(rng, "en", rng.randint(1, 5)),
            "best_of": best_of,
            "n": rng.randint(1, best_of),
        }
        if rng.random() < 0.7:
            completion["max_tokens"] = rng.choice((16, 64, 200))
        return {
            "custom_id": f"c{i}",
            "method": "POST",
            "url": "/v1/completions",
            "body": completion,
        }
    if rng.random() < 0.5:
        body["model"] = rng.choice(VISION)
    if url == "/v1/responses":
        with_parts(body["input"], openai_parts(rng, i, responses=True), "input_text")
        if rng.random() < 0.15:
            body["tools"] = [
                {
                    "type": "function",
                    "name": "lookup_order",
                    "parameters": TOOL["function"]["parameters"],
                }
            ]  # type: ignore[index]
        return base
    with_parts(body["messages"], openai_parts(rng, i, responses=False), "text")
    if rng.random() < 0.35:
        body["n"] = rng.choice((2, 3, 4, 8))
    if body.get("tools") and rng.random() < 0.5:
        body["tool_choice"] = "required"
    return base


def main() -> None:
    rng = random.Random(SEED)
    with OUT.open("wb") as f:
        for i in range(N):
            f.write(orjson.dumps(worst_request(rng, i)) + b"\n")
    print(f"wrote {N} requests to {OUT}")


if __name__ == "__main__":
    main()
