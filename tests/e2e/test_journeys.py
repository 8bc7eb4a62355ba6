"""The journeys of shared/JOURNEYS.md, walked as a person walks them: the `llmbatch` command
(in process through click's CliRunner; as a subprocess where signals, ports or a terminal
matter), against the emulator over real HTTP.

Every step checks the floors: no traceback, no silent empty success, the documented exit
code (0 done, 1 failed or refused or unfinished, 2 usage, 3 unreachable), and every table at
most 100 columns wide at COLUMNS=100. Later issues add their journeys here.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import openai
import orjson
import pytest
from click.testing import Result

from helpers import E2E_KEY_ENV, LLMBATCH, cli, jsonl, line
from llmbatch.emulator import RunningEmulator, running

DATA = Path(__file__).resolve().parents[1] / "data" / "usage"
WIDTH = 100
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def person(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Result:
    """`llmbatch ARGS` typed at a 100-column terminal: the exit code asked, no traceback, and
    no line of a table wider than the terminal (unless --wide asked for every column)."""
    result = cli(*args, env={"COLUMNS": str(WIDTH), **(env or {})})
    out = result.stdout + result.stderr
    assert "Traceback" not in out, out
    assert result.exit_code == code, (args, result.exit_code, out)
    if code == 0:
        assert result.stdout or result.stderr, f"{args}: a silent success"
    else:
        assert result.stderr.strip(), f"{args}: exit {code} without a word on stderr"
    if "--wide" not in args:
        assert_fits(result.stdout)
    return result


def assert_fits(text: str) -> None:
    """Table lines fit the terminal (prose and JSON lines may be longer: they wrap)."""
    for ln in ANSI.sub("", text).splitlines():
        if ln.startswith(("{", "[", '"')) or ("  " not in ln.strip() and "│" not in ln):
            continue  # JSON, or a sentence
        assert len(ln) <= WIDTH, f"{len(ln)} columns: {ln!r}"


def write_config(folder: Path, emu: RunningEmulator, db: str, *, fast: bool = True) -> Path:
    """llmbatch.toml as a user would write it to point llmbatch at the emulator (`fast`: with
    short polls and delays, so tests do not wait out real-world intervals)."""
    lines = [f'db = "{db}"']
    if fast:
        lines += ["[engine]", "poll_interval = 0.1", "max_poll_interval = 0.2", "first_poll = 0.05"]
        lines += ["settle_seconds = 0.5", "backoff_seconds = 0.1"]
        lines += ["[engine.retry]", "base_seconds = 0.05", "max_seconds = 0.1"]
    for name, url in (("openai", emu.base_url), ("anthropic", emu.url)):
        lines += [f"[providers.{name}]", f'base_url = "{url}"', f'api_key_env = "{E2E_KEY_ENV}"']
    path = folder / "llmbatch.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running() as e:
        yield e


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("LLMBATCH_DB", "LLMBATCH_CONFIG", "LLMBATCH_QUEUE", "LLMBATCH_DEBUG"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def reviews(n: int, prefix: str = "review", model: str = "gpt-4o-mini") -> bytes:
    return jsonl(*(line(f"{prefix}-{i:04d}", f"review number {i}", model=model) for i in range(n)))


def run_until_done(queue: str | None = None, limit: int = 100) -> list[int]:
    """`llmbatch run` as cron does, until nothing is left; the exit codes seen."""
    codes = []
    for _ in range(limit):
        r = cli("run", env={"COLUMNS": str(WIDTH)})
        assert "Traceback" not in r.output, r.output
        codes.append(r.exit_code)
        if re.search(r"(?<![\d,])0 requests not finished yet", r.stderr):
            return codes
        time.sleep(0.05)
    raise AssertionError(f"not done after {limit} runs: {codes}")


# -- 1. the newcomer -----------------------------------------------------------------------


def test_journey_1_the_newcomer_runs_the_demo_and_nothing_is_left_behind(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scratch = home / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    r = person("demo")
    said = r.stdout + r.stderr
    for seen in ("10 added to queue 'demo'", "done at the provider", "succeeded", "batch_req_"):
        assert seen in said, seen
    for seen in ("batch $", "real-time $", "--keep"):
        assert seen in said, seen
    assert list(scratch.iterdir()) == []  # no temp folder left
    # `demo --keep` and reading every result: tests/e2e/test_engine.py::test_demo_command


# -- 2. the data engineer's nightly job ------------------------------------------------------


@pytest.mark.slow
def test_journey_2_the_nightly_job_cron_exit_codes_results_and_report(
    home: Path, emu: RunningEmulator
) -> None:
    write_config(home, emu, str(home / "llmbatch.db"))
    (home / "reviews.jsonl").write_bytes(reviews(30))
    person("results", "--queue", "reviews", code=2)  # no database yet: not an empty success
    assert (
        "30 added to queue 'reviews'" in person("enqueue", "reviews.jsonl", "-q", "reviews").stdout
    )
    assert set(run_until_done()) == {0}
    r = person("results", "--queue", "reviews")
    lines = [orjson.loads(x) for x in r.stdout.splitlines()]
    assert len(lines) == 30 and len({x["id"] for x in lines}) == 30
    assert all(x["id"].startswith("batch_req_") and x["provider"] == "openai" for x in lines)
    assert all(x["response"]["status_code"] == 200 and x["error"] is None for x in lines)
    cursor = int(r.stderr.split()[1])
    ordered = person("results", "-q", "reviews", "--order", "input").stdout.splitlines()
    assert [orjson.loads(x)["custom_id"] for x in ordered] == [f"review-{i:04d}" for i in range(30)]
    assert person("results", "-q", "reviews", "--after", str(cursor)).stdout == ""
    person("results", "-q", "reveiws", code=2)  # a typo is not an empty success
    (home / "typo.toml").write_text("[engine]\npoll_intervall = 3\n")
    typo = person("--config", "typo.toml", "status", code=2)  # status checks [engine] as run does
    assert "poll_intervall" in typo.stderr

    # an incident: the provider is down; cron hears it (3) and nothing is lost
    (home / "night2.jsonl").write_bytes(reviews(12, prefix="night2"))
    person("enqueue", "night2.jsonl", "-q", "reviews")
    emu.control.add_fault("*", "503")
    down = cli("run")
    assert down.exit_code == 3 and "Traceback" not in down.output, down.output
    emu.control.clear_faults()
    codes = run_until_done()
    assert set(codes) == {0}, codes
    # requests that fail in this run exit 1; the next run, with nothing new, exits 0
    emu.control.set_config(request_failure_rate=1.0, request_failure_status=400)
    (home / "bad.jsonl").write_bytes(reviews(3, prefix="bad"))
    person("enqueue", "bad.jsonl", "-q", "reviews")
    assert 1 in run_until_done()
    assert cli("run").exit_code == 0  # old failures in the store do not alert for ever
    failed = person("results", "-q", "reviews", "--state", "failed").stdout.splitlines()
    assert len(failed) == 3 and all(
        orjson.loads(x)["response"]["status_code"] == 400 for x in failed
    )
    emu.control.set_config(request_failure_rate=0.0)
    assert "3 failed requests queued again" in person("retry", "-q", "reviews").stdout
    run_until_done()
    assert person("results", "-q", "reviews", "--state", "failed").stdout == ""
    assert len(person("results", "-q", "reviews").stdout.splitlines()) == 45

    # the morning: status, lists and the month's report, as tables, JSON and CSV
    for command in (["status"], ["queues"], ["batches"], ["report", "--group-by", "day"]):
        person(*command)
        person(*command, "--wide")
        json.loads(person(*command, "--format", "json").stdout)
        assert person(*command, "--format", "csv").stdout.count("\n") >= 2
    status = json.loads(person("status", "--format", "json").stdout)
    assert status["total"] == 45 and status["progress"]["read_back"] == 45
    assert status["spend"] == {"provider_checks": [], "unplanned": []}  # all as counted
    # receipts: one batch's and the day's, then the store's budgets, all at 100 columns
    [newest, *_] = json.loads(person("batches", "-q", "reviews", "--format", "json").stdout)
    for receipt in (
        ["--batch", str(newest["id"])],
        ["--day", time.strftime("%Y-%m-%d", time.gmtime())],
    ):
        said = person("report", *receipt).stdout
        assert said.startswith("receipt: ") and "paid $" in said and "prices: " in said, said
        person("report", *receipt, "--wide")
        assert json.loads(person("report", *receipt, "--format", "json").stdout)["lines"]
    assert "40.00 USD" in person("budget", "set", "--daily-usd", "40", "-q", "reviews").stdout
    assert "reviews" in person("budget", "list").stdout
    assert "more than 0 USD" in person("budget", "set", "--daily-usd", "-1", code=2).stderr
    person("budget", "set", "--daily-usd", "1", "-q", "reveiws", code=2)  # a typo: nothing set
    assert len(json.loads(person("budget", "list", "--format", "json").stdout)["budgets"]) == 1

    # a month later: the finished queue is purged; what it cost is still reported
    report = person("report", "--format", "json").stdout
    assert (
        "would delete queue 'reviews': 45 requests"
        in person("purge", "reviews", "--dry-run").stdout
    )
    person("purge", "reviews", code=2)  # no terminal to confirm on: --yes is asked for
    assert "cost totals and spend are kept" in person("purge", "reviews", "--yes").stdout
    assert person("report", "--format", "json").stdout == report
    gone = person("results", "-q", "reviews", code=2)
    assert "was purged" in gone.stderr


# -- 3. the ML engineer's eval sweep ----------------------------------------------------------


@pytest.mark.slow
def test_journey_3_the_eval_sweep_estimates_waits_about_a_second_and_reads_by_model(
    home: Path, emu: RunningEmulator
) -> None:
    # no poll settings: the defaults a person has (the first poll comes a second after submit)
    write_config(home, emu, str(home / "evals.db"), fast=False)
    models = ("gpt-4o-mini", "gpt-4.1-mini", "gpt-4o")
    prompts = jsonl(*(line(f"{m}/{i}", f"prompt {i}", model=m) for m in models for i in range(20)))
    (home / "sweep.jsonl").write_bytes(prompts)
    est = person("estimate", "sweep.jsonl")
    assert all(m in est.stdout for m in models) and "batch" in est.stdout
    person("enqueue", "sweep.jsonl", "-q", "evals")
    started = time.monotonic()
    person("wait", "-q", "evals", "--budget-usd", "40")
    assert time.monotonic() - started < 8  # about a second on an idle machine, not 30 s
    from llmbatch import Queue

    with Queue(str(home / "evals.db"), "evals") as q:
        by_model: dict[str, int] = {}
        for r in q.results():
            by_model[r.custom_id.split("/")[0]] = by_model.get(r.custom_id.split("/")[0], 0) + 1
    assert by_model == dict.fromkeys(models, 20)

    # a batch the provider holds in validating: --timeout ends the wait with 1, and says so
    emu.control.next_batches(hold="validating")
    (home / "slow.jsonl").write_bytes(jsonl(line("slow/1", "x")))
    person("enqueue", "slow.jsonl", "-q", "slow")
    late = person("wait", "-q", "slow", "--timeout", "1", code=1)
    assert "not finished after 1 s" in late.stderr
    [batch] = json.loads(person("batches", "-q", "slow", "--format", "json").stdout)
    assert batch["state"] == "validating" and batch["done"] == 0
    emu.control.release(batch["provider_batch_id"])
    person("wait", "-q", "slow")
    # the hard stop: a budget that holds everything ends the wait with 1 and says why
    big = jsonl(*(line(f"big/{i}", "x", model="gpt-4o") for i in range(5)))
    (home / "big.jsonl").write_bytes(big)
    person("enqueue", "big.jsonl", "-q", "big")
    held = person("wait", "-q", "big", "--budget-usd", "0.000001", code=1)
    assert "requests held: budget" in held.stderr


# -- 4. the platform team ------------------------------------------------------------------------


def _worker(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [LLMBATCH, *args, "worker", "--interval", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _read_until(proc: subprocess.Popen[str], needle: str, timeout: float = 60) -> list[str]:
    assert proc.stderr is not None
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline:
        chunk = proc.stderr.readline()
        if chunk:
            seen.append(chunk)
            if needle in chunk:
                return seen
        else:
            time.sleep(0.05)
    raise AssertionError(f"{needle!r} not seen in {seen}")


def _which_says(
    needle: str, *procs: subprocess.Popen[str], timeout: float = 30
) -> tuple[subprocess.Popen[str], subprocess.Popen[str], str]:
    """(the process whose next lines say `needle`, the other one, the line), peeking at both."""
    deadline = time.monotonic() + timeout
    seen: dict[int, list[str]] = {id(p): [] for p in procs}
    for p in procs:
        assert p.stderr is not None
        os.set_blocking(p.stderr.fileno(), False)
    while time.monotonic() < deadline:
        for p in procs:
            assert p.stderr is not None
            chunk = p.stderr.readline()
            if chunk:
                seen[id(p)].append(chunk)
                if needle in chunk:
                    return p, next(q for q in procs if q is not p), chunk
        time.sleep(0.05)
    raise AssertionError(f"{needle!r} not seen in {seen}")


@pytest.mark.slow  # two worker processes, each loading the SDKs
@pytest.mark.both_backends
def test_journey_4_the_platform_team_standbys_logs_and_status_on_postgres(
    home: Path, emu: RunningEmulator, pg_dsn: str
) -> None:
    write_config(home, emu, pg_dsn)
    (home / "llmbatch.toml").write_text(
        (home / "llmbatch.toml").read_text() + "[budgets.queues.team-a]\ndaily_usd = 25\n"
    )
    (home / "a.jsonl").write_bytes(reviews(8, prefix="a"))
    person("enqueue", "a.jsonl", "-q", "team-a")
    env = {**os.environ, "COLUMNS": str(WIDTH)}
    first = _worker(env, "--log-format", "json")
    procs = [first]
    try:
        event = json.loads(_read_until(first, "serving")[-1])
        assert {"ts", "level", "msg"} <= set(event) and event["level"] == "info"
        second = _worker(env)
        procs.append(second)
        # both serve (issue 27); the one without the engine lease says who holds it
        sharing, active, line = _which_says("sharing the queue", second, first)
        assert re.search(r'\d\d:\d\d:\d\d\.\d{3}Z( INFO |","level":"info")', line), line
        # status says which worker holds the engine lease and which batches each one has
        workers = json.loads(person("status", "--format", "json").stdout)["workers"]
        assert len(workers) == 2 and sum(w["engine_lease"] for w in workers) == 1, workers
        assert person("status").stdout.count("holds the engine lease") == 1
        active.send_signal(signal.SIGTERM)
        assert active.wait(timeout=30) == 0
        _read_until(sharing, "took over the engine lease")
        deadline = time.monotonic() + 30
        while json.loads(person("status", "--format", "json").stdout)["progress"]["read_back"] < 8:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=30)
    assert all(proc.returncode == 0 for proc in procs)
    status = person("status", "-q", "team-a").stdout
    assert "budget 25.00 USD per day, queue team-a" in status
    # a key by value in the config is refused before anything runs
    (home / "bad.toml").write_text('[providers.openai]\napi_key = "sk-live-123"\n')
    refused = person("--config", "bad.toml", "status", code=2)
    assert "sk-live-123" not in refused.output


# -- 5. the sceptic with a spreadsheet -----------------------------------------------------------


def test_journey_5_the_sceptic_analyzes_usage_both_shapes(home: Path) -> None:
    for source in ("pages.jsonl", "pages_concatenated.json", "calls.jsonl"):
        r = person("analyze", str(DATA / source))
        assert "could move to batch" in r.stdout and "a month" in r.stdout
        data = json.loads(person("analyze", str(DATA / source), "--format", "json").stdout)
        assert data["total"]["upper_bound"] is True
        assert person("analyze", str(DATA / source), "--format", "csv").stdout.count("\n") > 1
    record = {"timestamp": 1, "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}
    (home / "usage.jsonl").write_text(json.dumps(record) + '\n{"oops"\n')
    bad = person("analyze", "usage.jsonl", code=1)
    assert "usage.jsonl:2: not JSON" in bad.stderr
    person("analyze", "nope.json", code=1)


# -- 6. the tester ------------------------------------------------------------------------------


def test_help_reads_whole(home: Path) -> None:
    """Command summaries are whole sentences, and the priority range reads as words."""
    top = person("--help").stdout
    commands = top.split("Commands:")[1].splitlines()
    assert len(commands) > 15 and not any(ln.rstrip().endswith("...") for ln in commands)
    enqueue = person("enqueue", "--help").stdout
    assert "[64-bit]" in enqueue and "9223372036854775807" not in enqueue


@pytest.mark.slow
def test_journey_6_the_tester_serves_the_emulator_and_steers_it(home: Path) -> None:
    helped = person("emulator", "--help").stdout
    assert "Anthropic" in helped and "--data-dir" in helped and "--time-scale" in helped
    for args in (["--time-scale", "-1"], ["--port", "99999"]):
        r = subprocess.run([LLMBATCH, "emulator", *args], capture_output=True, text=True)
        assert r.returncode == 2 and "Traceback" not in r.stderr and r.stderr.strip()
    proc = subprocess.Popen(
        [LLMBATCH, "emulator", "--port", "0", "--time-scale", "0", "--data-dir", "emu"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "Anthropic" in banner
        url = re.search(r"http://127\.0\.0\.1:\d+", banner)
        assert url is not None
        port = url.group(0).rsplit(":", 1)[1]
        # the port is taken: a second emulator says so before claiming to serve
        busy = subprocess.run(
            [LLMBATCH, "emulator", "--port", port], capture_output=True, text=True, timeout=60
        )
        assert busy.returncode == 2 and "in use" in busy.stderr and busy.stdout == ""
        client = openai.OpenAI(base_url=url.group(0) + "/v1", api_key="any-key")
        batch_in = home / "in.jsonl"
        batch_in.write_bytes(reviews(5))
        f = client.files.create(file=batch_in.open("rb"), purpose="batch")
        b = client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        from llmbatch.emulator import EmulatorControl

        control = EmulatorControl(url.group(0))
        assert client.batches.retrieve(b.id).status in ("validating", "in_progress")  # frozen
        control.advance(60)  # returns once the batch has caught up with the new time
        done = client.batches.retrieve(b.id)
        assert done.status == "completed" and done.request_counts is not None
        assert done.request_counts.completed == 5
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
