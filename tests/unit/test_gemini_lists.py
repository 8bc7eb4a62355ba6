"""Gemini's list paging (no HTTP): moved from the Gemini contract file when its cases folded
into the shared provider contract (tests/contract/test_providers.py); this one reads the
transport's own helper, so it stays beside the provider's unit tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from llmbatch.providers.gemini import _since


def test_lists_in_either_order_are_read_back_to_since() -> None:
    """Google does not document the lists' order: an oldest-first list is read to its end
    (newest first, paging stops at the first page that ends before `since`)."""

    def op(t: int) -> dict[str, Any]:
        return {"name": f"batches/b{t}", "metadata": {"createTime": f"2026-12-07T10:00:{t:02d}Z"}}

    def lister(pages: list[list[int]]) -> Any:
        def rest(method: str, path: str, **query: Any) -> dict[str, Any]:
            i = int(query.get("pageToken") or 0)
            page: dict[str, Any] = {"operations": [op(t) for t in pages[i]]}
            if i + 1 < len(pages):
                page["nextPageToken"] = str(i + 1)
            return page

        return rest

    since = datetime(2026, 12, 7, 10, 0, 30, tzinfo=UTC).timestamp()
    oldest_first = lister([[10, 20], [25, 29], [31, 40]])
    assert [o["name"] for o in _since(oldest_first, "batches", "operations", since)] == [
        "batches/b31", "batches/b40",
    ]  # fmt: skip
    calls = []
    newest_first = lister([[40, 31], [29, 25], [20, 10]])
    for o in _since(newest_first, "batches", "operations", since):
        calls.append(o["name"])
    assert calls == ["batches/b40", "batches/b31"]
