"""`fmnist`: data commands (fetch, sample). Heavy libraries load only inside the command run."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path


def _fetch(args: argparse.Namespace) -> int:
    from fmnist import fetch

    dest = fetch.fetch(args.dest, source_dir=args.source_dir, allow_apt=not args.no_apt,
                       allow_download=not args.no_download)
    print(f"Fashion-MNIST files verified in {dest}")
    return 0


def _sample(args: argparse.Namespace) -> int:
    from fmnist import sample

    written = sample.write_sample(args.source_dir, args.dest, args.train_per_class,
                                  args.test_per_class, args.seed)
    for path in written:
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fmnist", description="Fashion-MNIST TFX project tools")
    commands = parser.add_subparsers(dest="command", required=True)

    fetch = commands.add_parser("fetch", help="get and verify the four official files")
    fetch.add_argument("--dest", type=Path, default=Path("data/raw"))
    fetch.add_argument("--source-dir", type=Path, default=None,
                       help="take the files from this directory instead of the Debian package or the web")
    fetch.add_argument("--no-apt", action="store_true", help="never apt-get install dataset-fashion-mnist")
    fetch.add_argument("--no-download", action="store_true", help="never download from the official URLs")
    fetch.set_defaults(handler=_fetch)

    sample = commands.add_parser("sample", help="write a stratified IDX-gz sample of the full files")
    sample.add_argument("--source-dir", type=Path, required=True)
    sample.add_argument("--dest", type=Path, default=Path("data/sample"))
    sample.add_argument("--train-per-class", type=int, default=100)
    sample.add_argument("--test-per-class", type=int, default=30)
    sample.add_argument("--seed", type=int, default=0)
    sample.set_defaults(handler=_sample)
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (OSError, ValueError, RuntimeError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
