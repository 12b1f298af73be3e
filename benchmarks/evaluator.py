"""Where the Evaluator's time goes: TFMA on one split of a finished pipeline run, with the
project's EvalConfig and with parts of it removed, same model, same DirectRunner, in one run.

    .venv/bin/python benchmarks/evaluator.py                       # outputs/fashion-mnist, eval split
    .venv/bin/python benchmarks/evaluator.py --split test --repeats 3
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from fmnist import dataset, tf_env

tf_env.configure()
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tfx_pipeline import eval_config, metadata  # noqa: E402

AUC_FEWER_THRESHOLDS = 1000  # TFMA's default is 10,000


def variant(base, drop: tuple[str, ...] = (), auc_thresholds: int | None = None, overall_only: bool = False):
    """A copy of `base` without the metric classes in `drop` (and without specs left empty)."""
    config = copy.deepcopy(base)
    specs = []
    for spec in config.metrics_specs:
        kept = [m for m in spec.metrics if m.class_name not in drop]
        for metric in kept:
            if metric.class_name == "AUC" and auc_thresholds:
                metric.config = json.dumps({"num_thresholds": auc_thresholds})
        del spec.metrics[:]
        spec.metrics.extend(kept)
        if kept:
            specs.append(copy.deepcopy(spec))
    del config.metrics_specs[:]
    config.metrics_specs.extend(specs)
    if overall_only:
        del config.slicing_specs[1:]
    return config


def variants() -> dict:
    base = eval_config.create_eval_config(None)
    return {
        "project EvalConfig (all metrics, overall + 10 class slices)": base,
        "without AUC": variant(base, drop=("AUC",)),
        f"AUC with {AUC_FEWER_THRESHOLDS:,} thresholds": variant(base, auc_thresholds=AUC_FEWER_THRESHOLDS),
        "overall slice only": variant(base, overall_only=True),
        "example count + accuracy only": variant(base, drop=(
            "AUC", "Precision", "Recall", "MacroAverage", eval_config.CONFUSION_MATRIX_PLOT,
            "SparseCategoricalCrossentropy")),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "fashion-mnist",
                        help="a local run's output directory (metadata.sqlite inside)")
    parser.add_argument("--split", default=dataset.EVAL)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    import tensorflow_model_analysis as tfma

    store = str(args.output_dir / "metadata.sqlite")
    if not os.path.exists(store):
        print(f"no pipeline run under {args.output_dir}: run `make run` first", file=sys.stderr)
        return 2
    name = metadata.only_pipeline_name(store)
    (model,) = metadata.latest_outputs(store, name, "Trainer", "model")
    (examples,) = metadata.latest_outputs(store, name, "FileBasedExampleGen", "examples")
    data = f"{examples.uri}/Split-{args.split}/*"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, config in variants().items():
            seconds = []
            for repeat in range(args.repeats):
                started = time.perf_counter()
                tfma.run_model_analysis(
                    eval_shared_model=tfma.default_eval_shared_model(
                        eval_saved_model_path=f"{model.uri}/Format-Serving", eval_config=config),
                    eval_config=config, data_location=data, file_format="tfrecords",
                    output_path=f"{scratch}/{len(rows)}-{repeat}")
                seconds.append(time.perf_counter() - started)
            rows.append((label, seconds))
            print(f"  {label}: {statistics.median(seconds):.1f} s", flush=True)

    print(f"\nTFMA on split '{args.split}' of {args.output_dir}, DirectRunner, {os.cpu_count()} CPUs, "
          f"median of {args.repeats}\n")
    print("| EvalConfig | median s | min s | max s | vs project config |")
    print("| --- | ---: | ---: | ---: | ---: |")
    reference = statistics.median(rows[0][1])
    for label, seconds in rows:
        median = statistics.median(seconds)
        print(f"| {label} | {median:.1f} | {min(seconds):.1f} | {max(seconds):.1f} | {median / reference:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
