"""The raw ExampleGen's reading logic: IDX and CSV give identical examples; splits partition."""

import numpy as np
import pytest
import tensorflow as tf

from fmnist import dataset, features
from fmnist.dataset import read_split
from tfx_pipeline.components import raw_example_gen as reg


@pytest.fixture()
def csv_sample(sample_dir, tmp_path):
    for split, name in dataset.CSV_FILES.items():
        with open(tmp_path / name, "wb") as out:
            dataset.write_csv_split(read_split(sample_dir, split), out)
    return tmp_path


def _examples(input_base, fmt, split, role):
    return list(reg._serialized_examples(None, str(input_base), split, fmt, role, 200, 42))


def test_idx_and_csv_inputs_give_identical_examples(sample_dir, csv_sample):
    for split, role in (("train", "rest"), ("train", "holdout"), ("test", "all")):
        assert _examples(sample_dir, "idx", split, role) == _examples(csv_sample, "csv", split, role)


def test_example_carries_784_pixels_and_label(sample_dir):
    raw = read_split(sample_dir, "test")
    example = tf.train.Example.FromString(_examples(sample_dir, "idx", "test", "all")[0])
    pixels = example.features.feature[features.IMAGE_KEY].int64_list.value
    assert list(pixels) == raw.images[0].tolist()
    assert example.features.feature[features.LABEL_KEY].int64_list.value == [raw.labels[0]]


def test_train_and_eval_partition_the_official_train_split(sample_dir):
    split = reg.read_split(str(sample_dir), "train", "idx")
    rest = reg.select_rows(split, "rest", 200, 42)
    holdout = reg.select_rows(split, "holdout", 200, 42)
    assert len(rest) == 800 and len(holdout) == 200
    assert not set(rest) & set(holdout)
    assert np.bincount(split.labels[holdout]).tolist() == [20] * 10


def test_a_missing_file_is_named(sample_dir, tmp_path):
    (tmp_path / dataset.IDX_FILES["train"][0]).write_bytes((sample_dir / dataset.IDX_FILES["train"][0]).read_bytes())
    with pytest.raises(dataset.DatasetError, match=r"train-labels-idx1-ubyte\.gz: missing"):
        reg.read_split(str(tmp_path), "train", "idx")


def test_split_patterns_match_exactly_the_files_read(sample_dir):
    import fnmatch

    for split in dataset.OFFICIAL_SPLITS:
        matched = fnmatch.filter(sorted(p.name for p in sample_dir.iterdir()), dataset.split_pattern(split, "idx"))
        assert matched == sorted(dataset.split_files(split, "idx"))


