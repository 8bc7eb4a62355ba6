"""`reading.Reader`: a large batch's result lines read in a second process give the items
`read_items` gives in this one, item for item, whether the child reads them all, cannot
start, or stops half-way (the rest is then read here from where it stopped)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from llmbatch.providers import format_of
from llmbatch.providers.base import ResultFile
from llmbatch.reading import Reader, read_items

PREFIX = "s-n1"
CHAT = "/v1/chat/completions"


def _line(i: int) -> bytes:
    """Every kind of line: successes (most), errors, lines not ours, not JSON, too long."""
    if i % 997 == 5:
        return b"not json"
    if i % 991 == 7:
        return orjson.dumps({"custom_id": f"other-{i}", "response": None})
    if i % 983 == 3:
        return b'{"custom_id":"' + f"{PREFIX}-{i}".encode() + b'","pad":"' + b"x" * 600 + b'"}'
    if i % 101 == 1:
        error = {"code": "server_error", "message": f"failed {i}"}
        return orjson.dumps({"custom_id": f"{PREFIX}-{i}", "response": None, "error": error})
    body = {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
        "usage": {"prompt_tokens": 10 + i % 7, "completion_tokens": 1, "total_tokens": 12},
    }
    response = {"status_code": 200, "request_id": f"req_{i}", "body": body}
    return orjson.dumps({"custom_id": f"{PREFIX}-{i}", "response": response, "error": None})


def _files(tmp_path: Path, n: int) -> list[ResultFile]:
    """An output and an error file, lines out of attempt order (as providers write them)."""
    out, err = tmp_path / "output.jsonl", tmp_path / "error.jsonl"
    order = sorted(range(1, n + 1), key=lambda i: (i * 7919) % n)
    with open(out, "wb") as fo, open(err, "wb") as fe:
        for i in order:
            (fe if i % 101 == 1 else fo).write(_line(i) + b"\n")
    return [
        ResultFile("output", out, out.stat().st_size),
        ResultFile("error", err, err.stat().st_size),
    ]


def _as_read(items: Any) -> list[Any]:
    return [repr(x) if isinstance(x, Exception) else x for x in items]


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Reader, "failed", False)


def test_the_child_reads_what_this_process_reads(tmp_path: Path, fresh: None) -> None:
    files, fmt = _files(tmp_path, 5000), format_of("openai")
    here = _as_read(read_items(files, 500, fmt, PREFIX, CHAT))
    assert len(here) == 5000 and any(isinstance(x, int) for x in here)
    assert _as_read(Reader().items(files, 500, fmt, PREFIX, CHAT)) == here
    assert not Reader.failed


def test_a_child_that_cannot_start_leaves_the_reading_here(
    tmp_path: Path, fresh: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    files, fmt = _files(tmp_path, 300), format_of("openai")
    monkeypatch.setattr("sys.executable", str(tmp_path / "no-python"))
    reader = Reader()
    assert _as_read(reader.items(files, 500, fmt, PREFIX, CHAT)) == _as_read(
        read_items(files, 500, fmt, PREFIX, CHAT)
    )


def test_a_child_that_stops_half_way_is_followed_from_where_it_stopped(
    tmp_path: Path, fresh: None
) -> None:
    files, fmt = _files(tmp_path, 20_000), format_of("openai")
    reader = Reader()
    got: list[Any] = []
    for item in reader.items(files, 500, fmt, PREFIX, CHAT):
        if not got:
            assert reader._proc is not None
            reader._proc.kill()  # as the OOM killer would
        got.append(item)
    assert Reader.failed  # and later batches are read here
    assert _as_read(got) == _as_read(read_items(files, 500, fmt, PREFIX, CHAT))


def test_a_format_the_child_cannot_be_given_is_read_here(tmp_path: Path, fresh: None) -> None:
    """A plugin's format that does not pickle (here a class made in a function): read here,
    and the child is not counted as failed."""
    base = type(format_of("openai"))
    fmt = type("LocalFormat", (base,), {})()
    files = _files(tmp_path, 300)
    assert _as_read(Reader().items(files, 500, fmt, PREFIX, CHAT)) == _as_read(
        read_items(files, 500, fmt, PREFIX, CHAT)
    )
    assert not Reader.failed
