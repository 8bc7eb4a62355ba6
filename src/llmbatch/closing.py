"""Closing a batch: settle its reservation to what its results cost, ask for its archive
and its webhook events, then mark it ingested, in that order (a crash between them must
lose neither the archive nor the events). Every part that ends a batch ends it here."""

from __future__ import annotations

from llmbatch import ledger, webhooks
from llmbatch.archive import Archiver, batch_folder
from llmbatch.in_force import InForce
from llmbatch.store.base import Store
from llmbatch.store.batching import OpenBatch
from llmbatch.tick import EngineSettings, Tick


class Closer:
    """Ends batches and records what their lines said they used."""

    def __init__(
        self, store: Store, settings: EngineSettings, budgets: InForce, archiver: Archiver | None
    ) -> None:
        self.store, self.settings, self.budgets, self.archiver = store, settings, budgets, archiver

    def close(self, b: OpenBatch, t: Tick, detail: str) -> None:
        """Settle, archive, tell, then close the batch (durably: the provider's files may be
        deleted right after)."""
        ledger.settle(self.store, b, self.budgets.settings, t.now, t.token)
        if self.archiver is not None:
            self.store.archive_add(b.id, t.now)
        if self.settings.webhooks is not None:
            where = None
            if self.archiver is not None:
                folder = batch_folder(self.store.store_id, b.id)
                where = f"{self.archiver.target.location.rstrip('/')}/{folder}"
            webhooks.add_events(self.store, b, t.now, where)
        self.store.mark_ingested(b.id, t.now, t.token, detail)

    def count(self, b: OpenBatch, tally: ledger.Tally, t: Tick) -> None:
        """Record what a batch's result lines said it used; say it if the provider's own
        total differs (an anomaly status and report show)."""
        note = ledger.record(self.store, b, tally, t.now, t.token)
        if note is not None:
            t.report.notes.append(note)
