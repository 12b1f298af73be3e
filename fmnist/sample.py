"""Builds the small committed sample: N images per class from each official split, IDX-gz."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmnist import dataset
from modules import features

SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "t10k": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}


def read_official(source_dir: Path, split: str) -> dataset.RawSplit:
    images_name, labels_name = SPLIT_FILES[split]
    with open(source_dir / images_name, "rb") as images, open(source_dir / labels_name, "rb") as labels:
        return dataset.read_idx_split(images, labels, images_name, labels_name)


def per_class_indices(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False)
              for c in range(features.NUM_CLASSES)]
    return np.sort(np.concatenate(picked))


def write_sample(source_dir: Path, dest: Path, train_per_class: int, test_per_class: int,
                 seed: int) -> list[Path]:
    dest.mkdir(parents=True, exist_ok=True)
    written = []
    for split, per_class in (("train", train_per_class), ("t10k", test_per_class)):
        raw = read_official(source_dir, split)
        rows = per_class_indices(raw.labels, per_class, seed)
        images_name, labels_name = SPLIT_FILES[split]
        images = raw.images[rows].reshape(-1, *features.IMAGE_SHAPE).astype(np.uint8)
        with open(dest / images_name, "wb") as out:
            dataset.write_idx_gz(images, out, dataset.IDX_IMAGES_MAGIC)
        with open(dest / labels_name, "wb") as out:
            dataset.write_idx_gz(raw.labels[rows].astype(np.uint8), out, dataset.IDX_LABELS_MAGIC)
        written += [dest / images_name, dest / labels_name]
    return written
