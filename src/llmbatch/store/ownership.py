"""Store verbs for proof of ownership and the store's home (see docs/reliability.md).

Each intent gets a random nonce when it is committed; the provider keeps it with the batch,
and only a batch that shows it is ours. Provider batches read and found foreign are
remembered (`judged_batches`), so none is read twice. The store also records where it lives
(`meta.home`: a SQLite file's device, inode and path; a PostgreSQL cluster's
`system_identifier` and the database name): opened elsewhere with work in flight, it is a
copy or a move, and everything created before is frozen (`meta.identity_pending`) until the
user says which (`llmbatch store new-identity` or `keep-identity`).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any, Literal

import orjson

from llmbatch.store.rows import column, scalar
from llmbatch.store.types import (
    Moved as Moved,
)
from llmbatch.store.types import (
    ProofWait as ProofWait,
)
from llmbatch.store.types import (
    describe_where as describe_where,
)

NONCE_BYTES = 4  # 8 hex digits: two intents of one store never share one by chance (2^-32)


def new_nonce() -> str:
    return secrets.token_hex(NONCE_BYTES)


class OwnershipOps:
    """Mixed into SqlStore; relies on its `_write`, `_read`, `q`, `_event`, `_get_meta`,
    `_set_meta`, and the backend's `_where()`."""

    _write: Any
    _read: Any
    q: Any
    _event: Any
    _get_meta: Any
    _set_meta: Any

    def _where(self) -> dict[str, Any] | None:
        """Where this store lives now (None: cannot tell)."""
        return None

    # -- nonces and judged batches -----------------------------------------------------------
    def nonce_of(self, batch_id: int) -> str | Literal[False] | None:
        """The nonce an intent's batches carry (None: an intent from before 0005; False: no
        such batch row)."""
        with self._read() as cur:
            cur.execute(self.q("nonce_of"), {"id": batch_id})
            found = column(cur)
        if not found:
            return False
        return None if found[0] is None else str(found[0])

    def judged_ids(self, provider: str) -> set[str]:
        """Provider batches already read and found not ours."""
        with self._read() as cur:
            cur.execute(self.q("judged_ids"), {"provider": provider})
            return {str(v) for v in column(cur)}

    def first_intent_at(self, provider: str) -> float | None:
        with self._read() as cur:
            cur.execute(self.q("first_intent_at"), {"provider": provider})
            first = scalar(cur)
        return None if first is None else float(first)

    def judge_foreign(self, provider: str, batch_ids: Iterable[str], now: float) -> None:
        """Remember provider batches found not ours (no fence: a fact, whoever writes it)."""
        rows = [{"provider": provider, "provider_batch_id": b, "now": now} for b in batch_ids]
        if not rows:
            return
        with self._write() as cur:
            cur.executemany(self.q("judge_batch"), rows)

    def forget_judged(self, before: float) -> None:
        """Forget judgments older than any batch a sweep still looks at."""
        with self._write() as cur:
            cur.execute(self.q("forget_judged"), {"before": before})

    def residual_double_create(self, batch_id: int, detail: str) -> None:
        """An intent gave up waiting for proof and creates again: said, and counted."""
        with self._write() as cur:
            cur.execute(self.q("set_proof_wait"), {"id": batch_id, "until": None})
            count = int(self._get_meta(cur, "residual_double_creates") or 0) + 1
            self._set_meta(cur, "residual_double_creates", str(count))
            self._event(cur, "residual_double_create", batch_id=batch_id, detail=detail)

    def residual_double_creates(self) -> int:
        with self._read() as cur:
            return int(self._get_meta(cur, "residual_double_creates") or 0)

    def set_proof_wait(self, batch_id: int, until: float | None) -> None:
        with self._write() as cur:
            cur.execute(self.q("set_proof_wait"), {"id": batch_id, "until": until})

    def proof_waits(self) -> list[ProofWait]:
        with self._read() as cur:
            cur.execute(self.q("proof_waits"))
            return [ProofWait(int(i), str(p), int(n), float(u)) for i, p, n, u in cur.fetchall()]

    # -- the store's home ----------------------------------------------------------------------
    def _check_home(self, cur: Any, now: float) -> None:
        """Record where the store lives, or notice it is somewhere else (inside the opening
        transaction). Found elsewhere with nothing open, it simply lives there now."""
        here = self._where()
        if here is None:
            return
        raw = self._get_meta(cur, "home")
        if raw is None:
            self._set_meta(cur, "home", orjson.dumps(here).decode())
            return
        home = orjson.loads(raw)
        if home == here or self._get_meta(cur, "identity_pending") is not None:
            return
        cur.execute(self.q("open_batch_count"))
        if int(scalar(cur)) == 0:
            self._set_meta(cur, "home", orjson.dumps(here).decode())
            return
        cur.execute(self.q("max_batch_id"))
        moved = {"before": int(scalar(cur)), "home": home, "found": here, "since": now}
        self._set_meta(cur, "identity_pending", orjson.dumps(moved).decode())
        self._event(
            cur,
            "store_moved",
            detail=f"{describe_where(home)} -> {describe_where(here)}: batches up to "
            f"{moved['before']} frozen until `llmbatch store new-identity` or `keep-identity`",
        )

    def moved(self) -> Moved | None:
        """The pending move, if the store was found away from its home with work in flight."""
        with self._read() as cur:
            raw = self._get_meta(cur, "identity_pending")
        if raw is None:
            return None
        m = orjson.loads(raw)
        return Moved(int(m["before"]), m["home"], m["found"], float(m["since"]))

    def resolve_move(self, kind: str, now: float) -> None:
        """Close a pending move: this is home now. `kind` is "new" (a copy: the caller has
        given the frozen work up) or "keep" (a move or a restore: it carries on)."""
        here = self._where()
        with self._write(durable=True) as cur:
            raw = self._get_meta(cur, "identity_pending")
            if kind == "new" and raw is not None:
                # The original keeps the nonces of everything made before the copy: here they
                # are drawn again, so no batch of the original's ever proves ours.
                cur.execute(self.q("batch_ids_upto"), {"before": orjson.loads(raw)["before"]})
                ids = [int(i) for i in column(cur)]
                cur.executemany(self.q("set_nonce"), [{"id": i, "nonce": new_nonce()} for i in ids])
            if here is not None:
                self._set_meta(cur, "home", orjson.dumps(here).decode())
            cur.execute(self.q("delete_meta"), {"key": "identity_pending"})
            if raw is not None:
                self._event(cur, f"identity_{kind}", detail=raw)

    def open_before(self, before: int) -> list[tuple[int, int | None]]:
        """(batch row, intent it belongs to) of open batches up to row `before`."""
        with self._read() as cur:
            cur.execute(self.q("open_before"), {"before": before})
            return [(int(i), None if n is None else int(n)) for i, n in cur.fetchall()]
