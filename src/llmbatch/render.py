"""How every listing is printed: one money format, durations, and tables that fit the terminal,
with the same rows as JSON or CSV.

A listing is its columns and its records (plain values). As a table it fits the terminal:
columns marked optional (`drop` > 0) are left out, highest first, until the table fits
(`--wide` keeps them all); a terminal gets a rich table, a pipe plain aligned text, never
wrapped mid-cell. JSON and CSV always carry every column, raw: exact amounts as strings,
numbers as numbers, nothing rounded.
"""

from __future__ import annotations

import csv
import io
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import orjson

FORMATS = ("table", "json", "csv")
DEFAULT_WIDTH = 100  # a pipe has no width: lay out for a common terminal


def money(v: Decimal | int | float | None) -> str:
    """USD for people, one format everywhere: 2 decimals with thousands separators, and amounts
    under a cent to the 1e-6 USD they are kept in (0.000726), never shown as 0.00."""
    if v is None:
        return "-"
    d = v if isinstance(v, Decimal) else Decimal(str(v))
    if d == 0:
        return "0.00"
    if abs(d) >= Decimal("0.01"):
        return f"{d:,.2f}"
    text = f"{d:.6f}".rstrip("0")
    return text if len(text.split(".")[1]) >= 2 else f"{d:.2f}"


def duration(seconds: float | None) -> str:
    """A span for people: 45s, 12m05s, 3h05m, 2d04h ("-" when unknown)."""
    if seconds is None:
        return "-"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def count(n: int | None) -> str:
    return "-" if n is None else f"{n:,}"


def _text(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else ""
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, Decimal):
        return money(v)
    return str(v)


@dataclass(frozen=True, slots=True)
class Column:
    """One column: its field in JSON and CSV, its table header, how a value reads in a table,
    and whether it may be left out of a narrow table (0: never; higher goes first)."""

    key: str
    head: str
    right: bool = False
    drop: int = 0
    show: Callable[[Any], str] = _text


def width() -> int:
    """Columns of the terminal (COLUMNS wins, as for every other tool); 100 for a pipe."""
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


def _plain_width(widths: Sequence[int]) -> int:
    return sum(widths) + 2 * (len(widths) - 1)


def _boxed_width(widths: Sequence[int]) -> int:
    return sum(widths) + 3 * (len(widths) - 1)  # a rule under the header, no side borders


def fit(
    columns: Sequence[Column], cells: Sequence[Sequence[str]], limit: int, *, boxed: bool
) -> list[int]:
    """Indexes of the columns to show so the table is at most `limit` wide (optional columns
    left out, highest `drop` first, then the rightmost of equals)."""
    keep = list(range(len(columns)))
    widths = [
        max(len(c.head), *(len(row[i]) for row in cells)) if cells else len(c.head)
        for i, c in enumerate(columns)
    ]
    measure = _boxed_width if boxed else _plain_width
    while measure([widths[i] for i in keep]) > limit:
        optional = [i for i in keep if columns[i].drop > 0]
        if not optional:
            break
        keep.remove(max(optional, key=lambda i: (columns[i].drop, i)))
    return keep


def table(
    columns: Sequence[Column],
    records: Sequence[dict[str, Any]],
    *,
    title: str | None = None,
    wide: bool = False,
    tty: bool | None = None,
    bold_last: bool = False,
) -> str:
    """The records as a table that fits the terminal (every column with `wide`)."""
    cells = [[c.show(r.get(c.key)) for c in columns] for r in records]
    tty = sys.stdout.isatty() if tty is None else tty
    limit = width()
    keep = list(range(len(columns))) if wide else fit(columns, cells, limit, boxed=tty)
    if tty:
        return _rich(columns, cells, keep, title, limit if not wide else None, bold_last)
    shown = [columns[i] for i in keep]
    rows = [[row[i] for i in keep] for row in cells]
    widths = [max(len(c.head), *(len(r[j]) for r in rows)) for j, c in enumerate(shown)]
    lines = [title] if title else []
    for row in [[c.head for c in shown], *rows]:
        lines.append(
            "  ".join(
                cell.rjust(w) if c.right else cell.ljust(w)
                for cell, w, c in zip(row, widths, shown, strict=True)
            ).rstrip()
        )
    return "\n".join(lines) + "\n"


def _rich(
    columns: Sequence[Column],
    cells: Sequence[Sequence[str]],
    keep: Sequence[int],
    title: str | None,
    limit: int | None,
    bold_last: bool,
) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i in keep:
        t.add_column(columns[i].head, justify="right" if columns[i].right else "left")
    for n, row in enumerate(cells):
        style = "bold" if bold_last and n == len(cells) - 1 else None
        t.add_row(*(row[i] for i in keep), style=style)
    console = Console(width=limit or 10_000, highlight=False, force_terminal=True)
    with console.capture() as cap:
        console.print(t)
    return "\n".join(line.rstrip() for line in cap.get().splitlines()) + "\n"


def as_json(value: Any) -> str:
    """Indented JSON; Decimal amounts as exact strings."""
    return orjson.dumps(value, default=_json_default, option=orjson.OPT_INDENT_2).decode() + "\n"


def _json_default(v: Any) -> Any:
    if isinstance(v, Decimal):
        return str(v)
    raise TypeError(f"not JSON: {type(v).__name__}")


def as_csv(columns: Sequence[Column], records: Sequence[dict[str, Any]]) -> str:
    """A header of every column's key, then one row per record (None as empty)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([c.key for c in columns])
    for r in records:
        w.writerow(["" if r.get(c.key) is None else _csv_value(r.get(c.key)) for c in columns])
    return buf.getvalue()


def _csv_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    return str(v)


def listing(
    fmt: str,
    columns: Sequence[Column],
    records: Sequence[dict[str, Any]],
    *,
    title: str | None = None,
    wide: bool = False,
    notes: Sequence[str] = (),
    empty: str = "",
    bold_last: bool = False,
) -> str:
    """A listing in `fmt` (table, json or csv); `notes` follow a table, `empty` replaces it."""
    if fmt == "json":
        return as_json([{c.key: r.get(c.key) for c in columns} for r in records])
    if fmt == "csv":
        return as_csv(columns, records)
    if not records:
        return empty + "\n" if empty else ""
    out = table(columns, records, title=title, wide=wide, bold_last=bold_last)
    return out + "".join(n + "\n" for n in notes)
