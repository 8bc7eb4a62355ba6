"""The transition table (states.py) holds for every SQL statement that changes a state.

Every `UPDATE requests SET state = 'new' ...` in src/llmbatch/store/sql/*.sql (and a
dialect's own sql/<dialect>/bulk.sql) must say in its
WHERE which states it moves requests from (`state = 'old'` or `state IN (...)`), and each
(old, new) must be a transition of `REQUEST_TRANSITIONS`; only a person's verbs (manage.sql)
may take a `REOPENED` one. A request's state is never set from a parameter. A batch's
state-changing statements name states of `BATCH_STATES`.
"""

from __future__ import annotations

import re
from importlib import resources

import pytest

from llmbatch.errors import IllegalTransition
from llmbatch.states import BATCH_STATES, REOPENED, check_request

PERSONS = {"manage.sql"}  # what people run (`llmbatch retry`, `purge`), not the engine

SET_STATE = re.compile(r"\bSET\b.*?\bstate\s*=\s*('(\w+)'|[:?]\w*)", re.I | re.S)
FROM_ONE = re.compile(r"\bWHERE\b.*?\bstate\s*=\s*'(\w+)'", re.I | re.S)
FROM_MANY = re.compile(r"\bWHERE\b.*?\bstate\s+IN\s*\(([^)]*)\)", re.I | re.S)


def statements() -> list[tuple[str, str, str]]:
    """(file, query name, SQL) of every named query."""
    folder = resources.files("llmbatch.store").joinpath("sql")
    found = []
    files = [*folder.iterdir(), folder.joinpath("postgres", "bulk.sql")]
    for entry in sorted(files, key=lambda e: e.name):
        if not entry.name.endswith(".sql"):
            continue
        text = entry.read_text(encoding="utf-8")
        for block in re.split(r"^-- name: ", text, flags=re.M)[1:]:
            name, _, body = block.partition("\n")
            lines = [ln for ln in body.splitlines() if not ln.lstrip().startswith("--")]
            found.append((entry.name, name.strip(), " ".join(" ".join(lines).split())))
    return found


def state_updates(table: str) -> list[tuple[str, str, str]]:
    pattern = re.compile(rf"\bUPDATE\s+{table}\b", re.I)
    return [
        (f, n, sql) for f, n, sql in statements() if pattern.search(sql) and SET_STATE.search(sql)
    ]


def sources(sql: str) -> set[str]:
    at = re.search(r"\bWHERE\b", sql, re.I)
    where = sql[at.start() :] if at else ""
    found = set(FROM_ONE.findall(where))
    for listed in FROM_MANY.findall(where):
        found |= set(re.findall(r"'(\w+)'", listed))
    return found


def test_the_statements_are_found() -> None:
    names = {n for _f, n, _s in state_updates("requests")}
    assert {
        "pack_requests",
        "staged_succeeded",
        "request_succeeded",
        "request_retry",
        "retry_failed",
    } <= names
    assert {"mark_ingested", "update_batch"} <= {n for _f, n, _s in state_updates("batches")}


@pytest.mark.parametrize(
    ("where", "name", "sql"), state_updates("requests"), ids=lambda v: str(v)[:40]
)
def test_every_request_state_change_is_a_transition_of_the_table(
    where: str, name: str, sql: str
) -> None:
    match = SET_STATE.search(sql)
    assert match is not None
    new = match.group(2)
    assert new, f"{where} {name}: a request's state is set from a parameter"
    old = sources(sql)
    assert old, f"{where} {name}: moves requests to {new!r} without saying from which states"
    for state in sorted(old):
        if (state, new) in REOPENED and where in PERSONS:
            continue
        try:
            check_request(state, new)
        except IllegalTransition:
            pytest.fail(f"{where} {name}: {state} -> {new} is not in the transition table")


@pytest.mark.parametrize(
    ("where", "name", "sql"), state_updates("batches"), ids=lambda v: str(v)[:40]
)
def test_every_batch_state_written_is_a_batch_state(where: str, name: str, sql: str) -> None:
    match = SET_STATE.search(sql)
    assert match is not None
    if match.group(2):
        assert match.group(2) in BATCH_STATES, f"{where} {name}: unknown state {match.group(2)}"
    else:  # the provider's status, normalised by the provider module before it is stored
        assert name == "update_batch", f"{where} {name}: a batch state set from a parameter"
    assert sources(sql) <= set(BATCH_STATES)


def test_a_statement_that_breaks_the_table_is_caught() -> None:
    bad = "UPDATE requests SET state = 'queued', updated_at = ? WHERE state = 'succeeded'"
    with pytest.raises(IllegalTransition):
        for state in sources(bad):
            check_request(state, SET_STATE.search(bad).group(2))  # type: ignore[union-attr]


def test_every_batch_state_change_runs_through_the_one_check() -> None:
    """Each statement that sets a batch's state is run by store/batching.py `_move_batch`,
    which checks the move against BATCH_TRANSITIONS, and by nothing else."""
    source = resources.files("llmbatch.store").joinpath("batching.py").read_text()
    moved = set(re.findall(r'_move_batch\(\s*cur,\s*\w+,\s*[^,]+,\s*"(\w+)"', source))
    writers = {n for _f, n, _s in state_updates("batches")}
    assert writers == moved, f"batch state set outside _move_batch: {writers - moved}"
    folder = resources.files("llmbatch.store")
    for entry in folder.iterdir():
        if entry.name.endswith(".py"):
            for name in writers:
                assert f'q("{name}")' not in entry.read_text(), f"{entry.name} runs {name}"
