"""`BatchClient`: `AsyncBatchClient` for code without an event loop (scripts, notebooks).

Each call returns a `CallHandle` at once; `handle.result(timeout)` blocks for at most
`timeout` seconds (WaitTimeout, saying where the request stands, and nothing cancelled), so
a notebook is never frozen for the hours a batch may take. Ctrl-C stops the wait, not the
request. The async client runs on an event loop in a daemon thread of its own.

    with llmbatch.BatchClient("llmbatch.db", queue="evals") as client, client.running():
        h = client.chat.completions.create(model="gpt-4o-mini", messages=[...])
        h.custom_id                                   # keep it: client.result(it) later
        h.result(timeout=60)                          # an openai ChatCompletion
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from llmbatch import defaults
from llmbatch.background import EngineThread
from llmbatch.client import (
    BATCHABLE,
    CHAT,
    COMPLETIONS,
    EMBEDDINGS,
    MESSAGES,
    MODERATIONS,
    RESPONSES,
    AsyncBatchClient,
    Endpoint,
    PendingCall,
)
from llmbatch.engine import EngineSettings
from llmbatch.errors import NotBatchable
from llmbatch.store.base import Store

if TYPE_CHECKING:
    from anthropic.types import Message
    from openai.types import Completion, CreateEmbeddingResponse, ModerationCreateResponse
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

T = TypeVar("T")
R = TypeVar("R")


class CallHandle(Generic[T]):
    """A call on its way: `result(timeout)` gives the SDK's object (or raises its error)."""

    def __init__(self, client: BatchClient, pending: PendingCall[T]) -> None:
        self.custom_id = pending.custom_id
        self._client, self._pending = client, pending

    def result(self, timeout: float | None = None) -> T:
        """Block until the answer comes, at most `timeout` seconds (None: no limit)."""
        got: T = self._client._run(lambda: self._client._aio.calls.wait(self._waiting, timeout))
        return got

    @property
    def _waiting(self) -> Any:
        return self._pending._waiting

    def done(self) -> bool:
        """Whether the answer (or its error) is here."""
        return self._pending.done()

    def __repr__(self) -> str:
        return f"<CallHandle {self.custom_id!r} {'done' if self.done() else 'waiting'}>"


class _Chat(Generic[R]):
    def __init__(self, client: Any) -> None:
        self.completions: Endpoint[R] = Endpoint(client, "chat.completions", CHAT)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotBatchable(f"chat.{name} is not batchable; batchable: {BATCHABLE}")


class BatchClient:
    """See the module docstring; takes what `AsyncBatchClient` takes."""

    def __init__(
        self,
        db: str | Store | None = None,
        *,
        queue: str = defaults.QUEUE,
        provider: str = defaults.PROVIDER,
        timeout: float | None = None,
        settings: EngineSettings | None = None,
        watch_interval: float = defaults.CLIENT_WATCH_INTERVAL_S,
        window: float = defaults.CLIENT_WINDOW_S,
        max_group: int = defaults.CLIENT_MAX_GROUP,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="llmbatch-client", daemon=True
        )
        self._thread.start()
        self._aio = AsyncBatchClient(
            db,
            queue=queue,
            provider=provider,
            timeout=timeout,
            settings=settings,
            watch_interval=watch_interval,
            window=window,
            max_group=max_group,
        )
        self.queue, self.store = queue, self._aio.store
        self.chat: _Chat[CallHandle[ChatCompletion]] = _Chat(self)
        self.embeddings: Endpoint[CallHandle[CreateEmbeddingResponse]] = Endpoint(
            self, "embeddings", EMBEDDINGS
        )
        self.responses: Endpoint[CallHandle[Response]] = Endpoint(self, "responses", RESPONSES)
        self.completions: Endpoint[CallHandle[Completion]] = Endpoint(
            self, "completions", COMPLETIONS
        )
        self.moderations: Endpoint[CallHandle[ModerationCreateResponse]] = Endpoint(
            self, "moderations", MODERATIONS
        )
        self.messages: Endpoint[CallHandle[Message]] = Endpoint(self, "messages", MESSAGES)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotBatchable(
            f"{name} is not a batchable endpoint; batchable: {BATCHABLE}. Call the provider's "
            "own client for it"
        )

    def _run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run a coroutine on the client's loop and wait for it here; Ctrl-C stops the wait."""

        async def go() -> T:
            return await make()

        future = asyncio.run_coroutine_threadsafe(go(), self._loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    def _call(self, name: str, endpoint: str, params: dict[str, Any], **options: Any) -> Any:
        async def make() -> PendingCall[Any]:
            return self._aio._call(name, endpoint, params, **options)

        return CallHandle(self, self._run(make))

    def result(self, custom_id: str) -> CallHandle[Any]:
        """A handle on a request enqueued earlier (NotFound, here, if there is none)."""
        calls = self._run(_calls_of(self._aio))
        found = self._run(lambda: calls.run(calls.lookup, custom_id))
        if found is None:
            from llmbatch.errors import NotFound

            raise NotFound(f"no request {custom_id!r} in queue {self.queue!r}")

        async def follow() -> Any:
            return calls.follow(found)

        waiting = self._run(follow)
        return CallHandle(self, PendingCall(calls, waiting, None))

    def flush(self) -> None:
        """Return once every call made so far is durably in the queue."""
        self._run(self._aio.flush)

    @contextlib.contextmanager
    def running(
        self, settings: EngineSettings | None = None, *, pack_delay: float = defaults.PACK_DELAY_S
    ) -> Iterator[EngineThread]:
        """Run the engine in this process while the block runs (see `AsyncBatchClient.running`)."""
        manager = self._aio.running(settings, pack_delay=pack_delay)
        runner = self._run(manager.__aenter__)
        try:
            yield runner
        finally:
            self._run(lambda: manager.__aexit__(None, None, None))

    def close(self) -> None:
        """Enqueue what is buffered and stop; waiting requests stay in the queue."""
        if self._loop.is_closed():
            return
        self._run(self._aio.close)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> BatchClient:
        return self

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _calls_of(client: AsyncBatchClient) -> Callable[[], Coroutine[Any, Any, Any]]:
    async def get() -> Any:
        return client.calls  # made on the client's loop

    return get
