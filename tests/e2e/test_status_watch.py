"""`llmbatch status --watch`: the status screen again and again, live, until Ctrl-C (exit 0)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable

from helpers import LLMBATCH, cli
from llmbatch import Queue


def _signal_state(pid: int | str) -> str:
    """The process's ignored and blocked signal masks (/proc), for a failure's message."""
    with open(f"/proc/{pid}/status") as f:
        return " ".join(line.strip() for line in f if line.startswith(("SigIgn", "SigBlk")))


def _as_a_terminal_starts_it() -> None:
    """Ctrl-C acts on the child whatever this test process inherited: a process started with
    SIGINT ignored or blocked keeps it so (Python installs KeyboardInterrupt only over the
    default). Under `.ci/run`, in an xdist worker after other tests, the watch once went on
    printing 20 s after its SIGINT (never alone); a failure now prints both masks."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_watch_shows_new_work_and_stops_on_ctrl_c(sqlite_db: str) -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "x"}]}
    with Queue(sqlite_db, "live") as q:
        q.add_many([{"custom_id": f"a{i}", "body": body} for i in range(3)])
    env = {**os.environ, "COLUMNS": "100", "LLMBATCH_DB": sqlite_db}
    proc = subprocess.Popen(
        [LLMBATCH, "status", "--watch", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        preexec_fn=_as_a_terminal_starts_it,
    )
    state = f"this process: {_signal_state('self')}; the watch: {_signal_state(proc.pid)}"
    seen: list[bytes] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stdout.readline, b"")))  # type: ignore[union-attr]
    reader.start()

    def screens() -> list[str]:
        return b"".join(seen).decode().split("Ctrl-C stops")

    def until(check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 30
        while not check():
            assert time.monotonic() < deadline, screens()[-1]
            time.sleep(0.05)

    try:
        until(lambda: len(screens()) > 2)
        assert re.search(r"live .* 3 +3", screens()[1])
        with Queue(sqlite_db, "live") as q:
            q.add_many([{"custom_id": f"b{i}", "body": body} for i in range(4)])
        until(lambda: any(re.search(r"live .* 7 +7", s) for s in screens()[-3:]))
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            _, err = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError(f"the watch went on after Ctrl-C ({state})") from None
        reader.join(timeout=10)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err


def test_watch_refuses_json() -> None:
    result = cli("status", "--watch", "--format", "json")
    assert result.exit_code == 2
