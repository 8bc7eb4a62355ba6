"""`packing.cut`: how many ready requests, taken in order, fit one batch under every limit."""

from __future__ import annotations

import inspect

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.packing import LINE_OVERHEAD, MARGIN, Cut, cut
from llmbatch.providers import Limits
from llmbatch.tokens import estimate_tokens
from llmbatch.tokens import estimate_tokens

Cand = tuple[int, int, int, int]


def run_cut(
    candidates: list[Cand],
    limits: Limits,
    user_cap: int | None = None,
    token_room: int | None = None,
) -> Cut:
    """`cut` with each candidate's tokens estimated from its text bytes, as the engine does.

    `cut` is moving from taking the estimates as an argument to making them itself (a
    streaming rewrite in progress); both spellings mean the same, so the tests take either."""
    if "tokens" in inspect.signature(cut).parameters:
        estimates = [estimate_tokens(c[3]) for c in candidates]
        return cut(candidates, limits, user_cap, token_room, estimates)  # type: ignore[call-arg,unused-ignore]
    return cut(candidates, limits, user_cap, token_room)


def cands(*sizes: int, inputs: int = 1) -> list[Cand]:
    return [(i, n, inputs, n) for i, n in enumerate(sizes, 1)]


def test_everything_fits() -> None:
    c = run_cut(cands(10, 20, 30), Limits(10, 10_000))
    assert (c.count, c.why, c.inputs) == (3, "all", 3)
    assert c.input_bytes == 60 + 3 * LINE_OVERHEAD


def test_line_limit_and_user_cap() -> None:
    c = run_cut(cands(*[1] * 9), Limits(4, 10**9))
    assert (c.count, c.why) == (4, "lines")
    c = run_cut(cands(*[1] * 9), Limits(50_000, 10**9), user_cap=3)
    assert (c.count, c.why) == (3, "lines")
    assert run_cut(cands(*[1] * 9), Limits(2, 10**9), user_cap=3).count == 2  # the smaller wins


def test_byte_limit_keeps_a_margin() -> None:
    line = 100 + LINE_OVERHEAD
    limit = 4 * line  # four lines exactly: the margin leaves room for three
    c = run_cut(cands(*[100] * 9), Limits(50_000, limit))
    assert (c.count, c.why, c.input_bytes) == (3, "bytes", 3 * line)
    assert 4 * line > limit * MARGIN


def test_embedding_inputs() -> None:
    c = run_cut(cands(*[5] * 9, inputs=3), Limits(50_000, 10**9, max_inputs=10))
    assert (c.count, c.why, c.inputs) == (3, "embedding inputs", 9)


def test_token_quota() -> None:
    per = estimate_tokens(5)
    c = run_cut(cands(*[5] * 9), Limits(50_000, 10**9), token_room=2 * per + per // 2)
    assert (c.count, c.why, c.tokens) == (2, "token quota", 2 * per)
    nothing = run_cut(cands(5), Limits(50_000, 10**9), token_room=per - 1)
    assert (nothing.count, nothing.why) == (0, "token quota")


def test_ids_are_kept_in_order() -> None:
    c = cut(iter(cands(3, 1, 2)), Limits(2, 10**9))
    assert list(c.ids) == [1, 2]


def test_no_candidates() -> None:
    assert run_cut([], Limits(1, 1)).count == 0


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[Cand], Limits, int | None, int | None]:
    n = draw(st.integers(0, 60))
    sizes = draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n))
    inputs = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    tokens = [estimate_tokens(s) for s in sizes]
    limits = Limits(
        draw(st.integers(1, 80)),
        draw(st.integers(1, 60_000)),
        draw(st.none() | st.integers(1, 200)),
    )
    cap = draw(st.none() | st.integers(1, 80))
    room = draw(st.none() | st.integers(0, 20_000))
    return (
        [(i, s, k, s) for i, (s, k) in enumerate(zip(sizes, inputs, strict=True))],
        limits,
        cap,
        room,
        tokens,
    )


@given(problems())
def test_a_cut_respects_every_limit_and_stops_only_at_one(
    p: tuple[list[Cand], Limits, int | None, int | None, list[int]],
) -> None:
    candidates, limits, cap, room, tokens = p
    c = cut(candidates, limits, cap, room)
    taken = candidates[: c.count]
    max_lines = min(limits.max_requests, cap or limits.max_requests)
    max_bytes = limits.max_bytes * MARGIN
    size = sum(n + LINE_OVERHEAD for _i, n, _k, _t in taken)
    inputs = sum(k for _i, _n, k, _t in taken)
    used = sum(tokens[: c.count])
    assert 0 <= c.count <= len(candidates)
    assert (c.input_bytes, c.inputs) == (size, inputs)
    assert c.count <= max_lines and size <= max_bytes
    assert limits.max_inputs is None or inputs <= limits.max_inputs
    assert room is None or used <= room
    if c.count == len(candidates):
        assert c.why == "all"
        return
    # it stopped early: the next candidate breaks exactly the limit it names
    _i, n, k, _t = candidates[c.count]
    broken = {
        "lines": c.count + 1 > max_lines,
        "bytes": size + n + LINE_OVERHEAD > int(max_bytes),
        "embedding inputs": limits.max_inputs is not None and inputs + k > limits.max_inputs,
        "token quota": room is not None and used + tokens[c.count] > room,
    }
    assert broken[c.why], (c, broken)


@pytest.mark.parametrize("cap", [None, 7])
def test_splitting_a_queue_by_repeated_cuts_takes_everything_once(cap: int | None) -> None:
    queue = cands(*[(i * 37) % 400 for i in range(100)])
    limits = Limits(9, 3000)
    batches = []
    while queue:
        c = run_cut(queue, limits, cap)
        assert c.count > 0
        batches.append(queue[: c.count])
        queue = queue[c.count :]
    ids = [i for b in batches for i, _n, _k, _t in b]
    assert ids == list(range(1, 101))
    assert all(len(b) <= min(9, cap or 9) for b in batches)
