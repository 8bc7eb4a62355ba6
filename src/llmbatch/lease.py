"""The engine lease as the engine's parts hold it: taken once a tick, renewed before a call
that spends money and during long work, and checked before a call is sent.

Its token fences every write of a tick (the store refuses a stale one), so a worker that
lost the lease to another stops acting at its next write; `covers_a_call` stops it before a
call it could no longer own the answer of.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from llmbatch.store.base import Store
from llmbatch.store.batching import LeaseLost
from llmbatch.store.sqlstore import owner_alive
from llmbatch.tick import EngineSettings

NAME = "engine"


class Lease:
    """This worker's hold on the engine lease."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        holder: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store, self.settings, self.holder, self.clock = store, settings, holder, clock
        self.token = 0
        self.taken_at = 0.0  # the tick's time
        self.renewed_at = 0.0

    def take(self, now: float) -> int | None:
        """Take or renew the lease; take it over at once from a dead worker on this host."""
        ttl = self.settings.lease_ttl
        token = self.store.acquire_lease(NAME, self.holder, ttl, now)
        if token is None:
            holder = self.store.lease_holder(NAME, now)
            # A live lease's expiry stands in for a heartbeat here: only the pid check decides.
            if holder and not owner_alive(holder.split("/")[0], now, now):
                self.store.break_lease(NAME, holder)
                self.store.note("lease_taken_over", None, f"engine lease of dead worker {holder}")
                token = self.store.acquire_lease(NAME, self.holder, ttl, now)
        self.taken_at, self.renewed_at = now, now
        self.token = token or 0
        return token

    def renew(self, force: bool = False) -> None:
        """Renew before a call that spends money (`force`), and during long work once a third
        of the lease has gone; LeaseLost if it is no longer ours."""
        at = max(self.taken_at, self.clock())  # never shorter than the tick's own lease
        if not force and at - self.renewed_at < self.settings.lease_ttl / 3:
            return
        if self.store.acquire_lease(NAME, self.holder, self.settings.lease_ttl, at) != self.token:
            raise LeaseLost(
                "the engine lease was taken over by another worker; this one stops acting"
            )
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

    def release(self) -> None:
        self.store.release_lease(NAME, self.holder)
