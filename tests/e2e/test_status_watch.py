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
    )
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
        _, err = proc.communicate(timeout=20)
        reader.join(timeout=10)
    assert proc.returncode == 0, err
    assert b"Traceback" not in err


def test_watch_refuses_json() -> None:
    result = cli("status", "--watch", "--format", "json")
    assert result.exit_code == 2
