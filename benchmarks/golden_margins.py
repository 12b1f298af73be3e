"""Where the golden gate's margins sit: golden-set accuracy and per-class recall of each pushed
model against the one pushed before it, with the paired bootstrap spread of each difference.

The golden gate refuses a candidate that loses more than --max-golden-drop of accuracy, or more
than --max-golden-class-drop of any class's recall, against the stable model on the golden set.
A margin below the spread between two equally good models would refuse clean spans; one far
above it would let a labelling error through. This prints, for a finished loop (e.g.
benchmarks/unattended_loop.py's output), each consecutive pair of pushed versions: the accuracy
change, the largest per-class recall drop, and the 95 % paired-bootstrap half-width of each on
the golden set, so the margins can be read against them.

    .venv/bin/python benchmarks/golden_margins.py --output-dir /tmp/fmnist-unattended \
        [--data-dir ../shared/data/fashion-mnist] [--resamples 2000]
"""

from __future__ import annotations

import argparse
import itertools
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
    versions = sorted(Path(config.serving_model_dir).iterdir(), key=lambda p: int(p.name))
    print(f"CPU: {cpu_model()}\n{len(golden.labels):,} golden images; {len(versions)} pushed versions", flush=True)
    correct = {v.name: predict_classes(str(v), golden) == golden.labels for v in versions}
    rng = np.random.default_rng(0)
    draws = rng.integers(0, len(golden.labels), size=(args.resamples, len(golden.labels)))
    table = []
    for before, after in itertools.pairwise(versions):
        old, new = correct[before.name], correct[after.name]
        change = new.mean() - old.mean()
        class_change = recalls(new, golden.labels) - recalls(old, golden.labels)
        worst = int(np.argmin(class_change))
        boot_acc = new[draws].mean(axis=1) - old[draws].mean(axis=1)
        boot_class = [recalls(new[d], golden.labels[d])[worst] - recalls(old[d], golden.labels[d])[worst]
                      for d in draws[:200]]  # per-class: fewer resamples (a loop over classes each)
        table.append([f"{before.name} -> {after.name}", f"{old.mean():.4f} -> {new.mean():.4f}",
                      f"{100 * change:+.2f}", f"±{100 * 1.96 * boot_acc.std():.2f}",
                      f"{100 * class_change[worst]:+.1f} (class {worst})", f"±{100 * 1.96 * np.std(boot_class):.1f}",
                      f"{float(np.mean(old == new)):.4f}"])
    print(markdown_table(["versions", "golden accuracy", "change (pt)", "95 % bootstrap (pt)",
                          "largest class recall drop (pt)", "95 % bootstrap (pt)", "same verdict per image"],
                         table))
    print(f"\nmargins now: accuracy {100 * config.thresholds.max_golden_drop:.1f} pt, class recall "
          f"{100 * config.thresholds.max_golden_class_drop:.1f} pt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
