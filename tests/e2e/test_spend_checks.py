"""Every cent accounted for, end to end: the provider's own total checked against what we
counted, spend no budget planned (a duplicate provider batch) charged when found, unreadable
usage never $0, and the receipts that show it (`report --batch`, `report --day`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from helpers import E2E_KEY_ENV, cli, fast_settings, request_states, sql
from llmbatch import Queue
from llmbatch.budget import Budget, BudgetSettings
from llmbatch.emulator import RunningEmulator, running
from llmbatch.emulator.models import builtin_ids
from llmbatch.engine import Engine
from llmbatch.store import open_store

MODEL = "gpt-4o-mini"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(E2E_KEY_ENV, "sk-test-not-a-secret")


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=21) as e:
        yield e


def enqueue(db: str, n: int, queue: str = "q", model: str = MODEL) -> None:
    with Queue(db, queue) as q:
        q.add_many(
            [
                {
                    "custom_id": f"{queue}{i}",
                    "body": {
                        "model": model,
                        "max_tokens": 30,
                        "messages": [{"role": "user", "content": f"q {i}, why?"}],
                    },
                }
                for i in range(n)
            ]
        )


def drive(engine: Engine, done: object = None, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while engine.store.unfinished_count() if done is None else not done():  # type: ignore[operator]
        engine.tick(time.time())
        assert time.monotonic() < deadline, request_states(engine.store.location)
        time.sleep(0.02)


def test_the_providers_total_is_checked_against_what_we_counted(
    db: str, emu: RunningEmulator
) -> None:
    """A batch read whole agrees with OpenAI's Batch `usage`; one whose first line could not
    be read (a garbled download, every try) does not: status and report show "provider says"
    beside "we counted", and the request it lost is sent again."""
    enqueue(db, 3)
    engine = Engine(open_store(db), fast_settings(emu))
    try:
        drive(engine)
        enqueue(db, 3, queue="r")
        emu.control.add_fault("files.content", "garble_line")
        drive(
            engine,
            lambda: sql(db, "SELECT COUNT(*) FROM batches WHERE state = 'ingested'")[0][0] >= 2,
        )
        emu.control.clear_faults()
        drive(engine)
    finally:
        engine.close()
    good, bad = (int(b) for (b,) in sql(db, "SELECT id FROM batches ORDER BY id LIMIT 2"))
    checks = {c.batch_id: c for c in engine.store.usage_checks(every=True)}
    assert not checks[good].differs
    assert checks[bad].differs and checks[bad].says[0] > checks[bad].counted[0]
    status = " ".join(cli("--db", db, "status").output.split())
    assert "anomaly: batch batch_" in status and "provider says" in status, status
    spend = orjson.loads(cli("--db", db, "status", "--format", "json").output)["spend"]
    (shown,) = spend["provider_checks"]
    assert shown["batch"] == bad and shown["provider_says"] != shown["we_counted"]
    report = " ".join(cli("--db", db, "report").output.split())
    assert "anomaly: batch batch_" in report and "we counted" in report
    receipt = " ".join(cli("--db", db, "report", "--batch", str(bad)).output.split())
    assert "DIFFERS: batch batch_" in receipt and "(input +" in receipt, receipt
    as_json = orjson.loads(
        cli("--db", db, "report", "--batch", str(good), "--format", "json").output
    )
    (check,) = as_json["provider_checks"]
    assert check["provider_says"] == check["we_counted"] and not check["differs"]
    assert request_states(db) == {"succeeded": 6}


def test_a_duplicate_provider_batch_is_charged_when_found(tmp_path: Path) -> None:
    """The residual risk: a create whose answer was lost, and a list that hides the batch for
    longer than the settle delay, make two provider batches for one intent. When the sweep
    finds the first, it is charged at once (the intent's worst case), then settled to what its
    own lines cost: the budget counts both, and status and the receipts say so."""
    db = str(tmp_path / "q.db")
    enqueue(db, 8)
    with running(seed=22) as emu:
        emu.control.add_fault("batches.list", "list_lag", seconds=1.5)
        emu.control.add_fault("batches.create", "500", mode="after", count=1)
        settings = fast_settings(
            emu,
            settle_seconds=0.3,
            sweep_interval=0.3,
            budgets=BudgetSettings((Budget(None, "day", Decimal(1)),)),
        )
        engine = Engine(open_store(db), settings)
        try:
            drive(
                engine,
                lambda: sql(db, "SELECT COUNT(*) FROM batches WHERE state = 'ingested'")[0][0] == 2,
            )
        finally:
            engine.close()
    assert request_states(db) == {"succeeded": 8}
    rows = sql(db, "SELECT batch_id, kind, reserved, spent, worst FROM spend ORDER BY batch_id")
    (intent, k1, r1, s1, w1), (dup, k2, r2, s2, w2) = rows
    assert (k1, k2) == ("planned", "duplicate") and r1 == r2 == 0
    assert w2 == w1 and 0 < int(s2) <= int(w2) and abs(int(s2) - int(s1)) <= 2
    first = int(time.time() // 86400)
    assert engine.store.committed("*", first, first + 1) == int(s1) + int(s2)
    status = " ".join(cli("--db", db, "status").output.split())
    assert f"unplanned: batch {dup} (queue q): a duplicate provider batch, charged" in status
    (unplanned,) = orjson.loads(cli("--db", db, "status", "--format", "json").output)["spend"][
        "unplanned"
    ]
    assert (unplanned["batch"], unplanned["kind"], unplanned["settled"]) == (dup, "duplicate", True)
    receipt = " ".join(cli("--db", db, "report", "--batch", str(intent)).output.split())
    assert f"duplicate: batch {dup} (" in receipt, receipt
    dup_receipt = " ".join(cli("--db", db, "report", "--batch", str(dup)).output.split())
    assert "a duplicate provider batch of batch" in dup_receipt
    assert "budget (a duplicate no budget planned)" in dup_receipt
    day = datetime.now(UTC).date().isoformat()
    on_the_day = " ".join(cli("--db", db, "report", "--day", day).output.split())
    assert "a duplicate provider batch, charged" in on_the_day


def test_receipts_say_list_paid_saved_the_price_data_and_what_has_no_price(
    tmp_path: Path,
) -> None:
    db = str(tmp_path / "q.db")
    enqueue(db, 3)
    with Queue(db, "u") as q:
        q.add_many(
            [
                {
                    "custom_id": "x",
                    "body": {
                        "model": "gpt-unheard-of",
                        "max_tokens": 5,
                        "messages": [{"role": "user", "content": "hi"}],
                    },
                }
            ]
        )
    with Queue(db, "e") as q:
        q.add_many(
            [
                {
                    "custom_id": f"v{i}",
                    "url": "/v1/embeddings",
                    "body": {"model": "text-embedding-3-small", "input": f"text {i}"},
                }
                for i in range(2)
            ]
        )
    # a model the provider serves but the price data does not know: unpriced, never $0
    with running(seed=23, models=[*builtin_ids("openai"), "gpt-unheard-of"]) as emu:
        engine = Engine(open_store(db), fast_settings(emu))
        try:
            drive(engine)
        finally:
            engine.close()
    (batch,) = sql(db, "SELECT MIN(id) FROM batches WHERE model = ?", [MODEL])[0]
    raw = cli("--db", db, "report", "--batch", str(batch)).output
    assert all(len(line) <= 100 for line in raw.splitlines()), raw
    out = " ".join(raw.split())
    assert out.startswith(f"receipt: batch {batch} (batch_") and "gpt-4o-mini" in out, out
    assert "list $" in out and "paid $" in out and "saved $" in out
    assert "prices: genai-prices " in out and "as we counted" in out
    r = orjson.loads(cli("--db", db, "report", "--batch", str(batch), "--format", "json").output)
    (line,) = r["lines"]
    listed, paid = Decimal(line["list_usd"]), Decimal(line["paid_usd"])
    assert paid > 0 and abs(listed - 2 * paid) <= Decimal("0.000001")  # half, to 1e-6 USD
    assert Decimal(line["saved_usd"]) == listed - paid
    day = datetime.now(UTC).date().isoformat()
    whole = " ".join(cli("--db", db, "report", "--day", day).output.split())
    assert "unpriced: 1 results without a known cost" in whole and "unpriced" in whole
    assert "derived: no batch price in the price data" in whole
    only = cli("--db", db, "report", "--day", day, "--queue", "u", "--format", "json").output
    (unknown,) = orjson.loads(only)["lines"]
    assert unknown["paid_usd"] is None and unknown["unpriced"] == 1  # never $0
    csv = cli("--db", db, "report", "--day", day, "--format", "csv").output
    assert csv.splitlines()[0].startswith("batch,model,tier,requests")
    missing = cli("--db", db, "report", "--batch", "batch_nope")
    assert missing.exit_code != 0 and "no batch 'batch_nope'" in missing.output
    bad_day = cli("--db", db, "report", "--day", "yesterday")
    assert bad_day.exit_code != 0 and "is not a date" in bad_day.output


def test_unreadable_usage_is_charged_its_worst_case_never_zero(tmp_path: Path) -> None:
    """A result whose usage cannot be read costs an unknown amount: the budget keeps its
    worst case and counts it as unpriced, instead of settling it to $0."""
    db = str(tmp_path / "q.db")
    enqueue(db, 2)
    store = open_store(db)
    token = store.acquire_lease("engine", "me", 60, time.time())
    assert token is not None
    from llmbatch import budget, ledger
    from llmbatch.store.batching import Outcome
    from llmbatch.usage import UsageRecord

    settings = BudgetSettings((Budget(None, "day", Decimal(1)),))
    ids = [int(i) for (i,) in sql(db, "SELECT id FROM requests ORDER BY id")]
    now = time.time()
    plan = budget.plan(store, ("openai", "/v1/chat/completions", MODEL), ids, settings, now)
    batch = store.create_intent(
        ("openai", "/v1/chat/completions", MODEL), ids, 1, 1, now, token, plan.reservation
    )
    assert batch is not None
    attempts = [int(a) for (a,) in sql(db, "SELECT id FROM attempts ORDER BY id")]
    good = UsageRecord(20, 10)
    bad = UsageRecord(None, None, flag="missing: usage")
    store.apply_outcomes(
        batch,
        [
            Outcome(
                attempts[0],
                "succeeded",
                200,
                body=b"{}",
                input_tokens=20,
                output_tokens=10,
                usage=good,
            ),
            Outcome(attempts[1], "succeeded", 200, body=b"{}", usage=bad),
        ],
        now,
        token,
    )
    (b,) = [o for o in store.open_batches() if o.id == batch]
    ledger.settle(store, b, settings, now, token)
    (row,) = store.batch_spend(batch)
    worst_one = plan.reservation.per_queue["q"] // 2
    assert row.unpriced == 1 and row.spent >= worst_one > 0
    store.close()
