"""Builds the small committed sample: N images per class from each official split, IDX-gz."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmnist import dataset, features


def per_class_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in range(features.NUM_CLASSES)]
    return np.sort(np.concatenate(picked))


def write_sample(source_dir: Path, dest: Path, train_per_class: int, test_per_class: int,
                 seed: int) -> list[Path]:
    """Writes `per_class` images of each class from each official split of `source_dir` (IDX)."""
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for split, per_class in ((dataset.TRAIN, train_per_class), (dataset.TEST, test_per_class)):
        raw = dataset.read_split(source_dir, split)
        rows = per_class_indices(raw.labels, per_class, seed)
        written += dataset.write_idx_split(dest, split, raw.images[rows], raw.labels[rows])
    return written
