"""A provider from someone else, installed beside llmbatch, runs a queue without touching src/.

tests/data/plugin_provider is a package with its own pyproject.toml. The test installs it as
pip lays out a wheel — the package and a `*.dist-info` holding its METADATA and
`entry_points.txt` (read from that pyproject) in a folder on PYTHONPATH — and drives the real
`llmbatch` console script in a subprocess: the registry finds it through
`importlib.metadata`, exactly as it finds the built-ins. Its lines, result lines, usage,
status codes, output text and estimate come from its Format alone.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import tomllib
from pathlib import Path

import orjson
import pytest

from helpers import LLMBATCH, request_states

PACKAGE = Path(__file__).parent.parent / "data" / "plugin_provider"


def install(site: Path, package: Path, *, module: str | None = None) -> None:
    """Lay `package` out in `site` as an installed distribution (what pip writes, less RECORD)."""
    meta = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    name, version = meta["name"], meta["version"]
    dist = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    groups = meta.get("entry-points", {})
    text = "".join(
        f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
        for group, eps in groups.items()
    )
    (dist / "entry_points.txt").write_text(text)
    for child in package.iterdir():
        if child.is_dir() and child.name != "__pycache__" and (module in (None, child.name)):
            shutil.copytree(child, site / child.name, ignore=shutil.ignore_patterns("__pycache__"))


def run(site: Path, *args: str, check: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(site)}
    env.pop("LLMBATCH_PROVIDER", None)
    got = subprocess.run(
        [LLMBATCH, *args], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    if check is not None:
        assert got.returncode == check, got.stdout + got.stderr
    return got


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tmp_path_factory.mktemp("site")
    install(site, PACKAGE)
    return site


def lines(path: Path, prompts: list[str]) -> Path:
    path.write_bytes(
        b"".join(
            orjson.dumps({"custom_id": f"e{i}", "model": "echo-1", "prompt": p}) + b"\n"
            for i, p in enumerate(prompts)
        )
    )
    return path


@pytest.mark.slow
def test_an_installed_plugin_runs_a_queue_through_its_own_formats(
    site: Path, tmp_path: Path
) -> None:
    db = str(tmp_path / "llmbatch.db")
    src = lines(tmp_path / "in.jsonl", ["hello world", "no", "batch at half price"])

    shown = run(site, "enqueue", "--help").stdout
    assert "echo" in shown and "anthropic" in shown  # --provider's choices: the registry
    listed = run(site, "plugins").stdout
    assert "echo (Echo, package llmbatch-echo)\n  endpoints: /echo\n  [providers.echo]\n" in listed
    assert "    latency = 0.0\n    refuse = 'no'\n" in listed

    estimate = run(site, "estimate", str(src), "--provider", "echo", "--format", "json")
    [model] = orjson.loads(estimate.stdout)["models"]
    assert (model["provider"], model["model"], model["input_tokens"]) == ("echo", "echo-1", 7)
    assert "Echo tokens are words." in run(site, "estimate", str(src), "--provider", "echo").stdout
    run(site, "--db", db, "enqueue", str(src), "--provider", "echo")
    ran = run(site, "--db", db, "run", check=1)  # one request refused: exit 1 (README)
    assert "Traceback" not in ran.stderr
    assert request_states(db) == {"succeeded": 2, "failed": 1}

    envelopes = {
        e["custom_id"]: e
        for e in map(orjson.loads, run(site, "--db", db, "results").stdout.splitlines())
    }
    assert envelopes["e0"]["provider"] == "echo"
    assert envelopes["e0"]["response"]["status_code"] == 200
    assert envelopes["e0"]["response"]["body"] == {
        "text": "HELLO WORLD",
        "tokens": {"in": 2, "out": 2},
    }
    assert envelopes["e1"]["response"]["status_code"] == 422  # the plugin's status for "refused"
    assert envelopes["e1"]["error"] == {"code": "refused", "message": "not that (not retryable)"}

    table = list(
        csv.DictReader(io.StringIO(run(site, "--db", db, "results", "--format", "csv").stdout))
    )
    texts = {r["custom_id"]: r["output_text"] for r in table}
    assert texts == {"e0": "HELLO WORLD", "e1": "", "e2": "BATCH AT HALF PRICE"}
    tokens = {r["custom_id"]: (r["input_tokens"], r["output_tokens"]) for r in table}
    assert tokens["e2"] == ("4", "4")  # its usage fields, read by its format


def test_a_plugin_table_is_checked_by_its_own_settings(site: Path, tmp_path: Path) -> None:
    config = tmp_path / "llmbatch.toml"
    config.write_text('[providers.echo]\nlatency = "soon"\n')
    db = str(tmp_path / "x.db")
    got = run(site, "--config", str(config), "--db", db, "run", check=2)
    assert got.stderr.strip().splitlines() == [
        f"error: {config}: [providers.echo] latency must be a number, got 'soon'"
    ]
    config.write_text('[providers.echo]\nrefuse_word = "no"\n')
    got = run(site, "--config", str(config), "--db", db, "run", check=2)
    assert (
        f"{config}: [providers.echo] has no setting 'refuse_word'; its settings: latency, refuse"
        in got.stderr
    )


@pytest.mark.slow
def test_a_plugin_that_fails_to_import_is_one_line_and_nothing_is_enqueued(
    tmp_path: Path,
) -> None:
    site = tmp_path / "site"
    broken = tmp_path / "broken"
    (broken / "llmbatch_broken").mkdir(parents=True)
    (broken / "pyproject.toml").write_text(
        '[project]\nname = "llmbatch-broken"\nversion = "1.0"\n'
        '[project.entry-points."llmbatch.providers"]\nbroken = "llmbatch_broken:plugin"\n'
    )
    (broken / "llmbatch_broken" / "__init__.py").write_text(
        "import a_module_nobody_installed  # noqa\n"
    )
    install(site, broken)
    db = tmp_path / "llmbatch.db"
    src = lines(tmp_path / "in.jsonl", ["hello"])
    got = run(site, "--db", str(db), "enqueue", str(src), "--provider", "broken", check=2)
    [line] = got.stderr.strip().splitlines()
    assert "provider 'broken' failed to import" in line
    assert str(site / "llmbatch_broken" / "__init__.py") in line  # the file
    assert "No module named 'a_module_nobody_installed'" in line
    assert "fix or reinstall that package, or uninstall it" in line  # the fix
    assert "Traceback" not in got.stderr
    assert not db.exists() or request_states(str(db)) == {}

    listed = run(site, "plugins").stdout
    assert "broken: does not load: provider 'broken' failed to import" in listed
    assert "openai (OpenAI, package llmbatch)" in listed

    # the broken plugin does not stop the others
    ok = tmp_path / "ok.jsonl"
    ok.write_bytes(
        orjson.dumps({"custom_id": "a", "body": {"model": "gpt-4o-mini", "messages": []}}) + b"\n"
    )
    ok.write_bytes(
        orjson.dumps(
            {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": "gpt-4o-mini", "messages": []}}
        ) + b"\n"
    )  # fmt: skip
    run(site, "--db", str(db), "enqueue", str(ok), "--provider", "openai")
    assert request_states(str(db)) == {"queued": 1}
