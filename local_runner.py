"""Runs the Fashion-MNIST pipeline on this machine: LocalDagRunner, SQLite ML Metadata,
Beam DirectRunner, local disk.

    python local_runner.py                     # full data in data/raw (see `fmnist fetch`)
    python local_runner.py --sample            # the committed 1,300-image sample, minutes
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
import warnings
from pathlib import Path

from tfx_pipeline.config import PIPELINE_NAME, EvaluationThresholds, PipelineConfig, TuningConfig

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # TFX/TFT/TFMA are Keras 2; before TF loads
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# google-api-core warns at import about Python 3.11's end of life in 2027: noise for this CLI.
warnings.filterwarnings("ignore", category=FutureWarning, module="google.api_core")
# TFMA divides 0 by 0 for one-vs-rest metrics of classes absent from a per-class slice (NaN is
# the right answer there).
warnings.filterwarnings("ignore", category=RuntimeWarning, module="tensorflow_model_analysis.metrics")

REPO = Path(__file__).resolve().parent
SAMPLE_DIR = REPO / "data" / "sample"
# The committed sample is 1,000 train + 300 test images: a smaller hold-out, a short training
# run and floors that a model trained on 800 images clears.
SAMPLE_OVERRIDES = dict(
    eval_holdout_size=200,
    hparams={"epochs": 15, "batch_size": 32, "augment": False},
    min_accuracy=0.7,
    min_class_recall=0.3,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "raw",
                        help="directory with the raw files (default: data/raw; data/sample with --sample)")
    parser.add_argument("--sample", action="store_true", help="run on the committed sample with sample defaults")
    parser.add_argument("--format", choices=["idx", "csv"], default="idx", help="raw file format")
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs",
                        help="pipeline root, metadata, logs and serving_model/ go here")
    parser.add_argument("--pipeline-name", default=None)
    parser.add_argument("--eval-holdout-size", type=int, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="training epochs (default: tuned value)")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--max-train-steps", type=int, default=None, help="cap training steps (smoke runs)")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--beam-workers", type=int, default=1,
                        help="Beam DirectRunner parallelism (>1 uses multi-processing mode)")
    parser.add_argument("--min-accuracy", type=float, default=None, help="blessing floor, overall")
    parser.add_argument("--min-class-recall", type=float, default=None, help="blessing floor, per class")
    parser.add_argument("--max-accuracy-drop", type=float, default=None, help="vs last blessed model")
    parser.add_argument("--no-cache", action="store_true", help="re-run every component")
    parser.add_argument("--tune", action="store_true", help="add the Tuner; its best values feed the Trainer")
    parser.add_argument("--tuning-trials", type=int, default=TuningConfig.trials)
    parser.add_argument("--tuning-epochs", type=int, default=TuningConfig.epochs)
    parser.add_argument("--tuning-train-examples", type=int, default=TuningConfig.train_examples)
    return parser.parse_args(argv)


def beam_args(workers: int) -> tuple[str, ...]:
    if workers > 1:
        return ("--direct_running_mode=multi_processing", f"--direct_num_workers={workers}")
    return ("--direct_running_mode=in_memory", "--direct_num_workers=1")


def build_config(args: argparse.Namespace) -> PipelineConfig:
    defaults = SAMPLE_OVERRIDES if args.sample else {}
    data_dir = SAMPLE_DIR if args.sample and args.data_dir == REPO / "data" / "raw" else args.data_dir

    def pick(flag, key, fallback):
        return flag if flag is not None else defaults.get(key, fallback)

    base_thresholds = EvaluationThresholds()
    hparams = dict(defaults.get("hparams", {}))
    if args.epochs is not None:
        hparams["epochs"] = args.epochs
    if args.batch_size is not None:
        hparams["batch_size"] = args.batch_size
    name = args.pipeline_name or (f"{PIPELINE_NAME}-sample" if args.sample else PIPELINE_NAME)
    output = args.output_dir.resolve()
    return PipelineConfig(
        pipeline_name=name,
        pipeline_root=str(output / name / "pipeline_root"),
        metadata_path=str(output / name / "metadata.sqlite"),
        serving_model_dir=str(output / name / "serving_model"),
        data_root=str(data_dir.resolve()),
        input_format=args.format,
        eval_holdout_size=pick(args.eval_holdout_size, "eval_holdout_size", 5000),
        seed=args.seed,
        hparams=hparams,
        max_train_steps=args.max_train_steps,
        thresholds=EvaluationThresholds(
            min_accuracy=pick(args.min_accuracy, "min_accuracy", base_thresholds.min_accuracy),
            min_class_recall=pick(args.min_class_recall, "min_class_recall", base_thresholds.min_class_recall),
            max_accuracy_drop=pick(args.max_accuracy_drop, "max_accuracy_drop", base_thresholds.max_accuracy_drop),
        ),
        tuning=TuningConfig(enabled=args.tune, trials=args.tuning_trials, epochs=args.tuning_epochs,
                            train_examples=args.tuning_train_examples),
        beam_pipeline_args=beam_args(args.beam_workers),
        enable_cache=not args.no_cache,
    )


def run(config: PipelineConfig) -> None:
    """Runs the pipeline with LocalDagRunner and SQLite ML Metadata; raises if a component fails."""
    from tfx import v1 as tfx

    from tfx_pipeline import progress
    from tfx_pipeline.pipeline import create_components, create_pipeline

    log_dir = Path(config.pipeline_root).parent / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    components = create_components(config)
    progress.attach(total=len(components), log_file=str(log_dir / "pipeline.log"))
    print(f"pipeline {config.pipeline_name}: data {config.data_root} ({config.input_format}), "
          f"output {Path(config.pipeline_root).parent}", flush=True)
    tfx.orchestration.LocalDagRunner().run(create_pipeline(
        config,
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
            config.metadata_path),
        components=components,
    ))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = build_config(args)
    started = time.perf_counter()
    run(config)
    elapsed = time.perf_counter() - started

    from tfx_pipeline import run_summary

    print()
    print(run_summary.format_table(run_summary.component_runs(config.metadata_path, config.pipeline_name)))
    pushed = run_summary.latest_pushed_model(config.serving_model_dir)
    print(f"\nwall time {elapsed:.1f}s; peak memory {peak_memory_mib():.0f} MiB (largest process)")
    if pushed:
        accuracy = run_summary.pushed_model_accuracy(pushed, config.data_root, config.input_format)
        print(f"pushed model: {pushed}\ntest-split accuracy of the pushed model: {accuracy:.4f}")
    else:
        print("no model was pushed (not blessed); see the evaluation report")
    print_evaluation(config)
    return 0


def print_evaluation(config: PipelineConfig) -> None:
    """The blessing decision with each rule, and the HTML report written for it."""
    from reports.evaluation import EvaluationNotFoundError, load_latest
    from reports.html_report import default_report_path, write_report

    try:
        evaluation = load_latest(config.metadata_path, config.pipeline_name)
    except EvaluationNotFoundError as missing:
        print(f"no evaluation to report: {missing}")
        return
    judged = evaluation.judged
    print(f"\nEvaluator on the {judged.split} split: {evaluation.verdict}")
    for check in judged.checks:
        print(f"  {'pass' if check.passed else 'FAIL'}  {check.rule} on {check.slice}: "
              f"{check.value:.4f} (needs {check.bound})")
    report = write_report(evaluation, default_report_path(Path(config.pipeline_root).parent))
    print(f"evaluation report: {report}")


def peak_memory_mib() -> float:
    usage = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return usage / 1024


if __name__ == "__main__":
    sys.exit(main())
