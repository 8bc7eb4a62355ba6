"""Where a strike landed: one window of the protocol per kill or pause.

From the store's journal events (each at its wall-clock instant, and only ever seen if
committed) and the emulator's call log (a call logged after the strike was under way when
it landed: the emulator finishes a handler whose client died, or, for a pause, answers a
client that is stopped), plus the queued requests read right after the strike.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from crash.crew import rows

#: Where a kill or a pause can land, in the order a request meets them.
WINDOWS = {
    "takeover": "lease taken from the dead worker, nothing sent or written yet (the first "
    "tick's reads, the SDK client's first use)",
    "idle": "no step under way: between ticks, the tick's bookkeeping, reading an answer",
    "packing": "requests queued, no step under way: picking them, committing the intent",
    "intent": "intent committed, nothing sent: writing the batch file",
    "upload": "upload started, its file id not recorded (the file may exist)",
    "uploaded": "file id recorded, create not started",
    "create": "create started, its batch id not recorded (the batch may exist)",
    "reconcile": "listing batches/files to find what an interrupted intent left",
    "poll": "listing or retrieving batches in flight",
    "sweep": "listing uploads for ones no intent uses",
    "download": "fetching a result file",
    "ingest": "a result file arrived; outcomes being recorded, batch not yet ingested",
}
PROTOCOL = {
    "openai": set(WINDOWS),
    "anthropic": set(WINDOWS) - {"upload", "uploaded", "sweep"},
    "gemini": set(WINDOWS),
}
OPEN_STEP = {
    "intent": "intent",
    "upload_started": "upload",
    "uploaded": "uploaded",
    "create_started": "create",
}
JOURNAL = (*OPEN_STEP, "submitted", "ingested")


@dataclass
class Strike:
    """One kill, pause or emulator restart."""

    kind: str  # "kill", "pause" or "restart"
    began: float  # the struck worker took the engine lease: its active time starts
    at: float  # the signal was sent
    queued: int  # queued requests right after it
    until: float  # the next worker was let go: calls logged before are the struck one's
    start_s: float  # how long the worker took to say it was serving (not counted)
    resumed: float = 0.0  # a pause: SIGCONT sent, once a standby held the lease
    awaiting: int = 0  # a restart: batches ended and waiting for their download


def call_kind(method: str, path: str) -> str:
    parts = path.strip("/").split("/")  # v1, files|batches|messages, ...
    if parts[1:2] == ["messages"]:
        parts = ["v1", "batches", *parts[3:]]  # /v1/messages/batches/... reads like /v1/batches
    # Gemini: /upload/v1beta/files (an upload's start and data), /v1beta/models/M:batch…
    # (a create), /v1beta/files/ID:download (a results file's content)
    if parts[:1] == ["upload"]:
        parts = parts[1:]
    if parts[1:2] == ["models"]:
        return "create" if method == "POST" and "batch" in parts[-1].lower() else "other"
    if parts[-1].endswith(":download"):
        return "content" if method == "GET" else "other"
    if method == "POST" and len(parts) == 2:
        return {"files": "upload", "batches": "create"}.get(parts[1], "other")
    if method == "GET" and parts[1] == "files":
        return {2: "list_files", 3: "file", 4: "content"}.get(len(parts), "other")
    if method == "GET" and parts[1] == "batches":
        if len(parts) == 4:
            return "content" if parts[-1] == "results" else "other"
        return {2: "list", 3: "retrieve"}.get(len(parts), "other")
    return "other"


class Timeline:
    """The store's journal events and the emulator's calls, in time order."""

    def __init__(self, events: list[tuple[float, str, int]], calls: list[dict[str, Any]]) -> None:
        self.events = sorted(events)
        self.event_at = [e[0] for e in self.events]
        self.calls = sorted((float(c["at"]), call_kind(c["method"], c["path"])) for c in calls)
        self.call_at = [c[0] for c in self.calls]
        self.by_batch: dict[int, list[tuple[float, str]]] = defaultdict(list)
        for at, kind, batch in self.events:
            self.by_batch[batch].append((at, kind))

    def interrupted(self, at: float) -> list[int]:
        """Intents whose upload or create had started, not finished, at `at`."""
        out = []
        for batch, evs in self.by_batch.items():
            kinds = {k for t, k in evs if t <= at}
            if kinds & {"upload_started", "create_started"} and not kinds & {
                "submitted",
                "ingested",
            }:
                out.append(batch)
        return out

    def classify(self, k: Strike) -> str:
        # an intent left half-sent by an earlier strike, that this worker has not moved yet
        reconciling = any(
            not any(k.began < t <= k.at for t, _ in self.by_batch[b])
            for b in self.interrupted(k.began)
        )
        i = bisect.bisect_right(self.call_at, k.at)
        if i < len(self.calls) and self.calls[i][0] <= k.until:
            kind = self.calls[i][1]  # under way when the strike landed
            if kind in ("upload", "create"):
                return kind
            if kind in ("file", "content"):
                return "download"
            if kind in ("list", "retrieve", "list_files"):
                return "reconcile" if reconciling else "sweep" if kind == "list_files" else "poll"
            return "idle"
        j = bisect.bisect_right(self.event_at, k.at) - 1
        event = self.events[j] if j >= 0 and self.events[j][0] > k.began else None
        if event is not None and event[1] in OPEN_STEP:
            return OPEN_STEP[event[1]]
        last = self.calls[i - 1] if i > 0 and self.calls[i - 1][0] > k.began else None
        if event is None and last is None:
            return "takeover"
        if reconciling and event is None:
            return "reconcile"  # reading what a list answered, or about to list again
        if last is not None and (event is None or last[0] > event[0]):
            if last[1] == "file":
                return "download"  # the next request fetches its content
            if last[1] == "content":
                return "ingest"
        return "packing" if k.queued else "idle"


def journal(db: str) -> list[tuple[float, str, int]]:
    """The store's journal events: (instant, kind, batch id)."""
    events = rows(
        db,
        "SELECT at, kind, batch_id FROM events WHERE batch_id IS NOT NULL AND kind IN "
        f"({', '.join('?' * len(JOURNAL))})",
        JOURNAL,
    )
    return [(float(t), str(kind), int(b)) for t, kind, b in events]


def classify(db: str, calls: list[dict[str, Any]], strikes: list[Strike]) -> list[str]:
    """The window each kill or pause landed in; a restart is `restart`."""
    timeline = Timeline(journal(db), calls)
    return [timeline.classify(k) if k.kind != "restart" else "restart" for k in strikes]
