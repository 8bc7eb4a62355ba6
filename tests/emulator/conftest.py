"""Shared fixtures: a real emulator on a free port and the official SDK pointed at it (the
helpers the tests import are in emu_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from llmbatch.emulator import RunningEmulator, running


@pytest.fixture
def emu(tmp_path: Path) -> Iterator[RunningEmulator]:
    with running(tmp_path / "data", seed=1234) as e:
        yield e


@pytest.fixture
def client(emu: RunningEmulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url, api_key="sk-test-secret", max_retries=0)
