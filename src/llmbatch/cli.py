"""The `llmbatch` command: parse, call the library, print. No logic of its own."""

from __future__ import annotations

import click


@click.group()
@click.option("--debug", is_flag=True, envvar="LLMBATCH_DEBUG", help="Show tracebacks.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """Run LLM requests through the providers' batch APIs at half price."""
    ctx.obj = {"debug": debug}


@main.command()
@click.option("--host", default="127.0.0.1", envvar="LLMBATCH_EMULATOR_HOST", show_default=True)
@click.option("--port", default=8000, type=int, envvar="LLMBATCH_EMULATOR_PORT", show_default=True)
@click.option("--data-dir", type=click.Path(file_okay=False), envvar="LLMBATCH_EMULATOR_DATA_DIR")
@click.option("--time-scale", default=1.0, type=float, envvar="LLMBATCH_EMULATOR_TIME_SCALE")
def emulator(host: str, port: int, data_dir: str | None, time_scale: float) -> None:
    """Serve a local emulator of the OpenAI and Azure OpenAI Files and Batch APIs."""
    from llmbatch.emulator import serve

    serve(host=host, port=port, data_dir=data_dir, time_scale=time_scale)
