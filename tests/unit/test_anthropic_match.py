"""Matching intents to unrecorded Anthropic batches by proof (no metadata): a pure function,
checked on examples and with hypothesis. A batch goes to an intent only when its first
result line proved it; a running batch of an intent's size makes that intent wait; a batch
is never taken on its size (the old count match handed one store's running batch to
another store's intent of the same size: issue 15)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmbatch.providers.anthropic import match_by_proof

PENDING = ("", ())


def test_a_proven_batch_goes_to_its_intent() -> None:
    got = match_by_proof([(1, 5)], [("b", 5, 10.0), ("other", 6, 9.0)], {"b": 1, "other": None})
    assert got == {1: ("b", ())}


def test_no_batch_of_that_size_matches_nothing() -> None:
    assert match_by_proof([(1, 5)], [("x", 4, 1.0)], {}) == {}


def test_a_running_batch_of_the_size_is_never_taken_the_intent_waits() -> None:
    """Store B's intent and store A's running batch of the same size: B waits for it to end
    and say whose it is; it is not adopted (the old code took it)."""
    assert match_by_proof([(1, 5)], [("theirs", 5, 10.0)], {}) == {1: PENDING}


def test_an_ended_foreign_batch_of_the_size_leaves_nothing_to_wait_for() -> None:
    assert match_by_proof([(1, 5)], [("theirs", 5, 10.0)], {"theirs": None}) == {}


def test_proven_duplicates_oldest_first() -> None:
    bs = [("late", 5, 20.0), ("early", 5, 10.0), ("mid", 5, 15.0)]
    got = match_by_proof([(1, 5)], bs, dict.fromkeys(("late", "early", "mid"), 1))
    assert got == {1: ("early", ("mid", "late"))}


def test_two_intents_of_one_size_each_take_their_own() -> None:
    got = match_by_proof(
        [(2, 3), (1, 3)], [("second", 3, 2.0), ("first", 3, 1.0)], {"first": 1, "second": 2}
    )
    assert got == {1: ("first", ()), 2: ("second", ())}


def test_only_the_intent_without_proof_waits() -> None:
    got = match_by_proof([(1, 3), (2, 3)], [("only", 3, 1.0), ("running", 3, 2.0)], {"only": 2})
    assert got == {2: ("only", ()), 1: PENDING}


def test_a_batch_that_said_whose_it_is_goes_to_that_intent_or_to_none() -> None:
    batches = [("b1", 3, 1.0), ("b2", 3, 2.0), ("foreign", 3, 0.5)]
    owners = {"b1": 2, "b2": 2, "foreign": None}
    assert match_by_proof([(1, 3), (2, 3)], batches, owners) == {2: ("b1", ("b2",))}
    # a batch of a size other than its owner's is not that owner's
    assert match_by_proof([(1, 4)], [("x", 3, 1.0)], {"x": 1}) == {}


intents = st.dictionaries(st.integers(1, 50), st.integers(1, 4), max_size=8)
batches = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=4),
    st.tuples(st.integers(1, 4), st.floats(0, 100, allow_nan=False), st.integers(-1, 50)),
    max_size=10,
)


@given(intents, batches)
def test_a_batch_goes_only_to_the_intent_it_proved_and_unproven_ones_only_make_wait(
    ints: dict[int, int], bs: dict[str, tuple[int, float, int]]
) -> None:
    # owner -1: still running (no proof yet); 0: ended, not these intents'; else that intent
    owners = {b: (o or None) for b, (_n, _t, o) in bs.items() if o >= 0}
    got = match_by_proof(list(ints.items()), [(b, n, t) for b, (n, t, _o) in bs.items()], owners)
    running = {n for b, (n, _t, o) in bs.items() if o < 0}
    for intent, (primary, dups) in got.items():
        if not primary:
            assert ints[intent] in running and not dups
            continue
        for b in (primary, *dups):
            assert owners.get(b) == intent and bs[b][0] == ints[intent]
    for intent, count in ints.items():
        proven = [b for b, o in owners.items() if o == intent and bs[b][0] == count]
        if proven:
            assert got[intent][0] == min(proven, key=lambda b: (bs[b][1], b))
        elif count in running:
            assert got[intent] == PENDING
        else:
            assert intent not in got
