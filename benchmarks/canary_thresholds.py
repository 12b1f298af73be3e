"""Where the canary analysis' quality thresholds should sit: agreement and predicted-class
Jensen-Shannon divergence between a stable model and canaries that should pass or fail, on the
official test split, the way `fmnist release analyze` computes them (serving/release/canary_analysis.py).

    .venv/bin/python benchmarks/canary_thresholds.py --data-dir /path/to/fashion-mnist [--epochs 4]

The official train split is cut into 20,000-image spans as the continuous-training loop sees them.
The project's CNN (modules.trainer.fit, tuned hyperparameters, `--epochs` each) is trained on:

- stable: span 1;
- clean canary: spans 1+2 (the next model of a clean loop);
- swapped canary: spans 1+2 with span 2's labels of pullover (2) and coat (4) swapped (the
  labelling error of issue #23: neither the pixel nor the label distribution moves);
- class-3-missing canary: spans 1+2 without dresses (3) (a class dropped upstream: the
  predicted-class distribution moves).

Each canary is compared with stable on the 10,000 test images and, as a bake would see them, on
`--bake-size` random test images drawn `--draws` times (the 5th percentile of agreement and the 95th
of the divergence over the draws: what a threshold must clear for a clean canary to pass a bake).
Pixels are standardised with the train split's mean and deviation, as the Transform does.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import cpu_model, markdown_table  # noqa: E402

from fmnist import dataset, features  # noqa: E402

SPAN = 20_000
SWAPPED = (2, 4)  # pullover <-> coat
MISSING = 3  # dress


def train(images: np.ndarray, labels: np.ndarray, evaluation, epochs: int, seed: int):
    from modules import data, trainer
    from modules.model import HParams

    split = data.Split(images=images, labels=labels.astype(np.int64))
    return trainer.fit(HParams.tuned({"epochs": epochs}), split, evaluation, seed=seed, precision="auto").model


def compare(stable: np.ndarray, canary: np.ndarray, bake_size: int, draws: int, seed: int) -> dict:
    from serving.release.canary_analysis import js_divergence

    def measured(index: np.ndarray) -> tuple[float, float]:
        counts = [np.bincount(side[index], minlength=features.NUM_CLASSES) for side in (stable, canary)]
        return float(np.mean(stable[index] == canary[index])), js_divergence(*counts)

    rng = np.random.default_rng(seed)
    bakes = np.array([measured(rng.choice(len(stable), bake_size, replace=False)) for _ in range(draws)])
    agreement, divergence = measured(np.arange(len(stable)))
    return {"agreement": agreement, "js": divergence, "agreement_p5": float(np.percentile(bakes[:, 0], 5)),
            "agreement_p95": float(np.percentile(bakes[:, 0], 95)), "js_p5": float(np.percentile(bakes[:, 1], 5)),
            "js_p95": float(np.percentile(bakes[:, 1], 95))}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True, help="the official IDX-gz files")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--bake-size", type=int, default=500, help="test images per simulated bake")
    parser.add_argument("--draws", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from fmnist import tf_env

    tf_env.configure()
    from modules import data

    raw_train = dataset.read_split(str(args.data_dir), dataset.TRAIN)
    raw_test = dataset.read_split(str(args.data_dir), dataset.TEST)
    pixels = raw_train.images.reshape(len(raw_train.labels), -1).astype(np.float32) / features.PIXEL_MAX
    mean, std = float(pixels.mean()), float(pixels.std())

    def standardised(images: np.ndarray) -> np.ndarray:
        return ((images.reshape(len(images), -1).astype(np.float32) / features.PIXEL_MAX - mean) / std)

    images, labels = standardised(raw_train.images), raw_train.labels.astype(np.int64)
    # The last 5,000 training images validate every fit (early stopping); spans come from the rest.
    evaluation = data.Split(images=images[-5000:], labels=labels[-5000:])
    test_images, test_labels = standardised(raw_test.images), raw_test.labels
    one, two = slice(0, SPAN), slice(SPAN, 2 * SPAN)
    swapped = labels[two].copy()
    for a, b in (SWAPPED, SWAPPED[::-1]):
        swapped[labels[two] == a] = b
    kept = labels[: 2 * SPAN] != MISSING
    windows = {
        "stable (span 1)": (images[one], labels[one]),
        "clean canary (spans 1+2)": (images[: 2 * SPAN], labels[: 2 * SPAN]),
        f"swapped canary (span 2: {SWAPPED[0]}<->{SWAPPED[1]})": (images[: 2 * SPAN],
                                                                  np.concatenate([labels[one], swapped])),
        f"class {MISSING} missing (spans 1+2)": (images[: 2 * SPAN][kept], labels[: 2 * SPAN][kept]),
    }
    predicted, rows = {}, []
    for name, (train_images, train_labels) in windows.items():
        began = time.monotonic()
        model = train(train_images, train_labels, evaluation, args.epochs, args.seed)
        predicted[name] = model.predict(test_images, batch_size=1024, verbose=0).argmax(axis=1)
        accuracy = float(np.mean(predicted[name] == test_labels))
        print(f"{name}: {len(train_labels):,} images, {time.monotonic() - began:.0f} s, test accuracy {accuracy:.4f}",
              flush=True)
        rows.append([name, f"{len(train_labels):,}", f"{accuracy:.4f}"])
    stable = predicted["stable (span 1)"]
    table = []
    for (name, count, accuracy), canary in zip(rows, predicted.values(), strict=True):
        if canary is stable:
            continue
        found = compare(stable, canary, args.bake_size, args.draws, args.seed)
        table.append([name, count, accuracy, f"{found['agreement']:.4f}",
                      f"{found['agreement_p5']:.4f} - {found['agreement_p95']:.4f}", f"{found['js']:.4f}",
                      f"{found['js_p5']:.4f} - {found['js_p95']:.4f}"])
    print(f"\n{cpu_model()}\n{args.epochs} epochs per model, seed {args.seed}; vs stable (span 1, test accuracy "
          f"{rows[0][2]}) on the 10,000 test images and on {args.draws} draws of {args.bake_size} (5th - 95th "
          "percentile)\n")
    print(markdown_table(["canary", "trained on", "test acc", "agreement", f"agreement, {args.bake_size}",
                          "class JS", f"class JS, {args.bake_size}"], table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
