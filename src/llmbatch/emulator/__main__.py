"""`python -m llmbatch.emulator [--host H] [--port N] [--data-dir D] [--time-scale X]
[--models FILE]`."""

from __future__ import annotations

import argparse

from llmbatch.emulator.server import serve
from llmbatch.errors import ConfigError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llmbatch.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="repeatable ids and output order")
    parser.add_argument("--models", default=None, metavar="FILE", help="models to add")
    args = parser.parse_args(argv)
    try:
        serve(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            time_scale=args.time_scale,
            seed=args.seed,
            models_file=args.models,
        )
    except ConfigError as e:
        parser.exit(2, f"python -m llmbatch.emulator: {e}\n")


if __name__ == "__main__":
    main()
