"""The engine over every registered provider's wire format, at unit speed (issue 15).

The real engine and a real SQLite store; the provider is the in-process double
(llmbatch.providers.testing) speaking one registered provider's formats: its request lines,
limits and group key are that provider's own, its result lines that provider's shape
(`SHAPES` in test_providers.py, which fails for a provider that has none). No HTTP, no
sleeping: each test moves a virtual clock and ticks. What the services themselves do, over
HTTP, is test_providers.py and test_ownership.py; these say what the engine makes of it, for
every provider kind, so a provider added later gets each case by registering.

Folded here from the per-provider files tests/e2e/test_anthropic_engine.py,
test_anthropic_bad_input.py and test_gemini_engine.py (each case says which), and the cost
contract that priced Anthropic alone: every kind's recorded cost equals the price data's
batch price for its usage, the estimate before submit is priced the same way, and the
savings against real time are reported.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest
from genai_prices import Usage, calc_price
from test_providers import Shape, shape_of

from helpers import cli, provider_params, request_states, results_per_request, sql
from llmbatch import Queue
from llmbatch.budget import Budget, BudgetSettings
from llmbatch.engine import Engine, EngineSettings
from llmbatch.errors import TransientError
from llmbatch.providers import Format, Limits, Provider, available, format_of, make_provider
from llmbatch.providers.base import BatchRef, Intent, Journal, ResultsGone
from llmbatch.providers.testing import MemoryBatch, MemoryProvider, VirtualClock
from llmbatch.retry import RetryPolicy
from llmbatch.store import open_store

BATCH = {"processing": "batch"}  # genai-prices' batch price variant
FLAKY = "flaky"  # a prompt holding this is answered with a transient error, every time
REFUSED = "refused"  # ... with an error no retry mends (an unknown model, a bad body)
WHY = {True: "overloaded, try again later", False: "model refused-model does not exist"}


@functools.cache
def registered(name: str) -> Provider:
    """The registered provider `name`, unconfigured: its formats, never its transport."""
    return make_provider(name)


@dataclass
class Speaking(MemoryProvider):
    """The in-process double, speaking the registered provider `name`'s wire format."""

    real: Any = None  # the registered provider (its request lines, limits, group key)
    fmt: Any = None
    shape: Any = None
    cap_bytes: int | None = None  # a smaller batch size limit than the provider's own
    given: dict[str, tuple[int, int, str | None]] = field(default_factory=dict)
    upload_ttl: float | None = None  # uploads the provider deletes by itself after this

    def __post_init__(self) -> None:
        self.real: Provider = registered(self.name)
        self.fmt: Format = format_of(self.name)
        self.shape: Shape = shape_of(self.name)

    def limits(self, endpoint: str, model: str | None) -> Limits:
        own = self.real.limits(endpoint, model)
        return own if self.cap_bytes is None else dataclasses.replace(own, max_bytes=self.cap_bytes)

    def group_key(self, endpoint: str, model: str) -> tuple[str, ...]:
        return self.real.group_key(endpoint, model)

    def request_line(self, attempt_id: str, endpoint: str, body: bytes) -> bytes:
        return self.real.request_line(attempt_id, endpoint, body)

    def respond(self, line: dict[str, Any]) -> dict[str, Any]:
        """The provider's result line for one of its input lines: an answer whose input
        tokens are the request body's length (so each answer says whose it is), or an
        error where the prompt asks for one."""
        sent_as = str(line[getattr(self.fmt, "id_field", "custom_id")])
        request = self.fmt.parse(sent_as, dict(line), self.name)
        if FLAKY.encode() in request.body or REFUSED.encode() in request.body:
            transient = FLAKY.encode() in request.body
            return dict(self.shape.error(sent_as, transient, WHY[transient]))
        tokens_in, tokens_out = len(request.body), 7 + len(request.body) % 5
        self.given[sent_as] = (tokens_in, tokens_out, request.model)
        response = self.shape.response(request.model, f"echo {tokens_in}", tokens_in, tokens_out)
        return dict(self.shape.result(sent_as, response))

    def submit(self, intent: Intent, journal: Journal) -> BatchRef:
        """A recorded upload the provider let expire is uploaded again from the intent's
        file, as the real transports do (test_providers.py checks that of each)."""
        recorded = self.files.get(intent.input_file_id or "")
        if (
            recorded
            and self.upload_ttl is not None
            and recorded[2] + self.upload_ttl < self.clock()
        ):
            del self.files[str(intent.input_file_id)]
            intent = dataclasses.replace(intent, input_file_id=None)
        return super().submit(intent, journal)

    def _id(self, prefix: str) -> str:
        return f"{self.name}-{super()._id(prefix)}"  # ids unique across doubles, as at services

    def _finish(self, b: MemoryBatch) -> None:
        random.Random(b.id).shuffle(b.lines)  # no provider promises result lines in order
        super()._finish(b)


@pytest.fixture(params=provider_params(sorted(available())))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "q.db")


@pytest.fixture
def clock() -> VirtualClock:
    import time

    return VirtualClock(time.time())  # today: the price data in force, `report`'s periods


def prompt(i: int, words: int | None = None) -> str:
    return f"question {i}: " + "why " * (i if words is None else words)


def item(name: str, custom_id: str, text: str, model: str | None = None) -> dict[str, Any]:
    """One input line in the provider's own shape (its request line, the user's id)."""
    fmt, shape = format_of(name), shape_of(name)
    request = fmt.item(custom_id, shape.body(model or shape.model, text, 30), None, name)
    line = registered(name).request_line(custom_id, request.endpoint, request.body)
    return dict(orjson.loads(line))


def enqueue(db: str, name: str, items: list[dict[str, Any]]) -> list[str]:
    with Queue(db, "q", provider=name) as q:
        assert q.add_many(items).added == len(items)
    return [str(it[getattr(format_of(name), "id_field", "custom_id")]) for it in items]


def at_least(name: str, n: int) -> int:
    """`n`, or the service's smallest batch if that is more (Cerebras: 10)."""
    shape = shape_of(name)
    return max(
        n, registered(name).limits(format_of(name).default_endpoint, shape.model).min_requests
    )


def run(
    db: str, doubles: list[Speaking], clock: VirtualClock, ticks: int = 300, **settings: Any
) -> None:
    """Tick, five virtual minutes at a time, until nothing is unfinished and no batch is open
    (one tick only, whatever it leaves, if `ticks` is 1)."""
    values: dict[str, Any] = {
        "settle_seconds": 30.0,
        "backoff_seconds": 10.0,
        "retry": RetryPolicy(base_seconds=5.0, max_seconds=10.0),
    }
    values.update(settings)
    engine = Engine(
        open_store(db),
        EngineSettings(**values),
        providers={d.name: d for d in doubles},
        clock=clock,
    )
    try:
        for _ in range(ticks):
            engine.tick(clock())
            if not (engine.store.has_unfinished() or engine.store.open_batches()):
                return
            clock.advance(300.0)
        if ticks > 1:
            raise AssertionError(f"not done after {ticks} ticks: {request_states(db)}")
    finally:
        engine.close()
        engine.store.close()


def exported(db: str) -> dict[str, dict[str, Any]]:
    lines = [orjson.loads(x) for x in cli("--db", db, "results").stdout.splitlines()]
    return {str(ln["custom_id"]): ln for ln in lines}


def double(name: str, clock: VirtualClock, **kw: Any) -> Speaking:
    return Speaking(name=name, clock=clock, latency=600.0, **kw)


# -- a queue drains, each answer its own -----------------------------------------------------


def test_a_queue_drains_each_request_answered_by_its_own_result(
    name: str, db: str, clock: VirtualClock
) -> None:
    """Result lines in any order map back to their own requests, exported with the
    provider's native body; the files of an ingested batch are deleted at the provider; one
    request shows by its custom id. (Folded from test_anthropic_engine.py's native-bodies
    case and test_gemini_engine.py's each-on-its-own-request case, inline and file.)"""
    n = at_least(name, 24)
    ids = enqueue(db, name, [item(name, f"r {i}/ü", prompt(i)) for i in range(n)])
    memory = double(name, clock)
    run(db, [memory], clock)
    assert request_states(db) == {"succeeded": n}
    assert results_per_request(db) == dict.fromkeys(ids, 1)
    assert memory.calls["create"] == 1 and len(memory.batches) == 1
    assert memory.files == {}  # input and output deleted once ingested
    out = exported(db)
    fmt = format_of(name)
    tokens = []
    for i in range(n):
        row = out[f"r {i}/ü"]
        assert row["provider"] == name and row["error"] is None
        assert row["response"]["status_code"] == 200
        text = fmt.output_text(row["response"]["body"])
        tokens.append(int(text.split()[1]))
    # each answer is its own request's: the prompt grows with i, whatever order lines came in
    assert tokens == sorted(tokens) and len(set(tokens)) == n
    shown = orjson.loads(cli("--db", db, "show", "r 3/ü", "--format", "json").stdout)
    assert [r["custom_id"] for r in shown] == ["r 3/ü"]


def test_errored_results_follow_the_retry_policy(name: str, db: str, clock: VirtualClock) -> None:
    """A transient error (overloaded, a 5xx) is retried up to max_attempts, then fails; an
    error no retry mends (an unknown model, a bad body) fails at once, alone, with its code:
    the rest of the batch succeeds. (Folded from test_anthropic_engine.py's retry case,
    test_anthropic_bad_input.py's unknown model and test_gemini_engine.py's refused request.)"""
    flaky = at_least(name, 1)  # its retries make a batch on their own (Cerebras: 10)
    items = [item(name, f"ok{i}", prompt(i)) for i in range(4)]
    items += [item(name, f"flaky{j}" if j else "flaky", f"{FLAKY} {j}") for j in range(flaky)]
    items += [item(name, "refused", REFUSED)]
    enqueue(db, name, items)
    run(db, [double(name, clock)], clock, retry=RetryPolicy(max_attempts=2, base_seconds=1.0))
    assert request_states(db) == {"succeeded": 4, "failed": flaky + 1}
    assert set(results_per_request(db).values()) == {1}
    attempts = dict(sql(db, "SELECT custom_id, attempts FROM requests"))
    assert (attempts["flaky"], attempts["refused"]) == (2, 1)
    out = exported(db)
    assert "gave up after 2 attempts" in out["flaky"]["error"]["message"]
    assert "not retryable" in out["refused"]["error"]["message"]
    for custom_id, transient in (("flaky", True), ("refused", False)):
        error = out[custom_id]["error"]
        assert error["code"] and error["code"] != "error"
        assert error["message"].startswith(WHY[transient])  # the provider's own words
        assert WHY[transient] in json.dumps(out[custom_id]["response"]["body"])  # its body
        status = (out[custom_id]["response"] or {}).get("status_code")
        assert status is None or status >= (500 if custom_id == "flaky" else 400)


def test_a_queue_mixing_every_provider_drains(db: str, clock: VirtualClock) -> None:
    """One queue holding every registered provider's requests, as input lines and through
    the Python API's short form: each drains through its own provider. (Folded from the
    mixed OpenAI-and-Anthropic and OpenAI-and-Gemini queues.)"""
    names = sorted(available())
    want: dict[str, str] = {}
    with Queue(db, "q") as q:
        for name in names:
            n = at_least(name, 3)
            lines = [item(name, f"{name} {i}", prompt(i)) for i in range(n - 1)]
            assert q.add_many(lines, provider=name).added == n - 1
            shape = shape_of(name)
            q.add(f"{name} short", shape.body(shape.model, "short form", 20), provider=name)
            want |= {f"{name} {i}": name for i in range(n - 1)} | {f"{name} short": name}
    doubles = [double(name, clock) for name in names]
    run(db, doubles, clock)
    assert request_states(db) == {"succeeded": len(want)}
    assert {c: row["provider"] for c, row in exported(db).items()} == want
    assert all(d.calls["create"] == 1 for d in doubles)


def test_cancel_by_custom_id_before_it_is_sent(name: str, db: str, clock: VirtualClock) -> None:
    """(Folded from test_gemini_engine.py, where it cancelled by a Gemini key.)"""
    n = at_least(name, 3) + 1
    enqueue(db, name, [item(name, f"c {i}/ü", prompt(i)) for i in range(n)])
    result = cli("--db", db, "cancel", "c 1/ü")
    assert result.exit_code == 0, result.output
    run(db, [double(name, clock)], clock)
    assert request_states(db) == {"succeeded": n - 1, "cancelled": 1}


# -- creates that fail -------------------------------------------------------------------------


def test_a_failed_create_does_not_adopt_the_batch_of_a_create_that_failed_after(
    name: str, db: str, clock: VirtualClock
) -> None:
    """Two intents of one size: A's create fails before creating anything (a 502), B's after
    creating its batch (a 500). A must not take B's batch (reconcile once matched unrecorded
    intents to unrecorded batches of their size, oldest first), B must not create again: one
    batch per intent, no request answered twice or requeued as missing. (Folded from
    tests/e2e/test_anthropic_storm.py; over HTTP, with each provider's own proof, it is
    test_ownership.py's test_only_the_newer_of_two_equal_lost_creates_was_made.)"""
    n = at_least(name, 5)
    ids = enqueue(db, name, [item(name, f"m{i}", prompt(i)) for i in range(2 * n)])
    memory = double(name, clock)
    memory.fail("create", TransientError("502 before anything was created"))
    memory.fail("create", TransientError("500 after the batch was created"), after=True)
    run(db, [memory], clock, max_batch_requests=n)
    assert results_per_request(db) == dict.fromkeys(ids, 1)
    made = [b.metadata.get("llmbatch_intent", "") for b in memory.batches.values()]
    assert sorted(made) == sorted(set(made)) and len(made) == 2  # one batch per intent
    requeued = sql(db, "SELECT COUNT(*) FROM attempts WHERE error_code = 'missing_result'")
    assert requeued == [(0,)]


def test_an_upload_that_expired_before_its_create_is_uploaded_again(
    name: str, db: str, clock: VirtualClock
) -> None:
    """The upload is recorded, the create refused; the worker comes back after the provider
    let uploads expire (Gemini keeps them 48 hours): the engine still has the intent's file,
    so it is uploaded again and created once. (Folded from test_gemini_engine.py; each
    transport's own re-upload is test_providers.py's.)"""
    n = at_least(name, 5)
    enqueue(db, name, [item(name, f"u{i}", prompt(i)) for i in range(n)])
    memory = double(name, clock, upload_ttl=48 * 3600.0)
    memory.fail("create", TransientError("500 before anything was created"))
    run(db, [memory], clock, ticks=1)
    assert sql(db, "SELECT input_file_id IS NOT NULL FROM batches") == [(1,)]
    clock.advance(49 * 3600)
    run(db, [memory], clock)
    assert request_states(db) == {"succeeded": n}
    assert (memory.calls["upload"], memory.calls["create"], len(memory.batches)) == (2, 2, 1)


# -- packing: models, quotas, budgets, a request too large ------------------------------------


def two_models(name: str) -> tuple[str, str]:
    priced = list(PRICED.get(name) or ())
    if len(priced) < 2:
        pytest.fail(f"provider {name!r} has no two priced models in PRICED: add them")
    return priced[0], priced[1]


def two_model_items(name: str, a: str, b: str, n: int) -> list[dict[str, Any]]:
    """`n` requests for model `a`, `n + 1` for `b`."""
    items = [item(name, f"a{i}", prompt(i), a) for i in range(n)]
    return items + [item(name, f"b{i}", prompt(i), b) for i in range(n + 1)]


def test_two_models_are_batched_as_the_provider_groups_them(
    name: str, db: str, clock: VirtualClock
) -> None:
    """A provider whose batch may mix models (Anthropic) sends both in one batch; any other
    one batch per model. Each answer comes from its own request's model, and the cost is
    counted per each request's own model. (Folded from test_anthropic_engine.py's two Claude
    models in one batch and test_gemini_engine.py's two models in two batches.)"""
    a, b = two_models(name)
    n = at_least(name, 4)
    enqueue(db, name, two_model_items(name, a, b, n))
    memory = double(name, clock)
    run(db, [memory], clock)
    assert request_states(db) == {"succeeded": 2 * n + 1}
    endpoint = format_of(name).default_endpoint
    mixes = memory.real.group_key(endpoint, a) == memory.real.group_key(endpoint, b)
    sizes = sorted(len(batch.lines) for batch in memory.batches.values())
    assert sizes == ([2 * n + 1] if mixes else [n, n + 1])
    expected = [(None, 2 * n + 1)] if mixes else [(a, n), (b, n + 1)]
    assert sorted(sql(db, "SELECT model, request_count FROM batches"), key=str) == sorted(
        expected, key=str
    )
    per_model = dict(sql(db, "SELECT model, SUM(requests) FROM cost_totals GROUP BY model"))
    assert per_model == {a: n, b: n + 1}


def test_a_model_under_a_quota_is_packed_alone(name: str, db: str, clock: VirtualClock) -> None:
    """An enqueued-token quota counts per model, so its model never shares a batch, even
    where the provider would mix models. (Folded from test_anthropic_engine.py.)"""
    a, b = two_models(name)
    n = at_least(name, 3)
    enqueue(db, name, two_model_items(name, a, b, n))
    run(db, [double(name, clock)], clock, quotas={(name, a): 10**9})
    assert request_states(db) == {"succeeded": 2 * n + 1}
    assert sorted(sql(db, "SELECT model, request_count FROM batches")) == sorted(
        [(a, n), (b, n + 1)]
    )


def test_under_a_budget_each_model_is_priced_and_packed_alone(
    name: str, db: str, clock: VirtualClock
) -> None:
    """Budgets price a batch's worst case per model, so under one models never mix.
    (Folded from test_anthropic_engine.py.)"""
    a, b = two_models(name)
    n = at_least(name, 2)
    enqueue(db, name, two_model_items(name, a, b, n))
    budgets = BudgetSettings((Budget(None, "day", Decimal("100")),), allow_unpriced=True)
    run(db, [double(name, clock)], clock, budgets=budgets)
    assert request_states(db) == {"succeeded": 2 * n + 1}
    assert sorted(sql(db, "SELECT model, request_count FROM batches")) == sorted(
        [(a, n), (b, n + 1)]
    )


def test_a_request_too_large_for_any_batch_fails_alone(
    name: str, db: str, clock: VirtualClock
) -> None:
    """With a 10 kB batch limit a 20 kB request can never go: it fails with the limit named,
    and the rest of its group still drains. (Folded from test_anthropic_engine.py.)"""
    n = at_least(name, 3)
    items = [item(name, "big", "x" * 20_000)] + [item(name, f"s{i}", prompt(i)) for i in range(n)]
    enqueue(db, name, items)
    run(db, [double(name, clock, cap_bytes=10_000)], clock)
    assert request_states(db) == {"failed": 1, "succeeded": n}
    shown = cli("--db", db, "show", "big").stdout
    assert f"too large for one {name} batch (limit 10,000 bytes" in shown, shown


# -- results the provider archived ------------------------------------------------------------


@pytest.mark.parametrize("mode", ["requeue", "fail"])
def test_results_archived_before_they_were_read(
    name: str, mode: str, db: str, clock: VirtualClock
) -> None:
    """The provider says it no longer holds the results (ResultsGone: Anthropic's
    `archived_at`, read by its transport in test_providers.py): with archived = "requeue" the
    requests go out again in a new batch, with "fail" each fails with the code "archived";
    `status` shows the batch archived either way. (Folded from test_anthropic_engine.py;
    results forgotten with the batch deleted run over HTTP in test_ownership.py.)"""
    n = at_least(name, 3)
    ids = enqueue(db, name, [item(name, f"a{i}", prompt(i)) for i in range(n)])
    memory = double(name, clock)
    memory.fail("download", ResultsGone("the results are archived"))
    run(db, [memory], clock, archived=mode)
    assert results_per_request(db) == dict.fromkeys(ids, 1)
    first = sorted(memory.batches)[0]
    if mode == "requeue":
        assert request_states(db) == {"succeeded": n}
        assert sql(db, "SELECT COUNT(*) FROM batches")[0][0] == 2
    else:
        assert request_states(db) == {"failed": n}
        assert {row["error"]["code"] for row in exported(db).values()} == {"archived"}
    status = cli("--db", db, "status").stdout
    assert first in status and "archived" in status


# -- the cost contract ------------------------------------------------------------------------
# Two models each provider batches, and whether the price data holds a batch price for each
# (known here, not asked of llmbatch.pricing): without one, every provider halves real time.
PRICED: dict[str, dict[str, bool]] = {
    "openai": {"gpt-4o-mini": True, "gpt-4.1-nano": True},
    "azure": {"gpt-4o-mini": True, "gpt-4.1-nano": True},
    "anthropic": {"claude-haiku-4-5": True, "claude-3-5-haiku-latest": False},
    "gemini": {"gemini-2.5-flash": True, "gemini-2.0-flash": False},
    "groq": {"openai/gpt-oss-20b": True, "llama-3.1-8b-instant": False},
    "together": {
        "meta-llama/Llama-3.3-70B-Instruct-Turbo": False,
        "meta-llama/Llama-4-Scout-17B-16E-Instruct": False,
    },
    "cerebras": {"llama3.1-8b": False, "gpt-oss-120b": False},
}


def independent(
    name: str, model: str, tokens_in: int, tokens_out: int, when: datetime
) -> tuple[Decimal, Decimal]:
    """(batch, real-time) USD of one request, priced with genai-prices directly."""
    key = format_of(name).price_key or name
    usage = Usage(input_tokens=tokens_in, output_tokens=tokens_out)
    real = Decimal(
        calc_price(usage, model, provider_id=key, genai_request_timestamp=when).total_price
    )
    if not PRICED[name][model]:
        return real / 2, real
    batch = calc_price(
        usage, model, provider_id=key, genai_request_timestamp=when, price_context=BATCH
    )
    return Decimal(batch.total_price), real


def test_recorded_cost_is_the_batch_price_of_the_usage_and_the_estimate_priced_alike(
    name: str, db: str, clock: VirtualClock, tmp_path: Path
) -> None:
    """Before submit, `llmbatch estimate` prices each model's estimated tokens at the price
    data's batch price (or real time halved where it has none) and says what it
    approximates; after, `llmbatch report` holds, per model, exactly the batch price of the
    usage each result reported, priced request by request by genai-prices directly, and the
    savings against real time. (Was Anthropic only, in test_results.py; Gemini's in
    test_gemini_engine.py; OpenAI's at scale stays in tests/e2e/test_cost.py.)"""
    a, b = two_models(name)
    n = at_least(name, 5)
    items = [item(name, f"{m} {i}", prompt(i, i % 13), m) for m in (a, b) for i in range(n)]
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(orjson.dumps(it) + b"\n" for it in items))
    when = datetime.now(UTC)

    shown = cli("estimate", str(path), "--provider", name, "--format", "json")
    assert shown.exit_code == 0, shown.output
    estimate = json.loads(shown.stdout)
    note = format_of(name).estimate_note
    if note is not None:
        assert note in cli("estimate", str(path), "--provider", name).output
    by_model = {m["model"]: m for m in estimate["models"]}
    assert set(by_model) == {a, b}
    for model, m in by_model.items():
        batch, real = independent(name, model, m["input_tokens"], m["expected_output_tokens"], when)
        assert abs(Decimal(m["batch_expected_usd"]) - batch) <= Decimal("0.000002"), (model, m)
        assert abs(Decimal(m["realtime_expected_usd"]) - real) <= Decimal("0.000002"), (model, m)
        assert m["derived"] is (not PRICED[name][model])

    enqueue(db, name, items)
    memory = double(name, clock)
    run(db, [memory], clock)
    assert request_states(db) == {"succeeded": 2 * n}
    expected: dict[str, tuple[Decimal, Decimal]] = {}
    for tokens_in, tokens_out, model in memory.given.values():
        assert model is not None
        batch, real = independent(name, model, tokens_in, tokens_out, when)
        was = expected.get(model, (Decimal(0), Decimal(0)))
        expected[model] = (was[0] + batch, was[1] + real)
    report = json.loads(cli("--db", db, "report", "--group-by", "model", "--format", "json").stdout)
    got = {ln["model"]: ln for ln in report["lines"]}
    assert set(got) == {a, b}
    for model, (batch, real) in expected.items():
        line = got[model]
        assert line["unpriced"] == 0 and line["requests"] == n
        assert abs(Decimal(line["batch_usd"]) - batch) <= Decimal("0.000002"), (model, line)
        assert abs(Decimal(line["realtime_usd"]) - real) <= Decimal("0.000002"), (model, line)
        assert Decimal(line["savings_usd"]) == Decimal(line["realtime_usd"]) - Decimal(
            line["batch_usd"]
        )
        assert Decimal(line["savings_usd"]) > 0
        assert line["derived"] is (not PRICED[name][model])
