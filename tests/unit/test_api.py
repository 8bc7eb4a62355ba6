"""The public Python API: what `import llmbatch` offers, and `Queue` on both stores."""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any

import orjson
import pytest

import llmbatch
from helpers import add_result, body, jsonl, line, sql
from llmbatch import ConflictError, ImportReport, InputError, LlmbatchError, Queue
from llmbatch.store import Count

# What the issue and the README promise a Python user.
PROMISED = {"Queue", "ImportReport", "LlmbatchError", "ConfigError", "StoreError", "InputError",
            "ConflictError", "ProviderError", "IllegalTransition"}  # fmt: skip


def test_all_names_exactly_the_public_objects_of_the_package() -> None:
    assert len(set(llmbatch.__all__)) == len(llmbatch.__all__)
    public = {
        name
        for name, value in vars(llmbatch).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public == set(llmbatch.__all__)


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, Any] = {}
    exec("from llmbatch import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(llmbatch.__all__)


def test_the_promised_api_is_exported() -> None:
    assert set(llmbatch.__all__) >= PROMISED
    for name in llmbatch.__all__:
        obj = getattr(llmbatch, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, LlmbatchError), name
    assert isinstance(llmbatch.__version__, str)


@pytest.fixture
def q(db: str) -> Any:
    with Queue(db, "evals") as queue:
        yield queue


def test_add_one_request(q: Queue, db: str) -> None:
    handle = q.add("p1", body("hello"), priority=5, deadline=1_900_000_000.0)
    assert (handle.custom_id, handle.state(), handle.done()) == ("p1", "queued", False)
    report = handle.report
    assert isinstance(report, ImportReport)
    assert (report.queue, report.added, report.unchanged, report.lines) == ("evals", 1, 0, 1)
    assert q.status() == [Count("evals", "openai", "gpt-4o-mini", "queued", 1)]
    rows = sql(db, "SELECT custom_id, endpoint, priority, deadline, body FROM requests")
    assert [r[:4] for r in rows] == [("p1", "/v1/chat/completions", 5, 1_900_000_000.0)]
    assert orjson.loads(rows[0][4]) == body("hello")


def test_adding_the_same_request_again_adds_nothing(q: Queue, db: str) -> None:
    q.add("p1", body("hello"))
    again = q.add("p1", {"messages": body("hello")["messages"], "model": "gpt-4o-mini"}).report
    assert again is not None and (again.added, again.unchanged) == (0, 1)
    assert sql(db, "SELECT COUNT(*) FROM requests") == [(1,)]


def test_the_same_custom_id_with_another_body_is_a_conflict_error(q: Queue, db: str) -> None:
    q.add("p1", body("hello"))
    with pytest.raises(ConflictError, match="already in queue 'evals' with a different body"):
        q.add_many(
            [{"custom_id": "p2", "body": body("new")}, {"custom_id": "p1", "body": body("x")}]
        )
    assert sql(db, "SELECT custom_id FROM requests") == [("p1",)]
    assert q.status()[0].n == 1


def test_add_many_takes_every_line_shape(q: Queue) -> None:
    report = q.add_many(
        [
            {"custom_id": "short", "body": body("a")},
            {"custom_id": "emb", "url": "/v1/embeddings",
             "body": {"model": "text-embedding-3-small", "input": "a"}},
            {"custom_id": "full", "method": "POST", "url": "/v1/responses",
             "body": {"model": "gpt-4o-mini", "input": "a"}},
            {"custom_id": "claude",
             "params": {"model": "claude-3-5-haiku", "max_tokens": 9, "messages": []}},
        ]
    )  # fmt: skip
    assert report.added == 4
    assert {(c.provider, c.model) for c in q.status()} == {
        ("openai", "gpt-4o-mini"), ("openai", "text-embedding-3-small"),
        ("anthropic", "claude-3-5-haiku"),
    }  # fmt: skip


def test_add_many_is_all_or_nothing_across_chunks(q: Queue, db: str) -> None:
    def items() -> Any:
        for i in range(12_000):  # more than one chunk is written before the bad item
            yield {"custom_id": f"i{i}", "body": body(str(i))}
        yield {"custom_id": "broken", "body": {"messages": []}}

    with pytest.raises(InputError, match=r"item 12001 \(custom_id 'broken'\): body has no model"):
        q.add_many(items())
    assert q.status() == []
    assert sql(db, "SELECT COUNT(*) FROM requests") == [(0,)]


def test_add_many_refuses_a_duplicate_custom_id(q: Queue) -> None:
    with pytest.raises(InputError, match="custom_id 'a' appears more than once"):
        q.add_many([{"custom_id": "a", "body": body("1")}, {"custom_id": "a", "body": body("2")}])
    assert q.status() == []


@pytest.mark.parametrize(
    ("item", "reason"),
    [
        ({"body": body()}, "custom_id is missing"),
        ({"custom_id": 3, "body": body()}, "custom_id must be a string"),
        ({"custom_id": "s", "body": body(stream=True)}, "stream: true is not allowed"),
        ({"custom_id": "u", "url": "/v1/nope", "body": body()}, "is not a batch endpoint"),
        ({"custom_id": "n", "body": {"model": "m", "x": {1, 2}}}, "body is not JSON"),
    ],
)
def test_add_validates_like_a_line(q: Queue, item: dict[str, Any], reason: str) -> None:
    with pytest.raises(InputError, match=reason):
        q.add_many([item])
    assert q.status() == []


def test_add_file(q: Queue, tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(line("f1"), line("f2"), b"[]"))
    with pytest.raises(InputError, match=r"in.jsonl:3: expected a JSON object"):
        q.add_file(path)
    assert q.status() == []
    report = q.add_file(path, skip_invalid=True, priority=2)
    assert (report.added, report.rejected) == (2, 1)
    assert report.reject_file == f"{path}.rejected.jsonl"
    assert q.status() == [Count("evals", "openai", "gpt-4o-mini", "queued", 2)]


def test_status_is_of_this_queue_only(db: str, q: Queue) -> None:
    q.add("mine", body())
    with Queue(db, "someone-else") as other:
        other.add("theirs", body(), provider="azure")
        assert other.status() == [Count("someone-else", "azure", "gpt-4o-mini", "queued", 1)]
    assert [c.queue for c in q.status()] == ["evals"]


def test_results_stream_and_resume(q: Queue, db: str) -> None:
    q.add_many({"custom_id": f"r{i}", "body": body(str(i))} for i in range(3))
    add_result(db, "r2", queue="evals")
    add_result(db, "r0", queue="evals", succeeded=False)
    got = list(q.results())
    assert [(r.custom_id, r.state) for r in got] == [("r2", "succeeded"), ("r0", "failed")]
    assert [r.custom_id for r in q.results(state="failed")] == ["r0"]
    assert [r.custom_id for r in q.results(after=got[0].cursor)] == ["r0"]


def test_the_store_comes_from_llmbatch_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "env.db"
    monkeypatch.setenv("LLMBATCH_DB", str(db))
    with Queue(name="envq") as queue:
        queue.add("a", body())
    assert sql(str(db), "SELECT queue FROM requests") == [("envq",)]
