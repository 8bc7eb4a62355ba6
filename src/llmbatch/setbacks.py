"""How the engine takes failures: per batch, per packing group, per request, and the disk.

- A batch's step that fails (a 5xx, a 404, a refusal, a bug) backs that batch off —
  doubling from `backoff_seconds`, at most `max_poll_interval`, never sooner than a
  retry-after — and the tick goes on with the others. The count and the time are the
  batch's row in the store, so a cron `run` (a new process each time) keeps them.
- A batch refused as a whole (a create the provider rejects, a file that fails validation
  with no line named) teaches its group: the next batch is half the size, a lower quota
  where the provider said its queue is full, a pause doubling with each strike; a batch
  of the group that completes clears it. What was learned is in the store too.
- Each request of such a batch has the rejection counted; refused `max_batch_rejections`
  times it fails with the reason (a full queue at the provider is not counted).
- A full disk under the work directory is said once; downloads and new batch files wait
  (doubling), polling and what needs no disk go on. That state is this host's, so it
  lives in this process.

`Learned` holds what groups were taught; `Setbacks` is the engine's part that backs batches
off, each taking its collaborators in `__init__`.
"""

from __future__ import annotations

import dataclasses
import errno
from collections.abc import Callable
from pathlib import Path

from llmbatch.closing import Closer
from llmbatch.errors import AuthError, ConfigError, RejectedError, StoreError, TransientError
from llmbatch.lease import Lease, batch_claim
from llmbatch.store.base import Store
from llmbatch.store.batching import LeaseLost, OpenBatch, Outcome
from llmbatch.store.setbacks import GroupBackoff
from llmbatch.tick import EngineSettings, Tick, TickReport

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
Step = Callable[[OpenBatch, Tick], None]


class Learned:
    """What batch-level failures taught, per packing group: read from the store once a tick
    (another worker, or the last `run`, may have learned it), written through to it."""

    def __init__(self, store: Store, settings: EngineSettings) -> None:
        self.store, self.settings = store, settings
        self.backoffs: dict[tuple[str, str, str], GroupBackoff] = {}

    def refresh(self) -> None:
        self.backoffs = {g.group: g for g in self.store.group_backoffs()}

    def get(self, group: tuple[str, str, str]) -> GroupBackoff | None:
        return self.backoffs.get(group)

    def quota(self, provider: str, model: str) -> int | None:
        """The enqueued-token quota in force: configured, or lower if a failure taught us."""
        known = [
            g.quota
            for g in self.backoffs.values()
            if g.quota and g.group[0] == provider and g.group[2] == model
        ]
        configured = self.settings.quotas.get((provider, model))
        known += [configured] if configured else []
        return min(known) if known else None

    def failed(self, group: tuple[str, str, str], b: OpenBatch, t: Tick, codes: str) -> None:
        """A batch failed as a whole: halve the next one, learn a lower quota, back off."""
        old = self.backoffs.get(group)
        strikes = (old.strikes if old else 0) + 1
        quota = old.quota if old else None
        if "token_limit_exceeded" in codes and b.model:
            quota = max(1, b.est_tokens // 2)
        delay = min(self.settings.backoff_seconds * 2 ** (strikes - 1), 3600.0)
        learned = GroupBackoff(group, strikes, max(1, b.request_count // 2), quota, t.now + delay)
        self.store.set_group_backoff(learned, t.token)
        self.backoffs[group] = learned
        self.store.note(
            "backoff",
            b.id,
            f"{b.model}: batch-level failure ({codes}); next batch at most "
            f"{learned.cap:,} requests, in {delay:.0f} s",
        )

    def healthy(self, group: tuple[str, str, str], token: int) -> None:
        """A batch of the group completed: full-size batches again (a learned quota stays)."""
        learned = self.backoffs.pop(group, None)
        if learned is not None:
            self.store.clear_group_backoff(group, token)
            if learned.quota:  # what the provider's queue holds does not change with health
                kept = GroupBackoff(group, 0, None, learned.quota, 0.0)
                self.store.set_group_backoff(kept, token)
                self.backoffs[group] = kept


class Setbacks:
    """How the engine takes failures of one batch, of a whole batch, and of the disk."""

    def __init__(
        self,
        store: Store,
        settings: EngineSettings,
        workdir: Path,
        lease: Lease,
        learned: Learned,
        group_of: Callable[[OpenBatch], tuple[str, ...]],
        closer: Closer,
    ) -> None:
        self.store, self.settings, self.workdir, self.lease = store, settings, workdir, lease
        self.learned, self.group_of, self.closer = learned, group_of, closer
        self.disk_full_since: float | None = None  # the work directory's disk is full
        self.disk_until = self.disk_wait = 0.0
        self.disk_blocked: dict[int, float] = {}  # batch -> when its files may try again

    def guarded(self, b: OpenBatch, t: Tick, step: Step) -> None:
        """One batch's step; whatever it raises backs that batch off, not the tick. What
        concerns the whole store (the key, the database, the lease, a setting) propagates."""
        self.lease.renew()
        try:
            step(b, t)
        except LeaseLost as exc:  # its claim passed to another worker: that one carries on
            if t.mine is None:
                raise
            t.mine.discard(b.id)
            self.lease.held.discard(batch_claim(b.id))
            t.report.notes.append(f"batch {b.id}: {exc}")
        except (AuthError, StoreError, ConfigError):
            raise
        except TransientError as exc:  # an outage, 429, 5xx: `run` says it could not reach
            t.report.unreachable += 1
            self.later(b, t, str(exc), exc.retry_after)
        except RejectedError as exc:
            self.later(b, t, str(exc))
        except OSError as exc:
            if exc.errno not in DISK_FULL:
                self.later(b, t, f"{type(exc).__name__}: {exc}")
            else:
                self.disk_full(exc, t, b)
        except Exception as exc:  # a bug or a provider answer nobody foresaw: one batch waits
            self.later(b, t, f"unexpected {type(exc).__name__}: {exc}")

    def later(self, b: OpenBatch, t: Tick, why: str, retry_after: float | None = None) -> None:
        """Back a batch off after a failure: doubling from backoff_seconds, at most
        max_poll_interval, never sooner than the provider's retry-after."""
        base = self.settings.backoff_seconds
        delay = min(base * 2**b.setbacks, max(base, self.settings.max_poll_interval))
        delay = max(retry_after or 0.0, delay)
        t.report.notes.append(f"{why}; trying again in {delay:.0f} s")
        self.store.count_setback(b.id, "setbacks", t.now + delay, t.now, t.token, "transient", why)

    def disk_full(self, exc: OSError, t: Tick, b: OpenBatch) -> None:
        """The work directory's disk is full: say so once, and leave this batch's files and
        new batches alone for a while (doubling, at most max_poll_interval); polling goes on,
        and so do other batches' downloads: a big result file that does not fit gives back
        what it wrote, and must not keep a small one that fits from its turn."""
        base = self.settings.backoff_seconds
        self.disk_wait = min(
            max(2 * self.disk_wait, base), max(base, self.settings.max_poll_interval)
        )
        self.disk_until = t.now + self.disk_wait
        self.disk_blocked[b.id] = self.disk_until
        if self.disk_full_since is None:
            self.disk_full_since = t.now
            why = (
                f"the disk of the work directory {self.workdir} is full ({exc.strerror}); "
                "downloads and new batches wait, polling goes on"
            )
            t.report.notes.append(why)
            self.store.note("disk_full", None, why)

    def disk_ok(self, b: OpenBatch | None, now: float) -> bool:
        """Whether a step that writes to the work directory may run now: packing (`b` None)
        waits while the disk is full; a batch waits only if its own files did not fit (an
        intent already uploaded needs no file)."""
        if b is None:
            return self.disk_full_since is None or now >= self.disk_until
        if b.state == "submitting" and b.input_file_id is not None:
            return True
        return now >= self.disk_blocked.get(b.id, 0.0)

    def disk_back(self, report: TickReport, b: OpenBatch) -> None:
        """`b`'s files fitted. Room again once no open batch is waiting for room."""
        if self.disk_full_since is None:
            return
        self.disk_blocked.pop(b.id, None)
        if self.disk_blocked:
            still_open = {o.id for o in self.store.open_batches()}
            self.disk_blocked = {k: t for k, t in self.disk_blocked.items() if k in still_open}
        if not self.disk_blocked:
            self.disk_full_since, self.disk_until, self.disk_wait = None, 0.0, 0.0
            report.notes.append(f"the disk of the work directory {self.workdir} has room again")
            self.store.note("disk_ok", None, "the work directory's disk has room again")

    def batch_level_failure(self, b: OpenBatch, t: Tick, codes: str) -> None:
        """A batch failed as a whole: its group learns (a smaller batch, a pause)."""
        self.learned.failed(group_row(self.group_of(b)), b, t, codes)

    def healthy(self, b: OpenBatch, token: int) -> None:
        """A batch of the group completed: full-size batches again."""
        self.learned.healthy(group_row(self.group_of(b)), token)

    def abandon(self, b: OpenBatch, t: Tick, why: str) -> None:
        """The provider refused an intent outright: its requests go back to the queue, each
        rejection counted; a request refused `max_batch_rejections` times fails."""
        waiting = [a for a, _r, _l in self.store.unfinished_attempts(b.id)]
        outs = self.rejected(b, waiting, "rejected", why)
        if b.cancel_requested_at is not None:
            outs = [
                o if o.kind == "failed" else dataclasses.replace(o, kind="cancelled") for o in outs
            ]
        self.store.apply_outcomes(b.id, outs, t.now, t.token)
        self.closer.close(b, t, f"abandoned: {why}")
        self.batch_level_failure(b, t, why)
        failed = sum(1 for o in outs if o.kind == "failed")
        t.report.notes.append(
            f"batch {b.id} refused: {why}; {len(outs) - failed:,} requests queued again"
            + (
                f", {failed:,} failed (refused {self.settings.max_batch_rejections} times)"
                if failed
                else ""
            )
        )

    def rejected(self, b: OpenBatch, attempt_ids: list[int], code: str, why: str) -> list[Outcome]:
        """Requests whose whole batch the provider refused go back to the queue with the
        rejection counted, and fail once refused `max_batch_rejections` times. A full queue at
        the provider (`token_limit_exceeded`) is no fault of theirs: it is not counted (the
        group backs off and learns a lower quota instead)."""
        counted = "token_limit_exceeded" not in why
        info = self.store.attempt_info(b.attempts_of, attempt_ids) if counted else {}
        limit = self.settings.max_batch_rejections
        outs = []
        for a in attempt_ids:
            n = info[a].rejections + 1 if a in info else 1
            if counted and n >= limit:
                message = f"{why} (its batch was refused {n} times)"
                outs.append(
                    Outcome(a, "failed", error_code=code, error_message=message, charge_rejection=1)
                )
                continue
            also = (
                f" (refused {n} of {limit} times; queued again)" if counted else " (queued again)"
            )
            outs.append(
                Outcome(
                    a,
                    "requeue",
                    error_code=code,
                    error_message=why + also,
                    charge_rejection=int(counted),
                )
            )
        return outs


def group_row(group: tuple[str, ...]) -> tuple[str, str, str]:
    """A packing group as the store keys it: provider, endpoint, and the rest ('' if none)."""
    return (group[0], group[1] if len(group) > 1 else "", "\x1f".join(group[2:]))
