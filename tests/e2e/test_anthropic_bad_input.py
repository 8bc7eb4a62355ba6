"""The issue's "Bad input" list for Anthropic, tried as a user would.

At the door (`llmbatch enqueue`): any custom_id is accepted (the provider sees only our
attempt ids), `params` without `max_tokens` and an over-size request are refused naming
FILE:LINE, and nothing is enqueued. At the provider: an unknown model comes back as an
errored result for that request alone, while the rest of its batch runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from helpers import cli, drain, fast_settings, request_states, results_per_request, sql
from llmbatch.emulator import RunningEmulator, running
from llmbatch.providers.anthropic_format import MAX_REQUEST_BYTES

# ids Anthropic itself refuses (^[a-zA-Z0-9_-]{1,64}$): spaces, slashes, accents, 65+ chars
ODD_IDS = ["with space", "a/b", "é", "x" * 200, "dot.ted"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no stray ./llmbatch.toml or ./llmbatch.db


def item(custom_id: str, model: str = "claude-haiku-4-5", **params: Any) -> bytes:
    p = {"model": model, "max_tokens": 32,
         "messages": [{"role": "user", "content": f"hello {custom_id}"}], **params}  # fmt: skip
    return orjson.dumps({"custom_id": custom_id, "params": p})


def write(tmp_path: Path, *lines: bytes) -> str:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b"".join(ln + b"\n" for ln in lines))
    return str(path)


def test_any_custom_id_is_accepted_as_an_anthropic_line(db: str, tmp_path: Path) -> None:
    result = cli("--db", db, "enqueue", write(tmp_path, *map(item, ODD_IDS)))
    assert result.exit_code == 0, result.output
    rows = sql(db, "SELECT custom_id, provider, endpoint FROM requests ORDER BY id")
    assert rows == [(c, "anthropic", "/v1/messages") for c in ODD_IDS]


def test_params_without_max_tokens_is_refused_naming_file_and_line(db: str, tmp_path: Path) -> None:
    no_cap = orjson.loads(item("b"))
    del no_cap["params"]["max_tokens"]
    path = write(tmp_path, item("a"), orjson.dumps(no_cap), item("c", max_tokens=0))
    result = cli("--db", db, "enqueue", path)
    assert result.exit_code == 1
    assert f"{path}:2: params.max_tokens is missing (Anthropic requires it)" in result.stderr
    assert (
        f"{path}:3: params.max_tokens must be a whole number of 1 or more, got 0" in result.stderr
    )
    assert "nothing was enqueued" in result.stderr and "Traceback" not in result.stderr
    assert sql(db, "SELECT COUNT(*) FROM requests") == [(0,)]


def test_an_over_size_request_is_refused_naming_file_and_line(db: str, tmp_path: Path) -> None:
    big = item("big", system="x" * MAX_REQUEST_BYTES)
    path = write(tmp_path, item("a"), big)
    limit = str(len(big) + 1)  # past the line limit, so the request rule itself speaks
    result = cli("--db", db, "enqueue", path, "--max-line-bytes", limit)
    assert result.exit_code == 1
    assert f"{path}:2: params are 30.0 MiB; one Anthropic request may be at most 30 MiB" in (
        result.stderr
    )
    assert sql(db, "SELECT COUNT(*) FROM requests") == [(0,)]


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=17) as e:
        yield e


def test_an_unknown_model_fails_alone_and_the_rest_run(
    db: str, tmp_path: Path, emu: RunningEmulator
) -> None:
    lines = [item(c) for c in ODD_IDS] + [item("ghost", model="claude-no-such-model")]
    lines += [item(f"s{i}", model="claude-sonnet-4-5") for i in range(3)]
    assert cli("--db", db, "enqueue", write(tmp_path, *lines)).exit_code == 0
    drain(db, fast_settings(emu))
    assert request_states(db) == {"succeeded": 8, "failed": 1}
    assert set(results_per_request(db).values()) == {1}
    [(attempts,)] = sql(db, "SELECT attempts FROM requests WHERE custom_id = 'ghost'")
    assert attempts == 1  # not_found_error is not retried
    out = {
        r["custom_id"]: r for r in map(orjson.loads, cli("--db", db, "results").stdout.splitlines())
    }
    ghost = out["ghost"]
    assert ghost["error"]["code"] == "not_found_error"
    assert ghost["response"]["body"]["error"]["type"] == "not_found_error"
    assert "claude-no-such-model" in ghost["response"]["body"]["error"]["message"]
    for c in ODD_IDS:
        assert out[c]["error"] is None and out[c]["response"]["body"]["type"] == "message"
