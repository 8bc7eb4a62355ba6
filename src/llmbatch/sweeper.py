"""The sweep: what the store does not know about, found at the providers (every
`sweep_interval`). Batches created since the oldest open intent (at least the last hour,
never before the store's first intent for that provider) that prove ours but that the store never recorded are adopted as batches of their intent and
ingested; uploads proven ours that no intent uses are deleted; batches read and found
foreign are remembered, never read again. submission.py says why such batches exist.

Every provider with an intent is swept, even while this engine sent everything the store
knows there itself with every call answered: a duplicate made by another process (a worker
whose record of its create was lost, a copy of the store) is in no memory of this engine, and
only the list finds it."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

from llmbatch import defaults, ownership
from llmbatch.errors import RejectedError, TransientError
from llmbatch.ownership import Proof
from llmbatch.providers.base import Provider
from llmbatch.store.base import Store
from llmbatch.tick import EngineSettings, Tick


class Sweeper:
    """The engine's sweep part: batches proven ours that the store never recorded are
    adopted, uploads proven ours that no intent uses are deleted, and batches found foreign
    are remembered so none is judged twice. It sweeps the providers in use (`providers`)."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        providers: Mapping[str, Provider],
    ) -> None:
        self.store, self.settings, self.providers = store, settings, providers
        self.next_sweep_at = 0.0  # the store's `sweep` schedule, as this worker last read it

    def due(self, now: float) -> bool:
        """Whether to sweep: the store says when (another worker, or the last `run`, may have
        swept since), read only when the time this worker knows of has come."""
        if now < self.next_sweep_at:
            return False
        self.next_sweep_at = self.store.next_run("sweep")
        return now >= self.next_sweep_at

    def _sweep_since(self, now: float, provider: str) -> float | None:
        """Back to the oldest open intent, and at least `SWEEP_RECENT_S` (a duplicate the
        list showed after its intent was done), but never before the store's first intent
        for the provider (None: it has none, so nothing there can be ours); less the
        providers' clock skew."""
        first = self.store.first_intent_at(provider)
        if first is None:
            return None
        oldest = min((b.created_at for b in self.store.open_batches()), default=now)
        return max(first, min(oldest, now - defaults.SWEEP_RECENT_S)) - CLOCK_SKEW_S

    def sweep(self, t: Tick) -> None:
        """Adopt batches proven ours that the store does not know (a re-create the residual
        risk allowed, a restored database); delete our uploads no intent uses."""
        now, token, report = t.now, t.token, t.report
        self.next_sweep_at = now + self.settings.sweep_interval
        self.store.set_next_run("sweep", self.next_sweep_at, token)
        proof = Proof(self.store.store_id, self.store.nonce_of, self.store.batch_of_attempt)
        frozen = t.moved.before if t.moved is not None else 0
        for name in sorted(self.providers):
            since = self._sweep_since(now, name)
            if since is None:
                continue  # no intent for it yet: no call it does not need
            provider = self.providers[name]
            known_batches, known_files = self.store.known_ids(name)
            skip = frozenset(known_batches) | self.store.judged_ids(name)
            file_owners = self.store.file_owners(name)
            try:
                judged = provider.list_tagged(self.store.store_id, since, skip)
                strays = provider.stray_uploads(self.store.store_id, since)
            except (TransientError, RejectedError) as exc:
                report.notes.append(f"sweep later: {exc}")
                continue
            open_intents = {
                b.id: b for b in self.store.open_batches() if b.provider_batch_id is None
            }
            foreign = []
            for status in judged:
                if status.provider_batch_id in skip:
                    continue
                intent_id = proof.owner(status.metadata)
                if intent_id is None and status.input_file_id in file_owners:
                    # made from an upload the store recorded (reconcile's first proof): a
                    # service that drops metadata keeps our tag only in that upload's name,
                    # gone once the intent's own batch was cleaned up
                    intent_id = file_owners[status.input_file_id or ""]
                if intent_id is None:
                    if not _names_frozen(status.metadata, proof, frozen):
                        foreign.append(status.provider_batch_id)
                    continue
                if intent_id <= frozen or intent_id in open_intents:
                    continue  # made before a copy or move; or still being sent: reconcile
                batch_id = self.store.adopt_batch(name, status, intent_id, now, token)
                if batch_id is not None:
                    report.notes.append(
                        f"adopted {status.provider_batch_id}: ours, but not recorded"
                    )
            self.store.judge_foreign(name, foreign, now)
            open_intents = {
                b.id: b for b in self.store.open_batches() if b.provider_batch_id is None
            }
            unused = []
            for file_id, intent_id, nonce in strays:
                pending = open_intents.get(intent_id)
                if (
                    file_id in known_files
                    or intent_id <= frozen
                    or self.store.nonce_of(intent_id) != nonce  # not proven ours
                    or (pending is not None and pending.input_file_id is None)
                ):
                    continue  # recorded, not ours, or possibly the upload of an intent being sent
                unused.append(file_id)
            if unused and self.settings.delete_files:
                with contextlib.suppress(TransientError, RejectedError):
                    provider.delete_files(unused)
                self.store.note(
                    "deleted_uploads",
                    None,
                    f"{len(unused)} uploads no intent uses: {', '.join(unused[:5])}",
                )


CLOCK_SKEW_S = 300.0  # how far a provider's clock may be behind ours


def _names_frozen(tag: dict[str, str] | None, proof: Proof, frozen: int) -> bool:
    """Whether a tag names an intent made before an unresolved copy or move: not judged
    foreign now, as it may be proven ours once the user says the store moved."""
    if not frozen or not tag or tag.get(ownership.STORE) != proof.store_id:
        return False
    intent = tag.get(ownership.INTENT, "")
    if intent.isdigit():
        return int(intent) <= frozen
    attempt = tag.get(ownership.ATTEMPT, "")
    owner = proof.intent_of_attempt(int(attempt)) if attempt.isdigit() else None
    return owner is not None and owner <= frozen
