"""docs/alerts.yml and docs/grafana-dashboard.json: promtool accepts the rules, and every
metric they name is one a worker serves (a renamed metric must not leave a silent alert)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest

from helpers import fast_settings
from llmbatch.budget import Budget, BudgetSettings
from llmbatch.emulator import running
from llmbatch.engine import Engine
from llmbatch.observe.server import MetricsServer
from llmbatch.store import open_store
from observe_helpers import families

DOCS = Path(__file__).resolve().parents[2] / "docs"
NAME = re.compile(r"\bllmbatch_[a-z0-9_]+")


def expressions() -> dict[str, list[str]]:
    rules = (DOCS / "alerts.yml").read_text()
    grafana = json.loads((DOCS / "grafana-dashboard.json").read_text())
    panel_exprs = [t["expr"] for p in grafana["panels"] for t in p["targets"]]
    return {"alerts.yml": NAME.findall(rules), "grafana": NAME.findall("\n".join(panel_exprs))}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[set[str]]:
    """The names a worker serves after a small lifecycle, with a budget and an error."""
    from llmbatch import Queue

    db = str(tmp_path_factory.mktemp("kit") / "kit.db")
    with Queue(db, "kit") as q:
        messages = [{"role": "user", "content": "hi"}]
        q.add_many(
            {"custom_id": f"k{i}", "body": {"model": "gpt-4o-mini", "messages": messages}}
            for i in range(3)
        )
    os.environ.setdefault("LLMBATCH_E2E_KEY", "sk-test-not-a-secret")
    with running() as emu:
        settings = fast_settings(emu, budgets=BudgetSettings((Budget(None, "day", Decimal(5)),)))
        engine = Engine(open_store(db), settings)
        server = MetricsServer(engine, open_store(db), open_store(db), port=0, max_age=0.1)
        server.start()
        try:
            deadline = time.monotonic() + 60
            while engine.store.unfinished_count():
                server.on_tick(engine.tick(time.time()))
                assert time.monotonic() < deadline
                time.sleep(0.05)
            time.sleep(0.3)
            yield families(server.url)
        finally:
            server.stop()
            engine.close()


@pytest.mark.slow
def test_every_metric_the_kit_names_is_served(served: set[str]) -> None:
    def known(n: str) -> bool:  # the parser names a counter's family without its _total
        return n in served or n.removesuffix("_total") in served

    for where, found in expressions().items():
        assert found, where
        missing = sorted({n for n in found if not known(n)})
        assert not missing, f"{where} names metrics no worker serves: {missing}"


def test_promtool_accepts_the_rules() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI"):
            pytest.fail("CI must check the alert rules: .ci/run installs Debian's prometheus")
        pytest.skip("promtool is not installed (apt-get install prometheus)")
    out = subprocess.run(
        [promtool, "check", "rules", str(DOCS / "alerts.yml")], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 7 rules found" in out.stdout
