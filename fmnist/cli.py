"""`fmnist`: project commands (fetch, sample, report). Heavy libraries load only inside the
command that needs them, so `fmnist --help` answers at once."""

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


def _report(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from reports.html_report import default_report_path, write_report

    output_dir = args.pipeline_root.resolve().parent
    metadata = args.metadata or output_dir / "metadata.sqlite"
    out = args.out or default_report_path(output_dir)
    written = write_report(str(metadata), out, pipeline_name=args.pipeline_name, mistakes=args.mistakes)
    print(f"evaluation report: {written}")
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

    report = commands.add_parser(
        "report", help="write an HTML page of the latest evaluation (found through ML Metadata)")
    report.add_argument("--pipeline-root", type=Path, default=Path("outputs/fashion-mnist/pipeline_root"),
                        help="the local runner's pipeline root (default: outputs/fashion-mnist/pipeline_root)")
    report.add_argument("--metadata", type=Path, default=None,
                        help="ML Metadata SQLite file (default: metadata.sqlite next to the pipeline root)")
    report.add_argument("--pipeline-name", default=None, help="needed only if the store records several")
    report.add_argument("--out", type=Path, default=None,
                        help="HTML file to write (default: reports/evaluation_report.html next to the pipeline root)")
    report.add_argument("--mistakes", type=int, default=32, help="misclassified images to show (0: none)")
    report.set_defaults(handler=_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    # INFO for this project's own messages; the TF/TFMA stack is chatty at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("fmnist").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except (OSError, ValueError, RuntimeError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
