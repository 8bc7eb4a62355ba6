"""AsyncBatchClient and BatchClient against the emulator over real HTTP, on both stores:
the SDK's own objects and errors, attaching instead of enqueueing twice, calls grouped into
imports, and every kind of bad input refused at the call or the await, naming the request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types import Message
from openai.types import Completion, CreateEmbeddingResponse, ModerationCreateResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from helpers import E2E_KEY_ENV, fast_settings, sql
from llmbatch import (
    AsyncBatchClient,
    BatchClient,
    Budget,
    BudgetHeld,
    BudgetSettings,
    ConflictError,
    InputError,
    NotBatchable,
    NotFound,
    ProviderError,
    Queue,
    RequestCancelled,
    RequestExpired,
    RetryPolicy,
    WaitTimeout,
)
from llmbatch.emulator.server import RunningEmulator, running

MSGS = [{"role": "user", "content": "tag this product"}]


@contextmanager
def emulator(**config: Any) -> Iterator[tuple[RunningEmulator, Any]]:
    with running(time_scale=config.pop("time_scale", 1000.0), **config) as emu:
        yield emu, fast_settings(emu, first_poll=0.05)


def chat(client: Any, text: str = "tag this product", **kw: Any) -> Any:
    return client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": text}], **kw
    )


def count(db: str, table: str) -> int:
    return int(sql(db, f"SELECT COUNT(*) FROM {table}")[0][0])


def test_each_endpoint_resolves_with_the_sdks_own_object(db: str) -> None:
    async def main(emu: RunningEmulator, settings: Any) -> None:
        async with (
            AsyncBatchClient(db, queue="apps", timeout=60) as client,
            client.running(settings, pack_delay=0.05),
        ):
            c = chat(client, custom_id="tag-1")
            assert c.custom_id == "tag-1"
            generated = chat(client, "other")
            assert generated.custom_id.startswith("call-")
            calls = {
                "chat": c,
                "task": asyncio.create_task(generated),  # a coroutine for create_task
                "emb": client.embeddings.create(model="text-embedding-3-small", input="a"),
                "resp": client.responses.create(model="gpt-4o-mini", input="hello"),
                "comp": client.completions.create(model="gpt-3.5-turbo-instruct", prompt="x"),
                "mod": client.moderations.create(model="omni-moderation-latest", input="x"),
                "msg": client.messages.create(
                    model="claude-haiku-4-5", max_tokens=50, messages=MSGS
                ),
            }
            got = dict(zip(calls, await asyncio.gather(*calls.values()), strict=True))
        kinds = {"chat": ChatCompletion, "task": ChatCompletion, "emb": CreateEmbeddingResponse,
                 "resp": Response, "comp": Completion, "mod": ModerationCreateResponse,
                 "msg": Message}  # fmt: skip
        for name, kind in kinds.items():
            assert isinstance(got[name], kind), name
        assert got["chat"].choices[0].message.content
        assert got["msg"].content[0].type == "text"

    with emulator() as (emu, settings):
        asyncio.run(main(emu, settings))


def test_a_restarted_program_attaches_and_gets_its_answers_never_enqueued_twice(db: str) -> None:
    ids = [f"product-{i}" for i in range(40)]

    async def first_run() -> None:  # enqueues, then "crashes" before any answer
        async with AsyncBatchClient(db, queue="tags") as client:
            pending = [chat(client, cid, custom_id=cid) for cid in ids]
            await asyncio.gather(*(p.enqueued() for p in pending))

    async def second_run(settings: Any) -> list[Any]:
        async with (
            AsyncBatchClient(db, queue="tags", timeout=60) as client,
            client.running(settings, pack_delay=0.05),
        ):
            return list(await asyncio.gather(*(chat(client, cid, custom_id=cid) for cid in ids)))

    async def third_run() -> tuple[Any, Any]:  # no engine: everything is already recorded
        async with AsyncBatchClient(db, queue="tags", timeout=5) as client:
            return await client.result("product-7"), await chat(
                client, "product-8", custom_id="product-8"
            )

    asyncio.run(first_run())
    assert count(db, "requests") == 40
    with emulator() as (emu, settings):
        answers = asyncio.run(second_run(settings))
        creates = [
            c for c in emu.control.calls() if (c["method"], c["path"]) == ("POST", "/v1/batches")
        ]
    assert all(isinstance(a, ChatCompletion) for a in answers)
    assert count(db, "requests") == 40  # attached, not enqueued again
    assert sql(db, "SELECT added, unchanged FROM imports ORDER BY id") == [(40, 0), (0, 40)]
    assert count(db, "batches") == 1 and len(creates) == 1
    seven, eight = asyncio.run(third_run())
    assert isinstance(seven, ChatCompletion) and isinstance(eight, ChatCompletion)
    assert count(db, "requests") == 40 and count(db, "imports") == 3


def test_thousands_of_concurrent_calls_make_few_imports(sqlite_db: str) -> None:
    async def main(max_group: int) -> None:
        async with AsyncBatchClient(sqlite_db, queue=f"g{max_group}", max_group=max_group) as c:
            for i in range(3000):
                chat(c, f"p{i}")
            await c.flush()

    asyncio.run(main(5000))
    assert sql(sqlite_db, "SELECT added FROM imports WHERE queue = 'g5000'") == [(3000,)]
    asyncio.run(main(1000))
    assert sql(sqlite_db, "SELECT added FROM imports WHERE queue = 'g1000'") == [(1000,)] * 3


def test_input_a_batch_refuses_raises_at_the_call_naming_it(sqlite_db: str) -> None:
    async def main() -> None:
        async with AsyncBatchClient(sqlite_db, queue="bad") as client:
            with pytest.raises(
                InputError, match=r"chat.completions.create \(custom_id 's1'\): stream"
            ):
                chat(client, custom_id="s1", stream=True)
            with pytest.raises(InputError, match="'gpt-4o-mini' is an OpenAI model; use chat"):
                client.messages.create(model="gpt-4o-mini", max_tokens=5, messages=MSGS)
            with pytest.raises(InputError, match="'claude-haiku-4-5' is an Anthropic model"):
                client.chat.completions.create(model="claude-haiku-4-5", messages=MSGS)
            with pytest.raises(InputError, match="max_tokens is missing"):
                client.messages.create(model="claude-haiku-4-5", messages=MSGS, custom_id="m1")
            with pytest.raises(InputError, match="extra_headers: headers cannot travel"):
                chat(client, extra_headers={"x-a": "1"})
            with pytest.raises(InputError, match="timeout is how many seconds to wait"):
                chat(client, timeout="soon")
            with pytest.raises(InputError, match="body is not JSON"):
                chat(client, metadata={"when": object()})
            with pytest.raises(NotBatchable, match="images is not a batchable endpoint"):
                client.images.generate(prompt="a cat")
            assert not hasattr(client, "audio")
            with pytest.raises(NotBatchable, match=r"chat.completions.stream is not batchable"):
                client.chat.completions.stream(model="gpt-4o-mini", messages=MSGS)
            good = chat(client, custom_id="fine", extra_body={"seed": 7}, user=openai.NOT_GIVEN)
            await good.enqueued()

    asyncio.run(main())
    rows = sql(
        sqlite_db,
        "SELECT r.custom_id, b.body FROM requests r JOIN request_bodies b ON b.hash = r.body_hash",
    )
    assert [r[0] for r in rows] == ["fine"]  # nothing else was enqueued, nothing touched
    assert b'"seed":7' in bytes(rows[0][1]) and b'"user":' not in bytes(rows[0][1])


def test_a_custom_id_reused_with_another_body_fails_that_call_alone(db: str) -> None:
    async def main() -> None:
        async with AsyncBatchClient(db, queue="reuse") as client:
            first = chat(client, "original", custom_id="r1")
            same = chat(client, "original", custom_id="r1")  # attaches to the same request
            assert same.custom_id == "r1"
            with pytest.raises(ConflictError, match="'r1' is already awaited in queue 'reuse'"):
                chat(client, "changed", custom_id="r1")
            await first.enqueued()
        async with AsyncBatchClient(db, queue="reuse", timeout=1) as client:  # after a restart
            clash = chat(client, "changed", custom_id="r1")
            other = chat(client, "unrelated", custom_id="r2")
            with pytest.raises(ConflictError, match="'r1' is already in queue 'reuse' with a"):
                await clash
            await other.enqueued()

    asyncio.run(main())
    assert sql(db, "SELECT custom_id FROM requests ORDER BY custom_id") == [("r1",), ("r2",)]
    r1 = "SELECT b.body FROM requests r JOIN request_bodies b ON b.hash = r.body_hash WHERE r.custom_id = 'r1'"
    assert b"original" in bytes(sql(db, r1)[0][0])


def test_provider_errors_raise_the_sdks_status_errors_naming_the_request(sqlite_db: str) -> None:
    async def main(settings: Any) -> None:
        async with (
            AsyncBatchClient(sqlite_db, queue="errs", timeout=60) as client,
            client.running(settings, pack_delay=0.05),
        ):
            refused = chat(client, custom_id="e1")
            claude = client.messages.create(
                model="claude-haiku-4-5", max_tokens=5, messages=MSGS, custom_id="e2"
            )
            unknown = client.chat.completions.create(
                model="gpt-nonexistent", messages=MSGS, custom_id="e3"
            )
            with pytest.raises(openai.BadRequestError, match="custom_id 'e1'") as e1:
                await refused
            assert e1.value.status_code == 400 and e1.value.request_id
            with pytest.raises(anthropic.BadRequestError, match="custom_id 'e2'"):
                await claude
            with pytest.raises(openai.NotFoundError, match="custom_id 'e3'") as e3:
                await unknown
            assert e3.value.code == "model_not_found"

    with emulator(request_failure_rate=1.0, request_failure_status=400) as (_emu, settings):
        asyncio.run(main(settings))


def test_a_cancelled_queue_raises_request_cancelled_at_the_await(db: str) -> None:
    async def main() -> None:
        async with AsyncBatchClient(db, queue="gone", timeout=10) as client:
            pending = [chat(client, custom_id=f"c{i}") for i in range(3)]
            await client.flush()
            with Queue(db, "gone") as q:
                assert q.cancel().cancelled == 3
            for p in pending:
                with pytest.raises(RequestCancelled, match=f"custom_id '{p.custom_id}'"):
                    await p

    asyncio.run(main())


def test_a_worker_that_never_comes_is_a_timeout_saying_so(db: str) -> None:
    async def main(settings: Any) -> None:
        async with AsyncBatchClient(db, queue="lonely") as client:
            call = chat(client, custom_id="w1", timeout=0.3)
            with pytest.raises(WaitTimeout, match="no worker is running") as exc:
                await call
            assert "custom_id 'w1' (queue 'lonely')" in str(exc.value)
            async with client.running(settings, pack_delay=0.05):  # nothing was cancelled
                assert isinstance(await client.result("w1", timeout=60), ChatCompletion)
            with pytest.raises(NotFound, match="no request 'nope' in queue 'lonely'"):
                await client.result("nope")

    with emulator() as (emu, settings):
        asyncio.run(main(emu and settings))


def test_a_request_held_by_a_budget_raises_budget_held(sqlite_db: str) -> None:
    async def main(settings: Any) -> None:
        async with (
            AsyncBatchClient(sqlite_db, queue="capped", timeout=30) as client,
            client.running(settings, pack_delay=0.05),
        ):
            with pytest.raises(BudgetHeld, match=r"custom_id 'b1' .* held by a budget"):
                await chat(client, custom_id="b1")
        assert sql(sqlite_db, "SELECT state FROM requests") == [("held",)]

    with emulator() as (_emu, settings):
        budgets = BudgetSettings((Budget(None, "day", Decimal("0.000001")),))
        settings.budgets = budgets
        asyncio.run(main(settings))


def test_a_request_expired_after_its_retries_raises_request_expired(sqlite_db: str) -> None:
    async def main(emu: RunningEmulator, settings: Any) -> None:
        async with (
            AsyncBatchClient(sqlite_db, queue="late", timeout=30) as client,
            client.running(settings, pack_delay=0.05),
        ):
            call = chat(client, custom_id="x1")
            while not sql(sqlite_db, "SELECT provider_batch_id FROM batches WHERE provider_batch_id IS NOT NULL"):  # fmt: skip
                await asyncio.sleep(0.05)
            batch = sql(sqlite_db, "SELECT provider_batch_id FROM batches")[0][0]
            emu.control.expire(batch)
            with pytest.raises(RequestExpired, match="custom_id 'x1'"):
                await call

    with emulator(time_scale=0.0) as (emu, settings):
        settings.retry = RetryPolicy(max_expiries=0, base_seconds=0.05, max_seconds=0.1)
        asyncio.run(main(emu, settings))


def test_an_engine_that_cannot_start_fails_the_waiting_calls(
    sqlite_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(E2E_KEY_ENV)

    async def main(settings: Any) -> None:
        async with (
            AsyncBatchClient(sqlite_db, queue="nokey", timeout=30) as client,
            client.running(settings, pack_delay=0.05),
        ):
            with pytest.raises(ProviderError, match=E2E_KEY_ENV):
                await chat(client, custom_id="k1")

    with emulator() as (_emu, settings):
        asyncio.run(main(settings))


def test_the_sync_client_gives_handles_that_wait_with_a_timeout(db: str) -> None:
    with emulator() as (_emu, settings), BatchClient(db, queue="nb") as client:
        handle = chat(client, custom_id="n1")
        assert (handle.custom_id, handle.done()) == ("n1", False)
        with pytest.raises(WaitTimeout, match="no worker is running"):
            handle.result(timeout=0.2)
        with pytest.raises(InputError, match="stream"):
            chat(client, stream=True)
        with client.running(settings, pack_delay=0.05):
            assert isinstance(handle.result(timeout=60), ChatCompletion)
            assert handle.done()
            assert isinstance(client.result("n1").result(timeout=5), ChatCompletion)
