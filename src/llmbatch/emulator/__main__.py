"""`python -m llmbatch.emulator [--host H] [--port N] [--data-dir D] [--time-scale X]`."""

from __future__ import annotations

import argparse

from llmbatch.emulator.server import serve


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m llmbatch.emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--time-scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None, help="repeatable ids and output order")
    args = parser.parse_args(argv)
    serve(args.host, args.port, args.data_dir, args.time_scale, seed=args.seed)


if __name__ == "__main__":
    main()
