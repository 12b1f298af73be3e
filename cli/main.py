"""`fmnist`: the project's commands (`fmnist --help` lists them by group): the top layer. Every
command declares its settings once (fmnist.settings: flag, FMNIST_<COMMAND>_* variable, --config
YAML key). Heavy libraries load only inside the command that needs them, so `fmnist --help`
answers at once and `fmnist predict` never loads TensorFlow."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from cli import bq_load, feedback, monitor, predictions, release, spans, watch
from cli.commands import EPILOG, CommandSettings, MetadataSettings, command, grouped_commands, settings_handler
from fmnist import dataset, features, landing, paths, settings, tf_env
from fmnist.landing import SOURCE_KINDS
from fmnist.settings import setting
from serving.server.process import ServerOptions


@dataclass(frozen=True)
class FetchSettings(CommandSettings):
    ENV_SCOPE: ClassVar[str] = "FETCH_"

    dest: Path = setting(paths.DATA_DIR, "where the verified files go")
    source_dir: Path | None = setting(None, "take the files from this directory instead of the Debian package or "
                                            "the web")
    no_apt: bool = setting(False, "never apt-get install dataset-fashion-mnist")
    no_download: bool = setting(False, "never download from the official URLs")


@dataclass(frozen=True)
class SampleSettings(CommandSettings):
    ENV_SCOPE: ClassVar[str] = "SAMPLE_"

    source_dir: Path | None = setting(None, "the full official files (`fmnist fetch`)", required=True)
    dest: Path = setting(paths.SAMPLE_DIR, "where the sample goes (the committed one is data/sample)")
    train_per_class: int = setting(100, "train images drawn per class")
    test_per_class: int = setting(30, "test images drawn per class")
    seed: int = setting(0, "seed of the stratified draw")


@dataclass(frozen=True)
class LandSettings(CommandSettings):
    ENV_SCOPE: ClassVar[str] = "LAND_"

    landing: Path = setting(paths.LANDING_DIR, "where spans live (span-N/)")
    format: str = setting(dataset.IDX, "what the source holds", choices=SOURCE_KINDS)
    span: int | None = setting(None, "span number (default: the next one)")
    from_feedback: Path | None = setting(None, "land the logged images of this request log directory whose labels "
                                               "came back (`fmnist feedback`) instead of a source directory")
    since: str | None = setting(None, "with --from-feedback: requests logged at or after this time (ISO 8601 or "
                                      "epoch seconds)")
    until: str | None = setting(None, "with --from-feedback: requests logged before this time")


@dataclass(frozen=True)
class ReportSettings(MetadataSettings):
    ENV_SCOPE: ClassVar[str] = "REPORT_"

    out: Path | None = setting(None, "HTML file to write (default: reports/evaluation_report.html beside the "
                                     "pipeline root)")
    mistakes: int = setting(32, "misclassified images to show (0: none)")


@dataclass(frozen=True)
class ServeFile(CommandSettings):
    """`fmnist serve`'s --config file; its settings are serving.server.ServerOptions."""

    ENV_SCOPE: ClassVar[str] = "SERVE_"


PREDICT_TRANSPORTS = ("rest", "grpc")


@dataclass(frozen=True)
class PredictSettings(CommandSettings):
    ENV_SCOPE: ClassVar[str] = "PREDICT_"

    transport: str = setting("rest", "protocol to the server", choices=PREDICT_TRANSPORTS)
    server: str | None = setting(None, "HOST:PORT (default: localhost:8501 for REST, :8500 for gRPC)")
    tls_ca: Path | None = setting(None, "PEM CA certificate(s) that signed the server's: REST over https, gRPC "
                                        "over TLS")
    model_name: str = setting(features.MODEL_NAME, "the served model")
    version: int | None = setting(None, "ask this version (default: what the server routes to)")
    version_label: str | None = setting(None, "ask the version with this label (not with --version)")
    data_dir: Path = setting(paths.DATA_DIR, "where test:N inputs come from")
    top: int = setting(3, "classes printed per image")
    batch: int = setting(256, "most images in one request (the server refuses more than its "
                              "--max-request-instances)")
    summary_only: bool = setting(False, "print only the accuracy line (every input labelled: test:I-J) and the "
                                        "overlays line")
    explain: Path | None = setting(None, "also ask the model's `explain` signature and write one PNG per image to "
                                         "this directory: the image in grey, the pixels that raised the predicted "
                                         "class in a heat ramp (fmnist/explain_render.py)")


def _fetch(values: settings.Values, args: argparse.Namespace) -> int:
    from fmnist import fetch

    options: FetchSettings = values.build(FetchSettings)
    dest = fetch.fetch(options.dest, source_dir=options.source_dir, allow_apt=not options.no_apt,
                       allow_download=not options.no_download)
    print(f"Fashion-MNIST files verified in {dest}")
    return 0


def _sample(values: settings.Values, args: argparse.Namespace) -> int:
    from fmnist import sample

    options: SampleSettings = values.build(SampleSettings)
    written = sample.write_sample(options.source_dir, options.dest, options.train_per_class,
                                  options.test_per_class, options.seed)
    for path in written:
        print(path)
    return 0


def _land(values: settings.Values, args: argparse.Namespace) -> int:
    options: LandSettings = values.build(LandSettings)
    if (args.source is None) == (options.from_feedback is None):
        raise ValueError("`fmnist land` takes a SOURCE directory or --from-feedback LOGDIR (one of them)")
    if options.from_feedback is not None:
        return feedback.land(options.from_feedback, options.landing, options.since, options.until, options.span)
    if options.since is not None or options.until is not None:
        raise ValueError("--since/--until select logged requests: they go with --from-feedback")
    number, target, examples = landing.land(args.source, options.landing, options.format, options.span)
    print(f"landed span {number}: {examples:,} examples in {target}")
    return 0


def _report(values: settings.Values, args: argparse.Namespace) -> int:
    options: ReportSettings = values.build(ReportSettings)
    output_dir = options.pipeline_root.resolve().parent
    metadata = options.metadata_file()
    if not metadata.is_file():  # say so before paying for the TF/TFMA import
        raise FileNotFoundError(f"no ML Metadata store at {metadata} (run the pipeline, or pass --metadata)")
    tf_env.configure()
    from reports.evaluation import load_latest
    from reports.html_report import default_report_path, write_report

    out = options.out or default_report_path(output_dir)
    evaluation = load_latest(str(metadata), options.pipeline_name)
    written = write_report(evaluation, out, mistakes=options.mistakes)
    print(f"evaluation report: {written}")
    return 0


def _label(text: str) -> tuple[str, int]:
    name, _, version = text.partition("=")
    if not name or not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected LABEL=VERSION (e.g. stable=1700000000), got {text!r}")
    return name, int(version)


def serve_options(values: settings.Values, labels: dict[str, int]) -> ServerOptions:
    """The ServerOptions of resolved `fmnist serve` settings and its --label flags. ValueError
    (one line) for a share outside 0..100 or a request-log setting without --log-requests. The
    release file is served when it exists and neither --model-base-path nor --label says otherwise."""
    options: ServerOptions = values.build(ServerOptions, version_labels=labels)
    for name in ("canary_traffic", "shadow_traffic"):
        if not 0 <= getattr(options, name) <= 100:
            raise ValueError(f"--{name.replace('_', '-')} is a percent within 0..100, got {getattr(options, name):g}")
    for name in ("log_sampling", "log_retention_days", "log_max_bytes", "log_max_seconds"):
        if name in values.given and options.log_requests_dir is None:
            raise ValueError(f"--{name.replace('_', '-')} needs --log-requests DIR (where the sampled requests go)")
    changes = {}
    if "model_base_path" not in values.given:  # the default, found from any directory
        changes["base_path"] = str(paths.anchored(options.base_path))
        release_file = paths.anchored(paths.DEFAULT_MODELS_CONFIG)
        if options.model_config_file is None and not labels and release_file.is_file():
            changes["model_config_file"] = str(release_file)  # what `fmnist release` and the local runner write
    return dataclasses.replace(options, **changes)


def _serve(values: settings.Values, args: argparse.Namespace) -> int:
    options = serve_options(values, dict(args.label))
    tf_env.configure()
    logging.getLogger("serving").setLevel(logging.INFO)
    from serving.server.process import serve

    serve(options)
    return 0


def _predict(values: settings.Values, args: argparse.Namespace) -> int:
    options: PredictSettings = values.build(PredictSettings)
    if options.version is not None and options.version_label is not None:
        raise settings.SettingsError("--version and --version-label both name a version: give one of them")
    if options.batch < 1:
        raise settings.SettingsError(f"--batch: expected a whole number >= 1, got '{options.batch}'")
    import numpy as np

    from serving.client.clients import ServedPrediction, connect
    from serving.client.inputs import load_inputs

    inputs = load_inputs(args.inputs, options.data_dir)
    unlabelled = [i.name for i in inputs if i.label is None]
    if options.summary_only and unlabelled:
        raise ValueError(f"--summary-only prints the accuracy over labelled inputs (test:I-J), but {unlabelled[0]} "
                         f"has no label ({len(unlabelled)} of {len(inputs)} inputs)")
    client = connect(options.transport, options.server, options.model_name, options.version, options.version_label,
                     ca_file=str(options.tls_ca) if options.tls_ca else None)
    images = [i.image for i in inputs]
    # Requests of at most --batch images, so that the whole test split fits the server's
    # --max-request-instances and --max-request-bytes.
    chunks = [images[start:start + options.batch] for start in range(0, len(images), options.batch)]
    try:
        if options.explain:
            parts = [client.explain(chunk) for chunk in chunks]
            predictions = [part.prediction for part in parts]
            attributions = np.concatenate([part.attributions for part in parts])
        else:
            predictions = [client.predict(chunk) for chunk in chunks]
    finally:
        client.close()
    prediction = ServedPrediction(np.concatenate([p.probabilities for p in predictions]), predictions[-1].version)
    if not options.summary_only:
        width = max(len(i.name) for i in inputs)
        for item, top in zip(inputs, prediction.top(options.top), strict=True):
            ranked = "  ".join(f"{name} {p:.3f}" for name, p in top)
            truth = "" if item.label is None else f"  (true: {features.CLASS_NAMES[item.label]})"
            print(f"{item.name:<{width}}  {ranked}{truth}")
    if not unlabelled:
        # Through the served signature: the independent check of a pushed model's test accuracy
        # (`fmnist predict test:0-9999 --summary-only`).
        labels = np.asarray([i.label for i in inputs])
        correct = int((prediction.class_ids == labels).sum())
        versions = ", ".join(sorted({str(p.version) for p in predictions}))
        signature = features.EXPLAIN_SIGNATURE if options.explain else features.SERVING_DEFAULT
        print(f"accuracy {correct / len(labels):.4f}: {correct:,} of {len(labels):,} labelled inputs, "
              f"model version {versions}, {signature} over {options.transport}")
    if options.explain:
        from fmnist import explain_render

        for position, (item, overlay) in enumerate(zip(inputs, attributions, strict=True)):
            explain_render.write_overlay(options.explain / explain_render.file_name(position, item.name), item.image,
                                         overlay)
        print(f"attribution overlays: {len(inputs)} PNGs in {options.explain}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """`fmnist` and its subcommands, grouped in `fmnist --help` (cli.commands.GROUPS)."""
    parser = argparse.ArgumentParser(prog="fmnist", description="Fashion-MNIST TFX project tools.", epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", help=argparse.SUPPRESS)

    fetch = command(commands, "fetch", "get and verify the four official files",
                    "From --source-dir, else the Debian package, else the official URLs; every file's checksum "
                    "is verified.")
    settings.add_arguments(fetch, FetchSettings)
    fetch.set_defaults(handler=settings_handler((FetchSettings,), _fetch))

    land = command(commands, "land", "check new labelled data and land it as the next span",
                   "The span lands whole or not at all in --landing/span-N, where `fmnist watch` and the runners "
                   "look.")
    land.add_argument("source", type=Path, nargs="?",
                      help="a directory: official train IDX-gz files, the Kaggle train CSV, or one image sub-folder "
                           "per class name (or --from-feedback LOGDIR instead)")
    settings.add_arguments(land, LandSettings)
    land.set_defaults(handler=settings_handler((LandSettings,), _land))
    feedback.add_parser(commands)
    bq_load.add_parser(commands)
    watch.add_parser(commands)
    spans.add_parser(commands)

    report = command(commands, "report", "write an HTML page of the latest evaluation (found through ML Metadata)")
    settings.add_arguments(report, ReportSettings)
    report.set_defaults(handler=settings_handler((ReportSettings,), _report))
    predictions.add_parser(commands)

    serve = command(commands, "serve", "serve pushed models over the TF Serving REST and gRPC APIs",
                    "tensorflow_model_server when it is on PATH (or --tf-serving yes), else this project's server, "
                    "which speaks the same APIs.")
    serve.add_argument("--label", type=_label, action="append", default=[], metavar="LABEL=VERSION",
                       help="version label, repeatable: --label stable=1700000000 --label canary=1700000100 "
                            "(flag only)")
    settings.add_arguments(serve, ServeFile, ServerOptions)
    serve.set_defaults(handler=settings_handler((ServeFile, ServerOptions), _serve))

    predict = command(commands, "predict", "classify images through a running `fmnist serve`",
                      "Prints the top classes of each input, and the accuracy when every input is labelled "
                      "(`fmnist predict test:0-9999 --summary-only`).")
    predict.add_argument("inputs", nargs="+", help="PNG/JPEG files, .npy arrays, or test:I / test:I-J")
    settings.add_arguments(predict, PredictSettings)
    predict.set_defaults(handler=settings_handler((PredictSettings,), _predict))
    release.add_parser(commands)
    monitor.add_parser(commands)

    sample = command(commands, "sample", "write a stratified IDX-gz sample of the full files (maintainers: the "
                                         "committed data/sample)")
    settings.add_arguments(sample, SampleSettings)
    sample.set_defaults(handler=settings_handler((SampleSettings,), _sample))
    parser.description += "\n\n" + grouped_commands(commands)
    # Set last: the subcommands' usage lines start with the usage the parser had when they were added.
    parser.usage = "fmnist [-h] COMMAND ..."
    return parser


def resolved(argv: list[str], environ: Mapping[str, str] | None = None) -> tuple[argparse.Namespace, settings.Values]:
    """The parsed `fmnist ARGV` and its command's settings resolved as the command would (flags,
    then `environ`'s FMNIST_* variables, then its --config file). SettingsError when one is bad."""
    args = build_parser().parse_args(argv)
    return args, args.handler.resolve(args, environ)


def main(argv: list[str] | None = None) -> int:
    # INFO for this project's own messages; the TF/TFMA stack is chatty at INFO.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("fmnist").setLevel(logging.INFO)
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except dataset.DatasetError as err:  # bad input data (a span to land, images to predict): exit 2
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, ValueError, RuntimeError, LookupError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1


def run() -> int:
    """The `fmnist` program (its console script and `python -m cli.main`): main() on sys.argv, in
    a process that ends with it."""
    tf_env.freeze_heap_at_exit()
    return main()


if __name__ == "__main__":
    sys.exit(run())
