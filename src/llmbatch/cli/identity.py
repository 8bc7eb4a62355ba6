"""`llmbatch store`: say what happened to a store found away from its home (identity.py).

`status` says when one is pending: the store was opened somewhere other than where it was
made, with work in flight, and touches nothing made before until told `new-identity` (it is
a copy: the original keeps that work) or `keep-identity` (it was moved or restored).
"""

from __future__ import annotations

import time

import click

from llmbatch.cli.app import main, open_db


@main.group(short_help="A copied or moved store: new-identity or keep-identity.")
def store() -> None:
    """A store opened away from where it was made, with work in flight, waits for you to say
    whether it is a copy (`new-identity`) or was moved or restored (`keep-identity`)."""


@store.command("new-identity")
@click.pass_context
def new_identity(ctx: click.Context) -> None:
    """This store is a copy: the batches in flight before the copy are the original's. Their
    requests are queued again here (uncharged); nothing at the provider is touched."""
    from llmbatch import identity

    click.echo(identity.new_identity(open_db(ctx), time.time()))


@store.command("keep-identity")
@click.pass_context
def keep_identity(ctx: click.Context) -> None:
    """This store was moved or restored (the original is gone): its batches carry on here."""
    from llmbatch import identity

    click.echo(identity.keep_identity(open_db(ctx), time.time()))
