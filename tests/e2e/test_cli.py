"""The read side and configuration, through the `llmbatch` command as a user runs it.

No engine exists yet, so outcomes are recorded with plain SQL the way the engine will
record them (an attempt, its result, the request's state).
"""

from __future__ import annotations

import csv
import io
import os
import pty
import subprocess
from pathlib import Path

import orjson
import pytest

from helpers import LLMBATCH, add_result, chat_response, cli, jsonl, line, sql, visible
from llmbatch.export import result_id
from llmbatch.store import open_store


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("LLMBATCH_DB", "LLMBATCH_CONFIG", "LLMBATCH_QUEUE", "LLMBATCH_DEBUG"):
        monkeypatch.delenv(name, raising=False)


def enqueue(db: str, tmp_path: Path, *lines: bytes, args: tuple[str, ...] = ()) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(jsonl(*lines))
    result = cli("--db", db, "enqueue", str(path), *args)
    assert result.exit_code == 0, result.output


@pytest.fixture
def finished(db: str, tmp_path: Path) -> str:
    """A store with a succeeded, a failed and a still-queued request, and one in another queue."""
    enqueue(db, tmp_path, line("ok-1", "one"), line("bad-1", "two"), line("waiting", "three"))
    enqueue(db, tmp_path, line("other-1", "x", model="gpt-4o"), args=("--queue", "other"))
    add_result(db, "ok-1", response=chat_response("positive"), provider_request_id="req_abc")
    add_result(db, "bad-1", succeeded=False, error=("server_error", "The server had an error"))
    add_result(db, "other-1", queue="other", response=chat_response("neutral"))
    return db


# -- status ----------------------------------------------------------------------------------


def test_status_of_an_empty_store_says_what_to_do(db: str, tmp_path: Path) -> None:
    open_store(db).close()  # made, as `enqueue` or a worker would, with nothing in it
    result = cli("--db", db, "status")
    assert result.exit_code == 0
    assert "no requests yet" in result.stdout and "llmbatch enqueue" in result.stdout


def test_a_misspelt_db_path_is_an_error_not_an_empty_store(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    assert cli("--db", "reviews.db", "enqueue", "in.jsonl").exit_code == 0
    for command in (["status"], ["results"], ["report"], ["queues"], ["batches"], ["run"]):
        result = cli("--db", "reveiws.db", *command)
        assert result.exit_code == 2, (command, result.output)
        assert result.stderr.startswith("error: no llmbatch database at reveiws.db")
        assert "did you mean reviews.db?" in result.stderr
        assert not (tmp_path / "reveiws.db").exists()


def test_status_is_plain_text_when_not_a_terminal(finished: str) -> None:
    result = cli("--db", finished, "status")
    assert result.exit_code == 0
    assert [ln.split() for ln in result.stdout.splitlines()] == [
        ["requests"],
        ["queue", "provider", "model", "queued", "succeeded", "failed", "total"],
        ["default", "openai", "gpt-4o-mini", "1", "1", "1", "3"],
        ["other", "openai", "gpt-4o", "0", "1", "0", "1"],
        ["all", "1", "2", "1", "4"],
    ]
    assert "─" not in result.stdout and "\x1b[" not in result.stdout


def test_status_of_one_queue(finished: str) -> None:
    result = cli("--db", finished, "status", "--queue", "other")
    assert [ln.split()[0] for ln in result.stdout.splitlines()] == ["requests", "queue", "other"]
    typo = cli("--db", finished, "status", "--queue", "othr")
    assert typo.exit_code == 2
    assert (
        typo.stderr.startswith("error: no queue 'othr'") and "did you mean 'other'?" in typo.stderr
    )


def test_status_is_a_table_on_a_terminal(finished: str) -> None:
    leader, follower = pty.openpty()
    env = {**os.environ, "COLUMNS": "120", "TERM": "xterm"}
    proc = subprocess.Popen(
        [LLMBATCH, "--db", finished, "status"], stdout=follower, stderr=follower, env=env
    )
    os.close(follower)
    out = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the other side closed
            break
        if not chunk:
            break
        out += chunk
    os.close(leader)
    assert proc.wait(timeout=30) == 0
    text = out.decode()
    assert "requests" in text  # the table's title
    assert "━" in text or "─" in text  # box drawing: a rich table, not plain text
    assert "gpt-4o-mini" in text


def test_status_as_json(finished: str) -> None:
    result = cli("--db", finished, "status", "--format", "json")
    data = orjson.loads(result.stdout)
    assert data["total"] == 4
    assert {(c["queue"], c["model"], c["state"], c["count"]) for c in data["counts"]} == {
        ("default", "gpt-4o-mini", "failed", 1),
        ("default", "gpt-4o-mini", "queued", 1),
        ("default", "gpt-4o-mini", "succeeded", 1),
        ("other", "gpt-4o", "succeeded", 1),
    }
    assert all(c["provider"] == "openai" for c in data["counts"])


# -- show ------------------------------------------------------------------------------------


def test_show_a_queued_request(finished: str) -> None:
    result = cli("--db", finished, "show", "waiting")
    assert result.exit_code == 0
    out = result.stdout
    assert out.startswith("waiting  queue default  openai /v1/chat/completions  model gpt-4o-mini")
    assert "state      queued" in out
    assert "(import 1, line 3)" in out
    assert "attempts   none yet" in out


def test_show_a_request_with_its_attempt_and_result(finished: str) -> None:
    out = cli("--db", finished, "show", "ok-1").stdout
    assert "state      succeeded" in out
    assert "attempt " in out and "done" in out
    assert "result     200, 12 in / 3 out tokens" in out
    failed = cli("--db", finished, "show", "bad-1").stdout
    assert "result     failed: server_error: The server had an error" in failed


def test_show_as_json(finished: str) -> None:
    [req] = orjson.loads(cli("--db", finished, "show", "ok-1", "--format", "json").stdout)
    assert req["custom_id"] == "ok-1" and req["state"] == "succeeded"
    assert req["body"]["messages"][0]["content"] == "one"
    assert req["result"]["body"]["choices"][0]["message"]["content"] == "positive"
    assert len(req["attempts"]) == 1


def test_show_an_unknown_id_is_one_clear_error(finished: str) -> None:
    result = cli("--db", finished, "show", "nope")
    assert result.exit_code == 2  # a name that is not there: a usage error
    assert result.stderr == "error: no request with custom_id 'nope'\n"
    result = cli("--db", finished, "show", "ok-1", "--queue", "other")
    assert result.stderr == "error: no request with custom_id 'ok-1' in queue 'other'\n"


# -- results ---------------------------------------------------------------------------------


def test_results_in_the_openai_batch_output_shape(finished: str) -> None:
    result = cli("--db", finished, "results", "--queue", "default")
    assert result.exit_code == 0
    lines = [orjson.loads(ln) for ln in result.stdout.splitlines()]
    attempts = [a for (a,) in sql(finished, "SELECT attempt_id FROM results ORDER BY id")]
    store_id = sql(finished, "SELECT value FROM meta WHERE key = 'store_id'")[0][0]
    assert lines == [
        {
            "id": result_id(store_id, attempts[0]),
            "custom_id": "ok-1",
            "provider": "openai",
            "response": {
                "status_code": 200,
                "request_id": "req_abc",
                "body": chat_response("positive"),
            },
            "error": None,
        },
        {
            "id": result_id(store_id, attempts[1]),
            "custom_id": "bad-1",
            "provider": "openai",
            "response": None,
            "error": {"code": "server_error", "message": "The server had an error"},
        },
    ]
    cursor = sql(finished, "SELECT MAX(id) FROM results")[0][0]  # what the export read up to
    assert result.stderr == (
        f"cursor: {cursor}  (resume with --after {cursor}; 2 results; 1 requests not finished yet)\n"
    )


def test_results_resume_after_the_printed_cursor(finished: str) -> None:
    first = cli("--db", finished, "results")
    assert len(first.stdout.splitlines()) == 3
    cursor = first.stderr.split()[1]
    assert cli("--db", finished, "results", "--after", cursor).stdout == ""
    enqueue(finished, Path.cwd(), line("late", "four"))
    add_result(finished, "late")
    resumed = cli("--db", finished, "results", "--after", cursor)
    assert [orjson.loads(ln)["custom_id"] for ln in resumed.stdout.splitlines()] == ["late"]
    assert int(resumed.stderr.split()[1]) > int(cursor)
    # resuming from the middle gives exactly the rest
    everything = cli("--db", finished, "results").stdout.splitlines()
    second = int(sql(finished, "SELECT MIN(id) FROM results")[0][0]) + 1
    tail = cli("--db", finished, "results", "--after", str(second - 1)).stdout.splitlines()
    assert tail == everything[1:]


def test_results_filtered_by_state(finished: str) -> None:
    out = cli("--db", finished, "results", "--state", "failed").stdout
    assert [orjson.loads(ln)["custom_id"] for ln in out.splitlines()] == ["bad-1"]
    bad = cli("--db", finished, "results", "--state", "queued")
    assert bad.exit_code == 2 and "Invalid value for '--state'" in bad.stderr


def test_results_as_csv(finished: str) -> None:
    result = cli("--db", finished, "results", "--format", "csv")
    rows = [row[:8] for row in csv.reader(io.StringIO(result.stdout))]
    assert rows == [
        ["custom_id", "state", "status_code", "output_text", "input_tokens", "output_tokens",
         "error_code", "error_message"],
        ["ok-1", "succeeded", "200", "positive", "12", "3", "", ""],
        ["bad-1", "failed", "", "", "12", "3", "server_error", "The server had an error"],
        ["other-1", "succeeded", "200", "neutral", "12", "3", "", ""],
    ]  # fmt: skip
    assert result.stderr.startswith("cursor: ")


def test_results_to_a_file(finished: str, tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = cli("--db", finished, "results", "-o", str(out))
    assert result.stdout == ""
    assert len(out.read_bytes().splitlines()) == 3


def test_results_of_an_anthropic_request_name_the_provider(db: str, tmp_path: Path) -> None:
    params = {"model": "claude-3-5-haiku", "max_tokens": 5, "messages": []}
    enqueue(db, tmp_path, orjson.dumps({"custom_id": "c1", "params": params}))
    message = {"type": "message", "content": [{"type": "text", "text": "bonjour"}]}
    add_result(db, "c1", response=message)
    [got] = [orjson.loads(ln) for ln in cli("--db", db, "results").stdout.splitlines()]
    assert got["provider"] == "anthropic" and got["response"]["body"] == message
    rows = list(csv.reader(io.StringIO(cli("--db", db, "results", "--format", "csv").stdout)))
    assert rows[1][3] == "bonjour"


def test_results_of_an_empty_store(db: str) -> None:
    open_store(db).close()
    result = cli("--db", db, "results")
    assert result.exit_code == 0 and result.stdout == ""
    assert result.stderr == "cursor: 0  (resume with --after 0; 0 results)\n"
    typo = cli("--db", db, "results", "-q", "nosuchqueue")
    assert typo.exit_code == 2 and typo.stdout == ""
    assert typo.stderr.startswith("error: no queue 'nosuchqueue'")


# -- configuration ---------------------------------------------------------------------------


def test_llmbatch_db_names_the_store(tmp_path: Path) -> None:
    db = str(tmp_path / "from-env.db")
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    result = cli("enqueue", "in.jsonl", env={"LLMBATCH_DB": db})
    assert result.exit_code == 0, result.output
    assert visible(db)["total"] == 1
    assert not (tmp_path / "llmbatch.db").exists()
    # sqlite:/// URLs name the same file
    assert cli("--db", f"sqlite:///{db}", "status", "--format", "json").stdout == (
        cli("--db", db, "status", "--format", "json").stdout
    )


def test_the_default_store_is_llmbatch_db_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    assert cli("enqueue", "in.jsonl").exit_code == 0
    assert (tmp_path / "llmbatch.db").is_file()


def test_llmbatch_toml_in_the_working_directory(tmp_path: Path) -> None:
    (tmp_path / "llmbatch.toml").write_text(
        'db = "configured.db"\n[enqueue]\nqueue = "from-config"\npriority = 3\n'
    )
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    result = cli("enqueue", "in.jsonl")
    assert result.exit_code == 0, result.output
    assert "added to queue 'from-config'" in result.stdout
    rows = sql(str(tmp_path / "configured.db"), "SELECT queue, priority FROM requests")
    assert rows == [("from-config", 3)]


def test_config_named_by_flag_or_variable(tmp_path: Path) -> None:
    conf = tmp_path / "conf" / "custom.toml"
    conf.parent.mkdir()
    conf.write_text('[enqueue]\nqueue = "named"\n')
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    result = cli("--config", str(conf), "--db", "x.db", "enqueue", "in.jsonl")
    assert "added to queue 'named'" in result.stdout
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("b")))
    result = cli("--db", "x.db", "enqueue", "in.jsonl", env={"LLMBATCH_CONFIG": str(conf)})
    assert "added to queue 'named'" in result.stdout


def test_flags_beat_environment_beat_config(tmp_path: Path) -> None:
    (tmp_path / "llmbatch.toml").write_text('db = "config.db"\n[enqueue]\nqueue = "config"\n')
    (tmp_path / "in.jsonl").write_bytes(jsonl(line("a")))
    env = {"LLMBATCH_QUEUE": "env", "LLMBATCH_DB": "env.db"}

    assert "queue 'config'" in cli("enqueue", "in.jsonl").stdout
    assert "queue 'env'" in cli("enqueue", "in.jsonl", env=env).stdout
    flagged = cli("--db", "flag.db", "enqueue", "in.jsonl", "--queue", "flag", env=env)
    assert "queue 'flag'" in flagged.stdout
    assert sql("config.db", "SELECT queue FROM requests") == [("config",)]
    assert sql("env.db", "SELECT queue FROM requests") == [("env",)]
    assert sql("flag.db", "SELECT queue FROM requests") == [("flag",)]


@pytest.mark.parametrize(
    "toml",
    [
        '[providers.openai]\napi_key = "sk-proj-VerySecret123"\n',
        'openai_api_key = "sk-proj-VerySecret123"\n',
        'db_password = "sk-proj-VerySecret123"\n',
        '[providers.anthropic]\ntoken = "sk-proj-VerySecret123"\n',
    ],
)
def test_a_secret_by_value_in_the_config_is_refused(toml: str, tmp_path: Path) -> None:
    (tmp_path / "llmbatch.toml").write_text(toml)
    result = cli("status")
    assert result.exit_code == 2
    assert "holds a secret by value" in result.stderr
    assert 'api_key_env = "OPENAI_API_KEY"' in result.stderr
    assert "VerySecret123" not in result.output
    assert not (tmp_path / "llmbatch.db").exists()


def test_a_secret_named_by_its_variable_is_fine(tmp_path: Path) -> None:
    (tmp_path / "llmbatch.toml").write_text('[providers.openai]\napi_key_env = "OPENAI_API_KEY"\n')
    open_store("llmbatch.db").close()
    assert cli("status").exit_code == 0


def test_config_file_errors_are_clear(tmp_path: Path) -> None:
    missing = cli("--config", "nope.toml", "status")
    assert missing.exit_code == 2 and "config file nope.toml does not exist" in missing.stderr
    (tmp_path / "broken.toml").write_text("db = \n")
    broken = cli("--config", "broken.toml", "status")
    assert broken.exit_code == 2 and "broken.toml: not valid TOML" in broken.stderr


def test_there_is_no_api_key_flag() -> None:
    result = cli("--api-key", "sk-x", "status")
    assert result.exit_code == 2 and "No such option" in result.stderr
