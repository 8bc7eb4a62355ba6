"""Matching intents to unrecorded Anthropic batches by request count (no metadata): a pure
function, checked on examples and with hypothesis."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmbatch.providers.anthropic import match_by_count


def test_one_intent_one_batch() -> None:
    assert match_by_count([(1, 5)], [("b", 5, 10.0), ("other", 6, 9.0)]) == {1: ("b", ())}


def test_no_batch_of_that_size_matches_nothing() -> None:
    assert match_by_count([(1, 5)], [("x", 4, 1.0)]) == {}


def test_equal_candidates_oldest_first_and_leftovers_are_duplicates() -> None:
    got = match_by_count([(1, 5)], [("late", 5, 20.0), ("early", 5, 10.0), ("mid", 5, 15.0)])
    assert got == {1: ("early", ("mid", "late"))}


def test_two_intents_of_one_size_take_batches_in_creation_order() -> None:
    got = match_by_count([(2, 3), (1, 3)], [("second", 3, 2.0), ("first", 3, 1.0)])
    assert got == {1: ("first", ()), 2: ("second", ())}


def test_fewer_batches_than_intents_of_a_size_is_pending_until_they_say_whose() -> None:
    pending = ("", ())
    assert match_by_count([(1, 3), (2, 3)], [("only", 3, 1.0)]) == {1: pending, 2: pending}
    assert match_by_count([(1, 3), (2, 3)], [("only", 3, 1.0)], {"only": 2}) == {2: ("only", ())}


def test_a_batch_that_said_whose_it_is_goes_to_that_intent_or_to_none() -> None:
    batches = [("b1", 3, 1.0), ("b2", 3, 2.0), ("foreign", 3, 0.5)]
    owners = {"b1": 2, "b2": 2, "foreign": None}
    assert match_by_count([(1, 3), (2, 3)], batches, owners) == {2: ("b1", ("b2",))}
    # a batch of a size other than its owner's is not that owner's
    assert match_by_count([(1, 4)], [("x", 3, 1.0)], {"x": 1}) == {}


intents = st.dictionaries(st.integers(1, 50), st.integers(1, 4), max_size=8)
batches = st.dictionaries(
    st.text("abcdef", min_size=1, max_size=4),
    st.tuples(st.integers(1, 4), st.floats(0, 100, allow_nan=False)),
    max_size=10,
)


@given(intents, batches)
def test_every_batch_is_used_once_and_only_for_its_size(
    ints: dict[int, int], bs: dict[str, tuple[int, float]]
) -> None:
    got = match_by_count(list(ints.items()), [(b, n, t) for b, (n, t) in bs.items()])
    pending = {i for i, (p, _d) in got.items() if not p}
    for count in {ints[i] for i in pending}:  # only where batches are fewer than intents
        mine = [i for i, n in ints.items() if n == count]
        assert 0 < sum(1 for n, _t in bs.values() if n == count) < len(mine)
        assert all(i in pending for i in mine)
    got = {i: m for i, m in got.items() if i not in pending}
    ints = {i: n for i, n in ints.items() if i not in pending}
    primaries = [p for p, _d in got.values()]
    assert len(primaries) == len(set(primaries))  # no batch is two intents' own
    for intent, (primary, dups) in got.items():
        assert bs[primary][0] == ints[intent]
        assert all(bs[d][0] == ints[intent] for d in dups)
        assert primary not in dups and not set(dups) & set(primaries)
    for count in set(ints.values()):
        want = sum(1 for n, _t in bs.values() if n == count)
        mine = [i for i, n in ints.items() if n == count]
        assert sum(1 for i in mine if i in got) == min(len(mine), want)
        used = {got[i][0] for i in mine if i in got} | {
            d for i in mine if i in got for d in got[i][1]
        }
        assert len(used) == want  # every candidate of the size is someone's, or a duplicate
