"""Log lines of `run` and `worker`: every line with a UTC timestamp and a level, as text or as
one JSON object per line (`--log-format json`) for a log shipper.

What a tick did, an outage, a standby taking over, a stop: said once, through the `llmbatch`
logger on standard error. Commands a person watches (`wait`, `demo`) print progress instead.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import orjson

from llmbatch.engine import TickReport

LOGGER = "llmbatch"
FORMATS = ("text", "json")
log = logging.getLogger(LOGGER)


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        return f"{when}.{int(record.msecs):03d}Z {record.levelname:<7} {record.getMessage()}"


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        when = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line: dict[str, Any] = {
            "ts": f"{when}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "msg": record.getMessage(),
        }
        line.update(getattr(record, "fields", {}))
        return orjson.dumps(line, default=str).decode()


def setup(fmt: str = "text", stream: Any = None) -> logging.Logger:
    """Send the `llmbatch` logger to standard error (or `stream`) in `fmt`; idempotent."""
    for h in list(log.handlers):
        log.removeHandler(h)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(_Json() if fmt == "json" else _Text())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    return log


def tick_summary(report: TickReport) -> str:
    """What a tick did, in one line ("" when it did nothing worth saying)."""
    parts = []
    if report.intents:
        parts.append(f"packed {report.packed:,} requests into {report.intents} batch(es)")
    if report.submitted:
        parts.append(f"submitted {report.submitted}")
    if report.ingested_batches:
        parts.append(f"ingested {report.ingested_batches} batch(es), {report.outcomes:,} results")
    parts.extend(report.notes)
    return "; ".join(parts)


class TickLog:
    """Logs each tick's work, which worker holds the engine lease while another one does
    (both serve: this one its share of the batches), and when this one takes it over."""

    def __init__(self, holder: str) -> None:
        self.holder = holder
        self.sharing_with: str | None = None  # the engine lease's holder while another's

    def __call__(self, report: TickReport) -> None:
        if report.engine_holder is not None and report.engine_holder != self.sharing_with:
            log.info(
                "sharing the queue: %s holds the engine lease (retries, sweep, archives, "
                "webhooks); this worker takes its share of the batches, and the rest if it stops",
                report.engine_holder,
                extra={"fields": {"event": "sharing", "holder": report.engine_holder}},
            )
            self.sharing_with = report.engine_holder
        elif report.engine_lease and self.sharing_with is not None:
            log.info(
                "took over the engine lease from %s",
                self.sharing_with,
                extra={"fields": {"event": "took_over", "previous": self.sharing_with}},
            )
            self.sharing_with = None
        line = tick_summary(report)
        if line:
            level = logging.WARNING if report.unreachable or report.anomalies else logging.INFO
            log.log(level, line, extra={"fields": _fields(report)})


def _fields(report: TickReport) -> dict[str, Any]:
    return {
        "packed": report.packed,
        "submitted": report.submitted,
        "ingested_batches": report.ingested_batches,
        "results": report.outcomes,
        "unreachable": report.unreachable,
    }
