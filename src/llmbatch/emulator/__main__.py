"""`python -m llmbatch.emulator [--host H] [--port N] [--data-dir D] [--time-scale X]
[--models FILE]`."""

from __future__ import annotations

import argparse

from llmbatch import defaults
from llmbatch.emulator.server import serve
from llmbatch.errors import ConfigError


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llmbatch.emulator", description=__doc__)
    parser.add_argument("--host", default=defaults.HOST)
    parser.add_argument("--port", type=int, default=defaults.EMULATOR_PORT)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="repeatable ids and output order")
    parser.add_argument("--models", default=None, metavar="FILE", help="models to add")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port {args.port}: must be 0-65535 (0: any free port)")
    if args.time_scale < 0:
        parser.error(f"--time-scale {args.time_scale}: must be 0 (frozen) or more")
    try:
        serve(
            host=args.host,
            port=args.port,
            data_dir=args.data_dir,
            time_scale=args.time_scale,
            seed=args.seed,
            models_file=args.models,
        )
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
