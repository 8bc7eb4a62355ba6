"""Celery scheduling: the engine's step as a task that Celery beat runs, for teams that
schedule their work with Celery (on Redis, or any broker).

    # jobs.py
    from celery import Celery
    from llmbatch.contrib.celery import setup

    app = Celery("jobs", broker="redis://localhost:6379/0")
    setup(app, db="postgresql://llmbatch@db/llmbatch")   # tasks, beat schedule, broker options

    $ celery -A jobs worker          # runs the tasks
    $ celery -A jobs beat            # sends `llmbatch.tick` every 5 min, `llmbatch.report` daily

Tasks (names under `prefix`, default `llmbatch`):

- `tick(db=None)`: one engine step (pack, submit, poll, ingest), as `llmbatch run` does.
  Overlapping ticks are harmless: each takes the engine lease, and one that finds it held
  by another tick does nothing and says who holds it. A tick gives the lease back when it
  ends, so the next may run in any worker process.
- `enqueue_file(path, queue="default", provider="openai", skip_invalid=False, db=None)`:
  one import, all or nothing; the same file again adds nothing.
- `report(days=1, include_today=False, db=None)`: what the last `days` whole UTC days (and
  today so far, if asked) cost and saved, per queue and model: logged, and returned as
  `llmbatch report --format json` gives it.

A Redis broker hands a task that is not acknowledged within `visibility_timeout` to another
worker (one hour by default). Ticks acknowledge late (a worker killed mid-tick gives the
tick to another), so `setup` raises the broker's `visibility_timeout` to at least
`visibility_timeout` (2 h): above the longest tick (downloading and recording a
50,000-request batch takes minutes). A tick delivered twice overlaps itself — which the
lease makes harmless. Scheduled ticks expire after one interval: after an outage beat's
backlog does not run as a burst.

Settings come from `llmbatch.toml` (or the file `config=` / LLMBATCH_CONFIG names) like the
CLI's, and keys from the environment of the worker.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

try:
    from celery import Celery
    from celery.schedules import crontab
except ImportError:  # pragma: no cover - the message is the point
    raise ImportError(
        "llmbatch.contrib.celery needs Celery: pip install 'llmbatch[celery]'"
    ) from None

import orjson

from llmbatch import defaults
from llmbatch.config import config_path, load_config
from llmbatch.engine import Engine
from llmbatch.importer import enqueue_file
from llmbatch.report import build, render
from llmbatch.store import open_store
from llmbatch.worker import engine_settings

log = logging.getLogger("llmbatch")

TICK_EVERY_S = 300.0
VISIBILITY_TIMEOUT_S = 7200


@dataclass(frozen=True)
class Tasks:
    """The registered tasks (Celery task objects): `.delay(...)` them from your code."""

    tick: Any
    enqueue_file: Any
    report: Any


def setup(
    app: Celery,
    *,
    db: str | None = None,
    config: str | Path | None = None,
    prefix: str = "llmbatch",
    tick_every: float = TICK_EVERY_S,
    report_at: crontab | None = None,
    visibility_timeout: int = VISIBILITY_TIMEOUT_S,
) -> Tasks:
    """Register the tasks on `app`, add them to its beat schedule (`tick_every` seconds; the
    report at 06:00 UTC unless `report_at`) and raise the broker's visibility timeout."""
    tasks = register(app, db=db, config=config, prefix=prefix)
    app.conf.beat_schedule = {
        **(app.conf.beat_schedule or {}),
        **beat_schedule(prefix=prefix, tick_every=tick_every, report_at=report_at),
    }
    options = dict(app.conf.broker_transport_options or {})
    options["visibility_timeout"] = max(
        int(options.get("visibility_timeout", 0)), visibility_timeout
    )
    app.conf.broker_transport_options = options
    return tasks


def beat_schedule(
    *,
    prefix: str = "llmbatch",
    tick_every: float = TICK_EVERY_S,
    report_at: crontab | None = None,
) -> dict[str, dict[str, Any]]:
    """Beat entries: a tick every `tick_every` seconds (each expires after one interval, so
    missed ticks do not pile up) and the daily report (06:00 UTC unless `report_at`)."""
    return {
        f"{prefix}.tick": {
            "task": f"{prefix}.tick",
            "schedule": tick_every,
            "options": {"expires": tick_every},
        },
        f"{prefix}.report": {
            "task": f"{prefix}.report",
            "schedule": report_at if report_at is not None else crontab(hour=6, minute=0),
        },
    }


def register(
    app: Celery,
    *,
    db: str | None = None,
    config: str | Path | None = None,
    prefix: str = "llmbatch",
) -> Tasks:
    """Register the three tasks on `app` (see the module docstring); no schedule. Each task
    takes `db=` to name another store than `db` here."""
    default_db = db

    def settings() -> Any:
        return engine_settings(load_config(config_path(str(config) if config else None)))

    def tick(db: str | None = None) -> dict[str, Any]:
        engine = Engine(open_store(db or default_db, create=False), settings())
        try:
            report = engine.tick(time.time())
        finally:
            engine.close()  # gives the lease back
            engine.store.close()
        if report.held_by:
            log.info("llmbatch tick: %s holds the engine; nothing to do here", report.held_by)
        return asdict(report)

    def enqueue_file_task(
        path: str,
        queue: str = "default",
        provider: str = defaults.PROVIDER,
        skip_invalid: bool = False,
        db: str | None = None,
    ) -> dict[str, Any]:
        store = open_store(db or default_db)
        try:
            report = enqueue_file(
                store, path, queue=queue, provider=provider, skip_invalid=skip_invalid
            )
        finally:
            store.close()
        log.info("llmbatch: %s", report.summary())
        return {k: v for k, v in asdict(report).items() if k != "sizes"}

    def report_task(
        days: int = 1, include_today: bool = False, db: str | None = None
    ) -> dict[str, Any]:
        today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        until = today + timedelta(days=1) if include_today else today
        store = open_store(db or default_db, create=False)
        try:
            lines = build(
                store, since=today - timedelta(days=days), until=until, group_by=("queue", "model")
            )
        finally:
            store.close()
        log.info("llmbatch report, the last %d day(s):\n%s", days, render(lines, wide=True))
        return dict(orjson.loads(render(lines, "json")))

    return Tasks(
        tick=app.task(name=f"{prefix}.tick", acks_late=True)(tick),
        enqueue_file=app.task(name=f"{prefix}.enqueue_file")(enqueue_file_task),
        report=app.task(name=f"{prefix}.report")(report_task),
    )
