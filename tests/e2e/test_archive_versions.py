"""Archives written by each manifest version are read back by `--from-archive`: version 1
(results.jsonl holds every result) and version 2 (successes rebuilt from the archived
provider files through the provider's format), alone and mixed in one archive. The
fixtures in tests/data/archives/ were written by the code named in their made.json
(make_archive.py), each beside what `llmbatch results` gave from its store."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from helpers import cli
from llmbatch.archive import from_archive
from llmbatch.errors import ConfigError, LlmbatchError

DATA = Path(__file__).parents[1] / "data" / "archives"
VERSIONS = ("v1", "v2")


def expected(version: str) -> list[bytes]:
    return (DATA / version / "expected.jsonl").read_bytes().splitlines(keepends=True)


def read(root: Path, **kw: str) -> list[bytes]:
    return sorted(from_archive(f"file://{root}", **kw), key=lambda x: json.loads(x)["id"])


@pytest.mark.parametrize("version", VERSIONS)
def test_each_version_reads_back_as_the_store_gave_it(version: str) -> None:
    made = json.loads((DATA / version / "made.json").read_text())
    assert made["manifest_versions"] == [int(version[1:])]
    root = DATA / version / "archive"
    want = expected(version)
    assert read(root) == want and len(want) == 24  # byte for byte
    assert len(read(root, queue="anthropic")) == 8
    failed = [x for x in want if b'"error":null' not in x]
    assert read(root, state="failed") == failed and failed
    whole = sum(len(p.read_bytes().splitlines()) for p in root.rglob("results.jsonl"))
    assert whole == (24 if version == "v1" else len(failed))  # v2: the failures alone


def test_both_versions_in_one_archive(tmp_path: Path) -> None:
    """A worker upgraded mid-way leaves batches of both versions under one URL. (The two
    fixtures' stores named their queues and requests alike: the v2 copy's queues are
    renamed, so each request is one of its own.)"""
    root = tmp_path / "archive"
    for version in VERSIONS:
        shutil.copytree(DATA / version / "archive", root, dirs_exist_ok=True)
    for attempts in (DATA / "v2" / "archive").rglob("attempts.jsonl"):
        renamed = attempts.read_text().replace('"queue":"', '"queue":"v2-')
        (root / attempts.relative_to(DATA / "v2" / "archive")).write_text(renamed)
    want = sorted(expected("v1") + expected("v2"), key=lambda x: json.loads(x)["id"])
    assert read(root) == want and len(want) == 48


@pytest.mark.parametrize("version", VERSIONS)
def test_the_cli_reads_each_version(version: str, tmp_path: Path) -> None:
    out = tmp_path / "back.jsonl"
    root = DATA / version / "archive"
    r = cli("results", "--from-archive", f"file://{root}", "-o", str(out))
    assert r.exit_code == 0, r.output
    got = sorted(out.read_bytes().splitlines(keepends=True), key=lambda x: json.loads(x)["id"])
    assert got == expected(version)


def damaged(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the v2 archive, and the manifest of a batch with successes in output.jsonl."""
    root = tmp_path / "archive"
    shutil.copytree(DATA / "v2" / "archive", root)
    for m in sorted(root.rglob("manifest.json")):
        if json.loads(m.read_text()).get("rebuilt"):
            return root, m
    raise AssertionError("no batch with rebuilt successes")


def test_a_success_missing_from_the_output_file_is_an_error(tmp_path: Path) -> None:
    root, manifest = damaged(tmp_path)
    output = manifest.parent / "output.jsonl"
    output.write_bytes(b"".join(output.read_bytes().splitlines(keepends=True)[1:]))
    with pytest.raises(LlmbatchError, match=r"successes its manifest names; the archive is damag"):
        read(root)


def test_a_newer_manifest_version_says_to_upgrade(tmp_path: Path) -> None:
    root, manifest = damaged(tmp_path)
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "version": 3}))
    with pytest.raises(LlmbatchError, match=r"is version 3, newer than this llmbatch reads \(2\)"):
        read(root)


def test_a_provider_not_installed_is_one_clear_error(tmp_path: Path) -> None:
    root, manifest = damaged(tmp_path)
    m = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**m, "provider": "gone-plugin"}))
    with pytest.raises(ConfigError, match=r"results of provider 'gone-plugin'") as err:
        read(root)
    assert "\n" not in str(err.value)
    r = cli("results", "--from-archive", f"file://{root}")
    assert r.exit_code == 2 and r.output.count("\n") == 1, r.output
