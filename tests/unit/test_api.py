"""The public Python API: what `import llmbatch` offers, and `Queue` on both stores."""

from __future__ import annotations

import types
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

import llmbatch
from helpers import add_result, body, jsonl, line, sql
from llmbatch import (
    ConflictError,
    ImportReport,
    InputError,
    LlmbatchError,
    NotFound,
    Queue,
    RequestCancelled,
    RequestFailed,
    WaitTimeout,
)
from llmbatch.export import export
from llmbatch.store import Count

# What the issue and the README promise a Python user.
PROMISED = {"Queue", "ImportReport", "LlmbatchError", "ConfigError", "StoreError", "InputError",
            "ConflictError", "ProviderError", "IllegalTransition"}  # fmt: skip


def test_all_names_exactly_the_public_objects_of_the_package() -> None:
    assert len(set(llmbatch.__all__)) == len(llmbatch.__all__)
    # names load on first use (PEP 562): dir() lists them, getattr() loads them
    public = {
        name
        for name in dir(llmbatch)
        if not name.startswith("_") and not isinstance(getattr(llmbatch, name), types.ModuleType)
    }
    assert public == set(llmbatch.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        llmbatch.Nope  # noqa: B018


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
    rows = sql(
        db,
        "SELECT r.custom_id, r.endpoint, r.priority, r.deadline, b.body FROM requests r"
        " JOIN request_bodies b ON b.hash = r.body_hash",
    )
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


# -- the finished API: handles, result objects, grouping, estimates, cancel ----------------------

EXPORTED = {
    "AsyncBatchClient", "BatchClient", "Budget", "BudgetHeld", "BudgetSettings", "CallHandle",
    "Cancelled", "ConfigError", "ConflictError", "Engine", "EngineSettings", "Estimate",
    "IllegalTransition", "ImportReport", "InputError", "LlmbatchError", "NotBatchable", "NotFound",
    "PendingCall", "ProviderError", "Queue", "ReportLine", "RequestCancelled", "RequestExpired",
    "RequestFailed", "RequestHandle", "Result", "RetryPolicy", "StoreError", "TickReport",
    "Waited", "WaitTimeout", "estimate_file", "estimate_requests",
}  # fmt: skip


def test_all_lists_exactly_the_public_api() -> None:
    assert set(llmbatch.__all__) == EXPORTED
    for name in ("Budget", "BudgetSettings", "EngineSettings", "RetryPolicy"):
        assert getattr(llmbatch, name).__module__.startswith("llmbatch.")


def test_result_objects_carry_model_tokens_cost_and_the_parsed_body(q: Queue, db: str) -> None:
    q.add_many([{"custom_id": "ok", "body": body("a")},
                {"custom_id": "bad", "body": body("b", model="gpt-4.1-mini")}])  # fmt: skip
    add_result(db, "ok", queue="evals", tokens=(1000, 500))
    add_result(db, "bad", queue="evals", succeeded=False)
    ok, bad = list(q.results())
    assert (ok.custom_id, ok.model, ok.endpoint, ok.provider) == (
        "ok", "gpt-4o-mini", "/v1/chat/completions", "openai")  # fmt: skip
    assert (ok.input_tokens, ok.output_tokens, ok.status_code, ok.ok) == (1000, 500, 200, True)
    assert ok.body["choices"][0]["message"]["content"] == "ok"
    assert ok.cost_usd is not None and 0 < ok.cost_usd < Decimal("0.01")
    assert type(ok.response()).__name__ == "ChatCompletion"
    line = next(export(q.store, queue="evals").dicts())
    assert ok.envelope() == line and ok.id == line["id"]
    assert (bad.model, bad.ok, bad.error) == (
        "gpt-4.1-mini", False, {"code": "server_error", "message": "the model crashed"})  # fmt: skip
    with pytest.raises(RequestFailed, match="custom_id 'bad' failed: server_error"):
        bad.response()


def test_a_result_parses_its_body_and_makes_its_id_only_when_read(
    q: Queue, db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Holding 20,000 results held 20,000 parsed bodies (~1.8 KB each) nobody had read
    # (issue 23); read, a field is what it was, and everything else a dataclass does agrees.
    import copy
    import dataclasses
    import pickle

    import llmbatch.export as export_module

    q.add_many([{"custom_id": c, "body": body(c)} for c in ("a", "b", "c")])
    add_result(db, "a", queue="evals")
    add_result(db, "b", queue="evals", succeeded=False)
    q.cancel("c")
    loads: list[bytes] = []
    ids: list[int] = []
    real_loads, real_id = export_module.orjson.loads, export_module.result_id

    def counted_loads(b: bytes) -> Any:
        loads.append(b)
        return real_loads(b)

    def counted_id(store_id: str, attempt_id: int) -> str:
        ids.append(attempt_id)
        return real_id(store_id, attempt_id)

    spy = types.SimpleNamespace(
        loads=counted_loads, dumps=orjson.dumps, JSONDecodeError=orjson.JSONDecodeError
    )
    monkeypatch.setattr(export_module, "orjson", spy)
    monkeypatch.setattr(export_module, "result_id", counted_id)
    results = list(q.results())
    assert [r.state for r in results] == ["succeeded", "failed", "cancelled"]
    assert (loads, ids) == ([], [])
    ok, bad, cancelled = results
    assert ok.body["choices"][0]["message"]["content"] == "ok" and ok.body is ok.body
    assert len(loads) == 1
    assert bad.body == (bad.row.body and real_loads(bad.row.body)) and cancelled.body is None
    assert ok.id == real_id(q.store.store_id, ok.row.attempt_id) and ok.id is ok.id
    assert len(ids) == 1
    again = list(q.results())
    assert again == results and [repr(r) for r in again] == [repr(r) for r in results]
    assert "body={'id'" in repr(again[0]) and "id='batch_req_" in repr(again[0])
    for r in results:
        assert pickle.loads(pickle.dumps(r)) == r == copy.copy(r)
        assert dataclasses.asdict(r)["body"] == r.body
        assert dataclasses.replace(r, state="x").body == r.body
    with pytest.raises(dataclasses.FrozenInstanceError):
        ok.body = {}  # type: ignore[misc]


def test_results_share_the_strings_of_their_few_valued_columns(q: Queue, db: str) -> None:
    # each row read its own copy of state, provider, model and endpoint: 80,000 strings held
    # by 20,000 results where four do (issue 23)
    q.add_many([{"custom_id": c, "body": body(c)} for c in ("a", "b")])
    add_result(db, "a", queue="evals")
    add_result(db, "b", queue="evals")
    a, b = (r.row for r in q.results())
    assert (a.state, a.provider, a.model, a.endpoint) == (b.state, b.provider, b.model, b.endpoint)
    assert all(getattr(a, f) is getattr(b, f) for f in ("state", "provider", "model", "endpoint"))


def test_results_group_by_model(q: Queue, db: str) -> None:
    q.add_many({"custom_id": f"{m}/{i}", "body": body(str(i), model=m)}
               for m in ("gpt-4o-mini", "gpt-4.1-mini") for i in range(3))  # fmt: skip
    for m in ("gpt-4o-mini", "gpt-4.1-mini"):
        for i in range(3):
            add_result(db, f"{m}/{i}", queue="evals")
    grouped = q.results(group_by="model")
    assert {m: sorted(r.custom_id for r in rs) for m, rs in grouped.items()} == {
        m: [f"{m}/{i}" for i in range(3)] for m in ("gpt-4o-mini", "gpt-4.1-mini")}  # fmt: skip
    with pytest.raises(ValueError, match="group_by takes model"):
        q.results(group_by="color")


def test_estimate_of_a_queue_counts_what_has_not_finished(q: Queue, db: str) -> None:
    items = [{"custom_id": f"e{i}", "body": body("word " * 50, max_tokens=20)} for i in range(4)]
    q.add_many(items)
    add_result(db, "e0", queue="evals")
    est = q.estimate()
    assert est.requests == 3 and est.source == "queue evals"
    assert est.models[0].max_output_tokens == 60
    # estimate_requests takes exactly what add_many takes
    same = llmbatch.estimate_requests(items[1:])
    assert same.total("batch_worst_usd") == est.total("batch_worst_usd")
    with pytest.raises(InputError, match=r"item 1 \(custom_id 'x'\): body has no model"):
        llmbatch.estimate_requests([{"custom_id": "x", "body": {"messages": []}}])


def test_cancel_named_requests_or_the_whole_queue_and_nothing_else(q: Queue, db: str) -> None:
    q.add_many({"custom_id": f"c{i}", "body": body(str(i))} for i in range(4))
    with Queue(db, "bystander") as other:
        other.add("c0", body("0"))
    done = q.cancel("c0", "c1")
    assert (done.cancelled, done.batches) == (2, 0)
    assert done.lines() == ["cancelled 2 waiting requests"]
    with pytest.raises(NotFound, match="no request 'nope' in queue 'evals'"):
        q.cancel("c2", "nope")
    assert {c.state: c.n for c in q.status()} == {"cancelled": 2, "queued": 2}
    assert q.cancel().cancelled == 2
    assert [(c.state, c.n) for c in Queue(db, "bystander").status()] == [("queued", 1)]
    cancelled = list(q.results(state="cancelled"))
    assert len(cancelled) == 4
    with pytest.raises(RequestCancelled):
        cancelled[0].response()


def test_a_handle_waits_for_its_result_and_says_why_not_yet(q: Queue, db: str) -> None:
    handle = q.add("h1", body())
    with pytest.raises(WaitTimeout, match=r"'h1' .*no worker is running"):
        handle.result(timeout=0.1, interval=0.05)
    add_result(db, "h1", queue="evals")
    assert handle.done() and handle.result().custom_id == "h1"
    assert q.handle("h1").state() == "succeeded"
    with pytest.raises(NotFound):
        q.handle("missing")
