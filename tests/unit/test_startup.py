"""A small job is cheap to start: each `llmbatch` command imports what it uses and nothing
more (issue 23). The SDKs, the price data (genai-prices and pydantic), the emulator and the
engine load only in a command that needs them, so `llmbatch --version` costs little more
than click and `llmbatch status` little more than the store. Checked in a fresh interpreter,
by what lands in `sys.modules`, not by timing (the machine may be loaded)."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import llmbatch
from helpers import jsonl, line

# Never in a command that neither sends, prices nor serves anything.
HEAVY = ("openai", "anthropic", "google.genai", "httpx", "httpx2", "pydantic", "genai_prices",
         "llmbatch.emulator", "asyncio")  # fmt: skip
# Nor, for these, the engine and the provider registry (importlib.metadata's entry points).
ENGINE = ("llmbatch.engine", "llmbatch.worker", "llmbatch.providers", "importlib.metadata")

PROBE = """
import json, sys
sys.argv = ["llmbatch", *json.loads(sys.argv[1])]
from llmbatch.cli import main
code = None
try:
    main()
except SystemExit as exc:
    code = exc.code
with open(OUT, "w") as f:
    json.dump({"code": code, "modules": sorted(sys.modules)}, f)
"""


def imported(tmp_path: Path, *args: str) -> list[str]:
    """The modules a fresh interpreter holds after `llmbatch ARGS` (run in `tmp_path`)."""
    out = tmp_path / "modules.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBATCH_")}
    code = PROBE.replace("OUT", repr(str(out)))
    subprocess.run(
        [sys.executable, "-c", code, json.dumps(args)],
        cwd=tmp_path, env=env, check=True, capture_output=True,
    )  # fmt: skip
    got = json.loads(out.read_text())
    assert got["code"] in (0, None), got["code"]
    return list(got["modules"])


def loaded(modules: list[str], names: tuple[str, ...]) -> list[str]:
    return [m for m in modules if any(m == n or m.startswith(n + ".") for n in names)]


def test_version_imports_no_sdk_no_price_data_no_emulator_no_engine(tmp_path: Path) -> None:
    modules = imported(tmp_path, "--version")
    assert loaded(modules, HEAVY + ENGINE) == []
    assert loaded(modules, ("llmbatch.store",)) == []


def test_status_imports_the_store_and_nothing_it_does_not_show(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a"), line("b")))
    imported(tmp_path, "enqueue", "in.jsonl", "-q", "q")
    modules = imported(tmp_path, "status")
    assert "llmbatch.store.sqlite" in modules  # it did read the store
    assert loaded(modules, (*HEAVY, "llmbatch.engine", "llmbatch.worker")) == []


def test_results_imports_no_pricing(tmp_path: Path) -> None:
    """The export prices nothing: `results` starts without the pricing module (the budget
    commands' module imported it for a constant, ~6 ms of every command's start)."""
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    imported(tmp_path, "enqueue", "in.jsonl", "-q", "q")
    modules = imported(tmp_path, "results", "-q", "q", "-o", "out.jsonl")
    assert "llmbatch.store.sqlite" in modules
    assert loaded(modules, ("llmbatch.pricing", *HEAVY)) == []


def test_the_version_printed_is_the_packages(tmp_path: Path) -> None:
    """`--version` prints `llmbatch.__version__` (reading the metadata costs a fifth of its
    start): the two must agree."""
    assert importlib.metadata.version("llmbatch") == llmbatch.__version__


def test_the_public_api_loads_each_name_on_first_use() -> None:
    code = (
        "import sys, llmbatch; before = set(sys.modules); llmbatch.Queue; "
        "print(int('llmbatch.engine' in before), int('llmbatch.queue' in sys.modules))"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert got.stdout.split() == ["0", "1"]


@pytest.mark.parametrize("name", ["Queue", "BatchClient", "Engine", "estimate_file"])
def test_a_lazily_loaded_name_is_the_modules_own_object(name: str) -> None:
    import importlib

    module = importlib.import_module(llmbatch._WHERE[name])
    assert getattr(llmbatch, name) is getattr(module, name)


def test_a_config_naming_a_provider_does_not_load_its_sdk(tmp_path: Path) -> None:
    """Every command checks the config's [providers.*] tables; the settings they are
    checked against live beside the format, not the transport that imports the SDK."""
    (tmp_path / "llmbatch.toml").write_text(
        '[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\n[providers.azure]\ntimeout = 5\n'
    )
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    imported(tmp_path, "enqueue", "in.jsonl", "-q", "q")
    modules = imported(tmp_path, "status")
    assert loaded(modules, ("openai", "httpx", "llmbatch.providers.openai")) == []


def test_a_config_of_providers_alone_is_checked_without_the_engine(tmp_path: Path) -> None:
    """The usual config names providers only: `status` and `results` check its tables (a
    typo is still refused) without importing the engine, ~0.1 CPU s of each command, nor the
    OpenAI-compatible services' table, which no table there names (~3-5 ms)."""
    (tmp_path / "llmbatch.toml").write_text('[providers.openai]\nbase_url = "http://x:9/v1"\n')
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    imported(tmp_path, "enqueue", "in.jsonl", "-q", "q")
    for args in (("status",), ("results", "-q", "q", "-o", "out.jsonl")):
        modules = imported(tmp_path, *args)
        assert loaded(modules, ("llmbatch.engine", "llmbatch.worker")) == [], args
        assert loaded(modules, ("llmbatch.providers.compatible",)) == [], args
    (tmp_path / "llmbatch.toml").write_text('[providers.openai]\nbase_urll = "http://x:9/v1"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBATCH_")}
    refused = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv[1:] = ['status']; "
         "from llmbatch.cli import main; main()"],
        cwd=tmp_path, env=env, capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2 and "[providers.openai]" in refused.stderr, refused.stderr


def test_a_sending_process_imports_only_the_http_library_its_sdk_uses() -> None:
    """Transport errors are matched against the HTTP libraries already loaded: importing
    both httpx and httpx2 up front cost every sending process the one its SDK does not use."""
    code = (
        "import sys; import {mod}; "
        "print(sorted(m for m in ('httpx', 'httpx2') if m in sys.modules))"
    )

    def loaded_by(module: str) -> str:
        argv = [sys.executable, "-c", code.format(mod=module)]
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout

    assert loaded_by("llmbatch.providers.openai") == loaded_by("openai")


def test_a_transport_is_loaded_frozen_and_the_heap_frozen_again_at_exit() -> None:
    """The collector would walk the SDK's classes in every full collection and in its last
    ones at exit (~0.2 + 0.25 CPU s at 20,000 results): in a process llmbatch owns (a CLI
    command), what is alive once a transport has loaded is frozen, and at exit everything
    made since, by an exit handler that runs before those registered earlier (this probe's).
    A collector the caller disabled stays so."""
    code = (
        "import atexit, gc, json; seen = {}; "
        "atexit.register(lambda: print(json.dumps({**seen, 'exit': gc.get_freeze_count()}))); "
        "gc.disable() if DISABLED else None; "
        "from llmbatch.heap import own_process; own_process(); "
        "from llmbatch.providers import plugin; plugin('openai').transport_class(); "
        "seen.update(loaded=gc.get_freeze_count(), enabled=gc.isenabled()); "
        "made = [[i] for i in range(1000)]"
    )
    for disabled in (False, True):
        argv = [sys.executable, "-c", code.replace("DISABLED", str(disabled))]
        got = subprocess.run(argv, capture_output=True, text=True)
        seen = json.loads(got.stdout or "{}")
        assert seen.get("loaded", 0) > 10_000, got.stderr  # the SDK's objects
        assert seen["enabled"] is not disabled
        assert seen["exit"] > seen["loaded"] + 900  # the lists made since


def test_a_program_using_the_library_keeps_its_heap_as_it_was() -> None:
    """Frozen, the host's objects alive at the freeze would never be collected if they later
    became cyclic garbage: a program that imports llmbatch gets its SDKs and price data
    loaded with the collector paused, and nothing frozen, then or at exit."""
    code = (
        "import atexit, gc; atexit.register(lambda: print(gc.get_freeze_count())); "
        "from llmbatch.providers import plugin; plugin('openai').transport_class(); "
        "from llmbatch.pricing import model_prices; model_prices('openai', 'gpt-4o-mini'); "
        "print(gc.get_freeze_count(), gc.isenabled())"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert got.stdout.split() == ["0", "True", "0"]


def test_the_price_data_is_loaded_frozen() -> None:
    """genai-prices' data (~75,000 objects kept for the process's life) is frozen once
    loaded in a process llmbatch owns, as an SDK is: full collections during an ingest no
    longer walk it."""
    code = (
        "import gc; from llmbatch.heap import own_process; own_process(); "
        "from llmbatch.pricing import model_prices; "
        "model_prices('openai', 'gpt-4o-mini'); print(gc.get_freeze_count(), gc.isenabled())"
    )
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    frozen, enabled = got.stdout.split()
    assert int(frozen) > 50_000 and enabled == "True"


def test_wait_off_a_terminal_imports_no_progress_bar(tmp_path: Path) -> None:
    """Off a terminal `wait` says a line when something moves and draws no bar: rich (~0.04
    CPU s of its start) is not imported."""
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    (tmp_path / "llmbatch.toml").write_text(
        '[providers.openai]\nbase_url = "http://127.0.0.1:9/v1"\napi_key_env = "PROBE_KEY"\n'
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLMBATCH_")}
    env.update(PROBE_KEY="sk-probe", LLMBATCH_CONFIG=str(tmp_path / "llmbatch.toml"))
    db = str(tmp_path / "q.db")
    probe = (
        "import sys; from llmbatch.cli import main\n"
        "sys.argv = ['llmbatch', '--db', DB, *sys.argv[1:]]\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rich'))"
    ).replace("DB", repr(db))
    for args in (["enqueue", "in.jsonl", "-q", "q"], ["wait", "-q", "q", "--timeout", "0"]):
        got = subprocess.run(
            [sys.executable, "-c", probe, *args], cwd=tmp_path, env=env, capture_output=True,
            text=True, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert got.stdout.strip().splitlines()[-1] == "[]", (args, got.stdout, got.stderr)
