"""The label cap: at most 50 values per label, the rest under `other`, nothing lost."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from llmbatch.observe.figures import MAX_VALUES, OTHER, cap


def test_sixty_queues_keep_the_fifty_largest() -> None:
    series = [((f"q{i:02d}", "openai"), float(i + 1)) for i in range(60)]
    out = cap(series)
    queues = {k[0] for k in out}
    assert len(queues) == MAX_VALUES + 1 and OTHER in queues
    assert "q00" not in queues and "q59" in queues  # the smallest go to other
    assert out[(OTHER, "openai")] == sum(range(1, 11))
    assert sum(out.values()) == sum(v for _, v in series)


def test_an_age_is_combined_by_max() -> None:
    series = [((f"q{i}",), float(i)) for i in range(55)]
    out = cap(series, combine=max)
    assert out[(OTHER,)] == 4.0


@given(
    st.lists(
        st.tuples(st.tuples(st.text(max_size=3), st.text(max_size=2)), st.integers(0, 1000)),
        max_size=300,
    ),
    st.integers(1, 20),
)
def test_cap_bounds_every_label_and_keeps_the_sum(rows: list, limit: int) -> None:  # type: ignore[type-arg]
    out = cap(((k, float(v)) for k, v in rows), limit=limit)
    for i in range(2):
        assert len({k[i] for k in out} - {OTHER}) <= limit
    assert sum(out.values()) == sum(v for _, v in rows)


class SlowStore:
    """A real SQLite store whose figures take `delay` seconds to read, counting the reads."""

    def __init__(self, path: str, delay: float) -> None:
        from llmbatch.store import open_store

        self.inner, self.delay, self.reads = open_store(path), delay, 0

    def observe(self, now: float, horizon: float) -> object:
        self.reads += 1
        time.sleep(self.delay)
        return self.inner.observe(now, horizon)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_a_scrape_never_waits_for_a_slow_first_read_nor_starts_a_second(tmp_path: Path) -> None:
    from llmbatch.observe.figures import FigureCache

    store = SlowStore(str(tmp_path / "s.db"), 1.0)
    cache = FigureCache(store, max_age=15.0)  # type: ignore[arg-type]
    started = time.monotonic()
    assert cache.ready(0.1) is None  # the first read is under way in the background
    assert time.monotonic() - started < 0.5
    figures = cache.get()  # waits for that read instead of starting its own
    assert figures is not None and store.reads == 1
    assert cache.ready(0.1) is figures and store.reads == 1


def test_a_scrape_writes_the_stores_figures_once_per_read_and_only_the_ages_again(
    tmp_path: Path,
) -> None:
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from helpers import body
    from llmbatch.importer import enqueue_requests
    from llmbatch.observe.figures import FigureCache
    from llmbatch.observe.metrics import StoreCollector, _Families
    from llmbatch.requests import make_request

    store = SlowStore(str(tmp_path / "s.db"), 0.0)
    enqueue_requests(store.inner, iter([make_request("a", body())]), queue="q")
    collector = StoreCollector(FigureCache(store, max_age=3600.0))  # type: ignore[arg-type]

    def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text.decode())
            for s in f.samples
        }

    first = collector.render()
    written = collector._rendered
    again = collector.render()
    assert store.reads == 1 and collector._rendered is written  # not written again
    whole = samples(bytes(generate_latest(_Families(list(collector.collect())))))
    assert samples(first).keys() == samples(again).keys() == whole.keys()
    moving = {"llmbatch_snapshot_age_seconds", "llmbatch_oldest_unfinished_request_age_seconds"}
    for key, value in samples(again).items():
        if key[0] not in moving:
            assert whole[key] == value, key
    queued = {"model": "gpt-4o-mini", "provider": "openai", "queue": "q", "state": "queued"}
    assert whole[("llmbatch_requests", tuple(sorted(queued.items())))] == 1
