"""Where the golden gate's margins sit: every candidate a finished loop trained (e.g.
benchmarks/unattended_loop.py's output), scored on the golden set against the stable model it was
judged against (the golden baseline its GoldenEvaluator recorded), with paired-bootstrap spreads.

The golden gate refuses a candidate that loses more than --max-golden-drop of accuracy, or more
than --max-golden-class-drop of any class's recall, against the stable model on the golden set.
A margin below the spread between two equally good models refuses clean spans; one far above it
lets a labelling error through. Per candidate this prints its span, the accuracy change, the
largest per-class recall drop, and the 95 % paired-bootstrap half-width of each (the same images
resampled for both models), so the margins can be read against clean and bad spans side by side;
then what the gate judges: the one-sided upper confidence bound of the paired change
(tfx_pipeline/tfma_metrics.py, at --golden-confidence), overall and for the worst class, and the
verdict those bounds give against the margins.

    .venv/bin/python benchmarks/golden_margins.py --output-dir /tmp/fmnist-unattended \
        [--data-dir ../shared/data/fashion-mnist] [--resamples 2000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from fmnist import tf_env

tf_env.configure()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cpu_model, markdown_table  # noqa: E402

import local_runner  # noqa: E402
from fmnist import dataset, features  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def golden_rows(config) -> np.ndarray:
    from tfx_pipeline.components.raw_example_gen import select_rows
    from tfx_pipeline.config import GOLDEN_SEED

    labels = dataset.read_split(config.data_root, dataset.TEST, config.input_format).labels
    return select_rows(labels, "holdout", config.settings.golden_share_spec, GOLDEN_SEED)


def recalls(correct: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.array([correct[labels == c].mean() for c in range(features.NUM_CLASSES)])


def candidates(config) -> list[tuple[int, str, str]]:
    """(span, candidate SavedModel dir, the stable SavedModel dir it was judged against) for every
    run whose GoldenEvaluator had a baseline, oldest first."""
    from ml_metadata.proto import metadata_store_pb2

    from tfx_pipeline import metadata
    from tfx_pipeline.config import EXAMPLE_GEN_ID, GOLDEN_EVALUATOR_ID

    store = metadata.open_store(config.metadata_path)
    found = []
    for evaluation in metadata.all_outputs(config.metadata_path, config.pipeline_name, GOLDEN_EVALUATOR_ID,
                                           "evaluation"):
        run_id = metadata.producing_run(store, evaluation)
        judged = metadata.latest_execution_outputs(config.metadata_path, config.pipeline_name, GOLDEN_EVALUATOR_ID,
                                                   run_id=run_id)
        inputs = metadata.execution_artifacts(store, judged.execution.id, (metadata_store_pb2.Event.INPUT,))
        if not inputs.get("baseline_model"):
            continue
        gen = metadata.latest_execution_outputs(config.metadata_path, config.pipeline_name, EXAMPLE_GEN_ID,
                                                run_id=run_id)
        span = gen.artifacts["examples"][0].custom_properties["span"].int_value
        found.append((span, f"{inputs['model'][0].uri}/Format-Serving",
                      f"{inputs['baseline_model'][0].uri}/Format-Serving"))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, required=True)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "fashion-mnist")
    parser.add_argument("--resamples", type=int, default=2000)
    args, runner_flags = parser.parse_known_args(argv)
    from modules.inference import predict_classes

    config = local_runner.config_from_args(["--data-dir", str(args.data_dir), "--output-dir", str(args.output_dir),
                                            *runner_flags], environ={})
    test = dataset.read_split(config.data_root, dataset.TEST, config.input_format)
    rows = golden_rows(config)
    golden = dataset.RawSplit(test.images[rows], test.labels[rows], test.source)
    pairs = candidates(config)
    print(f"CPU: {cpu_model()}\n{len(golden.labels):,} golden images; {len(pairs)} candidates judged against a "
          "stable model", flush=True)
    scored: dict[str, np.ndarray] = {}

    def correct(model_dir: str) -> np.ndarray:
        if model_dir not in scored:
            scored[model_dir] = predict_classes(model_dir, golden) == golden.labels
        return scored[model_dir]

    from tfx_pipeline.tfma_metrics import paired_change_upper_bound

    def bound(old: np.ndarray, new: np.ndarray) -> float:
        return paired_change_upper_bound(len(old), float(np.sum(old & ~new)), float(np.sum(new & ~old)),
                                         config.thresholds.golden_confidence)

    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(golden.labels), size=(args.resamples, len(golden.labels)))
    def gate(old: np.ndarray, new: np.ndarray) -> list[str]:
        overall = bound(old, new)
        by_class = [bound(old[golden.labels == c], new[golden.labels == c]) for c in range(features.NUM_CLASSES)]
        worst = int(np.argmin(by_class))
        passed = (overall >= -config.thresholds.max_golden_drop
                  and min(by_class) >= -config.thresholds.max_golden_class_drop)
        return [f"{100 * overall:+.2f}", f"{100 * by_class[worst]:+.1f} (class {worst})",
                "passed" if passed else "failed"]

    table = []
    for span, candidate, baseline in pairs:
        old, new = correct(baseline), correct(candidate)
        change = new.mean() - old.mean()
        class_change = recalls(new, golden.labels) - recalls(old, golden.labels)
        worst = int(np.argmin(class_change))
        boot_acc = new[draws].mean(axis=1) - old[draws].mean(axis=1)
        boot_class = [recalls(new[d], golden.labels[d])[worst] - recalls(old[d], golden.labels[d])[worst]
                      for d in draws[:200]]  # per-class: fewer resamples (a loop over classes each)
        table.append([str(span), f"{old.mean():.4f} -> {new.mean():.4f}",
                      f"{100 * change:+.2f}", f"±{100 * 1.96 * boot_acc.std():.2f}",
                      f"{100 * class_change[worst]:+.1f} (class {worst})", f"±{100 * 1.96 * np.std(boot_class):.1f}",
                      f"{float(np.mean(old == new)):.4f}", *gate(old, new)])
    print(markdown_table(["span", "golden accuracy (stable -> candidate)", "change (pt)", "95 % bootstrap (pt)",
                          "largest class recall drop (pt)", "95 % bootstrap (pt)", "same verdict per image",
                          "gate bound (pt)", "worst class bound (pt)", "gate"],
                         table))
    print(f"\nmargins now: accuracy {100 * config.thresholds.max_golden_drop:.1f} pt, class recall "
          f"{100 * config.thresholds.max_golden_class_drop:.1f} pt, on the paired bound at "
          f"{config.thresholds.golden_confidence:.0%} one-sided confidence")
    return 0


if __name__ == "__main__":
    sys.exit(main())
