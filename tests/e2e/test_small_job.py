"""A small job makes no HTTP call it does not need (issue 23): `enqueue`, `wait`, `results`
on a fresh store against the emulator, counted in the emulator's call log. The calls are
the upload, the create, the polls until the batch ends, the output file's size (the check
that a download is whole) and its content, the two deletes, and one sweep (a list of batches
and one of uploads). The tick that creates a batch
polls once at once (an instant provider is done: `run` from cron ends it in one step)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from helpers import E2E_KEY_ENV, cli, jsonl, line, sql
from llmbatch.emulator import RunningEmulator, running


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=23) as e:
        yield e


def kinds(emu: RunningEmulator) -> list[str]:
    """The call log as `METHOD path` with ids replaced by `{id}`."""
    out = []
    for c in emu.control.calls():
        parts = ["{id}" if p.startswith(("file-", "batch_")) else p for p in c["path"].split("/")]
        out.append(f"{c['method']} {'/'.join(parts)}")
    return out


def test_a_small_job_makes_only_the_calls_it_needs(
    tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llmbatch.toml").write_text(
        f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{E2E_KEY_ENV}"\n'
    )
    (tmp_path / "in.jsonl").write_bytes(jsonl(*(line(f"r{i}") for i in range(5))))
    assert cli("enqueue", "in.jsonl").exit_code == 0
    assert cli("wait", "--poll-interval", "0.2").exit_code == 0
    assert cli("results", "-o", "out.jsonl").exit_code == 0
    assert len((tmp_path / "out.jsonl").read_bytes().splitlines()) == 5

    calls = kinds(emu)
    polls = calls.count("GET /v1/batches")
    assert 1 <= polls <= 4, calls  # at once, then until the batch is done
    assert calls[:2] == ["POST /v1/files", "POST /v1/batches"], calls
    assert Counter(c for c in calls if c != "GET /v1/batches") == Counter(
        {
            "POST /v1/files": 1,
            "POST /v1/batches": 1,
            "GET /v1/files/{id}": 1,
            "GET /v1/files/{id}/content": 1,
            "DELETE /v1/files/{id}": 2,
            "GET /v1/files": 1,  # the sweep's list of uploads
        }
    ), calls


def test_the_next_process_sweeps_what_it_did_not_send(
    tmp_path: Path, emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a crash or a restored database may leave is looked for by the next process that
    works with the provider once the store's sweep schedule says so (it lists the provider's
    batches and uploads once); a process started sooner after the last sweep does not list
    again (migration 0015: the schedule is the store's, not each process's)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "llmbatch.toml").write_text(
        f'[providers.openai]\nbase_url = "{emu.base_url}"\napi_key_env = "{E2E_KEY_ENV}"\n'
    )
    (tmp_path / "a.jsonl").write_bytes(jsonl(line("a")))
    (tmp_path / "b.jsonl").write_bytes(jsonl(line("b")))
    assert cli("enqueue", "a.jsonl").exit_code == 0
    assert cli("wait", "--poll-interval", "0.2").exit_code == 0
    emu.control.clear_calls()
    assert cli("enqueue", "b.jsonl").exit_code == 0
    assert cli("wait", "--poll-interval", "0.2").exit_code == 0
    assert kinds(emu).count("GET /v1/files") == 0  # swept less than sweep_interval ago
    sql("llmbatch.db", "UPDATE schedules SET next_at = 0")  # sweep_interval later
    emu.control.clear_calls()
    (tmp_path / "c.jsonl").write_bytes(jsonl(line("c")))
    assert cli("enqueue", "c.jsonl").exit_code == 0
    assert cli("wait", "--poll-interval", "0.2").exit_code == 0
    assert kinds(emu).count("GET /v1/files") == 1  # the sweep's list of uploads


STORE, NONCE = "0123456789abcdef", "a1b2c3d4"


def test_the_sweep_reads_a_small_first_page_of_uploads(
    emu: RunningEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An account that keeps its files: a fresh store's sweep read the newest 10,000 uploads
    in one page (~2.5 MB, a model each) to look back a few minutes (issue 23). Its first
    page is small; a look-back that needs more reads on, past the first page."""
    from llmbatch.ownership import file_name
    from llmbatch.providers import openai as transport
    from llmbatch.providers.openai import OpenAIProvider

    monkeypatch.setattr(transport, "FIRST_FILES_PAGE", 5)  # as 100, with fewer files to seed
    provider = OpenAIProvider(base_url=emu.base_url, api_key_env=E2E_KEY_ENV)
    client = provider.client
    old = client.files.create(
        file=(file_name(STORE, 3, NONCE), b"{}\n", "application/jsonl"), purpose="batch"
    )
    since = emu.control.now() - 1
    emu.control.seed(files=8)  # another app's, after ours: more than a first page
    later = emu.control.advance(1000)
    new = client.files.create(
        file=(file_name(STORE, 4, NONCE), b"{}\n", "application/jsonl"), purpose="batch"
    )
    emu.control.clear_calls()

    assert provider.stray_uploads(STORE, later - 10) == [(new.id, 4, NONCE)]
    lists = [c for c in emu.control.calls() if c["path"] == "/v1/files"]
    assert len(lists) == 1, lists
    assert parse_qs(lists[0]["query"])["limit"] == ["5"], lists

    emu.control.clear_calls()
    found = provider.stray_uploads(STORE, since)
    assert found == [(new.id, 4, NONCE), (old.id, 3, NONCE)]
    assert len([c for c in emu.control.calls() if c["path"] == "/v1/files"]) == 2
