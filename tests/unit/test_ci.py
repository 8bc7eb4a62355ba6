"""The README's two commands are the ones CI and newcomers run."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _command(marker: str) -> str:
    text = (ROOT / "README.md").read_text()
    m = re.search(rf"<!-- {marker} -->\n```sh\n(.+?)\n```", text)
    assert m, f"README has no {marker} block"
    return m.group(1)


def test_ci_runs_exactly_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert _command("test-command") in ci


def test_readme_run_command_uses_the_shipped_examples() -> None:
    assert "llmbatch" in _command("run-command")
