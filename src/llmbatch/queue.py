"""The Python API: a named queue in a store."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

from llmbatch import defaults
from llmbatch.engine import Engine, EngineSettings, TickReport
from llmbatch.errors import InputError
from llmbatch.importer import ImportReport, enqueue_file, enqueue_requests
from llmbatch.requests import LineError, Request, make_request, parse_obj
from llmbatch.store import Count, ResultRow, Store, open_store
from llmbatch.worker import drain


class Queue:
    """A queue of requests in a store (SQLite file or PostgreSQL), by name.

    >>> q = Queue("llmbatch.db", "reviews")
    >>> q.add("r1", {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
    """

    def __init__(
        self,
        db: str | None = None,
        name: str = defaults.QUEUE,
        *,
        provider: str = defaults.PROVIDER,
        settings: EngineSettings | None = None,
    ) -> None:
        self.name = name
        self.provider = provider
        self.store: Store = open_store(db)
        self.settings = settings or EngineSettings()
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The batch engine behind `tick`, `run` and `wait` (made on first use)."""
        if self._engine is None:
            self._engine = Engine(self.store, self.settings)
        return self._engine

    def tick(self, now: float | None = None) -> TickReport:
        """One engine step at `now` (default: the current time). Never sleeps."""
        return self.engine.tick(time.time() if now is None else now)

    def run(self, timeout: float | None = None) -> bool:
        """Tick until every request of this queue is done; True if it finished in time."""
        return drain(self.engine, queue=self.name, timeout=timeout).finished

    def wait(self, timeout: float | None = None, progress: bool = True) -> bool:
        """As `run`, with a progress bar (in a terminal or a notebook)."""
        if not progress:
            return self.run(timeout)
        from llmbatch.views import drain_with_progress

        return bool(drain_with_progress(self.engine, self.name, timeout).finished)

    def add(
        self,
        custom_id: str,
        body: Mapping[str, Any],
        *,
        url: str = "/v1/chat/completions",
        provider: str | None = None,
        priority: int = 0,
        deadline: float | None = None,
    ) -> ImportReport:
        """Enqueue one request (use `add_many` for many: each call is one import)."""
        return self.add_many([{"custom_id": custom_id, "body": dict(body), "url": url}], provider=provider,
                             priority=priority, deadline=deadline)  # fmt: skip

    def add_many(
        self,
        items: Iterable[Mapping[str, Any]],
        *,
        provider: str | None = None,
        priority: int = 0,
        deadline: float | None = None,
    ) -> ImportReport:
        """Enqueue many requests as one import: all or nothing.

        Each item is a batch input line as a dict — `{"custom_id", "method", "url", "body"}`
        (method and url may be left out: POST to chat completions) or Anthropic's
        `{"custom_id", "params"}`.
        """
        provider = provider or self.provider
        return enqueue_requests(
            self.store,
            self._validated(items, provider),
            queue=self.name,
            priority=priority,
            deadline=deadline,
        )

    @staticmethod
    def _validated(items: Iterable[Mapping[str, Any]], provider: str) -> Iterator[Request]:
        for n, item in enumerate(items, 1):
            try:
                if "params" in item or "method" in item:
                    yield parse_obj(dict(item), provider)
                else:
                    yield make_request(
                        item.get("custom_id"),
                        item.get("body"),
                        url=item.get("url"),
                        provider=provider,
                    )
            except LineError as exc:
                cid = item.get("custom_id") if isinstance(item, Mapping) else None
                raise InputError(
                    f"item {n} (custom_id {cid!r}): {exc}; nothing was enqueued"
                ) from None

    def add_file(self, path: str | Path, **options: Any) -> ImportReport:
        """Enqueue a JSONL file of batch input lines (see `importer.enqueue_file`)."""
        return enqueue_file(
            self.store,
            path,
            queue=self.name,
            provider=options.pop("provider", self.provider),
            **options,
        )

    def status(self) -> list[Count]:
        """Requests of this queue per provider × model × state."""
        return self.store.counts(self.name)

    def results(self, state: str | None = None, after: int = 0) -> Iterator[ResultRow]:
        """Terminal outcomes in the order they were recorded; `after` resumes from a cursor."""
        return self.store.iter_results(queue=self.name, state=state, after=after)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.close()
        self.store.close()

    def __enter__(self) -> Queue:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
