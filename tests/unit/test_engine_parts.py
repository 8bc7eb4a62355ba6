"""The engine is composed, not mixed: `Engine` inherits from nothing of ours, each part is a
class that takes its collaborators in `__init__`, and no part reads another's private state
(an attribute with a leading underscore on anything but `self`)."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import llmbatch
from llmbatch.cancelling import Canceller
from llmbatch.closing import Closer
from llmbatch.engine import Engine
from llmbatch.ingest import Ingestor
from llmbatch.lease import Lease
from llmbatch.packer import Groups, Packer
from llmbatch.polling import Poller
from llmbatch.setbacks import Learned, Setbacks
from llmbatch.submitter import Submitter
from llmbatch.sweeper import Sweeper

PARTS = (
    Lease,
    Closer,
    Learned,
    Setbacks,
    Groups,
    Packer,
    Submitter,
    Poller,
    Ingestor,
    Sweeper,
    Canceller,
)
SRC = Path(llmbatch.__file__).parent


def test_the_engine_has_no_mixins() -> None:
    assert Engine.__bases__ == (object,)
    assert all(part.__bases__ == (object,) for part in PARTS)


def test_each_part_takes_its_collaborators_in_init() -> None:
    for part in PARTS:
        params = list(inspect.signature(part.__init__).parameters)[1:]
        assert params, f"{part.__name__} is given nothing to work with"


def test_no_part_reads_another_objects_private_state() -> None:
    modules = {inspect.getsourcefile(p) for p in (*PARTS, Engine)}
    for path in sorted(m for m in modules if m):
        tree = ast.parse(Path(path).read_text(), path)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
            ):
                where = f"{Path(path).relative_to(SRC)}:{node.lineno}"
                raise AssertionError(f"{where}: reads .{node.attr} of another object")
