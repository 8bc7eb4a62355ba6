"""Progress a person can trust: fed by the provider's own counts, with one ETA estimator.

A request is *done* once the provider has run it (its batch's `completed + failed`, as the
last poll saw them), before its result is read back here; it is *read back* once its outcome
is recorded. A progress bar that counted only what is read back would show 0/900 for hours
while the provider reports 347/900.

`estimate` is the one estimator: a pure function over observed (time, done) counts, reused by
`wait`, `status`, the batch list and anything that watches a queue. Anthropic counts every
request as processing until its whole batch ends, so its batches show no rate (and no ETA)
until then — said as such, not guessed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from llmbatch.store.base import Store
from llmbatch.store.manage import BatchProgress
from llmbatch.store.types import Count

WINDOW_S = 1800.0  # the rate is taken over the last half hour of observations


@dataclass(frozen=True, slots=True)
class Observation:
    """What was counted done at one time."""

    at: float
    done: int


@dataclass(frozen=True, slots=True)
class Eta:
    """A rate and what it implies: `seconds` from the last observation until `total`."""

    rate: float  # requests per second
    seconds: float
    at: float  # when it is expected to be done (Unix seconds)


def estimate(
    observations: Sequence[Observation], total: int, *, window: float = WINDOW_S
) -> Eta | None:
    """The ETA at the rate seen over the last `window` seconds of `observations` (in time
    order); None until something moved in that window, or once `total` is reached."""
    if not observations:
        return None
    last = observations[-1]
    if last.done >= total:
        return None
    first = next(o for o in observations if o.at >= last.at - window)
    span, moved = last.at - first.at, last.done - first.done
    if span <= 0 or moved <= 0:
        return None
    rate = moved / span
    seconds = (total - last.done) / rate
    return Eta(rate, seconds, last.at + seconds)


def batch_eta(b: BatchProgress) -> Eta | None:
    """One batch's ETA from the poll that saw its counts: nothing done at submission, the
    counts then (a status read has no history of its own)."""
    if b.submitted_at is None:
        return None
    seen = [Observation(b.submitted_at, 0), Observation(b.seen_at, b.done_at_provider)]
    return estimate(seen, b.requests, window=float("inf"))


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A queue's (or every queue's) progress now."""

    total: int  # requests
    read_back: int  # succeeded, failed or cancelled here
    at_provider: int  # run by the provider, result not read back yet
    batches: tuple[BatchProgress, ...]

    @property
    def done(self) -> int:
        return min(self.total, self.read_back + self.at_provider)


FINISHED = ("succeeded", "failed", "cancelled")


def snapshot(
    store: Store, queue: str | None = None, counts: Sequence[Count] | None = None
) -> Snapshot:
    """What is done now: read back here, plus what the provider has run and we have not read.

    A batch may mix queues; the provider counts the whole batch, so a queue gets its share.
    `counts` (the store's, of `queue`) saves reading them again (the dashboard has them)."""
    total = read_back = 0
    for c in store.counts(queue) if counts is None else counts:
        total += c.n
        if c.state in FINISHED:
            read_back += c.n
    batches = tuple(store.batch_progress(queue))
    ahead = 0.0
    for b in batches:
        extra = max(0, b.done_at_provider - b.read_back)
        ahead += extra * (b.in_scope / b.requests if b.requests else 1.0)
    return Snapshot(total, read_back, min(int(ahead), total - read_back), batches)


@dataclass
class Tracker:
    """Observations of one queue's progress over a run (`wait`), and its ETA."""

    window: float = WINDOW_S
    seen: deque[Observation] = field(default_factory=deque)
    last: Snapshot | None = None

    def observe(self, snap: Snapshot, now: float) -> Eta | None:
        """Record a snapshot taken at `now`; the ETA for the whole queue."""
        self.last = snap
        self.seen.append(Observation(now, snap.done))
        while len(self.seen) > 2 and self.seen[1].at < now - self.window:
            self.seen.popleft()
        return estimate(list(self.seen), snap.total, window=self.window)
