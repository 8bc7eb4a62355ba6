"""The bad-input corpus (tests/data/bad_inputs/): input files and config/CLI mistakes.

One parametrised runner per category reads its `cases.toml`. Each case runs `llmbatch` as a
user types it and checks the exit code, the message (what and where: FILE:LINE, the key,
the option) and that a refused command left the queue exactly as it was. The provider
responses are in test_bad_input_corpus_provider.py.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
from corpus import CORPUS, backend, cases, cases_on_stores, fingerprint

from helpers import all_requests, cli, line, sql

ENQUEUE = CORPUS / "enqueue"
CONFIG = CORPUS / "config"


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray ./llmbatch.toml or ./llmbatch.db
    for name in ("LLMBATCH_DB", "LLMBATCH_CONFIG"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def seeded(db: str) -> str:
    """A store that already holds three requests, so 'unchanged' means something."""
    result = cli("--db", db, "enqueue", str(CORPUS / "seed.jsonl"))
    assert result.exit_code == 0, result.output
    return db


# -- input files -------------------------------------------------------------------------------


def _huge_line(path: Path) -> None:
    with path.open("wb") as f:
        f.write(line("before") + b"\n")
        f.write(b'{"custom_id": "huge", "method": "POST", "url": "/v1/chat/completions", ')
        f.write(b'"body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "')
        block = b"a" * (1 << 20)
        for _ in range(17):
            f.write(block)
        f.write(b'"}]}}\n' + line("after") + b"\n")


def _nested(levels: int, in_body: bool) -> bytes:
    deep = b"[" * levels + b"]" * levels
    if in_body:
        return b'{"custom_id": "deep", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", "x": ' + deep + b"}}"  # fmt: skip
    return b'{"custom_id": "deep", "x": ' + deep + b"}"


def _etc_passwd(tmp: Path) -> str:
    """/etc/passwd, named through as many ../ as it takes from the working folder."""
    if not Path("/etc/passwd").is_file():
        pytest.skip("no /etc/passwd here")
    return "../" * (len(tmp.resolve().parts) + 2) + "etc/passwd"


def _gemini_huge_request(path: Path) -> None:
    def gemini(key: str, text: bytes) -> bytes:
        head = b'{"key": "' + key.encode() + b'", "request": {"model": "gemini-2.5-flash", '
        return head + b'"contents": [{"role": "user", "parts": [{"text": "' + text + b'"}]}]}}\n'

    with path.open("wb") as f:
        f.write(gemini("before", b"hi"))
        f.write(gemini("huge", b"a" * (21 << 20)))
        f.write(gemini("after", b"hi"))


def _anthropic_huge_request(path: Path) -> None:
    def anthropic(custom_id: str, system: bytes) -> bytes:
        head = b'{"custom_id": "' + custom_id.encode() + b'", "params": {"model": '
        head += b'"claude-haiku-4-5", "max_tokens": 32, "system": "' + system + b'", '
        return head + b'"messages": [{"role": "user", "content": "hi"}]}}\n'

    with path.open("wb") as f:
        f.write(anthropic("before", b"hi"))
        f.write(anthropic("huge", b"x" * (30 << 20)))
        f.write(anthropic("after", b"hi"))


GENERATORS: dict[str, Callable[[Path], object]] = {
    "anthropic_huge_request": _anthropic_huge_request,
    "gemini_huge_request": _gemini_huge_request,
    "huge_line": _huge_line,
    "deep_nesting": lambda p: p.write_bytes(
        line("new-1") + b"\n" + _nested(10_000, False) + b"\n" + line("new-2") + b"\n"
    ),
    "deep_body": lambda p: p.write_bytes(
        line("new-1") + b"\n" + _nested(300, True) + b"\n" + line("new-2") + b"\n"
    ),
    "many_bad_lines": lambda p: p.write_bytes(line("ok") + b"\n" + b"[]\n" * 25),
    # over Cerebras's 1 MB a line, well under --max-line-bytes
    "line_over_1mb": lambda p: p.write_bytes(
        line("new-1") + b"\n" + _big_line(1_100_000) + b"\n" + line("new-2") + b"\n"
    ),
}


def _big_line(size: int) -> bytes:
    text = b"x" * size
    return b'{"custom_id": "big", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "' + text + b'"}]}}'  # fmt: skip


def _input(case: dict[str, Any], tmp: Path) -> str:
    if "file" in case:
        return str(ENQUEUE / case["file"])
    if case["generate"] == "etc_passwd":
        return _etc_passwd(tmp)
    path = tmp / f"{case['generate']}.jsonl"
    GENERATORS[case["generate"]](path)
    return str(path)


def _fill(text: str, **values: str) -> str:
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    return text


def _in_order(haystack: str, needles: list[str]) -> None:
    at = 0
    for needle in needles:
        found = haystack.find(needle, at)
        assert found >= 0, f"{needle!r} not in (after offset {at}):\n{haystack}"
        at = found + len(needle)


@pytest.mark.parametrize(("case", "db"), cases_on_stores("enqueue"), indirect=["db"])
@pytest.mark.both_backends
def test_enqueue(case: dict[str, Any], seeded: str, tmp_path: Path) -> None:
    file = _input(case, tmp_path)
    before, seed_rows = fingerprint(seeded), all_requests(seeded)
    args = [_fill(a, file=file) for a in case.get("args", ["enqueue", "{file}"])]
    if "provider" in case:
        args += ["--provider", case["provider"]]
    result = cli("--db", seeded, *args)

    output = result.stdout + result.stderr
    assert result.exit_code == case["exit"], output
    assert "Traceback" not in output
    for text in case.get("absent", []):
        assert _fill(text, file=file) not in output
    expected = [_fill(s, file=file) for s in case.get("stderr", [])]
    if "invalid" in case:
        summary = f"error: {file}: {case['invalid']} lines are invalid; nothing was enqueued"
        expected.insert(0, summary)
    _in_order(result.stderr, expected)

    if case["exit"] != 0:
        assert result.stdout == ""
        assert fingerprint(seeded) == before, "a refused file changed the queue"
        return
    added = case.get("added", [])
    assert result.stdout.startswith(f"{file}: {len(added)} added to queue 'default'")
    assert [r for r in all_requests(seeded) if r[1] in ("s1", "s2", "s3")] == seed_rows
    stored = sql(seeded, "SELECT custom_id FROM requests WHERE custom_id NOT IN ('s1','s2','s3')")
    assert sorted(c for (c,) in stored) == sorted(added)
    for custom_id in added:  # every id reads back as it was written, through the CLI too
        shown = cli("--db", seeded, "show", custom_id, "--format", "json")
        assert shown.exit_code == 0, shown.output
        assert [r["custom_id"] for r in orjson.loads(shown.stdout)] == [custom_id]
    assert sql(seeded, "SELECT COUNT(*) FROM requests")[0][0] == 3 + len(added), backend(seeded)


# -- config files and the command line ---------------------------------------------------------


def _pg_server() -> str:
    dsn = os.environ.get("LLMBATCH_TEST_PG")
    if not dsn:
        pytest.skip("needs LLMBATCH_TEST_PG (a PostgreSQL server to name a missing database on)")
    return urlsplit(dsn).netloc.rsplit("@", 1)[-1]


@pytest.mark.parametrize("case", cases("config"))
def test_config_and_cli(case: dict[str, Any], tmp_path: Path) -> None:
    shutil.copy(CORPUS / "seed.jsonl", tmp_path / "seed.jsonl")
    db = tmp_path / "corpus.db"
    values = {
        "config": str(CONFIG / case.get("config", "-")),
        "db": str(db),
        "dir": str(tmp_path),
        "seed": str(CORPUS / "seed.jsonl"),
    }
    if any("{pg}" in a for a in case["args"]):
        values["pg"] = _pg_server()
    before = None
    if case.get("seed"):
        seeded = cli("--db", str(db), "enqueue", values["seed"])
        assert seeded.exit_code == 0, seeded.output
        before = fingerprint(str(db))

    result = cli(*[_fill(a, **values) for a in case["args"]], env=case.get("env"))

    output = result.stdout + result.stderr
    assert result.exit_code == case["exit"], output
    assert "Traceback" not in output
    _in_order(result.stderr, [_fill(s, **values) for s in case["stderr"]])
    _in_order(result.stdout, [_fill(s, **values) for s in case.get("stdout", [])])
    for text in case.get("absent", []):
        assert text not in output
    if before is not None and case.get("packed"):
        states = sql(str(db), "SELECT custom_id, state FROM requests ORDER BY custom_id")
        assert [c for c, _ in states] == ["s1", "s2", "s3"]
        assert {s for _, s in states} <= {"queued", "packed", "submitting"}, states
        assert sql(str(db), "SELECT COUNT(*) FROM results") == [(0,)]
    elif before is not None:
        assert fingerprint(str(db)) == before, "a refused command changed the queue"
    if case.get("no_db"):
        assert not db.exists(), "a refused command created the database"
