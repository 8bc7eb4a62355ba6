"""Other processes die too: the emulator, the database. Real `llmbatch worker` processes
wait, recover and lose nothing (benchmarks/bench_outages.py, at a size that takes seconds).

Each scenario feeds 1,000 requests in waves to two workers while it inflicts two outages:
SIGKILL the emulator and start it again on its data dir; `pg_terminate_backend` every
connection to the queue's database; crash a private PostgreSQL cluster (`pg_ctl stop -m
immediate`) and start it again. Then every request has exactly one result, every intent
at most one provider batch (the emulator's list and call log), every batch is ingested, and
the workers are still serving.
"""

from __future__ import annotations

import glob
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


def outages(scenario: str, tmp_path: Path, *extra: str) -> dict[str, object]:
    out = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_outages.py"), "--only", scenario,
         "--requests", "1000", "--outages", "2", "--waves", "6", "--work-dir", str(tmp_path),
         *extra],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert out.stdout, out.stderr.decode()[-3000:]
    figures: dict[str, object] = orjson.loads(out.stdout.splitlines()[-1])[scenario]
    print(figures)
    assert out.returncode == 0, (figures, out.stderr.decode()[-3000:])
    return figures


def assert_survived(f: dict[str, object]) -> None:
    assert f["ok"] is True
    assert f["outages"] == 2 and f["drained"] is True
    assert f["states"] == {"succeeded": 1000}
    assert f["lost"] == 0 and f["duplicated"] == 0
    assert f["creates_per_intent_max"] == 1 and f["double_creates"] == 0
    assert f["attempt_in_batches_max"] == 1 and f["not_ingested"] == 0
    assert f["workers_alive_at_end"] == 2 and f["worker_exit_codes"] == [0, 0]
    assert f["tracebacks"] == 0


def test_emulator_killed_and_restarted(tmp_path: Path) -> None:
    assert_survived(outages("emulator", tmp_path))


def test_connections_terminated(tmp_path: Path, pg_template: str) -> None:
    # pg_template skips without LLMBATCH_TEST_PG (fails under CI); the scenario makes a
    # database of its own there, so terminating its connections touches no other test
    f = outages("pg_terminate", tmp_path, "--pg", os.environ["LLMBATCH_TEST_PG"])
    assert_survived(f)
    assert f["waiting_lines"] >= 1  # each worker says so once per outage, in one line


@pytest.mark.skipif(
    not glob.glob("/usr/lib/postgresql/*/bin/initdb"),
    reason="a private cluster needs the PostgreSQL server binaries (initdb, pg_ctl)",
)
def test_private_cluster_crashed_and_restarted(tmp_path: Path) -> None:
    f = outages("pg_restart", tmp_path)
    assert_survived(f)
    assert f["waiting_lines"] >= 1 and f["crash_recoveries"] == 2
