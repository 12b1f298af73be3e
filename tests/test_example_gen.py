"""The raw ExampleGen's reading logic: IDX and CSV give identical examples; splits partition; the
executor reads a span in chunks of rows and writes exactly the examples of reading it whole; bad
input is one DatasetError line naming the file."""

import collections
import glob
import gzip
import shutil

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
    split = reg.read_split_through_fileio(str(sample_dir), "train", "idx")
    rest = reg.select_rows(split.labels, "rest", 200, 42)
    holdout = reg.select_rows(split.labels, "holdout", 200, 42)
    assert len(rest) == 800 and len(holdout) == 200
    assert not set(rest) & set(holdout)
    assert np.bincount(split.labels[holdout]).tolist() == [20] * 10


def test_a_missing_file_is_named(sample_dir, tmp_path):
    (tmp_path / dataset.IDX_FILES["train"][0]).write_bytes((sample_dir / dataset.IDX_FILES["train"][0]).read_bytes())
    with pytest.raises(dataset.DatasetError, match=r"train-labels-idx1-ubyte\.gz: missing"):
        reg.read_split_through_fileio(str(tmp_path), "train", "idx")


def test_split_patterns_match_exactly_the_files_read(sample_dir):
    import fnmatch

    for split in dataset.OFFICIAL_SPLITS:
        matched = fnmatch.filter(sorted(p.name for p in sample_dir.iterdir()), dataset.split_pattern(split, "idx"))
        assert matched == sorted(dataset.split_files(split, "idx"))




# -- chunked reading --
SPLITS = (("train", "rest"), ("train", "holdout"), ("test", "all"))


def _read_whole(directory, source, role):
    """What the executor wrote before it read in chunks: the split read whole, int64 pixels."""
    split = read_split(directory, source)
    return [reg.to_tf_example(split.images[row], int(split.labels[row])).SerializeToString()
            for row in reg.select_rows(split.labels, role, 200, 42)]


@pytest.fixture()
def small_chunks(monkeypatch):
    monkeypatch.setattr(reg, "CHUNK_ROWS", 300)  # the sample's 1,000 train rows: 4 chunks, the last short


def test_chunks_give_the_examples_of_the_whole_split_in_row_order(sample_dir, small_chunks):
    assert reg.plan_chunks(str(sample_dir), "train", "idx", "rest", 200, 42) == [
        (0, 300), (300, 600), (600, 900), (900, 1000)]
    for split, role in SPLITS:
        assert _examples(sample_dir, "idx", split, role) == _read_whole(sample_dir, split, role)


def test_chunks_in_any_order_give_the_same_examples(sample_dir, small_chunks):
    reader = reg.ReadChunk(str(sample_dir), "train", "idx", "rest", 200, 42)
    chunks = reg.plan_chunks(str(sample_dir), "train", "idx", "rest", 200, 42)
    shuffled = [chunks[i] for i in (2, 0, 3, 1)]  # a worker that gets them out of order reopens the file
    examples = [example for chunk in shuffled for example in reader.process(chunk)]
    reader.teardown()
    assert collections.Counter(examples) == collections.Counter(_read_whole(sample_dir, "train", "rest"))


def _run_executor(landing_root, output_uri):
    from tfx.types import standard_artifacts

    gen = reg.span_example_gen(str(landing_root), eval_holdout=dataset.HoldoutSpec(200), seed=42)
    properties = dict(gen.exec_properties)
    properties["input_config"] = properties["input_config"].replace(reg.SPAN_SPEC, "1")  # the driver's work
    examples = standard_artifacts.Examples()
    examples.uri = str(output_uri)
    context = reg.Executor.Context(beam_pipeline_args=["--direct_running_mode=in_memory", "--direct_num_workers=1"],
                                   tmp_dir=str(output_uri / "tmp"), unique_id="test")
    reg.Executor(context).Do({}, {"examples": [examples]}, properties)
    return examples


def _landed(sample_dir, tmp_path):
    span = tmp_path / "landing" / "span-1"
    span.mkdir(parents=True)
    for name in dataset.IDX_FILES["train"]:
        shutil.copy(sample_dir / name, span)
    return span


@pytest.mark.pipeline
def test_executor_writes_the_same_multiset_of_examples_as_reading_the_span_whole(sample_dir, tmp_path, small_chunks):
    from tfx.components.util import examples_utils
    from tfx.types import artifact_utils

    _landed(sample_dir, tmp_path)
    examples = _run_executor(tmp_path / "landing", tmp_path / "examples")
    assert artifact_utils.decode_split_names(examples.split_names) == ["train", "eval"]
    assert examples_utils.get_payload_format_string(examples) == "FORMAT_TF_EXAMPLE"
    for split, role in (("train", "rest"), ("eval", "holdout")):
        # Where TFX's WriteSplit put them, so Transform and the Trainer find them as before.
        files = sorted(glob.glob(str(tmp_path / "examples" / f"Split-{split}" / "data_tfrecord-*.gz")))
        written = [record.numpy() for record in tf.data.TFRecordDataset(files, compression_type="GZIP")]
        assert collections.Counter(written) == collections.Counter(_read_whole(sample_dir, "train", role)), split


def _rewrite_images(span, change):
    path = span / dataset.IDX_FILES["train"][0]
    path.write_bytes(gzip.compress(change(gzip.decompress(path.read_bytes()))))


def _truncated(span):
    path = span / dataset.IDX_FILES["train"][0]
    path.write_bytes(path.read_bytes()[:20000])  # the header reads; a later chunk meets the end
    return r"train-images-idx3-ubyte\.gz: truncated gzip stream"


SIZE_MISMATCH = r"train-images-idx3-ubyte\.gz: header declares shape \(1000, 28, 28\) = 784000 bytes of data, "


def _trailing_bytes(span):
    _rewrite_images(span, lambda data: data + bytes(784))
    return SIZE_MISMATCH + "but the file holds 784784"


def _short_data(span):
    _rewrite_images(span, lambda data: data[:-10])
    return SIZE_MISMATCH + "but the file holds 783990"


def _missing_labels(span):
    (span / dataset.IDX_FILES["train"][1]).unlink()
    return r"train-labels-idx1-ubyte\.gz: missing \(the train split of the idx input\)"


def _labels_for_images(span):
    shutil.copy(span / dataset.IDX_FILES["train"][1], span / dataset.IDX_FILES["train"][0])
    return r"train-images-idx3-ubyte\.gz: wrong magic number 0x00000801, expected 0x00000803"


def _fewer_images(span):
    _rewrite_images(span, lambda data: data[:4] + (999).to_bytes(4, "big") + data[8:-784])
    return r"train-images-idx3-ubyte\.gz holds 999 images but .*train-labels-idx1-ubyte\.gz holds 1000 labels"


@pytest.mark.parametrize("breakage", [_truncated, _trailing_bytes, _short_data, _missing_labels, _labels_for_images,
                                      _fewer_images])
def test_bad_input_is_one_line_naming_the_file(sample_dir, tmp_path, small_chunks, breakage):
    span = _landed(sample_dir, tmp_path)
    expected = breakage(span)
    with pytest.raises(dataset.DatasetError, match=expected) as raised:
        _examples(span, "idx", "train", "rest")
    assert "\n" not in str(raised.value)


@pytest.mark.pipeline
def test_the_executor_rejects_bad_input_in_one_line(sample_dir, tmp_path, small_chunks):
    span = _landed(sample_dir, tmp_path)
    _missing_labels(span)  # found while the Beam pipeline is built
    with pytest.raises(dataset.DatasetError, match=r"train-labels-idx1-ubyte\.gz: missing") as raised:
        _run_executor(tmp_path / "landing", tmp_path / "examples")
    assert "\n" not in str(raised.value)
    shutil.copy(sample_dir / dataset.IDX_FILES["train"][1], span)
    _truncated(span)  # found by a chunk while Beam runs; Beam adds the step's name, on the same line
    with pytest.raises(dataset.DatasetError, match=r"train-images-idx3-ubyte\.gz: truncated gzip stream") as raised:
        _run_executor(tmp_path / "landing", tmp_path / "examples-2")
    assert "\n" not in str(raised.value)


def test_a_hold_out_larger_than_the_span_is_found_before_beam_runs(sample_dir):
    with pytest.raises(dataset.DatasetError, match="hold-out of 5000 examples must be between 1 and 999"):
        reg.plan_chunks(str(sample_dir), "train", "idx", "rest", dataset.HoldoutSpec(5000), 42)
