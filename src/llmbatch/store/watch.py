"""Store verbs for callers waiting on their requests (the Python clients, `Queue.estimate`).

`watch` is the one statement a client runs per interval for all its waiting calls, however
many: what finished in the queue since a cursor, and what a budget holds. `lookup` finds
requests by custom_id (a call attaching to a request enqueued earlier, `client.result()`).
Queries live in `sql/watch.sql`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from llmbatch.store.sqlfiles import as_list
from llmbatch.store.types import (
    Found as Found,
)
from llmbatch.store.types import ResultRow
from llmbatch.store.types import (
    Watched as Watched,
)

_RESULT_FIELDS = (
    "cursor",
    "custom_id",
    "state",
    "provider",
    "status_code",
    "provider_request_id",
    "body",
    "error_code",
    "error_message",
    "input_tokens",
    "output_tokens",
    "attempt_id",
    "request_id",
    "model",
    "endpoint",
    "cached_tokens",
    "cache_write_5m_tokens",
    "cache_write_1h_tokens",
    "recorded_at",
)


class WatchOps:
    """Mixed into SqlStore; relies on its `_read` and `q`."""

    _read: Any
    q: Any

    def watch(self, queue: str, after: int, held_after: float, limit: int = 5000) -> Watched:
        """One statement: among the next `limit` results after the result id `after`, the
        newest result of each finished request of `queue` (in recorded order), and the
        requests held by a budget since `held_after` (the time of the hold, as the store
        wrote it). A full scan (`scanned == limit`) says more may follow `high`."""
        params = {"queue": queue, "after": after, "held_after": held_after, "n": limit}
        with self._read() as cur:
            cur.execute(self.q("watch"), params)
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        results: list[ResultRow] = []
        held: list[ResultRow] = []
        high, scanned = after, 0
        for r in rows:
            kind = r.pop("kind")
            if kind == "scanned":
                high, scanned = int(r["cursor"]), int(r["request_id"])
                continue
            if r["body"] is not None:
                r["body"] = bytes(r["body"])
            (results if kind == "result" else held).append(ResultRow(**r))
        results.sort(key=lambda row: row.cursor)
        return Watched(results, held, high, scanned)

    def lookup(self, queue: str, custom_ids: Sequence[str]) -> dict[str, Found]:
        """Requests of `queue` with these custom_ids (committed ones), by custom_id."""
        out: dict[str, Found] = {}
        ids = as_list(dict.fromkeys(custom_ids))
        with self._read() as cur:
            cur.execute(self.q("lookup"), {"queue": queue, "ids": ids})
            names = [d[0] for d in cur.description]
            rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        for r in rows:
            result = None
            if r["cursor"] is not None and r["state"] in ("succeeded", "failed", "cancelled"):
                values = {k: r[k] for k in _RESULT_FIELDS}
                if values["body"] is not None:
                    values["body"] = bytes(values["body"])
                result = ResultRow(**values)
            out[r["custom_id"]] = Found(
                r["custom_id"],
                r["state"],
                r["reason"],
                bytes(r["body_hash"]),
                r["provider"],
                r["endpoint"],
                r["model"],
                result,
            )
        return out

    def queue_requests(
        self, queue: str, states: Sequence[str], page: int = 2000
    ) -> Iterator[tuple[str, str, str, str, bytes]]:
        """(custom_id, provider, endpoint, model, body) of a queue's requests in `states`, in
        enqueue order, streamed."""
        sql, wanted = self.q("queue_requests"), as_list(states)
        after = 0
        while True:
            with self._read() as cur:
                cur.execute(sql, {"queue": queue, "after": after, "states": wanted, "n": page})
                rows = cur.fetchall()
            for rid, cid, provider, endpoint, model, body in rows:
                yield cid, provider, endpoint, model, bytes(body)
                after = int(rid)
            if len(rows) < page:
                return
