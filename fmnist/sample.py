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
        images_name, labels_name = dataset.IDX_FILES[split]
        images = raw.images[rows].reshape(-1, *features.IMAGE_SHAPE).astype(np.uint8)
        with open(dest / images_name, "wb") as out:
            dataset.write_idx_gz(images, out, dataset.IDX_IMAGES_MAGIC)
        with open(dest / labels_name, "wb") as out:
            dataset.write_idx_gz(raw.labels[rows].astype(np.uint8), out, dataset.IDX_LABELS_MAGIC)
        written += [dest / images_name, dest / labels_name]
    return written
