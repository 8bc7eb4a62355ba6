"""The issue's "Bad input" list, each tried as a user would, through the `llmbatch` command.

Every failure must print a clear message (`FILE:LINE: reason`, the first 20 then a count)
and leave the queue holding exactly what it held before. The line-level cases run on both
stores; the process-level ones (two writers, kill -9) use real `llmbatch` processes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import orjson
import pytest

from helpers import LLMBATCH, all_requests, cli, jsonl, line, sql, visible
from llmbatch.store import open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from gen_requests import lines as generated

SEED = [line("s1", "first"), line("s2", "second"), line("s3", "third")]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray ./llmbatch.toml or ./llmbatch.db


@pytest.fixture
def seeded(db: str, tmp_path: Path) -> str:
    """A store that already holds three requests, so 'unchanged' means something."""
    path = tmp_path / "seed.jsonl"
    path.write_bytes(jsonl(*SEED))
    result = cli("--db", db, "enqueue", str(path))
    assert result.exit_code == 0, result.output
    return db


def write(tmp_path: Path, content: bytes, name: str = "in.jsonl") -> str:
    path = tmp_path / name
    path.write_bytes(content)
    return str(path)


def refused(db: str, *args: str, input: bytes | None = None) -> str:
    """Run a command that must fail; check it changed nothing; return its stderr."""
    before, shown = all_requests(db), visible(db)
    result = cli("--db", db, *args, input=input)
    assert result.exit_code == 1, result.output
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ")
    assert all_requests(db) == before, "a failed enqueue changed the stored requests"
    assert visible(db) == shown
    return str(result.stderr)


# -- one bad line among good ones, on both stores --------------------------------------------

NESTED = b'{"custom_id": "n", "x": ' + b"[" * 2000 + b"]" * 2000 + b"}"
NESTED_BODY = orjson.dumps(
    {
        "custom_id": "n",
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "x": [[[[[[[[[[0]]]]]]]]]]},
    }
).replace(b"[0]", b"[" * 290 + b"0" + b"]" * 290)
BAD_LINES = {
    "non-utf8": (b'{"custom_id": "\xff\xfe"}', "not valid UTF-8 (byte 16)"),
    "not-json": (b"custom_id,method,url", "not valid JSON"),
    "truncated-json": (line("t")[:-5], "not valid JSON"),
    "json-array": (b'["custom_id", "a"]', "expected a JSON object, got array"),
    "missing-custom-id": (
        b'{"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}',
        "custom_id is missing",
    ),
    "numeric-custom-id": (line(42), "custom_id must be a string, got number"),
    "unknown-url": (line("u", url="/v1/chat"), "url '/v1/chat' is not a batch endpoint"),
    "retired-url": (
        line("u", url="/v1/videos"),
        "url /v1/videos cannot be batched: the Videos API was shut down on 2026-09-24",
    ),
    "method-get": (line("g", method="GET"), "method must be \"POST\", got 'GET'"),
    "body-without-model": (line("b", body={"messages": []}), "body has no model"),
    "stream-true": (
        line("s", body={"model": "m", "stream": True}),
        "stream: true is not allowed in a batch",
    ),
    "nan": (b'{"custom_id": "n", "body": {"model": "m", "temperature": NaN}}', "not valid JSON"),
    "deeply-nested-line": (NESTED, "JSON nested too deeply"),
    "deeply-nested-body": (NESTED_BODY, "JSON nested too deeply"),
}


@pytest.mark.parametrize("case", list(BAD_LINES))
def test_one_bad_line_enqueues_nothing_and_names_file_line_and_reason(
    case: str, seeded: str, tmp_path: Path
) -> None:
    bad, reason = BAD_LINES[case]
    path = write(tmp_path, jsonl(line("new-1"), bad, line("new-2")))
    err = refused(seeded, "enqueue", path)
    assert f"{path}: 1 of 3 lines are invalid; nothing was enqueued" in err
    assert f"\n{path}:2: {reason}" in err


def test_an_empty_file_is_refused(seeded: str, tmp_path: Path) -> None:
    path = write(tmp_path, b"")
    assert refused(seeded, "enqueue", path) == f"error: {path} is empty: no requests to enqueue\n"
    blank = write(tmp_path, b"\n  \r\n\n", "blank.jsonl")
    assert "is empty" in refused(seeded, "enqueue", blank)


def test_a_missing_file_or_a_folder_is_refused(seeded: str, tmp_path: Path) -> None:
    assert "no such file" in refused(seeded, "enqueue", str(tmp_path / "nope.jsonl"))
    assert "is a folder" in refused(seeded, "enqueue", str(tmp_path))


@pytest.mark.both_backends
def test_a_custom_id_twice_in_the_file(seeded: str, tmp_path: Path) -> None:
    path = write(tmp_path, jsonl(line("a"), line("b"), line("a", "other")))
    err = refused(seeded, "enqueue", path)
    assert f"{path}:3: custom_id 'a' appears more than once (first on line 1)" in err


@pytest.mark.both_backends
def test_re_enqueue_with_a_changed_body_is_a_conflict(seeded: str, tmp_path: Path) -> None:
    path = write(tmp_path, jsonl(line("new"), line("s2", "second, edited")))
    err = refused(seeded, "enqueue", path)
    assert f"{path}:2: custom_id 's2' is already in queue 'default' with a different body" in err
    assert "line 2); use a new custom_id or another queue" in err


def test_the_first_20_problems_then_a_count(seeded: str, tmp_path: Path) -> None:
    path = write(tmp_path, jsonl(line("ok"), *[b"[]"] * 25))
    err = refused(seeded, "enqueue", path)
    listed = [ln for ln in err.splitlines() if ln.startswith(f"{path}:")]
    assert listed == [f"{path}:{n}: expected a JSON object, got array" for n in range(2, 22)]
    assert err.splitlines()[-1] == "... and 5 more"
    assert "25 of 26 lines are invalid" in err


def test_a_bad_line_far_into_a_file_enqueues_nothing(seeded: str, tmp_path: Path) -> None:
    good = [line(f"g{i}") for i in range(25_000)]  # more than two chunks are written first
    path = write(tmp_path, jsonl(*good, b"{oops"))
    err = refused(seeded, "enqueue", path)
    assert f"{path}:25001: not valid JSON" in err


# -- accepted variants -----------------------------------------------------------------------


def test_crlf_and_trailing_blank_lines_are_accepted(db: str, tmp_path: Path) -> None:
    crlf = b"".join(ln + b"\r\n" for ln in SEED) + b"\r\n\n   \n\r\n"
    result = cli("--db", db, "enqueue", write(tmp_path, crlf, "crlf.jsonl"))
    assert result.exit_code == 0, result.output
    assert "3 added" in result.stdout
    # the same requests with LF endings and reformatted JSON are the same requests
    pretty = b"\n".join(orjson.dumps(orjson.loads(ln), option=orjson.OPT_SORT_KEYS) for ln in SEED)
    again = cli("--db", db, "enqueue", write(tmp_path, pretty.replace(b":", b": "), "lf.jsonl"))
    assert again.exit_code == 0, again.output
    assert "0 added" in again.stdout and "3 already enqueued" in again.stdout


@pytest.mark.both_backends
def test_enqueueing_the_same_file_twice_says_already_enqueued(seeded: str, tmp_path: Path) -> None:
    before = all_requests(seeded)
    result = cli("--db", seeded, "enqueue", str(tmp_path / "seed.jsonl"))
    assert result.exit_code == 0
    assert result.stdout.strip() == (
        f"{tmp_path / 'seed.jsonl'}: 0 added to queue 'default', "
        "3 already enqueued (unchanged, skipped)"
    )
    assert all_requests(seeded) == before


@pytest.mark.both_backends
def test_a_partly_new_file_adds_only_the_new_lines(seeded: str, tmp_path: Path) -> None:
    path = write(tmp_path, jsonl(*SEED[:2], line("s4", "fourth")))
    result = cli("--db", seeded, "enqueue", path)
    assert "1 added to queue 'default', 2 already enqueued" in result.stdout
    assert visible(seeded)["total"] == 4


def test_standard_input(seeded: str) -> None:
    result = cli("--db", seeded, "enqueue", "-", input=jsonl(line("piped-1"), line("piped-2")))
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("<stdin>: 2 added to queue 'default'")
    err = refused(seeded, "enqueue", "-", input=jsonl(line("piped-3"), b"[]"))
    assert "<stdin>:2: expected a JSON object, got array" in err


def test_priority_and_queue_are_stored(db: str, tmp_path: Path) -> None:
    path = write(tmp_path, jsonl(line("p1"), line("p2")))
    result = cli("--db", db, "enqueue", path, "--queue", "urgent", "--priority", "7")
    assert result.exit_code == 0, result.output
    rows = sql(db, "SELECT queue, custom_id, priority FROM requests ORDER BY custom_id")
    assert rows == [("urgent", "p1", 7), ("urgent", "p2", 7)]


def test_skip_invalid_enqueues_the_rest_and_writes_the_rejects(seeded: str, tmp_path: Path) -> None:
    path = write(tmp_path, jsonl(line("k1"), b"[1]", line("k2"), line("s1", "changed"), b"{"))
    result = cli("--db", seeded, "enqueue", path, "--skip-invalid")
    assert result.exit_code == 1, result.output  # the good lines went in; input was refused
    rejects = f"{path}.rejected.jsonl"
    assert result.stdout.strip() == (
        f"{path}: 2 added to queue 'default', 3 rejected (see {rejects})"
    )
    got = [orjson.loads(ln) for ln in Path(rejects).read_bytes().splitlines()]
    assert [(r["line"], r["raw"]) for r in got] == [
        (2, "[1]"),
        (5, "{"),
        (4, line("s1", "changed").decode()),
    ]
    assert got[0]["reason"] == "expected a JSON object, got array"
    assert got[1]["reason"].startswith("not valid JSON")
    assert "already in queue 'default' with a different body" in got[2]["reason"]
    assert visible(seeded)["total"] == 5
    assert {r[1] for r in all_requests(seeded)} == {"s1", "s2", "s3", "k1", "k2"}


def test_skip_invalid_with_a_named_reject_file(seeded: str, tmp_path: Path) -> None:
    out = tmp_path / "bad-lines.jsonl"
    result = cli(
        "--db",
        seeded,
        "enqueue",
        "-",
        "--skip-invalid",
        "--reject-file",
        str(out),
        input=jsonl(line("m1"), b"nope"),
    )
    assert "1 added" in result.stdout and f"1 rejected (see {out})" in result.stdout
    assert orjson.loads(out.read_bytes())["line"] == 2


# -- over-long lines -------------------------------------------------------------------------


def test_a_20_mb_line_is_rejected(seeded: str, tmp_path: Path) -> None:
    huge = b'{"custom_id": "huge", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "x": "'
    huge += b"a" * (20 * 1024 * 1024) + b'"}}'
    path = write(tmp_path, jsonl(line("before"), huge, line("after")))
    err = refused(seeded, "enqueue", path)
    assert f"{path}:2: line is longer than 16,777,216 bytes (LLMBATCH_MAX_LINE_BYTES)" in err
    assert "1 of 3 lines are invalid" in err


def _peak_rss_kib(args: list[str], stdin_chunks: Iterator[bytes]) -> tuple[int, bytes]:
    proc = subprocess.Popen(args, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdin is not None and proc.stderr is not None
    err: list[bytes] = []
    reader = threading.Thread(target=lambda: err.append(proc.stderr.read()))  # type: ignore[union-attr]
    reader.start()
    for chunk in stdin_chunks:
        proc.stdin.write(chunk)
    proc.stdin.close()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    reader.join()
    return usage.ru_maxrss, err[0]


def test_an_over_long_line_is_never_held_whole(tmp_path: Path) -> None:
    """A 20 MB line against a 64 KiB limit costs no more memory than a short line."""
    db = str(tmp_path / "mem.db")
    args = [
        LLMBATCH,
        "--db",
        db,
        "enqueue",
        "-",
        "--max-line-bytes",
        "65536",
        "--skip-invalid",
        "--reject-file",
        str(tmp_path / "rej.jsonl"),
    ]

    def stream(n_mb: int) -> Iterator[bytes]:
        yield line("a") + b'\n{"custom_id": "big", "x": "'
        for _ in range(n_mb):
            yield b"x" * (1 << 20)
        yield b'"}\n' + line("b") + b"\n"

    small_rss, _ = _peak_rss_kib(args, stream(0))
    big_rss, err = _peak_rss_kib(args, stream(20))
    assert b"Traceback" not in err
    assert big_rss - small_rss < 8 * 1024, (small_rss, big_rss)  # KiB: a held line is 20 MB
    assert "longer than 65,536 bytes" in (tmp_path / "rej.jsonl").read_text()


# -- where the data lives --------------------------------------------------------------------


def test_a_database_in_a_missing_folder(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl(line("a")))
    target = tmp_path / "no" / "such" / "dir" / "q.db"
    result = cli("--db", str(target), "enqueue", path)
    assert result.exit_code == 2  # a name that is not there
    assert result.stderr == (
        f"error: cannot open database {target}: folder {target.parent} does not exist\n"
    )
    assert not (tmp_path / "no").exists()


@contextlib.contextmanager
def read_only_folder(folder: Path) -> Iterator[None]:
    """A folder nobody may write, root included (immutable), restored afterwards."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if not shutil.which("chattr"):
        pytest.skip("running as root without chattr: cannot make a folder read-only for root")
    made = subprocess.run(["chattr", "+i", str(folder)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot make a folder immutable here: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


def test_a_database_in_a_read_only_folder(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl(line("a")))
    folder = tmp_path / "ro"
    folder.mkdir()
    with read_only_folder(folder):
        result = cli("--db", str(folder / "q.db"), "enqueue", path)
        assert result.exit_code == 3  # the store cannot be used
        assert result.stderr == (
            f"error: cannot create database {folder / 'q.db'}: folder {folder} is not writable\n"
        )
        assert list(folder.iterdir()) == []


def test_an_existing_database_in_a_folder_made_read_only(tmp_path: Path) -> None:
    path = write(tmp_path, jsonl(line("a")))
    folder = tmp_path / "ro"
    folder.mkdir()
    db = str(folder / "q.db")
    assert cli("--db", db, "enqueue", path).exit_code == 0
    before = sql(db, "SELECT custom_id FROM requests")
    with read_only_folder(folder):
        result = cli("--db", db, "enqueue", write(tmp_path, jsonl(line("b")), "b.jsonl"))
        assert result.exit_code == 3
        assert result.stderr.startswith(f"error: cannot open database {db}")
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert sql(db, "SELECT custom_id FROM requests") == before


def test_a_read_only_database_file(tmp_path: Path) -> None:
    if os.geteuid() == 0:
        pytest.skip("root may write any file; the read-only folder tests cover root")
    db = tmp_path / "q.db"
    open_store(str(db)).close()
    db.chmod(0o444)
    result = cli("--db", str(db), "enqueue", write(tmp_path, jsonl(line("a"))))
    assert result.stderr == f"error: cannot write database {db}: the file is read-only\n"


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://llmbatch_nobody:Sw0rdf1sh-pw@127.0.0.1:5432/orders_db",  # no such role
        "postgresql://postgres:Sw0rdf1sh-pw@127.0.0.1:1/orders_db",  # nothing listening
        "postgresql://postgres:Sw0rdf1sh-pw@no-such-host.invalid:5432/orders_db",  # no such host
    ],
)
def test_a_wrong_postgres_dsn_names_host_and_database_never_the_password(
    dsn: str, tmp_path: Path
) -> None:
    host = dsn.split("@")[1].split(":")[0]
    for args in (["status"], ["enqueue", write(tmp_path, jsonl(line("a")))]):
        result = cli("--db", dsn, *args)
        assert result.exit_code == 3  # the store cannot be reached
        assert "Sw0rdf1sh" not in result.output
        assert result.stderr.count("\n") == 1, result.stderr
        assert result.stderr.startswith(f"error: cannot connect to PostgreSQL at {host}:")
        assert "/orders_db" in result.stderr


def test_a_wrong_database_name_on_a_real_server(pg_dsn: str) -> None:
    real = urlsplit(pg_dsn)
    wrong = (
        f"postgresql://{real.username or 'postgres'}:Sw0rdf1sh-pw@{real.hostname}:"
        f"{real.port or 5432}/llmbatch_no_such_db"
    )
    result = cli("--db", wrong, "status")
    assert result.exit_code == 3
    assert "Sw0rdf1sh" not in result.output
    assert result.stderr.startswith(f"error: cannot connect to PostgreSQL at {real.hostname}:")
    assert "llmbatch_no_such_db" in result.stderr and result.stderr.count("\n") == 1


# -- errors: one line, or a traceback on request ---------------------------------------------


def test_errors_are_one_line_without_traceback_and_with_one_under_debug(tmp_path: Path) -> None:
    target = str(tmp_path / "missing" / "q.db")
    plain = subprocess.run([LLMBATCH, "--db", target, "status"], capture_output=True, text=True)
    assert plain.returncode == 2
    assert plain.stdout == ""
    assert plain.stderr.count("\n") == 1 and "no llmbatch database at" in plain.stderr
    debug = subprocess.run(
        [LLMBATCH, "--debug", "--db", target, "status"], capture_output=True, text=True
    )
    assert debug.returncode == 2
    assert debug.stderr.startswith("Traceback (most recent call last):")
    assert "NotFound" in debug.stderr
    assert debug.stderr.splitlines()[-1] == plain.stderr.strip()
    env = {**os.environ, "LLMBATCH_DEBUG": "1"}
    by_env = subprocess.run(
        [LLMBATCH, "--db", target, "status"], capture_output=True, text=True, env=env
    )
    assert "Traceback" in by_env.stderr


# -- real processes --------------------------------------------------------------------------


def _generate(path: Path, n: int, start: int, seed: int) -> Path:
    with open(path, "wb") as f:
        f.writelines(generated(n, seed=seed, start=start))
    return path


# Lines in each of the two files: 6 of the importer's 10,000-row chunks each (they interleave
# in one SQLite file), about 30 MB, over the 8 MB past which a second process parses.
# benchmarks/bench_enqueue.py runs the large sizes (1M requests).
LINES = 60_000


@pytest.fixture(scope="module")
def two_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two LINES-line files with disjoint custom_ids."""
    folder = tmp_path_factory.mktemp("generated")
    return (
        _generate(folder / "a.jsonl", LINES, 0, seed=1),
        _generate(folder / "b.jsonl", LINES, LINES, seed=2),
    )


@pytest.mark.slow
def test_two_processes_enqueue_into_one_sqlite_file_at_once(
    two_files: tuple[Path, Path], tmp_path: Path
) -> None:
    db = str(tmp_path / "shared.db")
    procs = [
        subprocess.Popen(
            [LLMBATCH, "--db", db, "enqueue", str(f)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for f in two_files
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outputs, strict=True):
        assert "locked" not in err
        assert p.returncode == 0, err
        assert f"{LINES:,} added to queue 'default'" in out
    assert visible(db)["total"] == 2 * LINES
    ids = sql(db, "SELECT COUNT(DISTINCT custom_id), MIN(custom_id), MAX(custom_id) FROM requests")
    assert ids == [(2 * LINES, "review-00000000", f"review-{2 * LINES - 1:08d}")]
    imports = sql(db, "SELECT state, added FROM imports ORDER BY id")
    assert imports == [("committed", LINES), ("committed", LINES)]


def _loaded(db: str) -> int:
    try:
        rows = sql(db, "SELECT COALESCE(MAX(lines), 0) FROM imports WHERE state = 'loading'")
    except Exception:  # the file or its schema may not exist yet
        return 0
    return int(rows[0][0]) if rows else 0


@pytest.mark.slow
@pytest.mark.both_backends
def test_kill_9_halfway_through_a_large_import_leaves_nothing_visible(
    two_files: tuple[Path, Path], db: str, tmp_path: Path
) -> None:
    big = tmp_path / "big.jsonl"  # 2 × LINES lines, over 8 MB: parsed by a second process
    with open(big, "wb") as out:
        for part in two_files:
            with open(part, "rb") as f:
                shutil.copyfileobj(f, out)
    seed = write(tmp_path, jsonl(*SEED), "seed.jsonl")
    assert cli("--db", db, "enqueue", seed).exit_code == 0
    shown = visible(db)

    proc = subprocess.Popen(
        [LLMBATCH, "--db", db, "enqueue", str(big)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while _loaded(db) < LINES:
            assert proc.poll() is None, "the import ended before it could be killed"
            assert time.monotonic() < deadline, "the import made no progress"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # the parser child, if it outlived its parent
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL

    stored = int(sql(db, "SELECT COUNT(*) FROM requests")[0][0])
    assert stored >= LINES + 3  # the killed import did write ...
    assert visible(db) == shown  # ... but none of it is visible
    assert cli("--db", db, "show", "review-00000001").exit_code == 2

    after = cli("--db", db, "enqueue", write(tmp_path, jsonl(line("next")), "next.jsonl"))
    assert after.exit_code == 0, after.output
    assert "1 added" in after.stdout
    assert visible(db)["total"] == 4
    assert sql(db, "SELECT COUNT(*) FROM requests") == [(4,)]  # the dead import's rows are gone
    states = sql(db, "SELECT state, error FROM imports ORDER BY id")
    assert states[1][0] == "failed" and "died" in states[1][1]
    assert [s for s, _ in states] == ["committed", "failed", "committed"]
