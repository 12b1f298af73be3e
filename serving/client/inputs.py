"""What `fmnist predict` accepts: image files (converted to 28x28 grey levels the way
Fashion-MNIST was made: light garment on a dark background), .npy arrays, and `test:I` or
`test:I-J` indices into the official test split. No TensorFlow here."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist import dataset, features
from fmnist.images import IMAGE_SUFFIXES, image_from_file

TEST_INDEX = re.compile(r"^test:(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class Input:
    name: str
    image: np.ndarray  # float32 [28, 28], grey levels 0..255
    label: int | None = None  # known for test-split inputs


def images_from_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise ValueError(f"{path}: not a readable .npy array ({err})") from None
    if array.shape[-2:] == features.IMAGE_SHAPE:
        images = array.reshape(-1, *features.IMAGE_SHAPE)
    elif array.shape[-1] == features.NUM_PIXELS:
        images = array.reshape(-1, *features.IMAGE_SHAPE)
    else:
        raise ValueError(f"{path}: expected [28, 28], [N, 28, 28] or [N, 784] grey levels, got {list(array.shape)}")
    if images.size and (images.min() < features.PIXEL_MIN or images.max() > features.PIXEL_MAX):
        raise ValueError(f"{path}: grey levels must be within [0, 255], got [{images.min()}, {images.max()}]")
    return images.astype(np.float32)


def _test_split(data_dir: Path) -> dataset.RawSplit:
    try:
        return dataset.read_split(data_dir, dataset.TEST)
    except dataset.DatasetError as err:
        raise ValueError(f"test:N inputs read the official test split: {err} (run `fmnist fetch` or pass "
                         "--data-dir)") from None


def load_inputs(specs: list[str], data_dir: Path) -> list[Input]:
    inputs: list[Input] = []
    test = None
    for spec in specs:
        match = TEST_INDEX.match(spec)
        if match:
            test = test or _test_split(data_dir)
            first = int(match[1])
            last = int(match[2]) if match[2] else first
            if not first <= last < len(test.labels):
                raise ValueError(f"{spec}: the test split has indices 0..{len(test.labels) - 1}")
            inputs += [Input(f"test:{i}", test.images[i].reshape(features.IMAGE_SHAPE).astype(np.float32),
                             int(test.labels[i])) for i in range(first, last + 1)]
            continue
        path = Path(spec)
        if not path.is_file():
            raise ValueError(f"{spec}: no such file (inputs are image files, .npy arrays or test:N)")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            images = images_from_npy(path)
            inputs += [Input(f"{path.name}[{i}]" if len(images) > 1 else path.name, image)
                       for i, image in enumerate(images)]
        elif suffix in IMAGE_SUFFIXES:
            inputs.append(Input(path.name, image_from_file(path)))
        else:
            raise ValueError(f"{spec}: unsupported file type {suffix or '(none)'}; use "
                             f"{', '.join(sorted(IMAGE_SUFFIXES))}, .npy or test:N")
    return inputs

