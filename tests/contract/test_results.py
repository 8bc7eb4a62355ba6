"""What every provider's results become (issue 15): a queue run by the engine against the
emulator, then `llmbatch results` read back against the provider's own result lines.

Each exported line must carry the provider's own answer — its body unchanged under the
user's custom id, an error with its code — and the CSV's `output_text` the text of that
answer, on every registered provider (folded from tests/e2e/test_anthropic_output.py, which
did this for Anthropic alone). The priced cache traffic of tests/e2e/test_anthropic_cost.py
runs here too, on the providers that price cache writes.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from test_ownership import DOORS

from helpers import E2E_KEY_ENV, cli, drain, fast_settings, sent_ids, sql
from llmbatch import Queue
from llmbatch.emulator import RunningEmulator, running
from llmbatch.providers import available, format_of, make_provider
from llmbatch.providers.base import read_lines
from llmbatch.providers.compatible import SHIPPED

KEYS = {"id", "custom_id", "provider", "response", "error"}


@pytest.fixture(params=sorted(available()))
def name(request: pytest.FixtureRequest) -> str:
    if request.param not in DOORS:
        pytest.fail(f"provider {request.param!r} has no door in the ownership contract suite")
    return str(request.param)


@pytest.fixture(autouse=True)
def _fake_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(E2E_KEY_ENV, "sk-test-not-a-secret")


@pytest.fixture
def emu() -> Iterator[RunningEmulator]:
    with running(seed=21) as e:
        yield e


def failing(name: str, item: dict[str, Any]) -> dict[str, Any]:
    """An item llmbatch accepts that the provider answers with an error when it runs."""
    if name == "gemini":
        item["request"]["contents"] = [{"role": "user", "parts": "not a list"}]
    elif name == "anthropic":
        item["params"]["messages"] = []  # invalid_request_error
    else:
        item["body"]["messages"] = "not a list"
    return item


def native(name: str, line: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """(the attempt id it was sent under, the answer's body or None for an error) from one
    of the provider's own result lines."""
    if name == "gemini":
        return line["key"], line.get("response")
    if name == "anthropic":
        result = line["result"]
        return line["custom_id"], result.get("message") if result["type"] == "succeeded" else None
    response = line.get("response") or {}
    ok = response.get("status_code") == 200
    return line["custom_id"], response.get("body") if ok else None


def provider_lines(db: str, name: str, emu: RunningEmulator, folder: Path) -> dict[str, Any]:
    """The user's custom id -> the provider's own answer body (None: an error), read from
    every batch of the run through the provider's transport (kept: delete_files=False)."""
    provider = make_provider(name, **fast_settings(emu).providers[name])
    sent = sent_ids(db)
    owner = {
        sent[int(a)]: str(c)
        for a, c in sql(
            db, "SELECT a.id, r.custom_id FROM attempts a JOIN requests r ON r.id = a.request_id"
        )
        if int(a) in sent
    }
    out: dict[str, Any] = {}
    batches = [str(b) for (b,) in sql(db, "SELECT provider_batch_id FROM batches")]
    for status in provider.poll(batches, len(batches)):
        for _kind, raw in read_lines(provider.download(status, folder)):
            attempt, body = native(name, orjson.loads(raw))
            out[owner[attempt]] = body
    return out


def test_exported_results_are_the_providers_own_answers(
    name: str, db: str, emu: RunningEmulator, tmp_path: Path
) -> None:
    least = SHIPPED[name].min_requests if name in SHIPPED else 1  # Cerebras: 10
    items = DOORS[name].items(name, max(8, least), "r ü/")
    items[-1] = failing(name, items[-1])
    with Queue(db, "q", provider=name) as q:
        assert q.add_many(items).added == len(items)
    drain(db, fast_settings(emu, delete_files=False))
    answers = provider_lines(db, name, emu, tmp_path)
    assert len(answers) == len(items)

    lines = [orjson.loads(x) for x in cli("--db", db, "results").stdout.splitlines()]
    assert len(lines) == len(items) and all(set(ln) == KEYS for ln in lines)
    assert len({ln["id"] for ln in lines}) == len(items)
    by_id = {ln["custom_id"]: ln for ln in lines}
    for custom_id, body in answers.items():
        line = by_id[custom_id]
        assert line["provider"] == name
        if body is not None:
            assert line["error"] is None and line["response"]["status_code"] == 200
            assert line["response"]["body"] == body
        else:
            assert line["error"]["code"] and line["error"]["message"]
            status = line["response"]["status_code"] if line["response"] else None
            assert status is None or 400 <= status < 500
    failed = str(items[-1].get("custom_id", items[-1].get("key")))
    assert answers[failed] is None and by_id[failed]["error"] is not None

    rows = list(csv.DictReader(io.StringIO(cli("--db", db, "results", "--format", "csv").stdout)))
    text = {r["custom_id"]: r["output_text"] for r in rows}
    fmt = format_of(name)
    for custom_id, body in answers.items():
        want = fmt.output_text(body) if body is not None else ""
        assert text[custom_id] == want and (want or body is None)
