"""What `status` says about the workers sharing a store's work (issue 27): which worker holds
what and since when, and what each one has done since it started (docs/deploy.md)."""

from __future__ import annotations

from typing import Any

from llmbatch import defaults
from llmbatch.store.base import Store
from llmbatch.store.claims import Claim, WorkerRow


def _live(store: Store, now: float) -> tuple[list[WorkerRow], dict[str, list[Claim]]]:
    """Workers seen within a lease's lifetime, and the live claims of each holder."""
    workers = store.workers(now - defaults.LEASE_TTL_S)
    held: dict[str, list[Claim]] = {}
    for c in store.claims():
        if c.expires_at >= now:
            held.setdefault(c.holder, []).append(c)
    return workers, held


def status_record(store: Store, now: float) -> list[dict[str, Any]]:
    """Each live worker: its queues, since when it runs, what it holds and since when, and
    what it has done."""
    workers, held = _live(store, now)
    return [
        {
            "worker": w.holder,
            "queues": None if w.queues is None else list(w.queues),
            "started_at": w.started_at,
            "seen_at": w.seen_at,
            "engine_lease": any(c.name == "engine" for c in held.get(w.holder, [])),
            "claims": [
                {"name": c.name, "since": c.since, "expires_at": c.expires_at}
                for c in held.get(w.holder, [])
            ],
            "done": {
                "packed": w.packed,
                "submitted": w.submitted,
                "polled": w.polled,
                "ingested_batches": w.ingested,
                "results": w.outcomes,
            },
        }
        for w in workers
    ]


def status_lines(store: Store, now: float) -> list[str]:
    """One line per live worker (none when no worker has run lately)."""
    from llmbatch.render import duration

    workers, held = _live(store, now)
    out = []
    for w in workers:
        claims = held.get(w.holder, [])
        parts = []
        if any(c.name == "engine" for c in claims):
            since = next(c.since for c in claims if c.name == "engine")
            parts.append(f"the engine lease for {duration(None if since is None else now - since)}")
        batches = sorted(
            (int(c.name.split(":", 1)[1]), c.since) for c in claims if c.name.startswith("batch:")
        )
        if batches:
            oldest = min((s for _b, s in batches if s is not None), default=None)
            ids = ", ".join(str(b) for b, _s in batches[:8]) + (", ..." if len(batches) > 8 else "")
            parts.append(
                f"{len(batches)} {'batch' if len(batches) == 1 else 'batches'} ({ids}), the oldest for "
                f"{duration(None if oldest is None else now - oldest)}"
            )
        parts += [
            f"packing {c.name[len('group:') :]}" for c in claims if c.name.startswith("group:")
        ]
        queues = "every queue" if w.queues is None else "queues " + ", ".join(w.queues)
        out.append(
            f"worker {w.holder} ({queues}, up {duration(now - w.started_at)}): holds "
            f"{'; '.join(parts) or 'nothing'}; did {w.packed:,} packed, {w.submitted:,} "
            f"batches submitted, {w.ingested:,} ingested ({w.outcomes:,} results)"
        )
    return out
