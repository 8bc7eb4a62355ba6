"""The `llmbatch` command (`main`): the group and its exit-code policy in `app`, the commands
that do the work in `work`, those that look in `read`, the store's budgets in `budget`, a
copied or moved store in `identity`."""

from llmbatch.cli import budget, identity, read, work
from llmbatch.cli.app import main

__all__ = ["budget", "identity", "main", "read", "work"]
