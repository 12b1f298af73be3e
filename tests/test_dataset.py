"""Raw-file parsing on the committed sample of the real files, and every way a file can be bad."""

import gzip
import io
import struct

import numpy as np
import pytest

from fmnist import dataset, features
from fmnist.dataset import IDX_FILES, read_split


def _gz(payload: bytes) -> io.BytesIO:
    return io.BytesIO(gzip.compress(payload))


def _file_bytes(directory, name) -> bytes:
    return (directory / name).read_bytes()


def test_sample_parses_to_stratified_real_images(sample_dir):
    train = read_split(sample_dir, "train")
    test = read_split(sample_dir, "test")
    assert train.images.shape == (1000, features.NUM_PIXELS)
    assert test.images.shape == (300, features.NUM_PIXELS)
    assert np.bincount(train.labels).tolist() == [100] * 10
    assert np.bincount(test.labels).tolist() == [30] * 10
    assert train.images.min() == 0 and train.images.max() == 255
    # Real pictures, not noise: the mean grey level of Fashion-MNIST is about 73.
    assert 60 < train.images.mean() < 85


def test_truncated_gzip_names_the_file(sample_dir):
    data = _file_bytes(sample_dir, IDX_FILES["train"][0])
    with pytest.raises(dataset.DatasetError, match=r"train-images.*truncated gzip"):
        dataset.read_idx_gz(io.BytesIO(data[: len(data) // 2]), "train-images-idx3-ubyte.gz",
                            dataset.IDX_IMAGES_MAGIC)


def test_not_gzip_at_all():
    with pytest.raises(dataset.DatasetError, match="not a valid gzip file"):
        dataset.read_idx_gz(io.BytesIO(b"this is not gzip data"), "x.gz", dataset.IDX_IMAGES_MAGIC)


def test_wrong_magic_number(sample_dir):
    labels = _file_bytes(sample_dir, IDX_FILES["train"][1])
    with pytest.raises(dataset.DatasetError, match=r"labels\.gz: wrong magic number 0x00000801, expected 0x00000803"):
        dataset.read_idx_gz(io.BytesIO(labels), "labels.gz", dataset.IDX_IMAGES_MAGIC)


def test_data_shorter_than_header_declares():
    header = struct.pack(">IIII", dataset.IDX_IMAGES_MAGIC, 3, 28, 28)
    with pytest.raises(dataset.DatasetError, match=r"declares shape \(3, 28, 28\) = 2352 bytes.*holds 2351"):
        dataset.read_idx_gz(_gz(header + bytes(2351)), "short.gz", dataset.IDX_IMAGES_MAGIC)


def test_image_label_count_mismatch():
    images = _gz(struct.pack(">IIII", dataset.IDX_IMAGES_MAGIC, 2, 28, 28) + bytes(2 * 784))
    labels = _gz(struct.pack(">II", dataset.IDX_LABELS_MAGIC, 3) + bytes(3))
    with pytest.raises(dataset.DatasetError, match=r"imgs\.gz holds 2 images but lbls\.gz holds 3 labels"):
        dataset.read_idx_split(images, labels, "imgs.gz", "lbls.gz")


def test_wrong_image_size():
    images = _gz(struct.pack(">IIII", dataset.IDX_IMAGES_MAGIC, 1, 32, 32) + bytes(32 * 32))
    labels = _gz(struct.pack(">II", dataset.IDX_LABELS_MAGIC, 1) + bytes(1))
    with pytest.raises(dataset.DatasetError, match="images are 32x32, expected 28x28"):
        dataset.read_idx_split(images, labels, "imgs.gz", "lbls.gz")


def test_csv_round_trip_is_identical(sample_dir):
    test = read_split(sample_dir, "test")
    buffer = io.BytesIO()
    dataset.write_csv_split(test, buffer)
    buffer.seek(0)
    assert buffer.getvalue().startswith(b"label,pixel1,pixel2,")
    parsed = dataset.read_csv_split(buffer, "test.csv")
    np.testing.assert_array_equal(parsed.images, test.images)
    np.testing.assert_array_equal(parsed.labels, test.labels)


HEADER = ",".join(dataset.CSV_HEADER).encode() + b"\n"


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty file"),
        (b"lbl,pixel1\n", "header must be 'label,pixel1,...,pixel784'"),
        (HEADER, "no data rows"),
        (HEADER + b"3," + b"0," * 782 + b"0\n", r"bad\.csv:2: 784 columns, expected 785"),
        (HEADER + b"3," + b"0," * 783 + b"x\n", r"bad\.csv:2: non-integer value 'x'"),
    ],
)
def test_bad_csv(content, message):
    with pytest.raises(dataset.DatasetError, match=message):
        dataset.read_csv_split(io.BytesIO(content), "bad.csv")


def test_csv_keeps_out_of_range_values_for_validation():
    """Range checks belong to the schema (ExampleValidator), so the reader passes values through."""
    row = b"12," + b"300," * 783 + b"0\n"
    parsed = dataset.read_csv_split(io.BytesIO(",".join(dataset.CSV_HEADER).encode() + b"\n" + row), "x.csv")
    assert parsed.labels.tolist() == [12]
    assert parsed.images.max() == 300


def test_stratified_holdout_is_deterministic_disjoint_and_balanced(sample_dir):
    labels = read_split(sample_dir, "train").labels
    holdout = dataset.stratified_holdout(labels, 200, seed=7)
    assert len(holdout) == len(set(holdout)) == 200
    assert np.bincount(labels[holdout]).tolist() == [20] * 10
    np.testing.assert_array_equal(holdout, dataset.stratified_holdout(labels, 200, seed=7))
    assert not np.array_equal(holdout, dataset.stratified_holdout(labels, 200, seed=8))


def test_stratified_holdout_quotas_add_up_for_unbalanced_classes():
    labels = np.array([0] * 7 + [1] * 2 + [2] * 1)
    holdout = dataset.stratified_holdout(labels, 5, seed=0)
    assert len(holdout) == 5
    assert np.bincount(labels[holdout], minlength=3).tolist() == [4, 1, 0]


def test_stratified_holdout_rejects_impossible_size():
    with pytest.raises(dataset.DatasetError, match="hold-out size 10 must be between 1 and 9"):
        dataset.stratified_holdout(np.zeros(10, dtype=int), 10, seed=0)


@pytest.mark.slow
def test_full_official_files_parse(full_data_dir):
    train = read_split(full_data_dir, "train")
    assert train.images.shape == (60000, 784)
    assert np.bincount(train.labels).tolist() == [6000] * 10
    holdout = dataset.stratified_holdout(train.labels, 5000, seed=42)
    assert np.bincount(train.labels[holdout]).tolist() == [500] * 10


def _csv_bytes(split: dataset.RawSplit) -> bytes:
    stream = io.BytesIO()
    dataset.write_csv_split(split, stream)
    return stream.getvalue()


def test_csv_fast_and_row_by_row_readers_agree_and_point_at_the_same_line(sample_dir):
    raw = dataset.read_split(sample_dir, "test")
    images = raw.images.copy()
    images[7, 10] = 300
    lines = _csv_bytes(dataset.RawSplit(images, raw.labels)).split(b"\n")
    blank = [*lines[:4], b"", *lines[4:]]  # a blank line before the bad row shifts file lines by one
    for content, expected_line in ((b"\n".join(lines), 9), (b"\n".join(blank), 10)):
        fast = dataset.read_csv_split(io.BytesIO(content), "f.csv")
        slow = dataset.read_csv_split(io.BytesIO(content.replace(b"label,", b"label ,", 1)), "f.csv")  # header
        np.testing.assert_array_equal(fast.images, slow.images)  # with a space: the row-by-row reader
        np.testing.assert_array_equal(fast.lines, slow.lines)
        with pytest.raises(dataset.DatasetError, match=rf"^f\.csv:{expected_line}: pixel11 = 300 is outside 0\.\.255$"):
            dataset.check_split(fast)


def test_check_split_names_the_index_of_a_bad_idx_label(sample_dir):
    raw = dataset.read_split(sample_dir, "test")
    labels = raw.labels.copy()
    labels[[3, 8]] = [10, -1]
    with pytest.raises(dataset.DatasetError, match=r"t10k-labels-idx1-ubyte\.gz: label 10 at index 3 is outside "
                                                   r"0\.\.9 \(2 such label\(s\)\)"):
        dataset.check_split(dataset.RawSplit(raw.images, labels, source=raw.source))
