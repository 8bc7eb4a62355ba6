"""`AsyncBatchClient`: the official `AsyncOpenAI` client's shape for the batchable endpoints,
whose calls come back when their batch does — at half price, durable, exactly once.

    async with llmbatch.AsyncBatchClient("llmbatch.db", queue="tagging") as client:
        async with client.running():                 # or a separate `llmbatch worker`
            reply = await client.chat.completions.create(model="gpt-4o-mini", messages=[...])
            reply.choices[0].message.content          # an openai ChatCompletion

- `chat.completions`, `embeddings`, `responses`, `completions`, `moderations` (OpenAI or
  Azure: `provider=`) and `messages` (Anthropic) take the SDK's own parameters and resolve
  with the SDK's own objects; a provider's HTTP error is raised as the SDK's status error,
  an expiry, a cancel or a budget as llmbatch's (`sdk.py` has the table).
- A call returns a `PendingCall` at once: awaitable (and a coroutine for `create_task`),
  with `.custom_id` (given with `custom_id=`, else generated). Input the batch API refuses
  (`stream=True`, an OpenAI model on `messages`, ...) raises at the call, naming it.
- The same custom_id and body again attaches to the request already in the queue (never
  enqueued twice), so a program that restarts gets its answers: `await client.result(ID)`.
- Thousands of concurrent calls are grouped into a few imports; waiting calls watch the
  store with one statement per interval, however many there are (`calls.py`).
- `timeout=` (seconds, per call or for the client) bounds a wait: `WaitTimeout` says where
  the request stands, e.g. that no worker is running. Nothing is cancelled by a timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Coroutine, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from llmbatch import defaults
from llmbatch.background import EngineThread
from llmbatch.calls import Calls, Waiting
from llmbatch.engine import EngineSettings
from llmbatch.errors import ConfigError, InputError, NotBatchable, NotFound
from llmbatch.providers import for_endpoint, format_of, formats
from llmbatch.requests import LineError, Request, make_request
from llmbatch.store import open_store, resolve_db
from llmbatch.store.base import Store

if TYPE_CHECKING:
    from anthropic.types import Message
    from openai.types import Completion, CreateEmbeddingResponse, ModerationCreateResponse
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

T = TypeVar("T")
R = TypeVar("R")

CHAT, EMBEDDINGS, RESPONSES = "/v1/chat/completions", "/v1/embeddings", "/v1/responses"
COMPLETIONS, MODERATIONS = "/v1/completions", "/v1/moderations"
MESSAGES = "/v1/messages"
# endpoint -> the client attribute whose create() sends to it
ATTRIBUTES = {
    CHAT: "chat.completions",
    EMBEDDINGS: "embeddings",
    RESPONSES: "responses",
    COMPLETIONS: "completions",
    MODERATIONS: "moderations",
    MESSAGES: "messages",
}
BATCHABLE = "chat.completions, embeddings, responses, completions, moderations, messages"
# SDK options that cannot travel in a batch line
REFUSED = {"extra_headers": "headers", "extra_query": "query parameters"}


class PendingCall(Coroutine[Any, Any, T]):
    """A call whose batch has not come back yet: `await` it for the SDK's object. It is
    already on its way to the queue; `custom_id` names it (pass it to `client.result` after a
    restart). A coroutine too, so `asyncio.create_task` and `gather` take it."""

    def __init__(self, calls: Calls, waiting: Waiting, timeout: float | None) -> None:
        self.custom_id = waiting.custom_id
        self._calls, self._waiting, self._timeout = calls, waiting, timeout
        self._coro: Coroutine[Any, Any, T] | None = None

    def _inner(self) -> Coroutine[Any, Any, T]:
        if self._coro is None:
            self._coro = self._calls.wait(self._waiting, self._timeout)
        return self._coro

    def __await__(self) -> Generator[Any, None, T]:
        return self._inner().__await__()

    def send(self, value: Any) -> Any:
        return self._inner().send(value)

    def throw(self, typ: Any, val: Any = None, tb: Any = None, /) -> Any:
        if val is None and tb is None:
            return self._inner().throw(typ)
        return self._inner().throw(typ, val, tb)

    def close(self) -> None:
        if self._coro is not None:
            self._coro.close()

    def done(self) -> bool:
        """Whether the answer (or its error) is here."""
        return self._waiting.future.done()

    async def enqueued(self) -> None:
        """Return once the request is durably in the queue (its import committed)."""
        await asyncio.shield(self._waiting.enqueued)

    def __repr__(self) -> str:
        return f"<PendingCall {self.custom_id!r} {'done' if self.done() else 'waiting'}>"


class Endpoint(Generic[R]):
    """One batchable endpoint's `create`, taking the SDK's parameters plus llmbatch's own:
    `custom_id`, `timeout` (seconds to wait for the answer), `priority`, `deadline`."""

    def __init__(self, client: Any, name: str, endpoint: str) -> None:
        self._client, self._name, self._endpoint = client, name, endpoint

    def create(
        self,
        *,
        custom_id: str | None = None,
        timeout: float | None = None,
        priority: int = 0,
        deadline: float | None = None,
        **params: Any,
    ) -> R:
        return self._client._call(  # type: ignore[no-any-return]
            self._name,
            self._endpoint,
            params,
            custom_id=custom_id,
            timeout=timeout,
            priority=priority,
            deadline=deadline,
        )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotBatchable(
            f"{self._name}.{name} is not batchable: a batch takes `{self._name}.create` only "
            "(whole responses, no streaming or parsing helpers)"
        )


class _Chat(Generic[R]):
    def __init__(self, client: Any) -> None:
        self.completions: Endpoint[R] = Endpoint(client, "chat.completions", CHAT)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotBatchable(f"chat.{name} is not batchable; batchable: {BATCHABLE}")


class AsyncBatchClient:
    """See the module docstring. `db` is a path, `sqlite:///…` or `postgresql://…` (default
    LLMBATCH_DB, then ./llmbatch.db), or an open Store (then `running()` is not available: the
    engine needs a connection of its own). `provider` is `openai` or `azure` for the OpenAI
    endpoints (`messages` always goes to Anthropic)."""

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
        if CHAT not in format_of(provider).endpoints:
            raise ConfigError(
                f"provider {provider!r}: the chat, embeddings and responses endpoints go to "
                f"{' or '.join(for_endpoint(CHAT))} (`messages.create` finds its provider itself)"
            )
        self.queue, self.provider, self.timeout = queue, provider, timeout
        self.settings = settings
        self._db: str | None = None  # where the engine of running() connects
        if db is None or isinstance(db, str):
            self._db = resolve_db(db)
            self.store: Store = open_store(self._db)
        else:
            self.store = db
        self._own_store = self._db is not None
        self._calls: Calls | None = None
        self._runner: EngineThread | None = None
        self._options: dict[str, Any] = {
            "interval": watch_interval,
            "window": window,
            "max_group": max_group,
        }
        self.chat: _Chat[PendingCall[ChatCompletion]] = _Chat(self)
        self.embeddings: Endpoint[PendingCall[CreateEmbeddingResponse]] = Endpoint(
            self, "embeddings", EMBEDDINGS
        )
        self.responses: Endpoint[PendingCall[Response]] = Endpoint(self, "responses", RESPONSES)
        self.completions: Endpoint[PendingCall[Completion]] = Endpoint(
            self, "completions", COMPLETIONS
        )
        self.moderations: Endpoint[PendingCall[ModerationCreateResponse]] = Endpoint(
            self, "moderations", MODERATIONS
        )
        self.messages: Endpoint[PendingCall[Message]] = Endpoint(self, "messages", MESSAGES)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise NotBatchable(
            f"{name} is not a batchable endpoint; batchable: {BATCHABLE}. Call the provider's "
            "own client for it"
        )

    @property
    def calls(self) -> Calls:
        """The calls in flight (made on first use, on the running event loop)."""
        if self._calls is None:
            self._calls = Calls(self.store, self.queue, on_enqueued=self._nudge, **self._options)
        return self._calls

    def _nudge(self) -> None:
        if self._runner is not None:
            self._runner.nudge()

    def _call(
        self,
        name: str,
        endpoint: str,
        params: dict[str, Any],
        *,
        custom_id: str | None,
        timeout: float | None,
        priority: int,
        deadline: float | None,
    ) -> PendingCall[Any]:
        cid = custom_id if custom_id is not None else f"call-{uuid.uuid4().hex}"
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float)
        ):
            raise InputError(
                f"{name}.create (custom_id {cid!r}): timeout is how many seconds to wait for the "
                f"batch's answer (a number), not {timeout!r}"
            )
        request = self.request(name, endpoint, params, cid)
        waiting = self.calls.add(request, priority=priority, deadline=deadline)
        return PendingCall(self.calls, waiting, self.timeout if timeout is None else timeout)

    def request(self, name: str, endpoint: str, params: dict[str, Any], custom_id: str) -> Request:
        """The batch request a call makes, validated as any enqueued line is (InputError,
        naming the call, for what a batch refuses)."""
        where = f"{name}.create (custom_id {custom_id!r})"
        body = dict(params)
        for key, what in REFUSED.items():
            if body.pop(key, None):
                raise InputError(f"{where}: {key}: {what} cannot travel in a batch line")
        extra = body.pop("extra_body", None) or {}
        body = {k: jsonable(v) for k, v in body.items() if not _omitted(v)}
        body.update(jsonable(extra))
        provider = _provider_for(endpoint, self.provider, where)
        model = body.get("model")
        if isinstance(model, str):
            _check_model(model, provider, where)
        try:
            return make_request(custom_id, body, url=endpoint, provider=provider)
        except LineError as exc:
            raise InputError(f"{where}: {exc}; nothing was enqueued") from None

    def result(self, custom_id: str, *, timeout: float | None = None) -> PendingCall[Any]:
        """Await the answer to a request enqueued earlier (by this program before a restart,
        or by another): NotFound if the queue has no such custom_id."""
        return _Lookup(self, custom_id, self.timeout if timeout is None else timeout)

    async def flush(self) -> None:
        """Return once every call made so far is durably in the queue."""
        if self._calls is not None:
            await self._calls.flush()

    @contextlib.asynccontextmanager
    async def running(
        self, settings: EngineSettings | None = None, *, pack_delay: float = defaults.PACK_DELAY_S
    ) -> AsyncIterator[EngineThread]:
        """Run the engine in this process while the block runs (a thread; see background.py).
        On exit the current step finishes; calls still waiting stay in the queue."""
        if self._db is None:
            raise ConfigError(
                "running() opens a connection of its own for the engine: give the client a "
                "path or URL, not an open Store"
            )
        loop = asyncio.get_running_loop()
        calls = self.calls

        def on_error(exc: BaseException) -> None:
            loop.call_soon_threadsafe(calls.fail_all, _stopped(exc))

        runner = EngineThread(
            self._db,
            settings or self.settings,
            pack_delay=pack_delay,
            on_error=on_error,
        )
        runner.start()
        self._runner = runner
        try:
            yield runner
        finally:
            self._runner = None
            await loop.run_in_executor(None, runner.stop)

    async def close(self) -> None:
        """Enqueue what is buffered and stop watching; waiting calls stay in the queue."""
        if self._calls is not None:
            await self._calls.close()
            self._calls = None
        if self._own_store:
            self.store.close()

    async def __aenter__(self) -> AsyncBatchClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()


class _Lookup(PendingCall[Any]):
    """`client.result(custom_id)`: look the request up, then wait as a call would."""

    def __init__(self, client: AsyncBatchClient, custom_id: str, timeout: float | None) -> None:
        self.custom_id, self._client, self._timeout = custom_id, client, timeout
        self._coro = None

    def _inner(self) -> Coroutine[Any, Any, Any]:
        if self._coro is None:
            self._coro = self._wait()
        return self._coro

    async def _wait(self) -> Any:
        calls = self._client.calls
        found = await calls.run(calls.lookup, self.custom_id)
        if found is None:
            raise NotFound(f"no request {self.custom_id!r} in queue {self._client.queue!r}")
        self._waiting = calls.follow(found)
        return await calls.wait(self._waiting, self._timeout)

    def done(self) -> bool:
        w = getattr(self, "_waiting", None)
        return w is not None and w.future.done()

    async def enqueued(self) -> None:
        """It is in the queue already (NotFound on the await otherwise)."""


def _stopped(exc: BaseException) -> BaseException:
    from llmbatch.errors import ProviderError

    if isinstance(exc, ProviderError):
        return exc
    return ProviderError(f"the engine in this process stopped: {exc}")


def _omitted(v: Any) -> bool:
    """The SDKs' "not given" markers (`NOT_GIVEN`, `omit`): left out, as the SDK does."""
    return type(v).__name__ in ("NotGiven", "Omit")


def jsonable(v: Any) -> Any:
    """A parameter as the SDK would send it: pydantic objects (a message from an earlier
    reply) dumped by alias without unset fields, tuples as lists, "not given" left out."""
    if isinstance(v, Mapping):
        return {str(k): jsonable(x) for k, x in v.items() if not _omitted(x)}
    if isinstance(v, list | tuple):
        return [jsonable(x) for x in v]
    dump = getattr(v, "model_dump", None)
    if dump is not None and not isinstance(v, type):
        return jsonable(dump(mode="json", by_alias=True, exclude_unset=True))
    return v


def _provider_for(endpoint: str, provider: str, where: str) -> str:
    """The provider a call to `endpoint` goes to: the client's own if it batches it, else the
    one registered provider that does."""
    if endpoint in format_of(provider).endpoints:
        return provider
    serving = for_endpoint(endpoint)
    if not serving:
        raise NotBatchable(f"{where}: no installed provider batches {endpoint}")
    return serving[0]


def _check_model(model: str, provider: str, where: str) -> None:
    """A model that is plainly another provider's is a mistake, said at the call."""
    own = format_of(provider)
    if own.model_prefixes and model.startswith(own.model_prefixes):
        return
    for other in formats():
        if (
            other.name != provider
            and other.model_prefixes
            and model.startswith(other.model_prefixes)
        ):
            use = ATTRIBUTES.get(other.default_endpoint, other.default_endpoint)
            label = other.label or other.name
            article = "an" if label[:1] in "AEIOU" else "a"
            raise InputError(f"{where}: {model!r} is {article} {label} model; use {use}")
