"""The floor: for each of 1,200 varied requests (n, best_of, tools, images by URL and inline,
files, 5-minute and 1-hour cache writes), the worst case a budget reserves is at least what
the emulator bills for it (benchmarks/bench_worst_case.py prints the margins)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_worst_case import DEFAULT_SET, run  # noqa: E402


@pytest.mark.slow
def test_the_reserved_worst_case_covers_every_request_the_emulator_bills() -> None:
    out = run(DEFAULT_SET)
    assert len(out) == 1200
    billed = [c for c in out if c.actual is not None]
    assert len(billed) > 1150  # a few PDFs pass a model's window: refused, unbilled
    short = [(c.custom_id, c.worst, c.actual) for c in billed if c.actual and c.worst < c.actual]
    assert short == []
