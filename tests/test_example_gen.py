"""The raw ExampleGen's reading logic: IDX and CSV give identical examples; splits partition."""

import numpy as np
import pytest
import tensorflow as tf

from fmnist import dataset
from fmnist.sample import read_official
from modules import features
from tfx_pipeline.components import raw_example_gen as reg


@pytest.fixture()
def csv_sample(sample_dir, tmp_path):
    for official, name in (("train", "fashion-mnist_train.csv"), ("t10k", "fashion-mnist_test.csv")):
        with open(tmp_path / name, "wb") as out:
            dataset.write_csv_split(read_official(sample_dir, official), out)
    return tmp_path


def _examples(input_base, fmt, split, role):
    pattern = reg.SPLIT_PATTERNS[fmt][split]
    return list(reg._serialized_examples(None, str(input_base), pattern, fmt, role, 200, 42))


def test_idx_and_csv_inputs_give_identical_examples(sample_dir, csv_sample):
    for split, role in (("train", "rest"), ("train", "holdout"), ("test", "all")):
        assert _examples(sample_dir, "idx", split, role) == _examples(csv_sample, "csv", split, role)


def test_example_carries_784_pixels_and_label(sample_dir):
    raw = read_official(sample_dir, "t10k")
    example = tf.train.Example.FromString(_examples(sample_dir, "idx", "test", "all")[0])
    pixels = example.features.feature[features.IMAGE_KEY].int64_list.value
    assert list(pixels) == raw.images[0].tolist()
    assert example.features.feature[features.LABEL_KEY].int64_list.value == [raw.labels[0]]


def test_train_and_eval_partition_the_official_train_split(sample_dir):
    split = reg.read_split(str(sample_dir), reg.SPLIT_PATTERNS["idx"]["train"], "idx")
    rest = reg.select_rows(split, "rest", 200, 42)
    holdout = reg.select_rows(split, "holdout", 200, 42)
    assert len(rest) == 800 and len(holdout) == 200
    assert not set(rest) & set(holdout)
    assert np.bincount(split.labels[holdout]).tolist() == [20] * 10


def test_pattern_must_identify_images_and_labels(sample_dir):
    with pytest.raises(dataset.DatasetError, match="must match exactly one labels file"):
        reg.read_split(str(sample_dir), "train-images-*.gz", "idx")
    with pytest.raises(dataset.DatasetError, match="no file matches"):
        reg.read_split(str(sample_dir), "nothing-*.gz", "idx")


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match="input_format must be one of"):
        reg.raw_example_gen("/data", "parquet", 200, 42)
