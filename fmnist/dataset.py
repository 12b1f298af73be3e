"""Readers for the raw Fashion-MNIST files: the official IDX-gz format and the Kaggle CSV layout.

Pure NumPy, no TensorFlow: the ExampleGen executor, the fetch command, the tests and the
serving clients all read raw files through here. Every reader takes a binary stream plus the
name to report, so callers can open local paths or gs:// URIs with whatever filesystem they use.
Every problem is a DatasetError that names the file and what was wrong with it.
"""

from __future__ import annotations

import contextlib
import csv
import glob
import gzip
import io
import os
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from fmnist import features

# Split names: `train` and `test` are the official files; ExampleGen carves `eval` out of `train`.
TRAIN: str = "train"
EVAL: str = "eval"
TEST: str = "test"
# A fixed share of the official test split that no span trains on: the golden gate judges every
# candidate there against the stable model; `test` is then the rest, reported and never decided on.
GOLDEN: str = "golden"
OFFICIAL_SPLITS = (TRAIN, TEST)
# Images to label (batch inference): IDX images files without labels files, any name ending so.
UNLABELLED: str = "unlabelled"
UNLABELLED_PATTERN = "*-images-idx3-ubyte.gz"

IDX = "idx"  # the official IDX-gz files
CSV = "csv"  # the Kaggle layout
INPUT_FORMATS = (IDX, CSV)

# The one place raw file names are written down. The official test files are called `t10k`.
_IDX_PREFIX = {TRAIN: "train", TEST: "t10k"}
IDX_FILES = {split: (f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz")
             for split, prefix in _IDX_PREFIX.items()}
CSV_FILES = {TRAIN: "fashion-mnist_train.csv", TEST: "fashion-mnist_test.csv"}

IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension

CSV_HEADER = [features.LABEL_KEY] + [f"pixel{i}" for i in range(1, features.NUM_PIXELS + 1)]


class DatasetError(ValueError):
    """Raw data that cannot be turned into examples; the message says what and where."""


@dataclass(frozen=True)
class RawSplit:
    """Images as int64 [N, 784] (wide enough to carry out-of-range CSV values to validation).

    `source` names the file(s) read; `lines`, for CSV input, the file line of each row, so a
    check can point at `file:line`."""

    images: np.ndarray
    labels: np.ndarray
    source: str = ""
    lines: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.images.ndim != 2 or self.images.shape[1] != features.NUM_PIXELS:
            raise DatasetError(f"images must be [N, {features.NUM_PIXELS}], got {self.images.shape}")
        if len(self.images) != len(self.labels):
            raise DatasetError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)


@contextlib.contextmanager
def gzip_errors(source: str) -> Iterator[None]:
    """Turns a broken gzip stream read inside the block into a one-line DatasetError naming `source`."""
    try:
        yield
    except EOFError as err:
        raise DatasetError(f"{source}: truncated gzip stream ({err})") from err
    except (OSError, zlib.error) as err:
        raise DatasetError(f"{source}: not a valid gzip file ({err})") from err


def _decompress(stream: BinaryIO, source: str) -> bytes:
    with gzip_errors(source), gzip.GzipFile(fileobj=stream) as gz:
        return gz.read()


def parse_idx_header(data: bytes, source: str, expected_magic: int) -> tuple[tuple[int, ...], int]:
    """The shape an IDX file's header declares and the header's size in bytes, from the file's
    first bytes (at least the header); a DatasetError for a short header or another magic number."""
    if len(data) < 4:
        raise DatasetError(f"{source}: {len(data)} bytes is too short for an IDX header")
    (magic,) = struct.unpack(">I", data[:4])
    if magic != expected_magic:
        raise DatasetError(
            f"{source}: wrong magic number 0x{magic:08x}, expected 0x{expected_magic:08x} "
            f"(unsigned-byte IDX with {expected_magic & 0xFF} dimension(s))"
        )
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DatasetError(f"{source}: header truncated ({len(data)} of {header_size} bytes)")
    return struct.unpack(f">{ndim}I", data[4:header_size]), header_size


def idx_size_error(source: str, shape: tuple[int, ...], actual: int) -> DatasetError:
    """The error for a file whose data is not the size its header declares."""
    return DatasetError(f"{source}: header declares shape {tuple(shape)} = {int(np.prod(shape))} bytes of data, "
                        f"but the file holds {actual}")


def check_image_shape(shape: tuple[int, ...], source: str) -> None:
    """A DatasetError unless the images are IMAGE_HEIGHT x IMAGE_WIDTH."""
    if tuple(shape[1:]) != features.IMAGE_SHAPE:
        raise DatasetError(f"{source}: images are {shape[1]}x{shape[2]}, "
                           f"expected {features.IMAGE_HEIGHT}x{features.IMAGE_WIDTH}")


def parse_idx(data: bytes, source: str, expected_magic: int) -> np.ndarray:
    """Parses decompressed IDX bytes into a uint8 array, checking magic number and size."""
    shape, header_size = parse_idx_header(data, source, expected_magic)
    if len(data) - header_size != int(np.prod(shape)):
        raise idx_size_error(source, shape, len(data) - header_size)
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(shape)


def read_idx_gz(stream: BinaryIO, source: str, expected_magic: int) -> np.ndarray:
    return parse_idx(_decompress(stream, source), source, expected_magic)


def read_idx_images(stream: BinaryIO, source: str) -> np.ndarray:
    """Reads an IDX-gz images file: uint8 [N, 28, 28], or a DatasetError for another shape."""
    image_array = read_idx_gz(stream, source, IDX_IMAGES_MAGIC)
    check_image_shape(image_array.shape, source)
    return image_array


def read_idx_split(images: BinaryIO, labels: BinaryIO, images_source: str, labels_source: str) -> RawSplit:
    """Reads a pair of IDX-gz files (images, labels) into a RawSplit."""
    image_array = read_idx_images(images, images_source)
    label_array = read_idx_gz(labels, labels_source, IDX_LABELS_MAGIC)
    if len(image_array) != len(label_array):
        raise DatasetError(
            f"{images_source} holds {len(image_array)} images but {labels_source} holds "
            f"{len(label_array)} labels"
        )
    return RawSplit(
        images=image_array.reshape(-1, features.NUM_PIXELS).astype(np.int64),
        labels=label_array.astype(np.int64),
        source=labels_source,
    )


def read_csv_split(stream: BinaryIO, source: str) -> RawSplit:
    """Reads the Kaggle layout: header `label,pixel1..pixel784`, one image per row."""
    # Read whole: filesystem wrappers (tf.io.gfile for gs://) are not full io.RawIOBase objects.
    data = stream.read()
    fast = _parse_csv_fast(data, source)
    if fast is not None:
        return fast
    # The slow path: row by row, to say exactly which line is wrong and how.
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(f"{source}: not UTF-8 text ({err})") from err
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader)
    except StopIteration:
        raise DatasetError(f"{source}: empty file, expected a header row") from None
    if [h.strip() for h in header] != CSV_HEADER:
        raise DatasetError(
            f"{source}: header must be 'label,pixel1,...,pixel{features.NUM_PIXELS}', "
            f"got {len(header)} columns starting {header[:3]}"
        )
    rows, lines = [], []
    for line_number, row in enumerate(reader, start=2):
        if not row:
            continue
        lines.append(line_number)
        if len(row) != len(CSV_HEADER):
            raise DatasetError(
                f"{source}:{line_number}: {len(row)} columns, expected {len(CSV_HEADER)}"
            )
        try:
            rows.append([int(value) for value in row])
        except ValueError:
            raise DatasetError(f"{source}:{line_number}: non-integer value {_not_an_int(row)!r}") from None
    if not rows:
        raise DatasetError(f"{source}: no data rows")
    try:
        table = np.asarray(rows, dtype=np.int64)
    except OverflowError:  # found by fuzzing: a 20-digit pixel was a traceback, not a line
        row = next(i for i, values in enumerate(rows) if not all(_INT64_MIN <= v <= _INT64_MAX for v in values))
        value = next(v for v in rows[row] if not _INT64_MIN <= v <= _INT64_MAX)
        raise DatasetError(f"{source}:{lines[row]}: value {value} is outside the 64-bit integer range") from None
    return RawSplit(images=table[:, 1:], labels=table[:, 0], source=source, lines=np.asarray(lines))


_INT64_MIN, _INT64_MAX = int(np.iinfo(np.int64).min), int(np.iinfo(np.int64).max)


def _not_an_int(cells: list[str]) -> str:
    """The first cell int() refuses (by int() itself: "--5" or "²" look like digits to str methods)."""
    for cell in cells:
        try:
            int(cell)
        except ValueError:
            return cell
    raise AssertionError("every cell is an integer")  # only called after int() refused one


def _parse_csv_fast(data: bytes, source: str) -> RawSplit | None:
    """Arrow's multi-threaded CSV reader for a well-formed file (60,000 rows in ~2 s instead of
    ~15 s); None when anything is off (header, widths, non-integers, encoding), so the row-by-row
    reader can name the line and the problem."""
    import pyarrow as pa
    from pyarrow import csv as arrow_csv

    try:
        table = arrow_csv.read_csv(
            io.BytesIO(data),
            convert_options=arrow_csv.ConvertOptions(column_types={name: pa.int64() for name in CSV_HEADER}),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None
    # An empty cell is a null, which to_numpy would turn into NaN cast to int64 (found by fuzzing:
    # refused as "pixelN = -9223372036854775808"): the slow reader names it as the empty cell it is.
    if table.column_names != CSV_HEADER or table.num_rows == 0 or any(c.null_count for c in table.columns):
        return None
    values = table.combine_chunks().to_pandas().to_numpy(dtype=np.int64)
    if b"\n\n" in data or b"\n\r\n" in data:  # blank lines (skipped) shift rows against file lines
        lines = np.asarray([n for n, line in enumerate(data.split(b"\n"), start=1) if line.strip()][1:])
    else:
        lines = np.arange(2, len(values) + 2)
    return RawSplit(images=values[:, 1:], labels=values[:, 0], source=source, lines=lines)


def split_pattern(split: str, input_format: str) -> str:
    """The file pattern of an official split, as ExampleGen's input_config (and its cache
    fingerprint) needs it: both IDX files of the split, or the CSV file; for UNLABELLED, every
    IDX images file (IDX only)."""
    if split == UNLABELLED:
        if input_format != IDX:
            raise DatasetError(f"unlabelled images are read as {IDX} images files, not {input_format!r}")
        return UNLABELLED_PATTERN
    if input_format == IDX:
        return f"{_IDX_PREFIX[split]}-*-ubyte.gz"
    if input_format == CSV:
        return CSV_FILES[split]
    raise DatasetError(f"unknown input format {input_format!r}; expected one of {', '.join(INPUT_FORMATS)}")


def split_files(split: str, input_format: str) -> tuple[str, ...]:
    """The file names an official split is read from."""
    split_pattern(split, input_format)  # validates the format
    return IDX_FILES[split] if input_format == IDX else (CSV_FILES[split],)


def _open_local(path: str) -> BinaryIO:
    return open(path, "rb")


def read_split(
    data_root: str | os.PathLike,
    split: str,
    input_format: str = IDX,
    open_fn: Callable[[str], BinaryIO] = _open_local,
    exists_fn: Callable[[str], bool] = os.path.exists,
) -> RawSplit:
    """Reads official split `train` or `test` from `data_root`: the one reader of raw files.

    `open_fn`/`exists_fn` let callers read through another filesystem (ExampleGen passes TFX's
    fileio, for gs:// paths). Raises DatasetError naming the file and what was wrong."""
    if split not in OFFICIAL_SPLITS:
        raise DatasetError(f"unknown split {split!r}; the raw files hold {', '.join(OFFICIAL_SPLITS)}")
    paths = [os.path.join(data_root, name) for name in split_files(split, input_format)]
    for path in paths:
        if not exists_fn(path):
            raise DatasetError(f"{path}: missing (the {split} split of the {input_format} input)")
    if input_format == IDX:
        images_path, labels_path = paths
        with open_fn(images_path) as images, open_fn(labels_path) as labels:
            return read_idx_split(images, labels, images_path, labels_path)
    (csv_path,) = paths
    with open_fn(csv_path) as stream:
        return read_csv_split(stream, csv_path)


@dataclass(frozen=True)
class UnlabelledImages:
    """Images to label, int64 [N, 784] like RawSplit's, each with an id "<file name>:<row>" that
    joins a prediction back to its image."""

    images: np.ndarray
    ids: tuple[str, ...]
    source: str = ""

    def __len__(self) -> int:
        return len(self.ids)


def example_id(file_name: str, row: int) -> str:
    return f"{os.path.basename(file_name)}:{row}"


def id_sort_key(image_id: str) -> tuple[str, int]:
    """Orders ids by file, then row number (not as text, where ":10" comes before ":2")."""
    name, _, row = image_id.rpartition(":")
    return (name, int(row)) if row.isdigit() else (image_id, -1)


def read_unlabelled(
    directory: str | os.PathLike,
    open_fn: Callable[[str], BinaryIO] = _open_local,
    glob_fn: Callable[[str], list[str]] = glob.glob,
) -> UnlabelledImages:
    """Reads every IDX images file (UNLABELLED_PATTERN, no labels file needed) in `directory`, in
    name order. Raises DatasetError when there is none, or naming the file that is not one."""
    paths = sorted(glob_fn(os.path.join(directory, UNLABELLED_PATTERN)))
    if not paths:
        raise DatasetError(f"{directory}: no unlabelled images (expected IDX images files named "
                           f"{UNLABELLED_PATTERN}, e.g. {IDX_FILES[TEST][0]})")
    arrays, ids = [], []
    for path in paths:
        with open_fn(path) as stream:
            images = read_idx_images(stream, path)
        arrays.append(images.reshape(-1, features.NUM_PIXELS).astype(np.int64))
        ids.extend(example_id(path, row) for row in range(len(images)))
    return UnlabelledImages(images=np.concatenate(arrays), ids=tuple(ids), source=", ".join(paths))


def check_split(split: RawSplit) -> None:
    """Values the schema allows: labels 0..9 and grey levels 0..255 (what ExampleValidator checks
    later, reported here with the file and, for CSV, the line)."""

    def where(row: int) -> str:
        return f"{split.source}:{split.lines[row]}" if split.lines is not None else split.source

    bad_labels = np.flatnonzero((split.labels < 0) | (split.labels >= features.NUM_CLASSES))
    if len(bad_labels):
        row = int(bad_labels[0])
        position = "" if split.lines is not None else f" at index {row}"
        raise DatasetError(f"{where(row)}: label {split.labels[row]}{position} is outside 0..{features.NUM_CLASSES - 1}"
                           f" ({len(bad_labels)} such label(s))")
    bad_pixels = np.argwhere((split.images < features.PIXEL_MIN) | (split.images > features.PIXEL_MAX))
    if len(bad_pixels):
        row, column = (int(v) for v in bad_pixels[0])
        position = f"pixel{column + 1}" if split.lines is not None else f"image {row}, pixel {column}"
        raise DatasetError(f"{where(row)}: {position} = {split.images[row, column]} is outside "
                           f"{features.PIXEL_MIN}..{features.PIXEL_MAX}")


def write_csv_split(split: RawSplit, stream: BinaryIO) -> None:
    """Writes a RawSplit in the Kaggle layout (used to convert and to test the CSV path)."""
    text = io.TextIOWrapper(stream, encoding="utf-8", newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(CSV_HEADER)
    for label, image in zip(split.labels, split.images, strict=False):
        writer.writerow([int(label), *image.tolist()])
    text.flush()
    text.detach()


def write_idx_gz(array: np.ndarray, stream: BinaryIO, magic: int) -> None:
    """Writes a uint8 array as IDX-gz (used to build the committed sample)."""
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.GzipFile(fileobj=stream, mode="wb", mtime=0) as gz:
        gz.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


def write_idx_split(directory: str | os.PathLike, split: str, images: np.ndarray, labels: np.ndarray) -> list[Path]:
    """Writes an official split's IDX-gz pair (images [N, 784] or [N, 28, 28], labels [N]) into
    `directory` (created); returns the two paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = IDX_FILES[split]
    with open(directory / images_name, "wb") as out:
        write_idx_gz(np.asarray(images).reshape(-1, *features.IMAGE_SHAPE).astype(np.uint8), out, IDX_IMAGES_MAGIC)
    with open(directory / labels_name, "wb") as out:
        write_idx_gz(np.asarray(labels).astype(np.uint8), out, IDX_LABELS_MAGIC)
    return [directory / images_name, directory / labels_name]


def stratified_holdout(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """Indices of a deterministic hold-out with `size` examples in the labels' class proportions.

    Per-class quotas use largest-remainder rounding, so they add up to `size` exactly; within a
    class, a seeded permutation picks the members. Same labels + size + seed => same indices.
    """
    if not 0 < size < len(labels):
        raise DatasetError(f"hold-out size {size} must be between 1 and {len(labels) - 1}")
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * size / len(labels)
    quotas = np.floor(exact).astype(int)
    for i in np.argsort(-(exact - quotas), kind="stable")[: size - quotas.sum()]:
        quotas[i] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(labels == cls))[:quota]
        for cls, quota in zip(classes, quotas, strict=False)
    ]
    return np.sort(np.concatenate(chosen))


@dataclass(frozen=True)
class HoldoutSpec:
    """How many examples of a split are held out: `value` < 1 is a fraction of the split, clamped
    to [floor, cap]; `value` >= 1 is an exact count (whole). The span's eval hold-out and the golden
    set (a share of the official test split) are both one of these."""

    value: float
    floor: int = 0
    cap: int | None = None

    def __post_init__(self) -> None:
        if not self.value > 0 or (self.value >= 1 and self.value != int(self.value)):
            raise DatasetError(f"a hold-out is a fraction in (0, 1) or a whole count >= 1, got {self.value:g}")

    @property
    def is_fraction(self) -> bool:
        return self.value < 1

    def size(self, examples: int, source: str = "the split") -> int:
        """Examples held out of `examples`; raises DatasetError (one line, naming `source`) when the
        split is too small for it: the rest must keep at least as many examples as the hold-out."""
        if not self.is_fraction:
            size = int(self.value)
            if not 0 < size < examples:
                raise DatasetError(f"{source}: the hold-out of {size} examples must be between 1 and "
                                   f"{examples - 1} (it has {examples})")
            return size
        size = max(self.floor, round(self.value * examples))
        size = min(size, self.cap) if self.cap else size
        if size < 1 or examples - size < size:
            least = 2 * max(self.floor, 1)
            raise DatasetError(f"{source}: {examples} examples is too small to evaluate: a {self.value:g} hold-out "
                               f"of at least {max(self.floor, 1)} examples and as many to train on need "
                               f">= {least} examples")
        return size
