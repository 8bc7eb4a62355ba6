"""Workers that share a store's work (issue 27): each worker's token, the claims on batches
and packing groups, the fence that tells the workers apart, and the engine sharing the open
batches out. On the code before, one engine lease covered everything: a second worker's
writes were refused wherever the first held the lease, and a second engine only waited."""

from __future__ import annotations

import socket
import time

import pytest

from llmbatch.engine import Engine, EngineSettings
from llmbatch.importer import enqueue_requests
from llmbatch.lease import Claims, Lease, batch_claim
from llmbatch.requests import make_request
from llmbatch.store import Store
from llmbatch.store.batching import LeaseLost
from llmbatch.store.claims import group_claim
from llmbatch.store.sqlstore import owner_tag

BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
GROUP = ("openai", "/v1/chat/completions", "gpt-4o-mini")


def _enqueue(store: Store, queue: str, ids: list[str]) -> None:
    enqueue_requests(store, (make_request(i, BODY) for i in ids), queue=queue)


def _intents(store: Store, n: int, token: int, now: float, holder: str) -> list[int]:
    ids = [rid for rid, *_ in store.candidates(*GROUP)]
    out = []
    for i in range(n):
        b = store.create_intent(GROUP, ids[i : i + 1], 1, 1, now, token, holder=holder)
        assert b is not None
        out.append(b)
    return out


def test_each_worker_has_a_token_of_its_own_on_every_lease_and_claim(store: Store) -> None:
    now = time.time()
    a = store.acquire_lease("engine", "a", 60, now)
    b = store.acquire_lease("batch:1", "b", 60, now)
    assert a is not None and b is not None and a != b
    assert store.acquire_lease("group:x", "a", 60, now) == a  # one token per worker
    assert store.register_worker("a", ["q"], now) == a


def test_a_batch_claim_fences_its_writes_from_every_other_worker(store: Store) -> None:
    _enqueue(store, "q", [f"r{i}" for i in range(3)])
    now = time.time()
    engine = store.acquire_lease("engine", "e", 60, now)  # the engine lease: another worker
    w = store.acquire_lease(group_claim(GROUP), "w", 60, now)
    assert engine is not None and w is not None
    (mine, unclaimed) = _intents(store, 2, w, now, "w")
    store.release_lease(batch_claim(unclaimed), "w")
    store.mark("upload", mine, now, w)  # its own claim
    with pytest.raises(LeaseLost, match="taken over"):
        store.mark("upload", mine, now, engine)  # the engine lease does not cover a claim
    store.mark("upload", unclaimed, now, engine)  # ... but stands for one nobody holds
    with pytest.raises(LeaseLost):
        store.mark("upload", unclaimed, now, w)  # given up: no longer w's


def test_a_claim_that_ran_out_is_taken_over_and_the_old_holder_refused(store: Store) -> None:
    _enqueue(store, "q", ["r0"])
    now = time.time()
    w = store.acquire_lease(group_claim(GROUP), "w", 1, now)
    assert w is not None
    (b,) = _intents(store, 1, w, now, "w")
    time.sleep(1.2)  # w paused past its claim (the fence reads the database's clock)
    with pytest.raises(LeaseLost, match="ran out"):
        store.mark("upload", b, time.time(), w)
    v = store.acquire_lease(batch_claim(b), "v", 60, time.time())
    assert v is not None and v != w
    store.mark("upload", b, time.time(), v)
    assert batch_claim(b) not in store.renew_claims("w", w, 60, time.time())  # v's now
    with pytest.raises(LeaseLost, match="taken over"):
        store.mark("create", b, time.time(), w)


def test_two_engines_share_the_open_batches_and_give_back_beyond_their_share(
    store: Store,
) -> None:
    _enqueue(store, "q", [f"r{i}" for i in range(8)])
    now = time.time()
    settings = EngineSettings(lease_ttl=60.0)
    a = Lease(store, settings, "a")
    a.take(now)
    store.acquire_lease(group_claim(GROUP), "a", 60, now)
    _intents(store, 8, a.token, now, "a")
    store.release_lease(group_claim(GROUP), "a")
    a.take(now)
    b = Lease(store, settings, "b")
    b.take(now)  # two live workers now
    for batch in store.open_batches():  # waiting at the provider: nothing under way
        store.update_batch(batch.id, _Status(), now, a.token)
    notes: list[str] = []
    mine_a = Claims(store, settings, a).share(now, store.open_batches(), notes)
    mine_b = Claims(store, settings, b).share(now, store.open_batches(), notes)
    assert len(mine_a) == len(mine_b) == 4 and not mine_a & mine_b
    holders = {c.name: c.holder for c in store.claims() if c.name.startswith("batch:")}
    assert sorted(holders.values()) == ["a"] * 4 + ["b"] * 4


def test_a_dead_worker_on_this_host_holding_nothing_gets_no_share(store: Store) -> None:
    """Found in test_secrets: a worker SIGKILLed after its work was done held only the engine
    lease, which the next process broke (`Lease.take`); its row still counted it among the
    workers sharing the open batches for a lease's lifetime (10 min), so a `run` took half of
    them and the other half waited for nobody."""
    _enqueue(store, "q", [f"r{i}" for i in range(4)])
    now = time.time()
    settings = EngineSettings(lease_ttl=600.0)
    space = owner_tag().rsplit(":", 1)[1]
    dead = f"{socket.gethostname()}:4194305:123:{space}/gone"  # a pid dead here
    store.worker_seen(store.register_worker(dead, None, now), now)
    a = Lease(store, settings, "a")
    a.take(now)
    store.acquire_lease(group_claim(GROUP), "a", 600, now)
    _intents(store, 4, a.token, now, "a")
    for batch in store.open_batches():  # waiting at the provider, nobody's claim
        store.update_batch(batch.id, _Status(), now, a.token)
        a.give_up(batch_claim(batch.id))
    mine = Claims(store, settings, a).share(now, store.open_batches(), [])
    assert len(mine) == 4, "the dead worker's share waits for nobody"
    assert [w.holder for w in store.workers(now - 600)] == ["a"]


def test_a_worker_for_some_queues_packs_and_works_only_theirs(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-secret")
    _enqueue(store, "mine", ["m0", "m1"])
    _enqueue(store, "theirs", ["t0", "t1", "t2"])
    engine = Engine(store, EngineSettings(), queues=["mine"])
    try:
        engine._providers["openai"] = _quiet(engine.provider("openai"))
        engine.tick(time.time())
    finally:
        engine.close()
    states = {(c.queue, c.state): c.n for c in store.counts()}
    assert states[("mine", "packed")] == 2 and states[("theirs", "queued")] == 3
    assert set(store.open_batch_queues().values()) == {"mine"}


class _Status:
    state, provider_status, completed, failed = "in_progress", "in_progress", 0, 0
    output_file_id = error_file_id = None
    errors: tuple[str, ...] = ()
    ended = False


def _quiet(real):  # type: ignore[no-untyped-def]
    """The provider, but it never submits (the intent stays `submitting`)."""

    class Quiet:
        def __getattr__(self, name):  # type: ignore[no-untyped-def]
            return getattr(real, name)

        def ready(self) -> None:
            pass

        def submit(self, intent, journal):  # type: ignore[no-untyped-def]
            raise LeaseLost("not sent in this test")

    return Quiet()


def test_a_claim_given_up_is_not_renewed_by_its_old_holder(store: Store) -> None:
    """Found while building: a worker's one-statement renewal took back the batches it had
    just given up beyond its share, and its packing groups, so nobody else could take them."""
    now = time.time()
    a = Lease(store, EngineSettings(lease_ttl=60.0), "a")
    a.take(now)
    assert a.claim("batch:7", now) and a.claim(group_claim(GROUP), now)
    a.give_up("batch:7")
    a.give_up(group_claim(GROUP))
    a.take(now + 1)
    assert a.held == {"engine"}
    assert store.acquire_lease("batch:7", "b", 60, now + 1) is not None


def test_status_says_which_worker_holds_what_and_since_when(store: Store) -> None:
    from llmbatch import views

    now = time.time()
    a = Lease(store, EngineSettings(lease_ttl=60.0), "host-a:1:2/x", queues=["reviews"])
    a.take(now - 50)
    a.claim("batch:3", now - 30)
    store.worker_seen(a.token, now, {"ingested": 2, "outcomes": 40})
    text = views.status_text(store, None, now)
    line = next(ln for ln in text.splitlines() if ln.startswith("worker host-a:1:2/x"))
    assert "(queues reviews, up 50s)" in line, line
    assert "the engine lease for 50s" in line and "1 batch (3), the oldest for 30s" in line
    assert "2 ingested (40 results)" in line
    (record,) = views.status_record(store, None, now)["workers"]
    assert record["queues"] == ["reviews"] and record["done"]["results"] == 40
    assert {c["name"] for c in record["claims"]} == {"engine", "batch:3"}


def test_a_worker_stopping_gives_up_its_claims_and_is_forgotten_later(store: Store) -> None:
    now = time.time()
    token = store.register_worker("a", ["q"], now)
    assert store.acquire_lease("batch:9", "a", 60, now) == token
    store.worker_seen(token, now, {"polled": 3})
    (row,) = store.workers(now - 1)
    assert (row.holder, row.queues, row.polled) == ("a", ("q",), 3)
    store.release_claims("a")
    assert store.workers(now - 1) == []  # not counted when the others share the work
    assert store.acquire_lease("batch:9", "b", 60, now) not in (None, token)
    store.forget_workers(now - 1)  # seen since: kept, with its figures
    assert any(w.holder == "a" for w in store.workers(-now - 1))
    store.forget_workers(now + 1)
    assert not any(w.holder == "a" for w in store.workers(-now - 1))
