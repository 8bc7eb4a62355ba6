"""A provider's batch id is unique at that provider only, on every store.

Two OpenAI-compatible services run by their owners both number their batches `batch_1`,
`batch_2`, ...; so did the in-process doubles of test_engine_kinds.py before each got its
name as a prefix. The store once held `batches.provider_batch_id` unique across providers and
found a batch by that id alone: the second provider's `batch_1` could not be recorded, and its
requests stayed `packed` for good. Every registered provider's double here numbers its
batches and files from 1, the way such a service does; one queue holding requests for all of
them drains, each request answered by its own result.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from test_engine_kinds import Speaking, at_least, exported, item, prompt, run

from helpers import UNDO_0014, cli, request_states, results_per_request, roll_back, sql
from llmbatch import Queue
from llmbatch.errors import TransientError
from llmbatch.providers import available, format_of
from llmbatch.providers.base import BatchStatus
from llmbatch.providers.testing import MemoryProvider, VirtualClock
from llmbatch.store import Store, open_store
from llmbatch.store.sqlstore import migrations

THIS = 14  # the migration that made batch ids unique per provider


class Numbering(Speaking):
    """The double of test_engine_kinds.py without its name before its ids: the same ids
    (`file_1`, `batch_2`, ...) at every provider, as at two self-hosted services."""

    def _id(self, prefix: str) -> str:
        return MemoryProvider._id(self, prefix)


def numbering(name: str, clock: VirtualClock) -> Numbering:
    return Numbering(name=name, clock=clock, latency=600.0)


def enqueue_every_provider(db: str, per_batch: int) -> dict[str, str]:
    """Two batches of `per_batch` requests for every registered provider in one queue: custom
    id -> the provider that must answer it."""
    want: dict[str, str] = {}
    with Queue(db, "q") as q:
        for name in sorted(available()):
            n = 2 * per_batch
            lines = [item(name, f"{name} {i}", prompt(i)) for i in range(n)]
            assert q.add_many(lines, provider=name).added == n
            want |= {f"{name} {i}": name for i in range(n)}
    return want


def check_answers(db: str, want: dict[str, str]) -> None:
    """Every request succeeded once, answered by its own provider, each answer its own."""
    assert request_states(db) == {"succeeded": len(want)}
    assert results_per_request(db) == dict.fromkeys(want, 1)
    out = exported(db)
    assert {c: row["provider"] for c, row in out.items()} == want
    for name in set(want.values()):
        rows = [out[f"{name} {i}"] for i in range(sum(1 for p in want.values() if p == name))]
        assert all(r["error"] is None and r["response"]["status_code"] == 200 for r in rows)
        # each answer is its own request's: the prompt, so the answer, grows with i
        tokens = [int(format_of(name).output_text(r["response"]["body"]).split()[1]) for r in rows]
        assert tokens == sorted(set(tokens)), name


def test_providers_that_hand_back_the_same_batch_ids_all_drain(db: str) -> None:
    clock = VirtualClock(1_800_000_000.0)
    names = sorted(available())
    per_batch = max(at_least(name, 3) for name in names)
    want = enqueue_every_provider(db, per_batch)
    doubles: list[Speaking] = [numbering(name, clock) for name in names]
    run(db, doubles, clock, max_batch_requests=per_batch)
    check_answers(db, want)
    # the ids did clash: every provider made the same two batch ids, each recorded at its own
    made = {d.name: sorted(d.batches) for d in doubles}
    assert len(made[names[0]]) == 2 and all(ids == made[names[0]] for ids in made.values())
    rows = sql(db, "SELECT provider, provider_batch_id FROM batches")
    assert sorted(rows) == sorted((n, i) for n in names for i in made[n])
    # an id at several providers names no one batch: refused in one line, nothing cancelled
    clash = made[names[0]][0]
    for args in (("report", "--batch", clash), ("cancel", "--batch", clash)):
        refused = cli("--db", db, *args)
        assert refused.exit_code != 0 and "name one by its number" in refused.output, args
        assert len(refused.output.strip().splitlines()) == 1, refused.output
    ((ours,),) = sql(db, "SELECT MIN(id) FROM batches WHERE provider_batch_id = ?", (clash,))
    assert cli("--db", db, "report", "--batch", str(ours)).exit_code == 0
    assert request_states(db) == {"succeeded": len(want)}


def test_a_batch_adopted_at_one_provider_is_not_taken_for_another_providers(db: str) -> None:
    """A create answered 500 after it acted, at the first provider: the sweep finds its batch
    by our store's tag and adopts it (recorded by provider and id), while the second provider
    holds a batch of the same id the store already recorded; each drains on its own."""
    clock = VirtualClock(1_800_000_000.0)
    names = sorted(available())[:2]
    want: dict[str, str] = {}
    with Queue(db, "q") as q:
        for name in names:
            n = at_least(name, 3)
            lines = [item(name, f"{name} {i}", prompt(i)) for i in range(n)]
            assert q.add_many(lines, provider=name).added == n
            want |= {f"{name} {i}": name for i in range(n)}
    first, second = (numbering(name, clock) for name in names)
    first.fail("create", TransientError("500 after the batch was created"), after=True)
    run(db, [first, second], clock)
    check_answers(db, want)
    assert first.calls["create"] == 1 and second.calls["create"] == 1  # nothing created twice
    assert sorted(first.batches) == sorted(second.batches)  # one id, at both
    rows = sql(db, "SELECT provider, provider_batch_id FROM batches")
    assert sorted(rows) == sorted((d.name, i) for d in (first, second) for i in d.batches)


def test_adopting_a_batch_finds_it_at_its_own_provider(store: Store) -> None:
    """The sweep adopts a batch proven ours that the store did not record: it is recorded at
    its provider even when another provider's batch of the same id is in the store (the
    adoption once did nothing, its results never read), and once only."""
    now = time.time()
    token = store.acquire_lease("engine", "me", 60, now)
    assert token is not None
    status = BatchStatus("batch_1", "in_progress", "in_progress", total=3, input_file_id="file_1")
    first = store.adopt_batch("one-service", status, None, now, token)
    second = store.adopt_batch("another-service", status, None, now, token)
    assert first is not None and second is not None and first != second
    assert store.adopt_batch("another-service", status, None, now, token) is None  # known
    found = {b.id: (b.provider, b.provider_batch_id) for b in store.open_batches()}
    assert found == {first: ("one-service", "batch_1"), second: ("another-service", "batch_1")}


def test_a_store_made_before_0014_with_batches_in_flight_upgrades_and_drains(
    db: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Migration 0014 on a store the previous code left with batches in flight at one
    provider and requests queued for another: it upgrades (the store made by the current code,
    0014 taken back out, checked equal to the schema every migration before 0014 makes), and a
    worker drains it while the second provider hands back the ids of the first one's batches
    still in flight."""
    clock = VirtualClock(1_800_000_000.0)
    one, other = sorted(available())[:2]
    want: dict[str, str] = {}
    n = max(at_least(one, 3), at_least(other, 3))
    first, second = numbering(one, clock), numbering(other, clock)
    with Queue(db, "q") as q:
        assert q.add_many(
            [item(one, f"{one} {i}", prompt(i)) for i in range(2 * n)], provider=one
        ).added
    want |= {f"{one} {i}": one for i in range(2 * n)}
    run(db, [first], clock, ticks=1, max_batch_requests=n)
    assert request_states(db) == {"submitted": 2 * n}  # two batches in flight
    with Queue(db, "q") as q:  # and requests queued for the other provider
        assert q.add_many(
            [item(other, f"{other} {i}", prompt(i)) for i in range(2 * n)], provider=other
        ).added
    want |= {f"{other} {i}": other for i in range(2 * n)}

    roll_back(db, UNDO_0014, THIS, request, tmp_path)  # the previous code's store
    upgraded: Any = open_store(db)
    latest = migrations(upgraded.dialect)[-1][0]
    upgraded.close()
    assert sql(db, "SELECT value FROM meta WHERE key = 'schema_version'") == [(str(latest),)]
    in_flight = sorted(first.batches)
    assert sql(db, "SELECT provider_batch_id FROM batches ORDER BY id") == [(i,) for i in in_flight]

    run(db, [first, second], clock, max_batch_requests=n)
    check_answers(db, want)
    assert sorted(second.batches) == in_flight  # the same ids, while the first's were in flight
    # the counter of batch ids went on past the rows copied back (SQLite's AUTOINCREMENT)
    assert sorted(i for (i,) in sql(db, "SELECT id FROM batches")) == [1, 2, 3, 4]
