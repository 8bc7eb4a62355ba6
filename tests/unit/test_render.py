"""One money format, durations, and tables that fit the terminal."""

from __future__ import annotations

import csv
import io
import re
from decimal import Decimal

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmbatch.render import Column, as_csv, duration, listing, money, table


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (Decimal("0"), "0.00"),
        (Decimal("1234.5"), "1,234.50"),
        (Decimal("0.01"), "0.01"),
        (Decimal("0.000726"), "0.000726"),
        (Decimal("0.00068"), "0.00068"),
        (Decimal("0.0123"), "0.01"),
        (Decimal("-3.456"), "-3.46"),
        (Decimal("0.000001"), "0.000001"),
        (None, "-"),
    ],
)
def test_one_money_format(value: Decimal | None, shown: str) -> None:
    assert money(value) == shown


@given(st.decimals(min_value=Decimal("-1e9"), max_value=Decimal("1e9"), places=6))
def test_money_never_hides_an_amount_as_zero(v: Decimal) -> None:
    text = money(v)
    assert (Decimal(text.replace(",", "")) == 0) == (v == 0)


def test_durations() -> None:
    assert [duration(s) for s in (None, 0, 59.6, 61, 3600 * 3 + 300, 86400 * 2 + 3600 * 4)] == [
        "-", "0s", "1m00s", "1m01s", "3h05m", "2d04h",
    ]  # fmt: skip


COLS = [
    Column("name", "name"),
    Column("a", "alpha", right=True),
    Column("b", "a rather long optional header", right=True, drop=1),
    Column("c", "another optional one", drop=2),
]
ROWS = [{"name": f"row-{i}", "a": i * 1000, "b": "x" * 10, "c": None} for i in range(3)]


@pytest.mark.parametrize("tty", [False, True])
@pytest.mark.parametrize("columns", [40, 60, 100, 200])
def test_a_table_fits_the_terminal_dropping_optional_columns_first(
    monkeypatch: pytest.MonkeyPatch, tty: bool, columns: int
) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    out = re.sub(r"\x1b\[[0-9;]*m", "", table(COLS, ROWS, title="t", tty=tty))
    assert max(len(line) for line in out.splitlines()) <= max(columns, 30)
    assert "row-2" in out and "2,000" in out  # key columns are never dropped
    if columns < 60:
        assert "a rather long optional header" not in out
    wide = table(COLS, ROWS, title="t", tty=tty, wide=True)
    assert "another optional one" in wide


def test_listing_as_json_and_csv_carries_every_column_raw() -> None:
    records = [{"name": "x", "a": Decimal("0.000726"), "b": True, "c": None}]
    assert orjson.loads(listing("json", COLS, records)) == [
        {"name": "x", "a": "0.000726", "b": True, "c": None}
    ]
    rows = list(csv.reader(io.StringIO(as_csv(COLS, records))))
    assert rows == [["name", "a", "b", "c"], ["x", "0.000726", "true", ""]]
    assert listing("table", COLS, [], empty="nothing here") == "nothing here\n"
