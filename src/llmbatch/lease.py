"""The engine lease and the claims, as the engine's parts hold them (issue 27).

Several workers share one store's work. Each one has a token of its own (`workers.token`),
drawn once; every lease and claim it holds carries it, and every write of a tick is fenced
by the claim on what it changes (the store refuses a stale one):
- `batch:<id>`: polling, downloading, ingesting, cancelling and finishing the submission of
  one batch. A worker packing a batch holds its claim from the moment its intent commits;
  afterwards the workers share the open batches out (`Claims.share`), each keeping about its
  share, so every worker polls and ingests some;
- `group:<queue>|<key>`: packing and submitting one packing group (for one queue, or `*`),
  held while the worker packs it, then given up;
- `engine`: what concerns the whole store (retries coming due, held requests, the sweep,
  archives, webhooks), held by one worker at a time; it stands for a claim on whatever
  nobody claims (a tool such as `store new-identity` acts under it alone).

Every claim runs out `lease_ttl` after it was last renewed: a worker renews all of its own in
one statement once a tick, before a call that spends money and during long work, so a claim
held by a dead or paused worker runs out and another worker takes it over, as the engine
lease was taken over before; one held by a dead worker on this host is taken at once.
`covers_a_call` stops a worker frozen after its renewal before a call it could no longer own
the answer of.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

from llmbatch.store.base import Store
from llmbatch.store.batching import LeaseLost
from llmbatch.store.claims import Claim, WorkerRow
from llmbatch.store.sqlstore import owner_alive
from llmbatch.store.types import OpenBatch
from llmbatch.tick import EngineSettings

NAME = "engine"
# Rows of workers gone this long (holding nothing) are forgotten, looked for once an hour.
FORGET_AFTER_S, FORGET_EVERY_S = 86400.0, 3600.0
# Batches waiting at the provider: a worker gives these back first (nothing of theirs is
# under way here), never one it is submitting or ingesting.
WAITING = ("validating", "in_progress", "finalizing", "cancelling")


def batch_claim(batch_id: int) -> str:
    return f"batch:{batch_id}"


class Lease:
    """This worker's token, its hold on the engine lease, and the claims it holds."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        holder: str,
        clock: Callable[[], float] = time.time,
        queues: Sequence[str] | None = None,
    ) -> None:
        self.store, self.settings, self.holder, self.clock = store, settings, holder, clock
        self.queues = None if queues is None else tuple(sorted(set(queues)))
        self.token = 0
        self.engine = False  # whether this worker holds the store-wide engine lease
        self.engine_holder: str | None = None  # the worker that does, when another one does
        self.held: set[str] = set()  # the leases and claims it renewed last
        self.taken_at = 0.0  # the tick's time
        self.renewed_at = 0.0
        self.forgot_at = 0.0
        # how many workers share this one's batches, and the open batches they share (set by
        # `Claims.share` each tick; the packer counts the batches it adds)
        self.sharing, self.open_count = 1, 0

    def take(self, now: float) -> int:
        """This worker's token, drawn once; the engine lease taken or renewed if free (at
        once from a dead worker on this host), and every claim renewed."""
        if not self.token:
            self.token = self.store.register_worker(self.holder, self.queues, now)
        ttl = self.settings.lease_ttl
        token = self.store.acquire_lease(NAME, self.holder, ttl, now)
        holder = None
        if token is None:
            holder = self.store.lease_holder(NAME, now)
            # A live lease's expiry stands in for a heartbeat here: only the pid check decides.
            if holder and not owner_alive(holder.split("/")[0], now, now):
                self.store.break_lease(NAME, holder)
                self.store.note("lease_taken_over", None, f"engine lease of dead worker {holder}")
                token = self.store.acquire_lease(NAME, self.holder, ttl, now)
        self.engine = token is not None
        self.engine_holder = None if self.engine else holder
        if self.engine and now - self.forgot_at > FORGET_EVERY_S:  # `run` from cron: a row each
            self.store.forget_workers(now - FORGET_AFTER_S)
            self.forgot_at = now
        self.held = self.store.renew_claims(self.holder, self.token, ttl, now)
        self.taken_at, self.renewed_at = now, now
        return self.token

    def renew(self, force: bool = False, claim: str | None = None) -> None:
        """Renew every claim before a call that spends money (`force`), and during long work
        once a third of the lease has gone; LeaseLost if `claim` (or, without it, every
        claim) is no longer ours."""
        at = max(self.taken_at, self.clock())  # never shorter than the tick's own lease
        if not force and at - self.renewed_at < self.settings.lease_ttl / 3:
            return
        self.held = self.store.renew_claims(self.holder, self.token, self.settings.lease_ttl, at)
        if (claim is not None and claim not in self.held) or (claim is None and not self.held):
            raise LeaseLost(
                f"{claim or 'every claim of this worker'} was taken over by another worker; "
                "this one stops acting on it"
            )
        self.engine = NAME in self.held
        self.renewed_at = at

    def covers_a_call(self) -> None:
        """LeaseLost unless the lease as last renewed still outlasts a call's client timeout,
        by this worker's clock: a renewal is followed at once by the call, so only a worker
        frozen in between for longer than the renewal margin fails this."""
        left = self.renewed_at + self.settings.lease_ttl - self.clock()
        if left < self.settings.call_timeout:
            raise LeaseLost(
                f"this worker was frozen for {self.settings.lease_ttl - left:.1f} s after "
                "renewing its lease, which may have passed to another worker: it does not send"
            )

    def claim(self, name: str, now: float) -> bool:
        """Take a claim that is free or ran out (said when it was another worker's)."""
        got = self.store.acquire_lease(name, self.holder, self.settings.lease_ttl, now)
        if got is not None:
            self.held.add(name)
        return got is not None

    def beyond_share(self, holding: int) -> bool:
        """Whether holding this many batches is more than this worker's share, with other
        workers sharing them: a batch it just submitted is then given back at once, so one
        tick that packs a whole queue does not keep every batch of it to poll and ingest."""
        return self.sharing > 1 and holding > math.ceil(self.open_count / self.sharing)

    def give_up(self, name: str) -> None:
        self.store.release_lease(name, self.holder)
        self.held.discard(name)

    def release(self) -> None:
        """Give up the engine lease and every claim: the other workers take the work at once."""
        self.store.release_claims(self.holder)
        self.held.clear()
        self.engine = False


class Claims:
    """Shares the open batches out between the workers: each keeps about its share (the open
    batches it may work on over the live workers that may too), takes free ones and those
    whose claim ran out, and gives back what it holds beyond its share."""

    def __init__(self, store: Store, settings: EngineSettings, lease: Lease) -> None:
        self.store, self.settings, self.lease = store, settings, lease
        self.taken_over = 0  # claims this worker took from a dead or paused one

    def serves(self, queue: str | None) -> bool:
        """Whether this worker works on a batch of this queue (None: packed across queues)."""
        queues = self.lease.queues
        return queues is None or (queue is not None and queue in queues)

    def share(
        self, now: float, open_batches: Sequence[OpenBatch], notes: list[str], frozen: int = 0
    ) -> set[int]:
        """The open batches this worker works on this tick (none up to `frozen`: the batches
        made before the store was copied or moved wait)."""
        lease, ttl = self.lease, self.settings.lease_ttl
        queue_of = self.store.open_batch_queues()
        mine_ok = [b for b in open_batches if b.id > frozen and self.serves(queue_of.get(b.id))]
        claims = {c.name: c for c in self.store.claims()}
        workers = self.store.workers(now - ttl)
        gone = self._break_dead(claims, workers, now)
        workers = [w for w in workers if w.holder not in gone]
        alike = [
            w
            for w in workers
            if w.token == lease.token
            or w.queues is None
            or lease.queues is None
            or set(w.queues) & set(lease.queues)
        ]
        share = math.ceil(len(mine_ok) / max(1, len(alike)))
        lease.sharing, lease.open_count = max(1, len(alike)), len(mine_ok)
        mine = [b for b in mine_ok if batch_claim(b.id) in lease.held]
        if len(mine) > share:  # give back the ones furthest from needing work
            spare = [b for b in reversed(mine) if b.state in WAITING]
            for b in spare[: len(mine) - share]:
                lease.give_up(batch_claim(b.id))
                mine.remove(b)
        ids = {b.id for b in mine}
        for b in mine_ok:
            if len(ids) >= share:
                break
            name = batch_claim(b.id)
            c = claims.get(name)
            if b.id in ids or (c is not None and c.expires_at >= now and c.token != lease.token):
                continue
            if lease.claim(name, now):
                ids.add(b.id)
                if c is not None and c.token != lease.token and c.expires_at > 0:
                    self.taken_over += 1
                    why = f"claim {name} of {c.holder} ran out {now - c.expires_at:.0f} s ago"
                    self.store.note("claim_taken_over", b.id, why)
                    notes.append(f"took over batch {b.id}: {why}")
        return ids

    def _break_dead(
        self, claims: dict[str, Claim], workers: Sequence[WorkerRow], now: float
    ) -> set[str]:
        """End at once the claims of a worker on this host that is dead, and stop counting
        it among the workers sharing the work (one killed while it held nothing live, or
        whose engine lease alone `Lease.take` broke, would otherwise keep its share of the
        batches unclaimed for a lease's lifetime); the holders found dead."""
        mine = self.lease.token
        dead = {c.holder for c in claims.values() if c.expires_at >= now and c.token != mine} | {
            w.holder for w in workers if w.token != mine
        }
        dead = {h for h in dead if not owner_alive(h.split("/")[0], now, now)}
        for holder in sorted(dead):
            self.store.release_claims(holder)
            self.store.note("lease_taken_over", None, f"claims of dead worker {holder}")
            for name, c in list(claims.items()):
                if c.holder == holder:
                    claims[name] = Claim(c.name, c.holder, c.token, 0.0, c.since)
        return dead
