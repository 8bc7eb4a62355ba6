"""benchmarks/crash_matrix.py, small: real `llmbatch worker` processes SIGKILLed (and, for
OpenAI, one SIGSTOPped past its lease) at random instants of their work and replaced, the
queue drained, then exactly-once checked from the store and the emulator's batch list and
call log — the engine deletes its files, lists lag, uploads and creates are slow before
they act — and each strike put in a window of the protocol.

The benchmark's own sizes (`--small`: 12 kills, 2 pauses; the floors) are in
docs/reliability.md.
`.ci/run`'s harness stage runs it at `--small` on an OpenAI queue (and fails on any loss), so
the test runs the queues CI does not: Anthropic's, at 3 kills, and Gemini's (every batch an
uploaded file), at 3 kills and a pause.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

ROOT = Path(__file__).resolve().parents[2]


# The anthropic SDK takes several seconds to import: few kills keep it near a minute.
@pytest.mark.slow
@pytest.mark.parametrize("provider,kills,pauses", [("anthropic", 3, 0), ("gemini", 3, 1)])
def test_crash_matrix_small(provider: str, kills: int, pauses: int, tmp_path: Path) -> None:
    command = [sys.executable, str(ROOT / "benchmarks" / "crash_matrix.py")]
    command += ["--kills", str(kills), "--pauses", str(pauses), "--restarts", "0"]
    command += ["--round", "300", "--provider", provider, "--work-dir", str(tmp_path)]
    out = run_in_own_group(command, timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr).decode()[-3000:]
    figures = orjson.loads(out.stdout.splitlines()[-1])
    print(figures)
    assert figures["kills"] == kills and sum(figures["windows"].values()) == kills
    assert figures["pauses"] == pauses and figures["worker_failures"] == 0
    assert figures["requests"] >= 300 and figures["succeeded"] == figures["requests"]
    assert figures["lost"] == 0 and figures["duplicated"] == 0
    assert figures["double_creates"] == 0 and figures["not_ingested"] == 0
    assert figures["create_calls"] == figures["provider_batches"] >= figures["intents"] > 1
    assert figures["database_locked"] == 0 and figures["tracebacks"] == 0
    assert figures["provider"] == provider
    if provider == "anthropic":  # no files: those windows do not exist
        assert not {"upload", "uploaded", "sweep"} & set(figures["windows"])


def run_in_own_group(command: list[str], timeout: float) -> subprocess.CompletedProcess[bytes]:
    """Run `command` in a process group of its own; if it runs out of time, SIGKILL the whole
    group: its workers and emulator too, which `subprocess.run(timeout=...)` would leave
    running after the test (they were found still serving 45 minutes after such a timeout)."""
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"not done in {timeout} s: {(out + err).decode()[-3000:]}") from None
    return subprocess.CompletedProcess(command, proc.returncode, out, err)
