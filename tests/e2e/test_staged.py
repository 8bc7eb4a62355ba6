"""What the crash matrix cannot strike directly, staged for real (issue 14): a work directory
on a disk that is really full (a small tmpfs), and two live workers on one host name in
their own PID namespaces (`unshare --pid --fork --mount-proc`, as two host-network
containers are). Each skips, saying why, where the machine refuses to mount or unshare.

(Power loss is staged as tests/e2e/test_durable_and_private.py's check that results commit
with a full sync before the provider's files are deleted.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    E2E_KEY_ENV,
    LLMBATCH,
    fast_settings,
    request_states,
    results_per_request,
    sql,
)
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.engine import Engine
from llmbatch.store import open_store


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=47) as e:
        yield e


def enqueue(db: str, n: int, prefix: str, model: str, words: int = 1) -> list[str]:
    items = [
        {
            "custom_id": f"{prefix}{i}",
            "body": {
                "model": model,
                "messages": [{"role": "user", "content": f"{prefix} {i} " + "word " * words}],
                "max_tokens": 200,
            },
        }
        for i in range(n)
    ]
    with Queue(db, "q") as q:
        assert q.add_many(items).added == n
    return [str(it["custom_id"]) for it in items]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 192 KiB tmpfs: a disk that fills for real (ENOSPC), unlike a symlink to /dev/full."""
    where = tmp_path / "work"
    where.mkdir()
    if shutil.which("mount") is None:
        pytest.skip("no mount(8) here to stage a full disk")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=192k,mode=0700", "tmpfs", str(where)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to stage a full disk: {done.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_a_really_full_disk_stops_only_the_batches_that_need_it(
    db: str, emu: RunningEmulator, small_disk: Path
) -> None:
    """A batch whose results do not fit waits, said once; a small batch enqueued after it is
    packed, sent, downloaded and ingested on what room is left; with room again, the big
    one is ingested too. Nothing lost, nothing answered twice."""
    big = enqueue(db, 300, "big", "gpt-4o-mini", words=40)
    settings = fast_settings(emu, delete_files=False)
    engine = Engine(open_store(db), settings, workdir=small_disk)
    notes: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while not sql(db, "SELECT 1 FROM events WHERE kind = 'disk_full'"):
            assert time.monotonic() < deadline, f"the disk never filled; notes {notes[-5:]}"
            notes += engine.tick(time.time()).notes
            time.sleep(0.05)
        small = enqueue(db, 3, "small", "gpt-4o")
        deadline = time.monotonic() + 60
        while {r for r, n in results_per_request(db).items() if n} != set(small):
            assert time.monotonic() < deadline, f"the small batch was not served: {notes[-5:]}"
            notes += engine.tick(time.time()).notes
            time.sleep(0.05)
        assert request_states(db).get("succeeded") == 3
        assert sum("is full" in n for n in notes) == 1, [n for n in notes if "full" in n]
        subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
        deadline = time.monotonic() + 60
        while engine.store.unfinished_count():
            assert time.monotonic() < deadline, f"not ingested with room again: {notes[-5:]}"
            notes += engine.tick(time.time() + 3600).notes
            time.sleep(0.05)
    finally:
        engine.close()
        engine.store.close()
    assert results_per_request(db) == dict.fromkeys(big + small, 1)


def _unshare_works() -> str | None:
    if shutil.which("unshare") is None:
        return "no unshare(1) here"
    done = subprocess.run(
        ["unshare", "--pid", "--kill-child", "--mount-proc", "true"],
        capture_output=True,
        text=True,
        check=False,
    )
    return None if done.returncode == 0 else f"unshare refused: {done.stderr.strip()}"


@pytest.mark.slow
def test_two_workers_in_their_own_pid_namespaces_never_take_each_others_lease(
    tmp_path: Path, emu: RunningEmulator
) -> None:
    """Both are pid 1 of their namespace on one host name; each must see the other as alive
    (its pid names nothing it can look up): one holds the lease all along, the queue drains,
    no take-over. Before the owner tag named the PID namespace, each judged the other dead:
    177 take-overs in 20 s."""
    why = _unshare_works()
    if why is not None:
        pytest.skip(why)
    db = str(tmp_path / "q.db")
    ids = enqueue(db, 200, "r", "gpt-4o-mini")
    config = tmp_path / "llmbatch.toml"
    config.write_text(
        "[engine]\npoll_interval = 0.05\nmax_poll_interval = 0.2\nsettle_seconds = 0.5\n"
        "submit_timeout = 1.0\nbackoff_seconds = 0.05\nmax_batch_requests = 20\n\n"
        f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{E2E_KEY_ENV}"\n'
    )
    env = {**os.environ, E2E_KEY_ENV: "sk-staged"}
    env.pop("OPENAI_BASE_URL", None)
    command = [LLMBATCH, "--config", str(config), "--db", db, "worker", "--interval", "0.05"]
    logs = [tmp_path / f"worker{i}.log" for i in range(2)]
    procs = []
    for log in logs:
        with open(log, "wb") as out:
            procs.append(
                subprocess.Popen(
                    # --kill-child: the worker (pid 1 of its namespace) goes with unshare
                    ["unshare", "--pid", "--kill-child", "--mount-proc", *command],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=env,
                    # a process group of its own, for the SIGTERM below
                    start_new_session=True,
                )
            )
    holders: set[str] = set()
    try:
        deadline = time.monotonic() + 120
        while not all(" serving " in p.read_text(errors="replace") for p in logs if p.exists()):
            assert time.monotonic() < deadline, "the workers did not start"
            assert all(p.poll() is None for p in procs), [p.read_text() for p in logs]
            time.sleep(0.1)
        deadline = time.monotonic() + 120
        # both serve side by side for a while (the bug took the lease over 9 times a second)
        quiet_until = time.monotonic() + 8
        while time.monotonic() < quiet_until or request_states(db).get("succeeded") != len(ids):
            assert time.monotonic() < deadline, f"not drained: {request_states(db)}"
            held = sql(db, "SELECT holder FROM leases WHERE name = 'engine'")
            if held:
                holders.add(str(held[0][0]))
            time.sleep(0.05)
    finally:
        # to the worker, through its group: unshare itself ignores SIGTERM while it waits for
        # its child (each stop used to run out its 60 s and SIGKILL)
        for p in procs:
            os.killpg(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    text = "".join(p.read_text(errors="replace") for p in logs)
    assert ":1:" in next(iter(holders)), holders  # pid 1 of its namespace
    assert len(holders) == 1, holders
    assert not sql(db, "SELECT detail FROM events WHERE kind = 'lease_taken_over'")
    assert "Traceback" not in text
    assert results_per_request(db) == dict.fromkeys(ids, 1)
