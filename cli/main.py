"""`fmnist`: project commands (fetch, sample, land, feedback, bq-load, watch, report, serve, predict): the
top layer. Heavy libraries load only inside the command that needs them, so `fmnist --help`
answers at once and `fmnist predict` never loads TensorFlow."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from cli import bq_load, feedback, monitor, predictions, release, spans, watch
from fmnist import dataset, features, landing, tf_env
from serving.release.labels import DEFAULT_CONFIG_FILE


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


def _land(args: argparse.Namespace) -> int:
    if (args.source is None) == (args.from_feedback is None):
        raise ValueError("`fmnist land` takes a SOURCE directory or --from-feedback LOGDIR (one of them)")
    if args.from_feedback is not None:
        return feedback.land(args)
    if args.since is not None or args.until is not None:
        raise ValueError("--since/--until select logged requests: they go with --from-feedback")
    number, target, examples = landing.land(args.source, args.landing, args.format, args.span)
    print(f"landed span {number}: {examples:,} examples in {target}")
    return 0


def _report(args: argparse.Namespace) -> int:
    output_dir = args.pipeline_root.resolve().parent
    from tfx_pipeline.config import METADATA_FILE

    metadata = args.metadata or output_dir / METADATA_FILE
    if not metadata.is_file():  # say so before paying for the TF/TFMA import
        raise FileNotFoundError(f"no ML Metadata store at {metadata} (run the pipeline, or pass --metadata)")
    tf_env.configure()
    from reports.evaluation import load_latest
    from reports.html_report import default_report_path, write_report

    out = args.out or default_report_path(output_dir)
    evaluation = load_latest(str(metadata), args.pipeline_name)
    written = write_report(evaluation, out, mistakes=args.mistakes)
    print(f"evaluation report: {written}")
    return 0


def _label(text: str) -> tuple[str, int]:
    name, _, version = text.partition("=")
    if not name or not version.isdigit():
        raise argparse.ArgumentTypeError(f"expected LABEL=VERSION (e.g. stable=1700000000), got {text!r}")
    return name, int(version)


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def _serve(args: argparse.Namespace) -> int:
    tf_env.configure()
    logging.getLogger("serving").setLevel(logging.INFO)
    from serving.server.process import ServerOptions, serve

    for flag, share in (("--canary-traffic", args.canary_traffic), ("--shadow-traffic", args.shadow_traffic)):
        if not 0 <= share <= 100:
            raise ValueError(f"{flag} is a percent within 0..100, got {share:g}")
    for flag, value in (("--log-sampling", args.log_sampling), ("--log-retention-days", args.log_retention_days)):
        if value is not None and args.log_requests is None:
            raise ValueError(f"{flag} needs --log-requests DIR (where the sampled requests go)")
    config_file = args.model_config_file
    if (config_file is None and not args.label and args.model_base_path == Path(ServerOptions.base_path)
            and Path(DEFAULT_CONFIG_FILE).is_file()):
        config_file = Path(DEFAULT_CONFIG_FILE)  # the release `fmnist release` and the local runner write
    serve(ServerOptions(
        model_name=args.model_name, base_path=str(args.model_base_path),
        model_config_file=str(config_file) if config_file else None,
        version_labels=dict(args.label), canary_traffic=args.canary_traffic, shadow_traffic=args.shadow_traffic,
        host=args.host, rest_port=args.rest_port, grpc_port=args.grpc_port,
        poll_seconds=args.poll_seconds, max_batch_size=args.max_batch_size,
        batch_timeout_ms=args.batch_timeout_ms, max_request_bytes=args.max_request_bytes,
        max_request_instances=args.max_request_instances,
        tls_cert_file=str(args.tls_cert) if args.tls_cert else None,
        tls_key_file=str(args.tls_key) if args.tls_key else None,
        use_tf_serving={"auto": None, "yes": True, "no": False}[args.tf_serving],
        log_requests_dir=str(args.log_requests) if args.log_requests else None,
        # Only the request log flags given: the rest keep ServerOptions' defaults.
        **{field: value for field, value in (("log_sampling", args.log_sampling), ("log_max_bytes", args.log_max_bytes),
                                             ("log_max_seconds", args.log_max_seconds),
                                             ("log_retention_days", args.log_retention_days)) if value is not None},
        request_ids=args.request_ids,
    ))
    return 0


def _predict(args: argparse.Namespace) -> int:
    import numpy as np

    from serving.client.clients import ServedPrediction, connect
    from serving.client.inputs import load_inputs

    inputs = load_inputs(args.inputs, args.data_dir)
    unlabelled = [i.name for i in inputs if i.label is None]
    if args.summary_only and unlabelled:
        raise ValueError(f"--summary-only prints the accuracy over labelled inputs (test:I-J), but {unlabelled[0]} "
                         f"has no label ({len(unlabelled)} of {len(inputs)} inputs)")
    client = connect(args.transport, args.server, args.model_name, args.version, args.version_label,
                     ca_file=str(args.tls_ca) if args.tls_ca else None)
    images = [i.image for i in inputs]
    # Requests of at most --batch images, so that the whole test split fits the server's
    # --max-request-instances and --max-request-bytes.
    chunks = [images[start:start + args.batch] for start in range(0, len(images), args.batch)]
    try:
        if args.explain:
            parts = [client.explain(chunk) for chunk in chunks]
            predictions = [part.prediction for part in parts]
            attributions = np.concatenate([part.attributions for part in parts])
        else:
            predictions = [client.predict(chunk) for chunk in chunks]
    finally:
        client.close()
    prediction = ServedPrediction(np.concatenate([p.probabilities for p in predictions]), predictions[-1].version)
    if not args.summary_only:
        width = max(len(i.name) for i in inputs)
        for item, top in zip(inputs, prediction.top(args.top), strict=True):
            ranked = "  ".join(f"{name} {p:.3f}" for name, p in top)
            truth = "" if item.label is None else f"  (true: {features.CLASS_NAMES[item.label]})"
            print(f"{item.name:<{width}}  {ranked}{truth}")
    if not unlabelled:
        # Through the served signature: the independent check of a pushed model's test accuracy
        # (`fmnist predict test:0-9999 --summary-only`).
        labels = np.asarray([i.label for i in inputs])
        correct = int((prediction.class_ids == labels).sum())
        versions = ", ".join(sorted({str(p.version) for p in predictions}))
        signature = features.EXPLAIN_SIGNATURE if args.explain else features.SERVING_DEFAULT
        print(f"accuracy {correct / len(labels):.4f}: {correct:,} of {len(labels):,} labelled inputs, "
              f"model version {versions}, {signature} over {args.transport}")
    if args.explain:
        from fmnist import explain_render

        for position, (item, overlay) in enumerate(zip(inputs, attributions, strict=True)):
            explain_render.write_overlay(args.explain / explain_render.file_name(position, item.name), item.image,
                                         overlay)
        print(f"attribution overlays: {len(inputs)} PNGs in {args.explain}")
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

    land = commands.add_parser("land", help="check new labelled data and land it as the next span")
    land.add_argument("source", type=Path, nargs="?",
                      help="a directory: official train IDX-gz files, the Kaggle train CSV, or one image sub-folder "
                           "per class name (or --from-feedback LOGDIR instead)")
    land.add_argument("--landing", type=Path, default=Path("data/landing"), help="where spans live (span-N/)")
    land.add_argument("--format", choices=landing.SOURCE_KINDS, default=dataset.IDX, help="what the source holds")
    land.add_argument("--span", type=int, default=None, help="span number (default: the next one)")
    feedback.add_land_arguments(land)
    land.set_defaults(handler=_land)
    feedback.add_parser(commands)
    bq_load.add_parser(commands)
    watch.add_parser(commands)
    spans.add_parser(commands)
    release.add_parser(commands)
    monitor.add_parser(commands)
    predictions.add_parser(commands)

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

    serve = commands.add_parser("serve", help="serve pushed models over the TF Serving REST and gRPC APIs")
    serve.add_argument("--model-base-path", type=Path, default=Path("outputs/fashion-mnist/serving_model"),
                       help="the Pusher's directory of numbered versions")
    serve.add_argument("--model-name", default=features.MODEL_NAME)
    serve.add_argument("--model-config-file", type=Path, default=None,
                       help="TF Serving model config (text proto: several models, version policy, labels); "
                            f"re-read when it changes (default: {DEFAULT_CONFIG_FILE} when it exists and neither "
                            "--model-base-path nor --label is given)")
    serve.add_argument("--canary-traffic", type=float, default=0.0, metavar="PERCENT",
                       help="share of requests without version or label sent to the 'canary' label (the rest go "
                            "to 'stable'); this project's server only")
    serve.add_argument("--shadow-traffic", type=float, default=0.0, metavar="PERCENT",
                       help="share of the requests answered by 'stable' (no version or label) also run on the "
                            "'canary' in the background, to compare their answers for `fmnist release analyze`; "
                            "the client gets stable's answer (default 0; this project's server only)")
    serve.add_argument("--label", type=_label, action="append", default=[], metavar="LABEL=VERSION",
                       help="version label, e.g. --label stable=1700000000 --label canary=1700000100")
    serve.add_argument("--host", default="127.0.0.1",
                       help="interface to listen on (default 127.0.0.1: this machine only); "
                            "--host 0.0.0.0 exposes it on every interface")
    serve.add_argument("--rest-port", type=int, default=8501)
    serve.add_argument("--grpc-port", type=int, default=8500)
    serve.add_argument("--poll-seconds", type=float, default=2.0, help="how often the base path is scanned")
    serve.add_argument("--max-batch-size", type=int, default=64)
    serve.add_argument("--batch-timeout-ms", type=float, default=0.0,
                       help="how long a batch waits for more requests (0: take what is queued)")
    serve.add_argument("--max-request-bytes", type=int, default=8 << 20,
                       help="largest REST body / gRPC message (413 / RESOURCE_EXHAUSTED beyond)")
    serve.add_argument("--max-request-instances", type=int, default=1024,
                       help="most instances in one :predict/:classify (400 / INVALID_ARGUMENT beyond)")
    serve.add_argument("--tls-cert", type=Path, default=None,
                       help="PEM certificate chain: REST serves https and gRPC TLS (needs --tls-key); "
                            "tensorflow_model_server gets it for gRPC only")
    serve.add_argument("--tls-key", type=Path, default=None, help="PEM private key of --tls-cert (unencrypted)")
    serve.add_argument("--tf-serving", choices=["auto", "yes", "no"], default="auto",
                       help="run tensorflow_model_server (auto: when it is on PATH)")
    serve.add_argument("--log-requests", type=Path, default=None, metavar="DIR",
                       help="log sampled Predict/Classify requests and responses as PredictionLog TFRecords "
                            "in DIR (this project's server only)")
    serve.add_argument("--log-sampling", type=float, default=None, metavar="SHARE",
                       help="share of requests logged, within 0..1 (default 1.0 with --log-requests)")
    serve.add_argument("--log-max-bytes", type=int, default=None,
                       help="start a new request log file past this size (default 64 MiB)")
    serve.add_argument("--log-max-seconds", type=float, default=None,
                       help="start a new request log file past this age (default 3600)")
    serve.add_argument("--log-retention-days", type=float, default=None, metavar="DAYS",
                       help="delete closed request log files opened more than DAYS ago, at start and at each "
                            "rotation (default 0: keep forever)")
    serve.add_argument("--request-ids", action=argparse.BooleanOptionalAction, default=True,
                       help="answer every :predict/:classify with a request id (X-Request-Id header, x-request-id "
                            "gRPC trailing metadata) and log it; --no-request-ids only to measure their cost "
                            "(this project's server only)")
    serve.set_defaults(handler=_serve)

    predict = commands.add_parser("predict", help="classify images through a running server")
    predict.add_argument("inputs", nargs="+", help="PNG/JPEG files, .npy arrays, or test:I / test:I-J")
    predict.add_argument("--transport", choices=["rest", "grpc"], default="rest")
    predict.add_argument("--server", default=None, help="host:port (default localhost:8501 / :8500)")
    predict.add_argument("--tls-ca", type=Path, default=None,
                         help="PEM CA certificate(s) that signed the server's: REST over https, gRPC over TLS")
    predict.add_argument("--model-name", default=features.MODEL_NAME)
    target = predict.add_mutually_exclusive_group()
    target.add_argument("--version", type=int, default=None)
    target.add_argument("--version-label", default=None)
    predict.add_argument("--data-dir", type=Path, default=Path("data/raw"), help="where test:N inputs come from")
    predict.add_argument("--top", type=int, default=3)
    predict.add_argument("--batch", type=_positive, default=256,
                         help="most images in one request (the server refuses more than its --max-request-instances)")
    predict.add_argument("--summary-only", action="store_true",
                         help="print only the accuracy line (every input labelled: test:I-J) and the overlays line")
    predict.add_argument("--explain", type=Path, default=None, metavar="OUT_DIR",
                         help="also ask the model's `explain` signature and write one PNG per image to OUT_DIR: "
                              "the image in grey, the pixels that raised the predicted class in a heat ramp "
                              "(see fmnist/explain_render.py)")
    predict.set_defaults(handler=_predict)
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
