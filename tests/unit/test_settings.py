"""The typed configuration models (llmbatch.settings): each config table checked by pydantic
against the dataclass it fills, the first thing wrong said in one line; pydantic imported only
when there is a table to check; every default of a settings dataclass in defaults.py; and no
`# fmt: skip` in src/. The config files as a user writes them are in the bad-input corpus
(tests/data/bad_inputs/config/); these are the cases it does not cover."""

from __future__ import annotations

import ast
import dataclasses
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers import cli, line
from llmbatch import defaults
from llmbatch.archive import ArchiveSettings, parse_archive
from llmbatch.errors import ConfigError
from llmbatch.retry import RetryPolicy
from llmbatch.targets import TargetSettings
from llmbatch.tick import EngineSettings
from llmbatch.webhooks import WebhookSettings, parse_webhooks
from llmbatch.worker import engine_settings

SRC = Path(__file__).resolve().parents[2] / "src" / "llmbatch"


@pytest.mark.parametrize(
    ("config", "said"),
    [
        # before: "[engine.retry]: RetryPolicy.__init__() got an unexpected keyword argument"
        (
            {"engine": {"retry": {"max_attempt": 3}}},
            "[engine.retry] has no setting 'max_attempt'; known: base_seconds, jitter, "
            "max_attempts, max_expiries, max_seconds",
        ),
        ({"engine": {"retry": {"jitter": "some"}}}, "[engine.retry] jitter must be a number"),
        ({"engine": {"delete_files": 1}}, "[engine] delete_files must be true or false, got 1"),
        ({"engine": {"ingest_chunk": 5.5}}, "[engine] ingest_chunk must be an integer, got 5.5"),
        ({"engine": {"archived": 3}}, "[engine] archived must be a string, got 3"),
        ({"engine": {"max_batch_requests": True}}, "max_batch_requests must be an integer"),
        # a table of its own is not an [engine] setting
        ({"engine": {"quotas": {}}}, "[engine] has no setting 'quotas'; known: archived, "),
        # the first key in the table's order is the one said
        ({"engine": {"poll_interval": "x", "nope": 1}}, "[engine] poll_interval must be"),
        ({"engine": {"nope": 1, "poll_interval": "x"}}, "[engine] has no setting 'nope'"),
        # what the dataclass checks itself is still said by it
        ({"engine": {"lease_ttl": 0}}, "[engine] lease_ttl must be more than 0, got 0"),
    ],
)
def test_engine_tables_are_checked_by_their_models(config: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        engine_settings(config)
    assert said in str(caught.value)
    assert "\n" not in str(caught.value) and "pydantic" not in str(caught.value)


def test_a_well_typed_engine_table_fills_the_settings() -> None:
    got = engine_settings(
        {"engine": {"poll_interval": 5, "delete_files": False, "retry": {"max_attempts": 7}}}
    )
    assert got.poll_interval == 5 and got.delete_files is False
    assert got.retry == RetryPolicy(max_attempts=7)
    assert got.settle_seconds == defaults.SETTLE_S  # what the table leaves out: the default


@pytest.mark.parametrize(
    ("table", "said"),
    [
        (
            {"url": "file:///tmp/x", "tick_seconds": 0},
            "[archive] tick_seconds must be a number above 0",
        ),
        ({"url": "file:///tmp/x", "part_mb": 2.5}, "[archive] part_mb must be an integer above 0"),
        ({"url": "file:///tmp/x", "timeout": True}, "[archive] timeout must be a number above 0"),
        ({"url": 7}, "[archive] url must be a string"),
        (
            {"url": "file:///tmp/x", "buckets": "b"},
            "[archive] has no setting 'buckets'; known: url",
        ),
    ],
)
def test_archive_table(table: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_archive(table)
    assert str(caught.value).startswith(said)
    assert "got" not in str(caught.value)  # never the value: it may be a secret


@pytest.mark.parametrize(
    ("table", "said"),
    [
        (
            {"url": "http://h/x", "secret_env": "X", "tick_seconds": -1},
            "tick_seconds must be a number above 0",
        ),
        ({"url": "http://h/x", "secret_env": 5}, "[webhooks] secret_env must be a string"),
        ({"url": "http://h/x", "secret": "s"}, "[webhooks] has no setting 'secret'; known: url, "),
    ],
)
def test_webhooks_table(table: dict[str, Any], said: str) -> None:
    with pytest.raises(ConfigError, match=r"^\[webhooks\] ") as caught:
        parse_webhooks(table)
    assert said in str(caught.value) and "got" not in str(caught.value)


def test_any_word_is_a_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys are the models' aliases: one named like a pydantic attribute is just unknown."""
    monkeypatch.chdir(tmp_path)
    for key in ("json", "model_config", "schema", "copy"):
        config = tmp_path / f"{key}.toml"
        config.write_text(f"{key} = 1\n")
        result = cli("--config", str(config), "--db", str(tmp_path / "q.db"), "status")
        assert result.exit_code == 2
        assert f"{config}: unknown key '{key}'; known: busy_timeout" in result.stderr


def test_pydantic_only_when_a_table_is_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A command run without a config file never imports the typed models (and pydantic with
    them): the CLI's start pays for them only when there is a table to check."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMBATCH_CONFIG", raising=False)
    monkeypatch.delitem(sys.modules, "llmbatch.settings", raising=False)
    (tmp_path / "in.jsonl").write_bytes(line("a") + b"\n")
    assert cli("--db", str(tmp_path / "q.db"), "enqueue", "in.jsonl").exit_code == 0
    assert cli("--db", str(tmp_path / "q.db"), "status").exit_code == 0
    assert engine_settings({}) == EngineSettings()
    assert parse_archive(None) is None and parse_webhooks(None) is None
    assert "llmbatch.settings" not in sys.modules
    checked = {
        name
        for path in SRC.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom | ast.Import) and node.col_offset == 0
        for name in (
            [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
        )
        if name in ("llmbatch.settings", "pydantic", "pydantic_core") and path.name != "settings.py"
    }
    assert not checked, (
        "llmbatch.settings and pydantic are imported inside the functions using them"
    )


@pytest.mark.parametrize(
    "cls", [EngineSettings, RetryPolicy, TargetSettings, ArchiveSettings, WebhookSettings]
)
def test_every_default_is_in_defaults(cls: type) -> None:
    """A settings field's default is a name from defaults.py, not a number written in place."""
    tree = ast.parse(Path(sys.modules[cls.__module__].__file__ or "").read_text())
    (body,) = [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef) and n.name == cls.__name__]
    written = {
        node.target.id: ast.unparse(node.value)
        for node in body.body
        if isinstance(node, ast.AnnAssign)
        and isinstance(node.target, ast.Name)
        and node.value
        and not ast.unparse(node.value).startswith(
            ("field(default_factory", "positive(defaults.", "defaults.")
        )
        and ast.unparse(node.value) != "None"
    }
    assert not written, f"{cls.__name__}: defaults written in place: {written}"
    assert {f.name for f in dataclasses.fields(cls)} >= set(written)


def test_no_fmt_skip_in_src() -> None:
    """ruff format owns every line of src/ (tests may still keep a table or a corpus line)."""
    skipped = [
        f"{path.relative_to(SRC)}:{n}"
        for path in SRC.rglob("*.py")
        for n, text in enumerate(path.read_text().splitlines(), 1)
        if "# fmt: skip" in text
    ]
    assert not skipped, skipped


def test_the_command_line_takes_its_defaults_from_defaults() -> None:
    """No number or address written in place as an option's default (a choice's default,
    such as --format text, is one of the choices it lists; 0 as `--after`'s start is none)."""
    written = []
    for path in sorted((SRC / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.keyword) and node.arg == "default":
                value = node.value
                if isinstance(value, ast.UnaryOp):
                    value = value.operand
                if isinstance(value, ast.Constant) and (
                    (type(value.value) in (int, float) and value.value != 0)
                    or str(value.value).count(".") == 3
                ):
                    written.append(f"{path.name}:{node.lineno}: default={value.value!r}")
    assert not written, written
