"""Pictures of the `explain` signature's attributions: numpy and PIL only (no TensorFlow), so the
TF-free `fmnist predict --explain` and the evaluation report draw them the same way.

How one reads: the image is drawn in grey, dimmed, and every pixel whose grey level pushed the
predicted class's logit up is painted over in a heat ramp, dark red -> red -> yellow -> white as
its attribution grows, opaque where it is strongest. Pixels that pushed it down, or not at all,
stay grey: the picture answers "what made the model say this class", not "what argued against".
The ramp is scaled per image (to its 99th percentile of positive attribution, so one outlier pixel
does not wash out the rest): colours compare pixels within one picture, not across pictures.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from fmnist import features

SCALE = 8  # 28x28 -> 224x224: each model pixel a visible block
DIM = 0.6  # the grey image under the overlay, so the ramp's dark reds stand out from it
PERCENTILE = 99.0


def _heat(strength: np.ndarray) -> np.ndarray:
    """Strengths in [0, 1] -> RGB in [0, 1]: black -> red -> yellow -> white ("hot")."""
    return np.clip(np.stack([3 * strength, 3 * strength - 1, 3 * strength - 2], axis=-1), 0.0, 1.0)


def overlay(image: np.ndarray, attributions: np.ndarray, scale: int = SCALE) -> np.ndarray:
    """uint8 RGB [28 * scale, 28 * scale, 3]: `image` (grey levels 0..255, [28, 28] or [784])
    with its positive `attributions` (same shape) overlaid as the module docstring says."""
    grey = np.asarray(image, dtype=np.float32).reshape(features.IMAGE_SHAPE) / features.PIXEL_MAX
    positive = np.maximum(np.asarray(attributions, dtype=np.float32).reshape(features.IMAGE_SHAPE), 0.0)
    top = np.percentile(positive[positive > 0], PERCENTILE) if positive.any() else 1.0
    strength = np.clip(positive / top, 0.0, 1.0)
    base = np.repeat(DIM * grey[..., np.newaxis], 3, axis=-1)
    # A floor of opacity: the weakest positive pixels still show, in the ramp's darkest red.
    alpha = np.where(strength > 0, 0.35 + 0.65 * strength, 0.0)[..., np.newaxis]
    rgb = (1 - alpha) * base + alpha * _heat(0.2 + 0.8 * strength)
    pixels = np.rint(rgb * 255).astype(np.uint8)
    return pixels.repeat(scale, axis=0).repeat(scale, axis=1)


def write_overlay(path: str | Path, image: np.ndarray, attributions: np.ndarray, scale: int = SCALE) -> Path:
    """Writes overlay(image, attributions, scale) to `path` as a PNG (parents created); returns it."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(overlay(image, attributions, scale)).save(path, format="PNG")
    return path


def file_name(position: int, name: str) -> str:
    """A PNG file name for the input called `name` (a path, `test:3`) at `position` among the
    inputs: the position keeps names unique, the rest is the input's own name made filesystem-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).stem).strip("_")[:80]
    return f"{position:03d}-{safe or 'image'}.png"
