"""`llmbatch analyze`: usage pages and per-call records, what is batched, what could move."""

from __future__ import annotations

import json
from datetime import date
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from helpers import cli
from llmbatch.analyze import analyze_file, analyze_text
from llmbatch.errors import InputError
from llmbatch.pricing import Tokens, model_prices

DATA = Path(__file__).resolve().parents[1] / "data" / "usage"
TODAY = date(2026, 11, 26)


def independent_cost(model: str, inp: int, cached: int, out: int, *, batch: bool) -> Decimal:
    mp = model_prices("openai", model, TODAY)
    v = mp.cost(Tokens(input=inp, cached=cached, output=out), 0, batch=batch)
    assert v is not None
    return v


def test_usage_pages_one_a_line_and_concatenated_agree() -> None:
    a = analyze_file(DATA / "pages.jsonl", today=TODAY)
    b = analyze_file(DATA / "pages_concatenated.json", today=TODAY)
    assert a.record() | {"source": ""} == b.record() | {"source": ""}
    assert a.kind == "usage pages" and a.days == 14


def test_usage_pages_split_batched_from_movable_and_price_each_group() -> None:
    a = analyze_file(DATA / "pages.jsonl", today=TODAY)
    by = {ln.model: ln for ln in a.lines}
    mini = by["gpt-4o-mini"]
    # 13 days with usage (one bucket is empty), per day 4,000 real-time + 12,000 batched calls
    assert mini.requests == 13 * 16000 and mini.batched_requests == 13 * 12000
    assert mini.batched_usd == 13 * independent_cost(
        "gpt-4o-mini", 6_000_000, 0, 900_000, batch=True
    )
    real = independent_cost("gpt-4o-mini", 2_000_000, 400_000, 300_000, batch=False)
    as_batch = independent_cost("gpt-4o-mini", 2_000_000, 400_000, 300_000, batch=True)
    assert mini.movable_realtime_usd == 13 * real
    assert mini.savings_usd == 13 * (real - as_batch) > 0
    gpt4o = by["gpt-4o"]
    assert gpt4o.batched_requests == 0 and gpt4o.tag == "proj_chat"
    total = sum((ln.savings_usd for ln in a.lines), Decimal(0))
    assert a.monthly(total) == (total * 30 / 14).quantize(Decimal("0.000001"))


def test_exclude_tag_takes_a_group_out_of_what_could_move() -> None:
    a = analyze_file(DATA / "pages.jsonl", today=TODAY)
    b = analyze_file(DATA / "pages.jsonl", exclude_tags=["proj_chat"], today=TODAY)
    chat = next(ln for ln in b.lines if ln.tag == "proj_chat")
    assert not chat.movable and chat.savings_usd == 0
    assert b.total("savings_usd") == a.total("savings_usd") - next(
        ln.savings_usd for ln in a.lines if ln.tag == "proj_chat"
    )


def test_the_spec_example_is_read_and_asks_for_group_by() -> None:
    # the spec's own example was fetched without group_by: model and batch are null
    with pytest.raises(InputError, match=r"spec_example.json:1: .*group_by=model,batch"):
        analyze_file(DATA / "spec_example.json")


def test_per_call_records_by_model_and_tag_with_an_unknown_model_unpriced() -> None:
    a = analyze_file(DATA / "calls.jsonl", exclude_tags=["support-bot"], today=TODAY)
    assert a.kind == "per-call records"
    assert sum(ln.requests for ln in a.lines) == 2000
    assert {ln.tag for ln in a.lines} == {"support-bot", "nightly-tagging", "evals"}
    unknown = [ln for ln in a.lines if ln.model.startswith("ft:")]
    assert unknown and all(ln.unpriced for ln in unknown)
    assert all(ln.savings_usd == 0 for ln in unknown)
    assert all(not ln.movable for ln in a.lines if ln.tag == "support-bot")
    assert a.total("savings_usd") > 0


def test_records_are_priced_per_call_tier() -> None:
    big = {"timestamp": 0, "model": "gpt-5.4", "input_tokens": 300_000, "output_tokens": 10}
    small = {**big, "input_tokens": 1000}
    a = analyze_text("\n".join(json.dumps(r) for r in (big, small)), today=TODAY)
    mp = model_prices("openai", "gpt-5.4", TODAY)
    want = sum(
        (mp.cost(Tokens(input=n, output=10), mp.tier(n), batch=False) or Decimal(0))
        for n in (300_000, 1000)
    )
    assert mp.tier(300_000) != mp.tier(1000)
    assert a.lines[0].movable_realtime_usd == want


def test_an_unknown_shape_names_the_first_line_and_what_was_expected(tmp_path: Path) -> None:
    f = tmp_path / "export.jsonl"
    f.write_text('\n{"date": "2026-11-01", "cost": 12.5}\n')
    with pytest.raises(InputError) as exc:
        analyze_file(f)
    msg = str(exc.value)
    assert f"{f}:2: unknown usage shape" in msg
    assert '"object": "page"' in msg and '"timestamp", "model"' in msg


def test_not_json_names_the_line(tmp_path: Path) -> None:
    f = tmp_path / "u.jsonl"
    f.write_text(
        '{"timestamp": 1, "model": "gpt-4o", "input_tokens": 1, "output_tokens": 1}\nnope\n'
    )
    with pytest.raises(InputError, match=r"u\.jsonl:2: not JSON"):
        analyze_file(f)


def test_negative_tokens_are_refused_not_summed(tmp_path: Path) -> None:
    f = tmp_path / "u.jsonl"
    f.write_text('{"timestamp": 1, "model": "gpt-4o", "input_tokens": -5, "output_tokens": 1}\n')
    with pytest.raises(InputError, match=r"u.jsonl:1: input_tokens must be a whole number >= 0"):
        analyze_file(f)


@pytest.mark.parametrize(
    "text",
    ["", "\n\n", json.dumps({"object": "page", "data": [], "has_more": False, "next_page": None})],
)
def test_a_period_with_no_usage_is_an_empty_report(tmp_path: Path, text: str) -> None:
    f = tmp_path / "usage.json"
    f.write_text(text)
    a = analyze_file(f)
    assert a.lines == [] and a.total("savings_usd") == 0
    r = cli("analyze", str(f))
    assert r.exit_code == 0 and "no usage in this period" in r.output


def test_cli_analyze_table_and_json() -> None:
    r = cli("analyze", str(DATA / "pages.jsonl"), "--exclude-tag", "proj_chat")
    assert r.exit_code == 0, r.output
    assert "upper bound" in r.output and "proj_chat (excluded)" in r.output
    assert "a month" in r.output
    j = cli("analyze", str(DATA / "calls.jsonl"), "--format", "json")
    data = orjson.loads(j.output)
    assert data["total"]["upper_bound"] is True and data["kind"] == "per-call records"
    assert Decimal(data["total"]["monthly_savings_usd"]) > 0
    bad = cli("analyze", str(DATA / "spec_example.json"))
    assert bad.exit_code == 1 and "group_by=model,batch" in bad.output


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('{"oops"\n', 1),
        ('\n\n{"a": 1,\n "b": \n', 4),
        ('{"object": "page", "data": []}\n{"object": "page",\n "data": [}\n', 3),
    ],
)
def test_a_value_cut_short_names_its_own_line(tmp_path: Path, text: str, line: int) -> None:
    f = tmp_path / "u.json"
    f.write_text(text)
    with pytest.raises(InputError, match=rf"u\.json:{line}: not JSON"):
        analyze_file(f)


def test_pretty_printed_and_concatenated_pages_stream_like_one_a_line(tmp_path: Path) -> None:
    pages = [json.loads(x) for x in (DATA / "pages.jsonl").read_text().splitlines()]
    pretty = tmp_path / "pretty.json"
    pretty.write_text("\n".join(json.dumps(p, indent=2) for p in pages) + "\n")
    glued = tmp_path / "glued.json"
    glued.write_text("".join(json.dumps(p) for p in pages))
    want = analyze_file(DATA / "pages.jsonl", today=TODAY).record() | {"source": ""}
    for f in (pretty, glued):
        assert analyze_file(f, today=TODAY).record() | {"source": ""} == want


def test_the_table_fits_100_columns_and_csv_has_every_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    r = cli("analyze", str(DATA / "calls.jsonl"), "--exclude-tag", "support-bot")
    table = [ln for ln in r.output.splitlines() if "  " in ln]
    assert table and max(len(ln) for ln in table) <= 100
    rows = cli("analyze", str(DATA / "calls.jsonl"), "--format", "csv").output.splitlines()
    assert rows[0].startswith("model,tag,requests") and len(rows) > 2
