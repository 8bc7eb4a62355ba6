"""What checking the config costs the CLI's start: `llmbatch` with and without a config file.

    python benchmarks/bench_config.py [--small] [--src PATH]

Each figure is the median wall time of N runs of a fresh process
(what the `llmbatch` script runs: `--version`; `status` on an empty store without a config file; the same with a config file
holding every table the typed models check), and, in one fresh process, once the provider plugins it names are imported (as both versions import them), the
milliseconds importing the typed models takes, the first check of that file (making the
models) and a second.
`imports_models_without_config` says whether a command run without a config file imported
llmbatch.settings (and so pydantic through it): it must be false. `--src` runs another
checkout's code (its `src/`), to compare before and after a change.

Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = """\
busy_timeout = 10
[status]
format = "json"
[engine]
poll_interval = 5
lease_ttl = 900
[engine.retry]
max_attempts = 4
[providers.openai]
timeout = 120
[archive]
url = "file://{archive}"
tick_seconds = 30
[webhooks]
url = "http://127.0.0.1:9/hook"
secret_env = "LLMBATCH_BENCH_SECRET"
timeout = 2
"""

CHECK = """
import sys, time
from pathlib import Path
from llmbatch.cli import main
from llmbatch.cli.app import ENGINE_TABLES
from llmbatch.config import default_map, load_config
from llmbatch.worker import engine_settings
path = Path(sys.argv[1])
config = load_config(path)
from llmbatch.providers import plugin
plugin("openai").settings_class()  # the provider's plugin (its SDK), imported either way
had = "pydantic" in sys.modules
t = time.perf_counter()
try:
    import llmbatch.settings
except ImportError:  # code from before the typed models
    pass
models = (time.perf_counter() - t) * 1000
out = []
for _ in range(2):
    t = time.perf_counter()
    default_map(config, path, main, ENGINE_TABLES)
    engine_settings(config)
    out.append((time.perf_counter() - t) * 1000)
print(had, models, *out)
"""

# what the `llmbatch` script runs (the package has no __main__), and the same then saying
# whether the typed models were imported
RUN = "from llmbatch.cli import main; main()"
PROBE = (
    "import sys\nfrom llmbatch.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
    "print('llmbatch.settings' in sys.modules, file=sys.stderr)"
)


def _env(src: str | None) -> dict[str, str]:
    env = dict(os.environ, LLMBATCH_BENCH_SECRET="s" * 32)
    env.pop("LLMBATCH_CONFIG", None)
    if src:
        env["PYTHONPATH"] = src
    return env


def _median(args: list[str], runs: int, env: dict[str, str], cwd: str) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", RUN, *args],
            env=env,
            cwd=cwd,
            check=True,
            capture_output=True,
        )
        times.append(time.perf_counter() - t)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", action="store_true", help="3 runs of each (CI)")
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--src", help="run this src/ folder's llmbatch instead")
    args = parser.parse_args()
    runs = 3 if args.small else args.runs
    env = _env(args.src)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(CONFIG.format(archive=Path(tmp) / "archive"))
        db = str(Path(tmp) / "q.db")
        seed = Path(tmp) / "in.jsonl"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
        seed.write_text(json.dumps(line) + "\n")
        subprocess.run(
            [sys.executable, "-c", RUN, "--db", db, "enqueue", str(seed)],
            env=env,
            cwd=tmp,
            check=True,
            capture_output=True,
        )
        probe = subprocess.run(
            [sys.executable, "-c", PROBE, "--db", db, "status"],
            env=env,
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        )
        had, models, cold, warm = subprocess.run(
            [sys.executable, "-c", CHECK, str(config)],
            env=env,
            cwd=tmp,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        figures = {
            "runs": runs,
            "version_s": _median(["--version"], runs, env, tmp),
            "status_s": _median(["--db", db, "status"], runs, env, tmp),
            "status_with_config_s": _median(
                ["--config", str(config), "--db", db, "status"], runs, env, tmp
            ),
            "pydantic_already_imported": had == "True",  # by the providers' SDKs
            "import_models_ms": round(float(models), 1),  # llmbatch.settings (pydantic if not yet)
            "first_check_ms": round(float(cold), 1),
            "second_check_ms": round(float(warm), 2),
            "imports_models_without_config": probe.stderr.strip().splitlines()[-1] == "True",
            "load": os.getloadavg()[0],
        }
    print(json.dumps(figures))
    if figures["imports_models_without_config"]:
        sys.exit("a command run without a config file imported llmbatch.settings")


if __name__ == "__main__":
    main()
