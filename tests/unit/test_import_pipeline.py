"""The two-process enqueue (a file past PIPELINE_MIN_BYTES is parsed in a child process):
what it hands the writer (rows, problems, the size stats taken in the child) is what the
in-process path makes, a clash's rows are not counted in the sizes, and a bad line is one
line naming file and line."""

from __future__ import annotations

import decimal
from pathlib import Path
from typing import cast

import orjson
import pytest

from llmbatch import importer
from llmbatch.errors import InputError
from llmbatch.importer import Chunk, _pack, _unpack, enqueue_file
from llmbatch.store import open_store
from llmbatch.store.types import Row


def _line(cid: str, text: str, cap: int | None = 5) -> bytes:
    body: dict[str, object] = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": text}],
    }
    if cap is not None:
        body["max_tokens"] = cap
    line = {"custom_id": cid, "method": "POST", "url": "/v1/chat/completions", "body": body}
    return orjson.dumps(line) + b"\n"


def _file(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"".join(lines))
    return path


@pytest.mark.parametrize("pipeline", [True, False])
def test_sizes_are_those_of_the_rows_that_went_in(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pipeline: bool
) -> None:
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", 0 if pipeline else 1 << 30)
    store = open_store(str(tmp_path / "q.db"))
    try:
        first = _file(tmp_path / "a.jsonl", [_line("a", "xx"), _line("b", "yyyy", None)])
        report = enqueue_file(store, first)
        key = ("openai", "/v1/chat/completions", "gpt-4o-mini")
        assert report.sizes == {key: [2, 14, 5, 1, 8]}  # text: the role's too
        # "a" again unchanged: a clash, not counted; "c" is new
        again = _file(tmp_path / "b.jsonl", [_line("a", "xx"), _line("c", "zzzzzzz", 7)])
        report = enqueue_file(store, again)
        assert (report.added, report.unchanged) == (1, 1)
        assert report.sizes == {key: [1, 11, 7, 0, 11]}
    finally:
        store.close()


def test_a_bad_line_through_the_child_is_one_line_and_enqueues_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "PIPELINE_MIN_BYTES", 0)
    store = open_store(str(tmp_path / "q.db"))
    try:
        path = _file(tmp_path / "bad.jsonl", [_line("a", "x"), b"{not json\n", _line("c", "z")])
        with pytest.raises(InputError) as exc:
            enqueue_file(store, path)
        [problem] = exc.value.problems
        assert problem.startswith(f"{path}:2: not valid JSON")
        assert store.counts() == []
    finally:
        store.close()


def test_a_chunk_crosses_to_the_writer_whole() -> None:
    head = ("q", "c", 1, 2, "openai", "/v1/chat/completions", "m", b"{}", b"h" * 16, 0)
    row: Row = (*head, None, 3, 3, 1, 1.5, 1.5)
    chunk = Chunk([row], [(3, "bad", b"x")], {2: b"raw"}, 3, {("p", "e", "m"): [1, 2, 3, 4, 5]})
    assert _pack(chunk)[:1] == b"M" and _unpack(_pack(chunk)) == chunk
    odd = Chunk([cast(Row, (*head, decimal.Decimal(1)))])  # a plugin's own type: pickled
    assert _pack(odd)[:1] == b"P" and _unpack(_pack(odd)) == odd
