"""Every end-to-end test runs with a fake key in the variable the engine settings name."""

from __future__ import annotations

import pytest

from helpers import E2E_KEY_ENV


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(E2E_KEY_ENV, "sk-test-not-a-secret")
