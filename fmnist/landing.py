"""Landing new labelled data as numbered spans: `<landing>/span-<N>/`, the layout ExampleGen's
`{SPAN}` input pattern reads (issue #11 wires the pipeline to it).

A span arrives as official IDX-gz files, the Kaggle CSV layout or a folder of images with one
sub-folder per class name (what labelling tools export). Whatever the source, it is checked with
the same reader and checks as the runner's pre-flight and landed in one layout, the official
IDX-gz `train` pair, so the pipeline reads every span the same way. Landing is atomic: the span is
written under a hidden temporary name and renamed into place, so a run never sees half a span;
an flock on the landing directory keeps two `fmnist land` from interleaving.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from fmnist import dataset, features
from fmnist.images import IMAGE_SUFFIXES, image_from_file

SPAN_PREFIX = "span-"
IMAGES = "images"  # a source kind besides dataset.IDX and dataset.CSV
SOURCE_KINDS = (dataset.IDX, dataset.CSV, IMAGES)
_SPAN_DIR = re.compile(rf"^{SPAN_PREFIX}(\d+)$")
_LOCK = ".land.lock"


def spans(landing: Path) -> dict[int, Path]:
    """{span number: directory} of the spans landed so far."""
    if not landing.is_dir():
        return {}
    found = {}
    for entry in landing.iterdir():
        match = _SPAN_DIR.match(entry.name)
        if match and entry.is_dir():
            found[int(match[1])] = entry
    return dict(sorted(found.items()))


def read_image_folder(source: Path) -> dataset.RawSplit:
    """One sub-folder per class, named as in features.CLASS_NAMES ('/' written as '_' or '-',
    case ignored), holding image files; anything else is an error naming it."""
    by_name = {_folder_key(name): c for c, name in enumerate(features.CLASS_NAMES)}
    images, labels = [], []
    folders = sorted(p for p in source.iterdir() if not p.name.startswith("."))
    if not folders:
        raise dataset.DatasetError(f"{source}: empty, expected one sub-folder per class")
    for folder in folders:
        if not folder.is_dir():
            raise dataset.DatasetError(f"{folder}: expected only class sub-folders in an image-folder span")
        if _folder_key(folder.name) not in by_name:
            raise dataset.DatasetError(f"{folder}: unknown class folder {folder.name!r}; classes are "
                                       f"{', '.join(features.CLASS_NAMES)}")
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                raise dataset.DatasetError(f"{path}: not an image file ({', '.join(sorted(IMAGE_SUFFIXES))})")
            try:
                images.append(image_from_file(path))
            except ValueError as err:
                raise dataset.DatasetError(str(err)) from None
            labels.append(by_name[_folder_key(folder.name)])
    if not images:
        raise dataset.DatasetError(f"{source}: no images in the class folders")
    pixels = np.rint(np.stack(images)).astype(np.int64).reshape(-1, features.NUM_PIXELS)
    return dataset.RawSplit(images=pixels, labels=np.asarray(labels, dtype=np.int64), source=str(source))


def _folder_key(name: str) -> str:
    return re.sub(r"[/_\- ]+", "-", name.strip().lower())


def read_source(source: Path, kind: str) -> dataset.RawSplit:
    """The labelled examples of a source, checked like the runner's pre-flight."""
    if not source.is_dir():
        raise dataset.DatasetError(f"{source}: no such directory")
    if kind == IMAGES:
        split = read_image_folder(source)
    elif kind in (dataset.IDX, dataset.CSV):
        split = dataset.read_split(source, dataset.TRAIN, kind)
    else:
        raise dataset.DatasetError(f"unknown source kind {kind!r}; expected one of {', '.join(SOURCE_KINDS)}")
    dataset.check_split(split)
    if not len(split):
        raise dataset.DatasetError(f"{source}: the span is empty")
    return split


@contextlib.contextmanager
def _exclusive(landing: Path) -> Iterator[None]:
    with open(landing / _LOCK, "a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise dataset.DatasetError(f"{landing}: another `fmnist land` is landing a span; try again") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def land(source: Path, landing: Path, kind: str = dataset.IDX, span: int | None = None) -> tuple[int, Path, int]:
    """Checks `source` and lands it as the next span (or `span`, which must be newer than every
    landed one). Returns (span number, its directory, examples). Raises DatasetError naming the
    file and the problem; then nothing is landed and earlier spans are untouched."""
    return land_split(read_source(source, kind), landing, span)


def land_split(split: dataset.RawSplit, landing: Path, span: int | None = None) -> tuple[int, Path, int]:
    """Lands labelled examples already in memory (e.g. logged requests whose labels came back) as
    `land` does: the same checks, layout and atomic rename. Same return value and errors."""
    dataset.check_split(split)
    if not len(split):
        raise dataset.DatasetError(f"{split.source}: the span is empty")
    landing.mkdir(parents=True, exist_ok=True)
    with _exclusive(landing):
        landed = spans(landing)
        newest = max(landed, default=0)
        number = newest + 1 if span is None else span
        if number <= newest:
            raise dataset.DatasetError(f"{landing}: span {number} is not newer than the latest landed span {newest}")
        target = landing / f"{SPAN_PREFIX}{number}"
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=landing))
        try:
            dataset.write_idx_split(staging, dataset.TRAIN, split.images, split.labels)
            dataset.check_split(dataset.read_split(staging, dataset.TRAIN))  # what the pipeline will read
            os.chmod(staging, 0o755)  # mkdtemp's 0700 would hide the span from other users' runs
            os.rename(staging, target)  # atomic: the span appears whole or not at all
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return number, target, len(split)
