"""The bytes of batch output and error files, pinned: a fixed seed, nine kinds of batch (plain
chat with each cap key, tools, a schema, several choices, refused caps, a reasoning model,
responses, embeddings, completions, moderations), failures and cut replies drawn. The
emulator's batch path is rewritten for speed now and then; what it writes must not move."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

import openai

from emu_helpers import chat_line, upload, wait
from llmbatch.emulator import running

_STAMP = re.compile(rb'"(created|created_at)":\d+')

SCHEMA = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {"label": {"type": "string"}, "score": {"type": "number"}},
            "required": ["label", "score"],
            "additionalProperties": False,
        },
    },
}
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "parameters": {
                "type": "object",
                "properties": {"q": {"type": "string"}},
                "required": ["q"],
            },
        },
    }
]


def _chat(i: int) -> dict[str, Any]:
    caps: list[dict[str, Any]] = [
        {"max_tokens": 5},
        {"max_completion_tokens": 40},
        {},
        {"max_tokens": 1},
    ]
    line = chat_line(i, **caps[i % 4])
    line["body"]["messages"][1]["content"] += " ünïcode, punctuation!? " * (i % 3)
    return line


KINDS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "plain": ("/v1/chat/completions", [_chat(i) for i in range(40)]),
    "tools": (
        "/v1/chat/completions",
        [chat_line(i, tools=TOOLS, tool_choice="required" if i % 2 else "auto") for i in range(8)],
    ),
    "schema": (
        "/v1/chat/completions",
        [chat_line(i, response_format=SCHEMA, max_tokens=30 + i) for i in range(8)],
    ),
    "choices_and_refusals": (
        "/v1/chat/completions",
        [chat_line(i, n=2) for i in range(3)]
        + [chat_line(3, max_tokens=10**7), chat_line(4, max_completion_tokens=0)]
        + [chat_line(5, messages=[])],
    ),
    "reasoning": (
        "/v1/chat/completions",
        [chat_line(i, model="gpt-5-mini", max_completion_tokens=200) for i in range(8)],
    ),
    "responses": (
        "/v1/responses",
        [
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/responses",
                "body": {"model": "gpt-5-mini", "input": f"Why {i}?", "max_output_tokens": 64},
            }
            for i in range(8)
        ],
    ),
    "embeddings": (
        "/v1/embeddings",
        [
            {
                "custom_id": f"e{i}",
                "method": "POST",
                "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": ["one", f"two {i}"]},
            }
            for i in range(8)
        ],
    ),
    "completions": (
        "/v1/completions",
        [
            {
                "custom_id": f"c{i}",
                "method": "POST",
                "url": "/v1/completions",
                "body": {"model": "gpt-3.5-turbo-instruct", "prompt": f"Once {i}", "max_tokens": 9},
            }
            for i in range(8)
        ],
    ),
    "moderations": (
        "/v1/moderations",
        [
            {
                "custom_id": f"m{i}",
                "method": "POST",
                "url": "/v1/moderations",
                "body": {"model": "omni-moderation-latest", "input": f"hello {i}"},
            }
            for i in range(8)
        ],
    ),
}

#: sha256 of each kind's output file then error file, their timestamps zeroed (written by the
#: code before the emulator's batch path was last made faster).
EXPECTED = {
    "plain": "a747af4723bdb26749c8cf1d",
    "tools": "61a759f395056fdf18e4800f",
    "schema": "d38952ec64815e1ef700b16a",
    "choices_and_refusals": "fbf21da88ff1b5957572aeb3",
    "reasoning": "dcd6a6798d686ed6235dce81",
    "responses": "430a552339e4001e9e32c0d7",
    "embeddings": "98c0b57f91047c3f8bd78c0f",
    "completions": "76f1351f50039c30b08f6ca2",
    "moderations": "7a7c059213972b6917f37c38",
}


def _content(client: openai.OpenAI, file_id: str | None) -> bytes:
    if file_id is None:
        return b"-"
    return _STAMP.sub(rb'"\1":0', client.files.content(file_id).content)


def test_batch_files_are_the_same_bytes_as_ever(tmp_path: Path) -> None:
    got = {}
    with running(tmp_path / "data", seed=1234) as emu:
        emu.control.set_config(request_failure_rate=0.15, length_rate=0.3)
        client = openai.OpenAI(base_url=emu.base_url, api_key="sk-test", max_retries=0)
        for kind, (endpoint, lines) in KINDS.items():
            f = upload(client, lines)
            created = client.batches.create(
                input_file_id=f.id,
                endpoint=endpoint,  # type: ignore[arg-type]
                completion_window="24h",
            )
            done = wait(client, created.id)
            assert done.status == "completed", (kind, done)
            both = (
                _content(client, done.output_file_id) + b"|" + _content(client, done.error_file_id)
            )
            got[kind] = hashlib.sha256(both).hexdigest()[:24]
    assert got == EXPECTED
