"""UTC calendar periods as day numbers (days since 1970-01-01): what a budget's day or month
is. Pure arithmetic, shared by the budget rules and the store that sums spend by day."""

from __future__ import annotations

from datetime import UTC, date, datetime

PERIODS = ("day", "month")


def epoch_day(now: float) -> int:
    return int(now // 86400)


def period_days(now: float, period: str) -> tuple[int, int]:
    """[first, end) UTC day numbers (days since 1970) of the period holding `now`."""
    day = epoch_day(now)
    if period == "day":
        return day, day + 1
    d = datetime.fromtimestamp(now, UTC).date()
    first = date(d.year, d.month, 1)
    nxt = date(d.year + d.month // 12, d.month % 12 + 1, 1)
    base = date(1970, 1, 1)
    return (first - base).days, (nxt - base).days
