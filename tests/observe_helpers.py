"""Reading what a worker's /metrics and /readyz say, as Prometheus and a load balancer would."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


def get(url: str, timeout: float = 10.0) -> tuple[int, bytes, dict[str, str]]:
    """(status, body, headers) of a GET, errors included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read(), dict(r.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def scrape(url: str) -> Series:
    """Every sample of /metrics, by name and labels (parsed by prometheus-client's own parser)."""
    status, body, _ = get(url + "/metrics")
    assert status == 200, body
    out: Series = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def value(series: Series, name: str, **labels: str) -> float:
    """The sum of `name`'s samples whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and want <= ls)


def names(series: Series) -> set[str]:
    return {n for n, _ in series}


def families(url: str) -> set[str]:
    """Every metric /metrics declares (with no sample yet too) and every sample name."""
    status, body, _ = get(url + "/metrics")
    assert status == 200, body
    out: set[str] = set()
    for family in text_string_to_metric_families(body.decode()):
        out.add(family.name)
        out.update(s.name for s in family.samples)
    return out


def ready(url: str) -> tuple[int, dict[str, Any]]:
    status, body, _ = get(url + "/readyz")
    return status, json.loads(body)
