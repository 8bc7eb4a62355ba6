"""Reply lengths: drawn from a distribution that depends on the prompt and the cap, with
`finish_reason: "length"` rare by default and as frequent as `length_rate` says."""

from __future__ import annotations

import hashlib
import re
import statistics

import openai
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from emu_helpers import chat_line, read_jsonl, upload, wait
from llmbatch.emulator import RunningEmulator
from llmbatch.emulator.config import EmulatorConfig
from llmbatch.emulator.replies import cut, fit, text_length, text_tokens

HASHES = [hashlib.blake2b(str(i).encode(), digest_size=16).digest() for i in range(20_000)]


def test_length_is_rare_by_default_and_replies_fit_under_the_cap() -> None:
    rate = EmulatorConfig().length_rate
    assert 0 < rate <= 0.02
    for cap in (8, 64, 256):
        drawn = [text_length(h, 40, cap, rate) for h in HASHES]
        hit = sum(h for _, h in drawn) / len(drawn)
        assert abs(hit - rate) < 0.005, (cap, hit)
        assert all(n < cap for n, h in drawn if not h) and all(n == cap for n, h in drawn if h)
    # The case: max_tokens 64 used to end 77 % of replies with "length".


def test_the_setting_says_how_often() -> None:
    for rate in (0.0, 0.2, 1.0):
        hit = sum(text_length(h, 40, 64, rate)[1] for h in HASHES) / len(HASHES)
        assert abs(hit - rate) < 0.01


def test_length_grows_with_the_prompt_and_varies() -> None:
    short = [text_length(h, 10, None, 0.0)[0] for h in HASHES[:4000]]
    long = [text_length(h, 2000, None, 0.0)[0] for h in HASHES[:4000]]
    assert statistics.median(short) < 40 < 300 < statistics.median(long)
    assert min(short) >= 1 and len(set(short)) > 50
    assert statistics.quantiles(long, n=10)[-1] > 2 * statistics.median(long)
    # Uncapped replies stay under the model's largest output.
    assert max(text_length(h, 2000, None, 0.0, ceiling=900)[0] for h in HASHES) < 900


@pytest.mark.slow
@given(text=st.text(alphabet='ab {}":,[]', max_size=80), cap=st.integers(1, 30))
def test_cut_and_fit_count_exactly(text: str, cap: int) -> None:
    assert text_tokens(cut(text, cap)) == min(cap, text_tokens(text))
    h = hashlib.blake2b(text.encode(), digest_size=16).digest()
    fitted, n, _ = fit(text, h, cap, 1.0)
    assert text_tokens(fitted) == n <= cap


RULE = re.compile(r"\w+|[^\w\s]")  # the token rule as written in synth.py's docstring


def test_the_ascii_count_is_the_rule() -> None:
    """ASCII text is counted without the regex (replies.py): every pair of ASCII characters
    in every context, and mixed text, counts as the rule says."""
    chars = [chr(i) for i in range(128)]
    texts = [a + b + a for a in chars for b in chars] + ["", " ", "a", "é é", "x\u00a0y", "中文 ok"]
    assert [text_tokens(t) for t in texts] == [len(RULE.findall(t)) for t in texts]


@given(text=st.text(max_size=60) | st.text(alphabet="ab_9 .,!\t\x1c\x1f\x7f\né", max_size=60))
def test_the_count_matches_the_rule_on_any_text(text: str) -> None:
    assert text_tokens(text) == len(RULE.findall(text))


def test_json_rambles_into_the_cap_when_forced() -> None:
    h = HASHES[0]
    text, n, hit = fit('{"a":"b c","d":1}', h, 40, 1.0)
    assert hit and n == 40 == text_tokens(text) and text.startswith('{"a":"')
    assert fit('{"d":1}', h, 40, 1.0) == ('{"d":1}', 7, False)  # no string to ramble in


def test_batch_lengths_follow_max_tokens(emu: RunningEmulator, client: openai.OpenAI) -> None:
    f = upload(client, [chat_line(i, max_tokens=64) for i in range(400)])
    done = wait(
        client,
        client.batches.create(
            input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h"
        ).id,
    )
    bodies = [x["response"]["body"] for x in read_jsonl(client, done.output_file_id)]
    finishes = [b["choices"][0]["finish_reason"] for b in bodies]
    assert finishes.count("length") <= 12  # ~1 % by default; was ~77 %
    lengths = [b["usage"]["completion_tokens"] for b in bodies]
    assert max(lengths) <= 64 and len(set(lengths)) > 20
    for b in bodies:
        assert text_tokens(b["choices"][0]["message"]["content"]) == b["usage"]["completion_tokens"]


_MODELS = ["gpt-4o-mini", "o3-mini", "gpt-5-mini", "gpt-3.5-turbo-instruct", "gpt-4.1"]
_N = st.sampled_from([None, 0, 1, 2, False, True, 1.0])
_CAP = st.one_of(st.none(), st.integers(-1, 70_000), st.just(True))


@given(
    model=st.sampled_from(_MODELS),
    content=st.text(max_size=40),
    extra=st.fixed_dictionaries(
        {},
        optional={
            "n": _N,
            "max_tokens": _CAP,
            "max_completion_tokens": _CAP,
            "response_format": st.sampled_from([{"type": "text"}, {"type": "json_object"}]),
            "stream": st.booleans(),
        },
    ),
    length_rate=st.sampled_from([0.0, 0.5, 1.0]),
)
def test_the_batch_reply_bytes_are_the_reply_encoded(
    model: str, content: str, extra: dict[str, object], length_rate: float
) -> None:
    """The worker's `respond_json` (a template for plain chat replies) writes exactly what
    `respond` builds, encoded, and refuses what it refuses."""
    from llmbatch.emulator.config import EmulatorConfig
    from llmbatch.emulator.surfaces import OPENAI
    from llmbatch.emulator.synth import RequestError, respond, respond_json

    body = {"model": model, "messages": [{"role": "user", "content": content}], **extra}
    card = OPENAI.card(EmulatorConfig(), model)
    args = {"model": model, "created": 7, "salt": "batch_x", "length_rate": length_rate}
    try:
        expected: object = orjson.dumps(respond("chat", body, card=card, **args)[0])
    except RequestError as e:
        expected = (e.status, e.message, e.param)
    try:
        got: object = respond_json("chat", body, card=card, **args)[0]
    except RequestError as e:
        got = (e.status, e.message, e.param)
    assert got == expected
