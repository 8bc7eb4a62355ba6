"""The transition table: what is legal passes, everything else raises, terminal states end."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.errors import IllegalTransition, StoreError
from llmbatch.states import (
    BATCH_STATES,
    BATCH_TRANSITIONS,
    REQUEST_STATES,
    REQUEST_TRANSITIONS,
    TERMINAL,
    check_batch,
    check_request,
    sources_of,
)

# The request life the issue describes, edge by edge.
ISSUE_EDGES = {
    ("queued", "packed"), ("packed", "submitted"), ("submitted", "succeeded"),
    ("submitted", "failed"), ("submitted", "retry_wait"), ("retry_wait", "queued"),
    ("queued", "held"), ("retry_wait", "held"), ("held", "queued"),
}  # fmt: skip


def test_every_edge_of_the_issue_is_legal() -> None:
    for old, new in ISSUE_EDGES:
        assert check_request(old, new) == new


def test_any_non_terminal_state_may_be_cancelled() -> None:
    for state in REQUEST_STATES:
        if state not in TERMINAL:
            assert check_request(state, "cancelled") == "cancelled"


def test_terminal_states_have_no_exits() -> None:
    assert frozenset({"succeeded", "failed", "cancelled"}) == TERMINAL
    for state in TERMINAL:
        assert REQUEST_TRANSITIONS[state] == frozenset()
        for new in REQUEST_STATES:
            with pytest.raises(IllegalTransition):
                check_request(state, new)


def test_the_table_covers_exactly_the_known_states() -> None:
    assert set(REQUEST_TRANSITIONS) == set(REQUEST_STATES)
    assert all(t <= set(REQUEST_STATES) for t in REQUEST_TRANSITIONS.values())
    assert set(BATCH_TRANSITIONS) == set(BATCH_STATES)
    assert all(t <= set(BATCH_STATES) for t in BATCH_TRANSITIONS.values())


def test_skipping_a_step_is_illegal_and_says_which() -> None:
    with pytest.raises(
        IllegalTransition, match="illegal request transition 'queued' -> 'succeeded'"
    ):
        check_request("queued", "succeeded")
    with pytest.raises(IllegalTransition) as exc:
        check_request("held", "packed")
    assert (exc.value.kind, exc.value.old, exc.value.new) == ("request", "held", "packed")
    assert isinstance(exc.value, StoreError)


def test_unknown_states_are_illegal() -> None:
    with pytest.raises(IllegalTransition):
        check_request("queued", "done")
    with pytest.raises(IllegalTransition):
        check_request("done", "queued")


def test_sources_of_inverts_the_table() -> None:
    assert sources_of("queued") == {"packed", "submitted", "retry_wait", "held"}
    assert sources_of("succeeded") == {"submitted"}
    assert sources_of("cancelled") == set(REQUEST_STATES) - TERMINAL


states = st.sampled_from([*REQUEST_STATES, "bogus"])


@given(old=states, new=states)
def test_a_transition_is_legal_exactly_when_the_table_lists_it(old: str, new: str) -> None:
    if new in REQUEST_TRANSITIONS.get(old, frozenset()):
        assert check_request(old, new) == new
    else:
        with pytest.raises(IllegalTransition):
            check_request(old, new)


@given(st.lists(st.sampled_from(REQUEST_STATES), min_size=1, max_size=30))
def test_any_walk_that_reaches_a_terminal_state_stops_there(path: list[str]) -> None:
    state = "queued"
    for new in path:
        if state in TERMINAL:
            with pytest.raises(IllegalTransition):
                check_request(state, new)
            return
        try:
            state = check_request(state, new)
        except IllegalTransition:
            assert new not in REQUEST_TRANSITIONS[state]


batch_states = st.sampled_from([*BATCH_STATES, "bogus"])


@given(old=batch_states, new=batch_states)
def test_batch_transitions_follow_the_table(old: str, new: str) -> None:
    if old == new or new in BATCH_TRANSITIONS.get(old, frozenset()):
        assert check_batch(old, new) == new
    else:
        with pytest.raises(IllegalTransition, match="illegal batch transition"):
            check_batch(old, new)


def test_an_ingested_batch_is_done() -> None:
    for new in BATCH_STATES:
        if new != "ingested":
            with pytest.raises(IllegalTransition):
                check_batch("ingested", new)
