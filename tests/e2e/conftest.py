"""Every end-to-end test runs with a fake key in the variable the engine settings name."""

from __future__ import annotations

import pytest

from helpers import E2E_KEY_ENV


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(E2E_KEY_ENV, "sk-test-not-a-secret")


@pytest.hookimpl(tryfirst=True)
def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """An end-to-end test that takes the `db` fixture runs on SQLite only, unless it is marked
    `both_backends`: the store contract suite (tests/contract, every Store method on SQLite
    and PostgreSQL, test_store_coverage.py naming any it misses) covers the backends, so an end
    to end run over PostgreSQL adds only its seconds. Marked: what depends on the backend's
    transactions, locks, types or schema (crash windows, races, secrets in a DSN); every
    test_upgrade*.py is on both without a mark."""
    test = metafunc.definition
    upgrade = test.path.name.startswith("test_upgrade")  # migrations differ per dialect
    if (
        "db" in metafunc.fixturenames
        and not upgrade
        and not test.get_closest_marker("both_backends")
    ):
        # a parametrize mark, not metafunc.parametrize: it takes the place of the fixture's
        # own params (both backends) rather than adding to them
        test.add_marker(pytest.mark.parametrize("db", ["sqlite"], indirect=True))
