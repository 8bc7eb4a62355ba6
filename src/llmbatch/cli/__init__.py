"""The `llmbatch` command (`main`): the group and its exit-code policy in `app`, the commands
that do the work in `work`, those that look in `read`."""

from llmbatch.cli import read, work
from llmbatch.cli.app import main

__all__ = ["main", "read", "work"]
