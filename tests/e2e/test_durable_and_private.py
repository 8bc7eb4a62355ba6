"""Paid results are durable before the provider's copies go, and what llmbatch writes is for
its owner only (issue 14)."""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from helpers import E2E_KEY_ENV, cli, fast_settings, jsonl, line, results_per_request
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.providers.openai import OpenAIProvider
from llmbatch.store.sqlite import SqliteStore


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=44) as e:
        yield e


class Recording(OpenAIProvider):
    """The real provider, noting what the store had executed when files were deleted."""

    def __init__(self, trace: list[str], **options: object) -> None:
        super().__init__(**options)  # type: ignore[arg-type]
        self.trace, self.seen_at_delete = trace, list[list[str]]()

    def delete_files(self, file_ids: Sequence[str]) -> None:
        self.seen_at_delete.append(list(self.trace))
        super().delete_files(file_ids)


def test_results_commit_with_a_full_sync_before_the_files_are_deleted(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    """A power loss between the commit of the last results and the delete of the provider's
    files would lose paid results if that commit sat in an unsynced WAL. The statements the
    store ran, as the provider deletes: the batch closed in a transaction under
    `synchronous = FULL` (its fsync makes every earlier result commit durable too), and
    committed before the delete was sent."""
    db = tmp_path / "q.db"
    with Queue(str(db), "q") as q:
        q.add_many(
            {"custom_id": f"r{i}", "body": {"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": f"q {i}"}]}}
            for i in range(5)
        )  # fmt: skip
    store = SqliteStore(db)
    trace: list[str] = []
    store._conn.set_trace_callback(trace.append)  # what a power loss would find committed
    provider = Recording(trace, base_url=emu.base_url, api_key_env=E2E_KEY_ENV)
    engine = Engine(store, fast_settings(emu), providers={"openai": provider})
    try:
        deadline = time.monotonic() + 20
        while not provider.seen_at_delete:
            assert time.monotonic() < deadline
            engine.tick(time.time())
            time.sleep(0.02)
    finally:
        engine.close()
        store.close()
    seen = provider.seen_at_delete[0]
    closed = max(i for i, s in enumerate(seen) if "SET state = 'ingested'" in s)
    began = max(i for i in range(closed) if seen[i] == "BEGIN IMMEDIATE")
    committed = next(i for i in range(closed, len(seen)) if seen[i] == "COMMIT")
    assert "PRAGMA synchronous = FULL" in seen[began - 1 : began], seen[began - 3 : committed + 1]
    assert committed < len(seen)
    assert results_per_request(str(db)) == {f"r{i}": 1 for i in range(5)}


def test_reject_files_and_results_are_for_the_owner_only(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    old = os.umask(0o022)
    try:
        db = str(tmp_path / "q.db")
        source = tmp_path / "in.jsonl"
        source.write_bytes(jsonl(line("a"), b"not json", line("b")))
        out = cli("--db", db, "enqueue", str(source), "--skip-invalid")
        assert out.exit_code == 1, out.output  # lines were rejected (the exit-code policy)
        rejects = tmp_path / "in.jsonl.rejected.jsonl"
        assert rejects.exists() and stat.S_IMODE(rejects.stat().st_mode) == 0o600
        engine = Engine(Queue(db, "default").store, fast_settings(emu))
        try:
            deadline = time.monotonic() + 20
            while engine.store.unfinished_count():
                assert time.monotonic() < deadline
                engine.tick(time.time())
                time.sleep(0.02)
        finally:
            engine.close()
            engine.store.close()
        for fmt in ("jsonl", "csv"):
            target = tmp_path / f"out.{fmt}"
            done = cli("--db", db, "results", "--format", fmt, "--output", str(target))
            assert done.exit_code == 0, done.output
            assert stat.S_IMODE(target.stat().st_mode) == 0o600
            assert target.read_text().count("\n") >= 2
        assert stat.S_IMODE(Path(db).stat().st_mode) == 0o600
        refused = cli("--db", db, "results", "--output", str(tmp_path / "no" / "such" / "x"))
        assert refused.exit_code == 2 and "cannot write" in refused.output  # a wrong flag
    finally:
        os.umask(old)
