"""No secret at rest or in sight (issue 10): a real lifecycle run with recognisable fake keys,
then a scan of everything it left behind for them.

The OpenAI and Azure keys (`sk-llmbatch-canary-<random>-…`) live only in the environment
variables the config file names with `api_key_env`; the PostgreSQL store is reached as a
throwaway role whose password is a canary too. Real `llmbatch` processes (`enqueue`, `wait`,
`worker`, `run`) talk to the emulator (its own process) over HTTP, including failing runs
with `--debug` (tracebacks) and `OPENAI_LOG=debug` (the SDK's debug log): a key the service
refuses (the emulator's `401` fault), a service that echoes the refused key back in its
error message, and a gateway that echoes it in a 400 body (recorded and printed as a refusal). Then every place a secret could land is scanned for each secret and for the
random part they share: the store (SQLite files, or every row of every PostgreSQL table as
text), every process's stdout/stderr, the packing files under TMPDIR (read while a worker is
live and after), the emulator's data dir, log and call log, and the live worker's
`/proc/<pid>/cmdline`.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import psycopg
import pytest

from helpers import LLMBATCH, RefusingService, free_port, jsonl, line, sql
from llmbatch.emulator import EmulatorControl

PG_ADMIN = os.environ.get("LLMBATCH_TEST_PG")


@dataclass
class Canaries:
    """The fake secrets of one run and the random part they share."""

    core: str = field(default_factory=lambda: secrets.token_hex(8))

    @property
    def openai_key(self) -> str:
        return f"sk-llmbatch-canary-{self.core}-openai"

    @property
    def azure_key(self) -> str:
        return f"sk-llmbatch-canary-{self.core}-azure"

    @property
    def anthropic_key(self) -> str:
        return f"sk-ant-llmbatch-canary-{self.core}-anthropic"

    @property
    def pg_password(self) -> str:
        return f"pw-llmbatch-canary-{self.core}"

    def needles(self) -> dict[str, bytes]:
        return {
            "OpenAI key": self.openai_key.encode(),
            "Azure key": self.azure_key.encode(),
            "Anthropic key": self.anthropic_key.encode(),
            "PostgreSQL password": self.pg_password.encode(),
            "canary core": self.core.encode(),
        }


@dataclass
class Scan:
    """Every place scanned (with its size) and every secret found in one."""

    needles: dict[str, bytes]
    places: dict[str, int] = field(default_factory=dict)
    found: dict[str, list[str]] = field(default_factory=dict)

    def check(self, place: str, blob: bytes) -> None:
        self.places[place] = max(self.places.get(place, 0), len(blob))
        hits = [name for name, needle in self.needles.items() if needle in blob]
        if hits:
            self.found[place] = hits

    def tree(self, label: str, root: Path) -> int:
        """Scan every file under `root`; how many there were."""
        n = 0
        for path in sorted(root.rglob("*")):
            if path.is_file():
                try:
                    blob = path.read_bytes()
                except FileNotFoundError:
                    continue  # removed while we looked (a live worker's packing file)
                self.check(f"{label}/{path.relative_to(root)}", blob)
                n += 1
        return n


@pytest.fixture
def canaries() -> Canaries:
    return Canaries()


@pytest.fixture(params=["sqlite", "postgres"])
def store_db(request: pytest.FixtureRequest, tmp_path: Path, canaries: Canaries) -> Iterator[str]:
    """The store: a SQLite file in its own folder, or a fresh PostgreSQL database owned by a
    throwaway role whose password is a canary (made and dropped with psql)."""
    if request.param == "sqlite":
        (tmp_path / "store").mkdir()
        yield str(tmp_path / "store" / "llmbatch.db")
        return
    if not PG_ADMIN:
        if os.environ.get("CI"):
            pytest.fail("CI must run the PostgreSQL tests: set LLMBATCH_TEST_PG (.ci/run does)")
        pytest.skip("the PostgreSQL secret scan needs LLMBATCH_TEST_PG")
    role, dbname = f"llmbatch_role_{uuid.uuid4().hex[:10]}", f"llmbatch_s_{uuid.uuid4().hex[:10]}"

    def psql(statement: str) -> None:
        subprocess.run(
            ["psql", PG_ADMIN, "-v", "ON_ERROR_STOP=1", "-qc", statement],
            check=True, capture_output=True, timeout=30,
        )  # fmt: skip

    psql(f"CREATE ROLE {role} LOGIN PASSWORD '{canaries.pg_password}'")
    try:
        psql(f'CREATE DATABASE "{dbname}" OWNER {role}')
        admin = urlsplit(PG_ADMIN)
        netloc = (
            f"{role}:{canaries.pg_password}@{admin.hostname or '127.0.0.1'}:{admin.port or 5432}"
        )
        yield urlunsplit(admin._replace(netloc=netloc, path="/" + dbname))
    finally:
        psql(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        psql(f"DROP ROLE IF EXISTS {role}")


def pg_rows_as_text(dsn: str) -> dict[str, bytes]:
    """Every row of every table of the database, each table as one text blob."""
    tables: dict[str, bytes] = {}
    with psycopg.connect(dsn, autocommit=True) as conn:
        names = conn.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_type = 'BASE TABLE' "
            "AND table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        for schema, name in names:
            rows = conn.execute(f'SELECT t::text FROM "{schema}"."{name}" AS t').fetchall()
            tables[f"{schema}.{name}"] = "\n".join(str(r[0]) for r in rows).encode()
    return tables


class Run:
    """One lifecycle's folders, config and processes, all under tmp_path."""

    def __init__(self, tmp_path: Path, db: str, canaries: Canaries) -> None:
        self.db, self.canaries = db, canaries
        self.logs, self.tmp, self.emu_data = (tmp_path / d for d in ("logs", "tmp", "emulator"))
        for d in (self.logs, self.tmp):
            d.mkdir()
        self.n = 0

    def env(self, **extra: str) -> dict[str, str]:
        # the DSN travels in LLMBATCH_DB: on the command line `ps` would show its password
        env = {**os.environ, "TMPDIR": str(self.tmp), "LLMBATCH_DB": self.db}
        env["OPENAI_API_KEY"] = self.canaries.openai_key
        env["AZURE_OPENAI_API_KEY"] = self.canaries.azure_key
        env["ANTHROPIC_API_KEY"] = self.canaries.anthropic_key
        for name in (
            "OPENAI_BASE_URL", "AZURE_OPENAI_ENDPOINT", "OPENAI_LOG", "ANTHROPIC_BASE_URL",
            "ANTHROPIC_LOG",
        ):  # fmt: skip
            env.pop(name, None)
        env.update(extra)
        return env

    def config(self, name: str, openai_url: str, azure_url: str) -> Path:
        path = self.logs.parent / name
        path.write_text(
            "[engine]\nsettle_seconds = 0.5\npoll_interval = 0.05\nmax_poll_interval = 0.2\n"
            "backoff_seconds = 0.1\nmax_batch_requests = 10\nsubmit_timeout = 2.0\n\n"
            f'[providers.openai]\nbase_url = "{openai_url}"\napi_key_env = "OPENAI_API_KEY"\n\n'
            f'[providers.azure]\nendpoint = "{azure_url}"\napi_key_env = "AZURE_OPENAI_API_KEY"\n\n'
            f'[providers.anthropic]\nbase_url = "{azure_url}"\napi_key_env = "ANTHROPIC_API_KEY"\n'
        )
        return path

    def llmbatch(
        self, config: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[bytes]:
        """`llmbatch --config C ARGS` to completion; its output kept under logs/."""
        self.n += 1
        out = subprocess.run(
            [LLMBATCH, "--config", str(config), *args],
            capture_output=True, env=env or self.env(), timeout=timeout, check=False,
        )  # fmt: skip
        stem = f"{self.n:02d}-{args[0].lstrip('-')}"
        (self.logs / f"{stem}.stdout").write_bytes(out.stdout)
        (self.logs / f"{stem}.stderr").write_bytes(out.stderr)
        return out

    def input_file(self, name: str, n: int, model: str = "gpt-4o-mini") -> Path:
        path = self.logs.parent / name
        path.write_bytes(jsonl(*(line(f"{name}-{i}", f"question {i}", model) for i in range(n))))
        return path

    def messages_file(self, name: str, n: int) -> Path:
        """Anthropic `{"custom_id", "params"}` lines."""
        path = self.logs.parent / name
        params = {"model": "claude-3-5-haiku-latest", "max_tokens": 32}
        lines = (
            {"custom_id": f"{name}-{i}",
             "params": {**params, "messages": [{"role": "user", "content": f"question {i}"}]}}
            for i in range(n)
        )  # fmt: skip
        path.write_bytes(b"".join(orjson.dumps(x) + b"\n" for x in lines))
        return path

    def start_emulator(self, port: int) -> subprocess.Popen[bytes]:
        with open(self.logs / "emulator.log", "wb") as err:
            return subprocess.Popen(
                [sys.executable, "-m", "llmbatch.emulator", "--port", str(port),
                 "--data-dir", str(self.emu_data)],
                stdout=err, stderr=subprocess.STDOUT, env=self.env(),
            )  # fmt: skip

    def unfinished(self) -> int:
        return int(sql(self.db, "SELECT COUNT(*) FROM requests WHERE state NOT IN "
                                "('succeeded', 'failed', 'cancelled')")[0][0])  # fmt: skip


def wait_until(what: Any, timeout: float, why: str) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, why
        time.sleep(0.05)


@pytest.mark.slow
def test_no_secret_lands_anywhere(
    store_db: str,
    canaries: Canaries,
    tmp_path: Path,
    refusing: RefusingService,
    rejecting: RefusingService,
) -> None:
    run, scan = Run(tmp_path, store_db, canaries), Scan(canaries.needles())
    port = free_port()
    emulator = run.start_emulator(port)
    url = f"http://127.0.0.1:{port}"
    control = EmulatorControl(url)
    try:
        wait_until(lambda: _healthy(control), 30, "the emulator did not start")
        config = run.config("llmbatch.toml", url + "/v1", url)

        # 1. enqueue on both OpenAI surfaces, then `wait` drains them
        for name, provider in (("openai-a", "openai"), ("azure-a", "azure")):
            out = run.llmbatch(
                config, "enqueue", str(run.input_file(name, 25)), "--provider", provider
            )
            assert out.returncode == 0, out.stderr.decode()
        out = run.llmbatch(
            config, "enqueue", str(run.messages_file("anthropic-a", 25)), "--provider", "anthropic"
        )
        assert out.returncode == 0, out.stderr.decode()
        out = run.llmbatch(config, "wait", "--timeout", "40")
        assert out.returncode == 0, out.stderr.decode()
        assert run.unfinished() == 0

        # 2. a live worker: its arguments, and a packing file caught while an upload is slow
        out = run.llmbatch(config, "enqueue", str(run.input_file("openai-b", 60)))
        assert out.returncode == 0, out.stderr.decode()
        control.add_fault("files.create", "latency", seconds=1.5, count=1)
        with open(run.logs / "worker.log", "wb") as log:
            worker = subprocess.Popen(
                [LLMBATCH, "--config", str(config), "worker", "--interval", "0.05"],
                stdout=log, stderr=subprocess.STDOUT, env=run.env(),
            )  # fmt: skip
        try:
            scan.check("worker /proc/cmdline", Path(f"/proc/{worker.pid}/cmdline").read_bytes())
            wait_until(lambda: any(run.tmp.rglob("batch-*.jsonl")), 60, "no packing file appeared")
            live = scan.tree("TMPDIR (live worker)", run.tmp)
            scan.check("worker /proc/cmdline", Path(f"/proc/{worker.pid}/cmdline").read_bytes())
            wait_until(lambda: run.unfinished() == 0, 30, "the worker did not drain the queue")
        finally:
            worker.send_signal(signal.SIGKILL)  # leaves its temp folder behind, to be scanned
            worker.wait(timeout=30)
        assert live >= 1

        # 3. the key is refused (the emulator's 401): --debug tracebacks and SDK debug logs
        debug = run.env(OPENAI_LOG="debug")
        out = run.llmbatch(config, "enqueue", str(run.input_file("openai-c", 10)))
        assert out.returncode == 0, out.stderr.decode()
        control.add_fault("files.create", "401", count=100)
        for command in (("run",), ("wait", "--timeout", "10")):
            out = run.llmbatch(config, "--debug", *command, env=debug)
            err = out.stderr.decode()
            assert out.returncode == 3, err  # a refused key: the provider could not be used
            assert "Traceback" in err and "OPENAI_API_KEY" in err, err
            assert "HTTP Request" in err or "Request options" in err, "no SDK debug log"
        control.clear_faults()

        # 3b. the same with an Anthropic key refused (ANTHROPIC_LOG=debug is its SDK's log)
        out = run.llmbatch(
            config, "enqueue", str(run.messages_file("anthropic-c", 10)), "--provider", "anthropic"
        )
        assert out.returncode == 0, out.stderr.decode()
        control.add_fault("messages.batches.create", "401", count=100)
        out = run.llmbatch(config, "--debug", "run", env=run.env(ANTHROPIC_LOG="debug"))
        err = out.stderr.decode()
        assert out.returncode == 3, err
        assert "Traceback" in err and "ANTHROPIC_API_KEY" in err, err
        assert "Request options" in err or "HTTP Request" in err, "no SDK debug log"
        control.clear_faults()

        # 4. a service that echoes the refused key in its message (as some do)
        echoing = run.config("echoing.toml", refusing.url + "/v1", refusing.url)
        out = run.llmbatch(echoing, "--debug", "run", env=debug)
        assert out.returncode == 3 and "Traceback" in out.stderr.decode(), out.stderr.decode()
        assert refusing.seen, "the echoing service was never called"

        # 4b. a gateway that echoes the key in a 400 body: not an auth error, so the engine
        # records the refusal (events, the requests' reasons) and prints it; its refused
        # lists leave intents to reconcile later, so `run` says the provider could not be used
        gateway = run.config("gateway.toml", rejecting.url + "/v1", rejecting.url)
        out = run.llmbatch(gateway, "run", env=debug)
        assert out.returncode == 3, out.stderr.decode()
        assert b"HTTP 400: Incorrect API key provided: Bearer ***." in out.stderr, out.stderr
        assert rejecting.seen, "the gateway was never called"

        # 5. with the key accepted again, everything finishes
        out = run.llmbatch(config, "wait", "--timeout", "40")
        assert out.returncode == 0, out.stderr.decode()
        assert run.unfinished() == 0

        # 6. a DSN with a password given on the command line is warned about, not echoed
        out = run.llmbatch(config, "--db", store_db, "status")
        assert out.returncode == 0, out.stderr.decode()
        warned = b"carries a password on the command line" in out.stderr
        assert warned == store_db.startswith("postgresql://"), out.stderr.decode()

        calls = control.calls()
        assert calls
        scan.check("emulator call log", orjson.dumps(calls))
    finally:
        emulator.send_signal(signal.SIGTERM)
        emulator.wait(timeout=30)

    # everything left behind
    if store_db.startswith("postgresql://"):
        assert PG_ADMIN is not None
        admin_dsn = urlunsplit(urlsplit(PG_ADMIN)._replace(path=urlsplit(store_db).path))
        tables = pg_rows_as_text(admin_dsn)
        assert {"public.requests", "public.batches", "public.results"} <= set(tables)
        for name, blob in tables.items():
            scan.check(f"PostgreSQL table {name}", blob)
    else:
        assert scan.tree("SQLite store", Path(store_db).parent) >= 1
    scan.tree("TMPDIR", run.tmp)  # whatever the killed worker and the failed runs left
    assert scan.tree("emulator data dir", run.emu_data) >= 1
    assert scan.tree("logs", run.logs) >= 10
    print(orjson.dumps({"places": len(scan.places), "bytes": sum(scan.places.values())}).decode())
    assert scan.found == {}, scan.found


def _healthy(control: EmulatorControl) -> bool:
    try:
        control.call("GET", "/health")
    except OSError:
        return False
    return True
