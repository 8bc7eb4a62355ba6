"""Each shipped OpenAI-compatible service end to end, beside OpenAI, in one run.

    python benchmarks/bench_compatible.py [--requests N] [--small]

One emulator process serves OpenAI's door and each service's (`/compatible/NAME/v1`, its
differences on); this process enqueues the same generated requests for each provider into a
fresh SQLite store and drains it with the engine, as `llmbatch wait` does. Providers take
turns for `--repeat` rounds (OpenAI once more at the end) and each one's fastest run counts
(the machine's load drifts over a run); a 100-request run of each comes first, uncounted
(imports, connections). `cpu_ratio` compares the CPU seconds of worker and emulator, which
load does not inflate. Prints one JSON line. Floor: 20,000 requests on each service within
1.2x the OpenAI run's time (`ratio`). `--small` (CI): 2,000 requests, under a minute.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_end_to_end import KEY_ENV, cpu_s, emulator_cpu_s, start_emulator
from gen_requests import lines
from llmbatch.engine import Engine, EngineSettings
from llmbatch.importer import enqueue_file
from llmbatch.providers.compatible import SHIPPED
from llmbatch.store import open_store
from llmbatch.worker import drain

FLOOR = 1.2


def settings(url: str) -> EngineSettings:
    providers = {"openai": {"base_url": url + "/v1", "api_key_env": KEY_ENV}}
    for name in SHIPPED:
        providers[name] = {"base_url": f"{url}/compatible/{name}/v1", "api_key_env": KEY_ENV}
    return EngineSettings(
        poll_interval=0.1, max_poll_interval=0.5, settle_seconds=5, providers=providers
    )


def run(provider: str, url: str, path: Path, tmp: Path, emulator: int) -> dict[str, object]:
    """Enqueue and drain `path` for `provider` in a fresh store; seconds and what it did."""
    store = open_store(str(tmp / f"{provider}-{time.monotonic_ns()}.db"))
    t0, cpu, emu_cpu = time.perf_counter(), cpu_s(), emulator_cpu_s(emulator)
    enqueue_file(store, path, queue="bench", provider=provider)
    engine = Engine(store, settings(url))
    result = drain(engine, queue="bench", timeout=1800)
    seconds = time.perf_counter() - t0
    engine.close()
    succeeded = sum(c.n for c in store.counts("bench") if c.state == "succeeded")
    store.close()
    out: dict[str, object] = {
        "finished": result.finished,
        "succeeded": succeeded,
        "seconds": round(seconds, 2),
        "worker_cpu_s": round(cpu_s() - cpu, 2),
        "emulator_cpu_s": round(emulator_cpu_s(emulator) - emu_cpu, 2),
    }
    return out


def seconds(r: dict[str, object]) -> float:
    return float(str(r["seconds"]))


def cpu(r: dict[str, object]) -> float:
    """The work a run took, apart from waiting for a core: the worker's and the emulator's."""
    return float(str(r["worker_cpu_s"])) + float(str(r["emulator_cpu_s"]))


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--small", action="store_true", help="2,000 requests (what CI runs)")
    ap.add_argument("--repeat", type=int, default=3, help="rounds; each provider's best counts")
    args = ap.parse_args()
    n = 2_000 if args.small else args.requests
    providers = ["openai", *sorted(SHIPPED)]
    os.environ.setdefault(KEY_ENV, "bench-key")
    with tempfile.TemporaryDirectory(prefix="llmbatch-compatible-") as tmp_name:
        tmp = Path(tmp_name)
        proc, url = start_emulator(tmp / "emulator")
        try:
            path = tmp / "requests.jsonl"
            with open(path, "wb") as f:
                for line in lines(n):
                    f.write(line)
            report: dict[str, object] = {"bench": "compatible", "requests": n}
            warm = tmp / "warm.jsonl"
            with open(warm, "wb") as f:
                f.writelines(lines(100, seed=3))
            for name in ("openai", *SHIPPED):  # imports and first connections, not counted
                run(name, url, warm, tmp, proc.pid)
            runs: dict[str, list[dict[str, object]]] = {p: [] for p in providers}
            for _ in range(args.repeat):
                for name in providers:
                    runs[name].append(run(name, url, path, tmp, proc.pid))
            runs["openai"].append(run("openai", url, path, tmp, proc.pid))  # last as well
        finally:
            proc.terminate()
            proc.wait(10)
    best = {name: min(got, key=seconds) for name, got in runs.items()}
    base, base_cpu = seconds(best["openai"]), cpu(best["openai"])
    report["openai"] = {**best["openai"], "runs_s": [seconds(r) for r in runs["openai"]]}
    services = {}
    for name in sorted(SHIPPED):
        services[name] = {
            **best[name],
            "runs_s": [seconds(r) for r in runs[name]],
            "ratio": round(seconds(best[name]) / base, 2),
            "cpu_ratio": round(cpu(best[name]) / base_cpu, 2),
        }
    report["services"] = services
    worst = max(float(str(s["ratio"])) for s in services.values())
    complete = all(r["succeeded"] == n for got in runs.values() for r in got)
    report["worst_ratio"] = worst
    report["floor_ok"] = complete and worst <= FLOOR
    with contextlib.suppress(OSError):
        report["load"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(report))
    if not complete:
        sys.exit("a run did not give every request its result")


if __name__ == "__main__":
    main()
