"""Photos and drawings turned into Fashion-MNIST pictures: 28x28 grey levels, light garment on a
dark background, as Zalando made them. Used by `fmnist predict` (serving inputs) and `fmnist land`
(image-folder spans). PIL only, no TensorFlow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fmnist import features

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def image_from_file(path: Path) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as opened:
            grey = ImageOps.exif_transpose(opened).convert("L")
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{path}: not a readable image ({err})") from None
    grey.thumbnail(features.IMAGE_SHAPE[::-1], Image.Resampling.LANCZOS)
    array = np.asarray(grey, dtype=np.float32)
    border = np.concatenate([array[0], array[-1], array[:, 0], array[:, -1]])
    if border.mean() > 127:  # a photo on a light background: Fashion-MNIST is light on dark
        array = 255 - array
    # Centre on a dark 28x28 canvas, keeping the aspect ratio as Zalando did.
    canvas = np.zeros(features.IMAGE_SHAPE, dtype=np.float32)
    top, left = (features.IMAGE_HEIGHT - array.shape[0]) // 2, (features.IMAGE_WIDTH - array.shape[1]) // 2
    canvas[top:top + array.shape[0], left:left + array.shape[1]] = array
    return canvas
