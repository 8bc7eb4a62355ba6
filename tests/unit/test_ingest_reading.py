"""What ingest reads from result lines, on its fast paths, is what the careful ones read.

- `read_line` (a success as a `Success` tuple, read by the format's `success` fast path where
  it has one) against `parse_line` (the format's `result`, a `Finding`), on odd lines too:
  missing or unreadable usage, error bodies, non-2xx statuses, error-only lines;
- `Tally.add_successes` (a chunk at a time) against the sums of each line, flagged usage and
  price tiers included;
- `in_attempt_order`'s index, made a block at a time, against `_spans`, the line reader
  `capped_lines` uses, at every block boundary and cap.
"""

from __future__ import annotations

import random
import re
from array import array
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from llmbatch import results
from llmbatch.ledger import Tally
from llmbatch.providers import format_of
from llmbatch.providers.base import ResultFile
from llmbatch.results import Anomaly, Finding, Success, parse_line, read_line
from llmbatch.usage import UsageRecord

CHAT, RESPONSES = "/v1/chat/completions", "/v1/responses"
ENDPOINTS = (CHAT, RESPONSES, "/v1/embeddings", "/v1/moderations", None)


def careful(line: bytes, endpoint: str | None, provider: str = "openai") -> Success | Finding:
    """What ingest recorded before the fast path: the format's `result`, a success as a tuple."""
    f = parse_line(line, "s", endpoint, format_of(provider))
    return f.success() if f.ok else f


def both(line: bytes, endpoint: str | None, provider: str = "openai") -> Success | Finding:
    """`read_line` with and without the ordering pass's hint, checked against `careful`."""
    fmt = format_of(provider)
    try:
        want = careful(line, endpoint, provider)
    except Anomaly as exc:
        with pytest.raises(Anomaly, match=re.escape(str(exc))):
            read_line(line, "s", endpoint, fmt)
        return Finding.failed(-1, code="anomaly", error_type=None, message=str(exc))
    for hint in (-1, 7, 8):
        got = read_line(line, "s", endpoint, fmt, hint)
        assert got == want
        assert type(got) is type(want)
    return want


def line_of(response: object = None, error: object = None, custom_id: object = "s-7") -> bytes:
    return orjson.dumps({"id": "batch_req_1", "custom_id": custom_id, "response": response,
                         "error": error})  # fmt: skip


CHAT_USAGE: dict[str, Any] = {
    "prompt_tokens": 55,
    "completion_tokens": 4,
    "total_tokens": 59,
    "prompt_tokens_details": {"cached_tokens": 3, "audio_tokens": 0},
    "completion_tokens_details": {"reasoning_tokens": 2, "audio_tokens": 0},
}
BODY: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hé"}}],
        "usage": CHAT_USAGE}  # fmt: skip


def test_the_common_success_is_read_fast_as_the_careful_path_reads_it() -> None:
    line = line_of({"status_code": 200, "request_id": "req_1", "body": BODY})
    fmt = format_of("openai")
    obj = orjson.loads(line)
    fast = fmt.success(7, obj, CHAT)
    assert fast == (7, 200, "req_1", orjson.dumps(BODY), 55, 4, 3, 0, 0, 2, None, None)
    assert fast == fmt.result(7, obj, CHAT).success()
    assert both(line, CHAT) == fast
    assert format_of("azure").success(7, obj, CHAT) == fast  # the same shape


@pytest.mark.parametrize(
    ("response", "error", "endpoint"),
    [
        ({"status_code": 200, "request_id": "r", "body": {**BODY, "usage": None}}, None, CHAT),
        ({"status_code": 200, "request_id": "r", "body": {"id": "x"}}, None, CHAT),  # no usage
        ({"status_code": 200, "body": {**BODY, "usage": {"prompt_tokens": -1}}}, None, CHAT),
        ({"status_code": 200, "body": {**BODY, "usage": {**CHAT_USAGE, "prompt_tokens": 2.0}}},
         None, CHAT),
        ({"status_code": 200, "body": {**BODY, "usage": {**CHAT_USAGE, "prompt_tokens": 10**13}}},
         None, CHAT),
        ({"status_code": 200, "body": {**BODY, "usage": {**CHAT_USAGE, "prompt_tokens": 1}}},
         None, CHAT),  # cached above the input: flagged
        ({"status_code": 200, "body": {**BODY, "usage": {**CHAT_USAGE, "cache_read_input_tokens": 1}}},
         None, CHAT),  # the cache fields' shape
        ({"status_code": 200, "body": {"usage": {"prompt_tokens": 4, "total_tokens": 4}}},
         None, "/v1/embeddings"),
        ({"status_code": 200, "body": {"results": []}}, None, "/v1/moderations"),
        ({"status_code": 200, "request_id": 12, "body": BODY}, None, CHAT),  # a number as id
        ({"status_code": 201, "request_id": None, "body": BODY}, None, None),
        ({"status_code": True, "body": BODY}, None, CHAT),
        ({"status_code": "200", "body": BODY}, None, CHAT),
        ({"status_code": 200, "body": [BODY]}, None, CHAT),
        ({"status_code": 404, "request_id": "r",
          "body": {"error": {"code": "nope", "type": "invalid_request_error", "message": "m"}}},
         None, CHAT),
        ({"status_code": 500, "body": "Internal error"}, None, CHAT),
        ({"status_code": 429, "body": None}, None, CHAT),
        (None, {"code": "batch_expired", "message": "This request could not be executed"}, CHAT),
        (None, {"message": "no code"}, CHAT),
        ({"status_code": 200, "body": {"usage": {"input_tokens": 9, "output_tokens": 3,
          "input_tokens_details": {"cached_tokens": 1},
          "output_tokens_details": {"reasoning_tokens": 2}}}}, None, RESPONSES),
        ({"status_code": 200, "body": {"usage": {"input_tokens": 9, "output_tokens": 3}}},
         None, CHAT),  # a Responses usage from a chat batch
        ({"status_code": 200, "body": {"usage": {"input_tokens": 9, "output_tokens": 3,
          "input_tokens_details": []}}}, None, RESPONSES),
    ],
)  # fmt: skip
def test_odd_lines_are_read_as_the_careful_path_reads_them(
    response: object, error: object, endpoint: str | None
) -> None:
    both(line_of(response, error), endpoint)


@pytest.mark.parametrize(
    "line",
    [
        b"not json",
        b"[1, 2]",
        line_of(None, None),  # neither a response nor an error
        line_of({"status_code": 200, "body": BODY}, custom_id="t-7"),  # another store's
        line_of({"status_code": 200, "body": BODY}, custom_id=7),
        line_of({"status_code": 200, "body": BODY}, custom_id="s-007"),  # the hint is not it
        orjson.dumps({"custom_id": "s-7", "x": {"custom_id": "s-8"}, "response": None}),
    ],
)
def test_lines_not_ours_and_odd_ids_read_alike_on_both_paths(line: bytes) -> None:
    both(line, CHAT)


def test_a_subclass_that_reads_lines_its_own_way_has_no_fast_path() -> None:
    from llmbatch.providers.openai_format import OpenAIFormat

    class Mine(OpenAIFormat):
        name = "mine"

        def usage(self, usage: Any, endpoint: str | None) -> Any:
            return UsageRecord(1, 1)

    obj = orjson.loads(line_of({"status_code": 200, "body": BODY}))
    assert Mine().success(7, obj, CHAT) is None
    assert Mine().result(7, obj, CHAT).success()[4:6] == (1, 1)


_count = st.one_of(
    st.none(), st.integers(-2, 70), st.booleans(), st.just(3.0), st.just("5"), st.just(10**13)
)
_maybe = st.one_of(st.just("absent"), _count)


def _dict(**fields: Any) -> Any:
    return st.fixed_dictionaries(fields).map(
        lambda d: {k: v for k, v in d.items() if v != "absent" or type(v) is not str}
    )


_details: st.SearchStrategy[Any] = st.one_of(
    st.just("absent"), st.none(), st.just([]), _dict(cached_tokens=_maybe, reasoning_tokens=_maybe)
)


@settings(max_examples=200)
@given(
    usage=st.one_of(
        st.none(),
        _dict(prompt_tokens=_maybe, completion_tokens=_maybe, prompt_tokens_details=_details,
              completion_tokens_details=_details, cache_read_input_tokens=st.just("absent")),
        _dict(input_tokens=_maybe, output_tokens=_maybe, input_tokens_details=_details,
              output_tokens_details=_details, cache_creation_input_tokens=st.sampled_from(
                  ["absent", 0])),
    ),
    status=st.sampled_from([200, 204, 299, 300, 404, 500, True]),
    endpoint=st.sampled_from(ENDPOINTS),
)  # fmt: skip
def test_any_usage_is_read_as_the_careful_path_reads_it(
    usage: Any, status: object, endpoint: str | None
) -> None:
    both(line_of({"status_code": status, "request_id": "r", "body": {**BODY, "usage": usage}}),
         endpoint)  # fmt: skip


@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_formats_without_a_fast_path_give_their_results_as_before(provider: str) -> None:
    """They share the generic path: `result`, then a success as its tuple."""
    if provider == "anthropic":
        ok = {
            "custom_id": "s-7",
            "result": {
                "type": "succeeded",
                "message": {
                    "id": "msg_1",
                    "model": "claude-haiku-4-5",
                    "content": [],
                    "usage": {"input_tokens": 5, "output_tokens": 2, "cache_read_input_tokens": 3},
                },
            },
        }
        bad = {
            "custom_id": "s-7",
            "result": {
                "type": "errored",
                "error": {
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": "m"},
                },
            },
        }
    else:
        ok = {
            "key": "s-7",
            "response": {
                "candidates": [],
                "modelVersion": "gemini-2.5-flash",
                "usageMetadata": {"promptTokenCount": 5, "candidatesTokenCount": 2},
            },
        }
        bad = {"key": "s-7", "error": {"code": 400, "message": "m", "status": "INVALID"}}
    got = both(orjson.dumps(ok), None, provider)
    assert isinstance(got, tuple) and got[0] == 7 and got[4] is not None
    assert not isinstance(both(orjson.dumps(bad), None, provider), tuple)


# -- the tally, a chunk at a time ---------------------------------------------------------


def _tally_by_line(provider: str, model: str | None, now: float, found: list[Finding]) -> Any:
    """The sums ingest kept before, a line at a time (ledger.Tally.add as it was)."""
    from llmbatch.pricing import model_prices

    t = Tally(provider, model, now)
    sums: dict[tuple[str, int], list[int]] = {}
    for f in found:
        m = model or f.model or ""
        u = f.usage
        if u is None or u.flag is not None or u.input is None or u.output is None:
            sums.setdefault((m, 0), [0] * 8)[1] += 1
            continue
        thresholds = model_prices(provider, m, t.day).thresholds
        tier = sum(1 for x in thresholds if u.input > x)
        row = sums.setdefault((m, tier), [0] * 8)
        for i, v in enumerate((1, 0, u.input, u.cached, u.write_5m, u.write_1h, u.output,
                               u.reasoning)):  # fmt: skip
            row[i] += v
    return sorted((m, tier, *v) for (m, tier), v in sums.items())


@pytest.mark.parametrize(
    ("provider", "model", "models"),
    [
        ("openai", "gpt-4o-mini", [None]),
        ("gemini", None, ["gemini-2.5-pro", "gemini-2.5-flash", None]),  # tiers above 200k
        ("anthropic", "claude-sonnet-4-5", [None]),
    ],
)
def test_the_tally_of_a_chunk_is_the_sum_of_its_lines(
    provider: str, model: str | None, models: list[str | None]
) -> None:
    rng = random.Random(5)
    found = []
    for a in range(400):
        usage = rng.choice([
            UsageRecord(rng.randint(0, 400_000), rng.randint(0, 900), cached=rng.randint(0, 9),
                        write_5m=rng.randint(0, 5), write_1h=rng.randint(0, 5),
                        reasoning=rng.randint(0, 9)),
            UsageRecord(None, None, flag="missing: usage"),
            None,
        ])  # fmt: skip
        f = Finding(a, True, 200, None, b"{}", None, None, None,
                    usage.input if usage else None, usage.output if usage else None,
                    usage=usage, model=rng.choice(models))  # fmt: skip
        found.append(f)
    now = 86400.0 * 20500
    t = Tally(provider, model, now)
    t.add_successes([f.success() for f in found[:150]])
    t.add_successes([f.success() for f in found[150:]])
    got = sorted((r.model, r.tier, *[getattr(r, k) for k in _TALLY_FIELDS]) for r in t.rows())
    assert got == _tally_by_line(provider, model, now, found)
    assert any(tier for _m, tier, *_r in got) == (provider != "openai")


_TALLY_FIELDS = ("results", "flagged", "input", "cached", "write_5m", "write_1h", "output",
                 "reasoning")  # fmt: skip


# -- the ordering pass's index, a block at a time ------------------------------------------


def _by_spans(files: Sequence[ResultFile], cap: int, prefix: str) -> Iterator[tuple[int, Any]]:
    """in_attempt_order as it was: each line read by `_spans`, then by seek and read."""
    pattern = re.compile(rb'"custom_id"\s*:\s*"' + re.escape(prefix.encode()) + rb'-(\d{1,18})"')
    keys, file_of, offsets, sizes = array("q"), array("q"), array("q"), array("q")
    handles = []
    try:
        for n, f in enumerate(files):
            fh = open(f.path, "rb")  # noqa: SIM115
            handles.append(fh)
            for start, raw in results._spans(fh, cap):
                if isinstance(raw, int):
                    keys.append(-1)
                    sizes.append(-raw)
                else:
                    m = pattern.search(raw)
                    keys.append(int(m.group(1)) if m else -1)
                    sizes.append(len(raw))
                file_of.append(n)
                offsets.append(start)
        for i in sorted(range(len(keys)), key=keys.__getitem__):
            if sizes[i] < 0:
                yield -1, -sizes[i]
                continue
            fh = handles[file_of[i]]
            fh.seek(offsets[i])
            line = fh.read(sizes[i]).rstrip(b"\r\n")
            if line.strip():
                yield keys[i], line
    finally:
        for fh in handles:
            fh.close()


def test_the_index_reads_the_lines_spans_reads(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setattr(results, "CHUNK", 64)  # lines across every block boundary
    rng = random.Random(23)
    pieces = [
        lambda: b'{"custom_id": "p-x-%d", "a": "%s"}' % (rng.randint(0, 30), b"z" * rng.randint(0, 150)),
        lambda: b"",
        lambda: b"  \r",
        lambda: b"x" * rng.randint(0, 300),
        lambda: b'{"custom_id":"p-x-%d"}\r' % rng.randint(0, 9),
        lambda: b'{"k": {"custom_id": "p-x-5"}, "custom_id": "p-x-%d"}' % rng.randint(0, 9),
        lambda: b'{"custom_id": "p-y-%d"}' % rng.randint(0, 9),
    ]  # fmt: skip
    for trial in range(300):
        files = []
        for k in range(rng.randint(1, 3)):
            data = b"\n".join(rng.choice(pieces)() for _ in range(rng.randint(0, 12)))
            path = tmp_path / f"{trial}-{k}.jsonl"
            path.write_bytes(data + (b"\n" if rng.random() < 0.5 else b""))
            files.append(ResultFile("output", path, len(data)))
        cap = rng.choice([1, 20, 63, 64, 65, 128, 200, 1000])
        got = list(results.in_attempt_order(files, cap, "custom_id", "p-x"))
        assert got == list(_by_spans(files, cap, "p-x")), (trial, cap)
