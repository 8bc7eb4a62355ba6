"""`packing.cut`: how many ready requests, taken in order, fit one batch under every limit."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.packing import LINE_OVERHEAD, MARGIN, cut
from llmbatch.providers import Limits
from llmbatch.submitter import Spool
from llmbatch.tokens import estimate_tokens

Cand = tuple[int, int, int, int]


def cands(*sizes: int, inputs: int = 1) -> list[Cand]:
    return [(i, n, inputs, n) for i, n in enumerate(sizes, 1)]


def test_everything_fits() -> None:
    c = cut(cands(10, 20, 30), Limits(10, 10_000))
    assert (c.count, c.why, c.inputs) == (3, "all", 3)
    assert c.input_bytes == 60 + 3 * LINE_OVERHEAD


def test_line_limit_and_user_cap() -> None:
    c = cut(cands(*[1] * 9), Limits(4, 10**9))
    assert (c.count, c.why) == (4, "lines")
    c = cut(cands(*[1] * 9), Limits(50_000, 10**9), user_cap=3)
    assert (c.count, c.why) == (3, "lines")
    assert cut(cands(*[1] * 9), Limits(2, 10**9), user_cap=3).count == 2  # the smaller wins


def test_byte_limit_keeps_a_margin() -> None:
    line = 100 + LINE_OVERHEAD
    limit = 4 * line  # four lines exactly: the margin leaves room for three
    c = cut(cands(*[100] * 9), Limits(50_000, limit))
    assert (c.count, c.why, c.input_bytes) == (3, "bytes", 3 * line)
    assert 4 * line > limit * MARGIN


def test_embedding_inputs() -> None:
    c = cut(cands(*[5] * 9, inputs=3), Limits(50_000, 10**9, max_inputs=10))
    assert (c.count, c.why, c.inputs) == (3, "embedding inputs", 9)


def test_token_quota() -> None:
    per = estimate_tokens(5)
    c = cut(cands(*[5] * 9), Limits(50_000, 10**9), token_room=2 * per + per // 2)
    assert (c.count, c.why, c.tokens) == (2, "token quota", 2 * per)
    nothing = cut(cands(5), Limits(50_000, 10**9), token_room=per - 1)
    assert (nothing.count, nothing.why) == (0, "token quota")


def test_a_request_no_batch_can_hold_is_named_not_skipped_forever() -> None:
    limit = 1000
    c = cut(cands(2000, 10), Limits(50_000, limit))
    assert (c.count, c.why, c.too_large) == (0, "too large", 1)
    c = cut(cands(10, 2000), Limits(50_000, limit))  # behind others: this batch ends before it
    assert (c.count, c.why, c.too_large) == (1, "bytes", None)
    c = cut(cands(5, inputs=11), Limits(50_000, 10**9, max_inputs=10))
    assert (c.count, c.why, c.too_large) == (0, "too large", 1)


def test_ids_are_kept_in_order() -> None:
    c = cut(iter(cands(3, 1, 2)), Limits(2, 10**9))
    assert list(c.ids) == [1, 2]


def test_no_candidates() -> None:
    assert cut([], Limits(1, 1)).count == 0


@st.composite
def problems(draw: st.DrawFn) -> tuple[list[Cand], Limits, int | None, int | None]:
    n = draw(st.integers(0, 60))
    sizes = draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n))
    inputs = draw(st.lists(st.integers(1, 20), min_size=n, max_size=n))
    texts = draw(st.lists(st.integers(0, 1500), min_size=n, max_size=n))
    limits = Limits(
        draw(st.integers(1, 80)),
        draw(st.integers(1, 60_000)),
        draw(st.none() | st.integers(1, 200)),
    )
    cap = draw(st.none() | st.integers(1, 80))
    room = draw(st.none() | st.integers(0, 20_000))
    rows = [(i, s, k, t) for i, (s, k, t) in enumerate(zip(sizes, inputs, texts, strict=True))]
    return rows, limits, cap, room


@given(problems())
def test_a_cut_respects_every_limit_and_stops_only_at_one(
    p: tuple[list[Cand], Limits, int | None, int | None],
) -> None:
    candidates, limits, cap, room = p
    c = cut(iter(candidates), limits, cap, room)  # one pass over a stream
    tokens = [estimate_tokens(t) for _i, _n, _k, t in candidates]
    taken = candidates[: c.count]
    max_lines = min(limits.max_requests, cap or limits.max_requests)
    max_bytes = limits.max_bytes * MARGIN
    size = sum(n + LINE_OVERHEAD for _i, n, _k, _t in taken)
    inputs = sum(k for _i, _n, k, _t in taken)
    used = sum(tokens[: c.count])
    assert 0 <= c.count <= len(candidates)
    assert (c.input_bytes, c.inputs, c.tokens) == (size, inputs, used)
    assert list(c.ids) == [i for i, _n, _k, _t in taken]
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
        "too large": c.count == 0
        and (
            n + LINE_OVERHEAD > int(max_bytes)
            or (limits.max_inputs is not None and k > limits.max_inputs)
        ),
    }
    assert broken[c.why], (c, broken)
    assert (c.too_large is not None) == (c.why == "too large")


@pytest.mark.parametrize("cap", [None, 7])
def test_splitting_a_queue_by_repeated_cuts_takes_everything_once(cap: int | None) -> None:
    queue = cands(*[(i * 37) % 400 for i in range(100)])
    limits = Limits(9, 3000)
    batches = []
    while queue:
        c = cut(queue, limits, cap)
        assert c.count > 0
        batches.append(queue[: c.count])
        queue = queue[c.count :]
    ids = [i for b in batches for i, _n, _k, _t in b]
    assert ids == list(range(1, 101))
    assert all(len(b) <= min(9, cap or 9) for b in batches)


def test_a_spool_on_a_full_disk_still_feeds_the_cut(tmp_path: Path) -> None:
    """A body the spool cannot write (ENOSPC) does not stop the cut: every candidate still
    reaches it, and the intent's file is then written from the store (`lines` gives None)."""
    spool = Spool(tmp_path, "/v1/chat/completions")
    spool.reset()
    spool._out.close()
    # every write to /dev/full fails with ENOSPC, as on a full disk
    spool._out = open("/dev/full", "wb", buffering=0)  # type: ignore[assignment]  # noqa: SIM115
    bodies = [(i, 3, 1, 3, b"abc") for i in range(1, 6)]
    c = cut(spool.feed(bodies), Limits(10, 10**6))
    assert c.count == 5 and spool.broken
    assert spool.lines([(10 + i, i) for i in range(1, 6)]) is None
    spool.close()
    assert list(tmp_path.iterdir()) == []
