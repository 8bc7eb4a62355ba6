"""The engine's packing part: ready requests cut into intents per packing group, under the
providers' limits, the hourly creation limit, the enqueued-token quotas and the budgets,
each intent sent at once.

Requests share a batch as their provider's `group_key` allows (one batch may mix models
where the provider takes that); where budgets (priced per model) or an enqueued-token quota
(per model) are in force for a provider and endpoint, its models are packed one by one.
`packing.cut` decides each cut; budget.py what of it may go.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from llmbatch import budget
from llmbatch.in_force import InForce
from llmbatch.lease import Lease, batch_claim
from llmbatch.packing import cut
from llmbatch.providers.base import Limits, Provider
from llmbatch.setbacks import Learned, Setbacks, group_row
from llmbatch.store.base import Store
from llmbatch.store.batching import OpenBatch, _Retry
from llmbatch.store.budgets import OverBudget, Reservation
from llmbatch.store.claims import group_claim
from llmbatch.store.setbacks import GroupBackoff
from llmbatch.submitter import Spool, Submitter
from llmbatch.tick import EngineSettings, Tick

Group = tuple[str, ...]


class Groups:
    """Which requests may share a batch: the packing group of a model or of a batch."""

    def __init__(
        self,
        settings: EngineSettings,
        provider: Callable[[str], Provider],
        budgets: InForce,
        learned: Learned,
    ) -> None:
        self.settings, self.provider, self.budgets, self.learned = (
            settings,
            provider,
            budgets,
            learned,
        )

    def alone(self, provider: str, model: str) -> bool:
        """Whether this model is packed by itself (budgets or a quota are per model)."""
        return bool(self.budgets.settings) or self.learned.quota(provider, model) is not None

    def key(self, provider: str, endpoint: str, model: str, alone: bool = False) -> Group:
        """What may share a batch with requests of this model (its packing group)."""
        if alone:
            return (provider, endpoint, model)
        return self.provider(provider).group_key(endpoint, model)

    def of_batch(self, b: OpenBatch) -> Group:
        """The packing group a batch was cut from (a batch of several models records none)."""
        if b.model is None:
            return self.key(b.provider, b.endpoint, "")
        return self.key(b.provider, b.endpoint, b.model, self.alone(b.provider, b.model))

    def ready(
        self, store: Store, queue: str | None = None
    ) -> list[tuple[Group, str, str, str | None]]:
        """(group key, provider, endpoint, model or None for several) of what is ready (of
        one queue, or of every one)."""
        ready = store.ready_groups(None if queue is None else [queue])
        alone = {(p, e) for p, e, m, _n in ready if self.alone(p, m)}
        out: dict[Group, tuple[str, str, list[str]]] = {}
        for provider_name, endpoint, model, _n in ready:
            key = self.key(provider_name, endpoint, model, (provider_name, endpoint) in alone)
            out.setdefault(key, (provider_name, endpoint, []))[2].append(model)
        return [(k, p, e, ms[0] if len(ms) == 1 else None) for k, (p, e, ms) in out.items()]


class Packer:
    """Cuts what is ready into intents and hands each to the submitter."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        provider: Callable[[str], Provider],
        groups: Groups,
        learned: Learned,
        setbacks: Setbacks,
        budgets: InForce,
        submitter: Submitter,
        lease: Lease,
        timings: dict[str, float],
    ) -> None:
        self.store, self.settings, self.provider = store, settings, provider
        self.groups, self.learned, self.setbacks, self.budgets = groups, learned, setbacks, budgets
        self.submitter, self.lease, self.timings = submitter, lease, timings
        self._budget_state: object = None  # what held requests were weighed against

    def release_held(self, t: Tick) -> None:
        """Held requests are weighed again when what held them changed."""
        current = budget.state(self.store, self.budgets.settings, t.now)
        if current != self._budget_state:
            self.store.release_held(t.now, t.token)
            self._budget_state = current

    def weighed(self, now: float) -> None:
        """What this tick's intents reserved is what held requests are weighed against next."""
        self._budget_state = budget.state(self.store, self.budgets.settings, now)

    def pack(self, t: Tick) -> None:
        """Pack every ready group this worker may claim: across queues, or each of the queues
        it serves alone (`llmbatch worker --queue`)."""
        for queue in self.lease.queues or (None,):
            self._pack(t, queue)

    def _pack(self, t: Tick, queue: str | None) -> None:
        now = t.now
        for group, provider_name, endpoint, model in self.groups.ready(self.store, queue):
            learned = self.learned.get(group_row(group))
            if learned is not None and learned.not_before > now:
                continue
            provider = self.provider(provider_name)
            provider.ready()  # no key: said now, before an intent is committed
            claim = group_claim((provider_name, endpoint, model), queue)
            if not self.lease.claim(claim, now):
                continue  # another worker packs this group now
            spool = self.submitter.spool(endpoint)  # the bodies each cut reads, for its file
            try:
                if not self._pack_group(
                    t, queue, claim, learned, provider_name, endpoint, model, spool
                ):
                    return
            finally:
                if spool is not None:
                    spool.close()
                self.lease.give_up(claim)

    def _pack_group(
        self,
        t: Tick,
        queue: str | None,
        claim: str,
        learned: GroupBackoff | None,
        provider_name: str,
        endpoint: str,
        model: str | None,
        spool: Spool | None,
    ) -> bool:
        """Cut one group's ready requests into intents and send each, each file written from
        the bodies its cut kept in `spool`; False: stop packing (the hourly creation limit)."""
        now, token, report = t.now, t.token, t.report
        provider = self.provider(provider_name)
        limits = provider.limits(endpoint, model)
        queues = None if queue is None else [queue]
        while True:
            self.lease.renew()
            if (
                self.store.batches_created_since(provider_name, now - 3600)
                >= self.settings.batches_per_hour
            ):
                report.notes.append(
                    f"{provider_name}: {self.settings.batches_per_hour} batches this hour; waiting"
                )
                return False
            cap = min(
                limits.max_requests,
                self.settings.max_batch_requests or limits.max_requests,
                (learned.cap if learned else None) or limits.max_requests,
            )
            room = None
            quota = None if model is None else self.learned.quota(provider_name, model)
            if quota is not None and model is not None:
                room = quota - self.store.tokens_in_flight(provider_name, model)
            ready = self.store.candidates(provider_name, endpoint, model, queues=queues)
            started = time.perf_counter()
            if spool is not None:
                spool.reset()
                sized = spool.feed(ready)
            else:
                sized = ((rid, n, inputs, text) for rid, n, inputs, text, _body in ready)
            c = cut(sized, limits, cap, room)
            self.timings["pack"] += time.perf_counter() - started
            if c.too_large is not None:
                self._refuse_too_large(c.too_large, provider_name, limits, t, claim)
                continue
            if 0 < c.count < limits.min_requests:  # the service refuses smaller batches
                report.notes.append(
                    f"{provider_name}: {c.count} requests of {model or endpoint} ready; a "
                    f"batch takes at least {limits.min_requests}: waiting for more"
                )
                break
            if c.count == 0:
                if c.why == "token quota":
                    report.notes.append(
                        f"{model}: held back by the enqueued-token quota ({quota:,})"
                    )
                break
            started = time.perf_counter()
            ids: Sequence[int] = c.ids
            size, tokens, reserve = c.input_bytes, c.tokens, None
            if self.budgets.settings and model is not None:  # budgets pack one model
                ids, size, tokens, reserve = self._budgeted(
                    (provider_name, endpoint, model), ids, t, claim
                )
                if not ids:
                    continue  # every one of them is held now: look at the next ones
            try:
                batch_id = self.store.create_intent(
                    (provider_name, endpoint, model),
                    ids,
                    size,
                    tokens,
                    now,
                    token,
                    reserve,
                    queue=queue,
                    holder=self.lease.holder,
                )
            except (_Retry, OverBudget):
                continue
            finally:
                self.timings["pack"] += time.perf_counter() - started
            report.intents += 1
            if batch_id is not None:
                self.lease.held.add(batch_claim(batch_id))  # held from its commit
                if t.mine is not None:
                    t.mine.add(batch_id)
            report.packed += len(ids)
            opened = next(b for b in self.store.open_batches() if b.id == batch_id)
            sent = report.submitted
            self.setbacks.guarded(opened, t, lambda b, t: self.submitter.submit(b, t, spool))
            self.lease.open_count += 1
            shared = t.mine is not None and self.lease.beyond_share(len(t.mine))
            if batch_id is not None and t.mine is not None and report.submitted > sent and shared:
                self.lease.give_up(batch_claim(batch_id))  # waiting at the provider: shared
                t.mine.discard(batch_id)
            if c.why == "all" or not self.setbacks.disk_ok(None, now):
                break
        return True

    def _refuse_too_large(
        self, request_id: int, provider: str, limits: Limits, t: Tick, claim: str
    ) -> None:
        """Fail a request no batch can hold, so the rest of its group still goes out."""
        why = (
            f"too large for one {provider} batch (limit {limits.max_bytes:,} bytes"
            + (f", {limits.max_inputs:,} inputs" if limits.max_inputs is not None else "")
            + ")"
        )
        if self.store.fail_unsendable(request_id, why, t.now, t.token, claim):
            t.report.notes.append(f"request {request_id} failed: {why}")

    def _budgeted(
        self, group: tuple[str, str, str], ids: Sequence[int], t: Tick, claim: str
    ) -> tuple[list[int], int, int, Reservation]:
        """The part of a cut the budgets let go, with its reservation; the rest is held."""
        p = budget.plan(self.store, group, ids, self.budgets.settings, t.now)
        for reason, held in p.fit.held.items():
            n = self.store.hold(held, reason, t.now, t.token, claim)
            if n:
                t.report.notes.append(f"{group[2]}: {n:,} requests held: {reason}")
                self.store.note("held", None, f"{group[2]}: {n:,} requests held: {reason}")
        return p.fit.ids, p.input_bytes, p.est_tokens, p.reservation
