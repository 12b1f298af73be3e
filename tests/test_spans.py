"""The pieces of the continuous-training loop, one by one, on the committed sample: which span
ExampleGen reads, the drift comparators of the curated schema, the rolling window, the warm
start, the loop's bookkeeping and the runner's first span. The whole loop: tests/e2e."""

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_data_validation as tfdv
from tfx.types import standard_artifacts

import local_runner
from cli import watch
from fmnist import dataset, landing
from modules import model as model_lib
from modules import warm_start
from modules.config import TrainingConfig
from reports.spans import SpanRun
from tfx_pipeline.components import raw_example_gen as reg
from tfx_pipeline.components.drift_gate import SPAN, Distance, drift_distances
from tfx_pipeline.span_window import AcceptedSpanWindow, newest_spans

REPO = Path(__file__).resolve().parent.parent
SCHEMA = tfdv.load_schema_text(str(REPO / "schema" / "schema.pbtxt"))


def write_span_source(directory: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """An official-layout train pair, what `fmnist land` takes."""
    dataset.write_idx_split(directory, dataset.TRAIN, images, labels)
    return directory


# -- which span ExampleGen reads ----------------------------------------------------------------
def test_span_example_gen_reads_train_and_its_holdout_from_the_span_directory():
    gen = reg.span_example_gen("/landing", eval_holdout_size=100, seed=7)
    config = json.loads(gen.exec_properties["input_config"])
    assert [(s["name"], s["pattern"]) for s in config["splits"]] == [
        ("train", "span-{SPAN}/train-*-ubyte.gz"), ("eval", "span-{SPAN}/train-*-ubyte.gz")]
    assert gen.exec_properties["range_config"] is None  # the newest span
    custom = json.loads(gen.exec_properties["custom_config"])["custom_config"]["value"]
    assert custom["splits"] == {"train": {"source": "train", "role": "rest"},
                                "eval": {"source": "train", "role": "holdout"}}


def test_test_example_gen_has_one_fixed_split():
    gen = reg.test_example_gen("/official", dataset.CSV)
    assert json.loads(gen.exec_properties["input_config"])["splits"] == [
        {"name": "test", "pattern": "fashion-mnist_test.csv"}]
    # Without an explicit output split TFX would hash one input split into train and eval.
    assert json.loads(gen.exec_properties["output_config"])["split_config"]["splits"] == [
        {"name": "test", "hash_buckets": 1}]


def test_span_range_config():
    assert reg.span_range_config(0) is None
    static = reg.span_range_config(4).static_range
    assert (static.start_span_number, static.end_span_number) == (4, 4)
    with pytest.raises(ValueError, match="span must be >= 0"):
        reg.span_range_config(-1)


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match="input_format must be one of"):
        reg.test_example_gen("/data", "parquet")


# -- the drift comparators of schema/schema.pbtxt -------------------------------------------------
def _statistics(tmp_path, name, images, labels):
    path = tmp_path / f"{name}.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for image, label in zip(images, labels, strict=True):
            writer.write(reg.to_tf_example(image, int(label)).SerializeToString())
    # With the schema, as the pipeline's StatisticsGen: the label's class frequencies exist.
    return tfdv.generate_statistics_from_tfrecord(str(path), stats_options=tfdv.StatsOptions(schema=SCHEMA))


@pytest.fixture(scope="module")
def halves(sample_dir):
    train = dataset.read_split(sample_dir, dataset.TRAIN)
    order = np.argsort(train.labels, kind="stable")
    return train, order[0::2], order[1::2]  # two stratified halves


def test_two_halves_of_the_sample_do_not_drift_but_inverted_images_and_a_missing_class_do(tmp_path, halves):
    train, first, second = halves
    previous = _statistics(tmp_path, "first", train.images[first], train.labels[first])

    def distances(name, images, labels):
        found = {d.feature: d for d in drift_distances(_statistics(tmp_path, name, images, labels), previous, SCHEMA)}
        assert set(found) == {"image", "label"}
        return found

    same = distances("second", train.images[second], train.labels[second])
    assert not any(d.drifted for d in same.values())
    assert same["image"].measure == "Jensen-Shannon divergence" and same["image"].threshold == 0.01
    assert same["label"].measure == "L-infinity distance" and same["label"].threshold == 0.07

    inverted = distances("inverted", 255 - train.images[second], train.labels[second])
    assert inverted["image"].drifted and inverted["image"].value > 0.3 and not inverted["label"].drifted

    kept = second[train.labels[second] != 3]
    missing = distances("missing", train.images[kept], train.labels[kept])
    assert missing["label"].drifted and missing["label"].value == pytest.approx(1 / 9, abs=0.02)


def test_a_distance_describes_itself_against_its_threshold():
    assert Distance("image", "Jensen-Shannon divergence", 0.37921, 0.01).describe() == (
        "image Jensen-Shannon divergence 0.3792 > 0.01")
    assert not Distance("label", "L-infinity distance", 0.07, 0.07).drifted


# -- the rolling window -------------------------------------------------------------------------
def _examples(artifact_id: int, span: int, version: int = 0):
    artifact = standard_artifacts.Examples()
    artifact.id = artifact_id
    artifact.set_int_custom_property(SPAN, span)
    artifact.set_int_custom_property("version", version)
    return artifact


def test_the_window_holds_the_newest_accepted_spans_once_each():
    examples = [_examples(1, 1), _examples(2, 2), _examples(3, 3), _examples(4, 4), _examples(5, 2, version=1),
                _examples(6, 5)]
    window = newest_spans(examples, accepted={1, 2, 4, 5}, num_spans=3)  # span 3 was rejected
    assert [(a.get_int_custom_property(SPAN), a.id) for a in window] == [(2, 5), (4, 4), (5, 6)]
    assert newest_spans(examples, accepted=set(), num_spans=3) == []
    with pytest.raises(ValueError, match="at least one span"):
        AcceptedSpanWindow(num_spans=0)


# -- warm start ---------------------------------------------------------------------------------
def test_warm_start_restores_the_exported_weights_and_refuses_another_architecture(exported_model):
    hparams = model_lib.HParams.tuned({"epochs": 1, "batch_size": 64})
    model = model_lib.build_model(hparams)
    assert warm_start.restore_weights(model, hparams, str(exported_model)) is True
    inputs = np.random.default_rng(0).normal(size=(4, 784)).astype(np.float32)
    exported = tf.saved_model.load(str(exported_model))
    np.testing.assert_allclose(model(inputs, training=False), exported(inputs, training=False), atol=1e-5)
    # Only the layers: the optimizer restarts, so the new cosine schedule starts at its peak.
    assert int(model.optimizer.iterations.numpy()) == 0

    other = hparams.replace(dense_units=hparams.dense_units // 2)
    untouched = model_lib.build_model(other)
    before = [w.copy() for w in untouched.get_weights()]
    assert warm_start.restore_weights(untouched, other, str(exported_model)) is False
    assert all(np.array_equal(a, b) for a, b in zip(before, untouched.get_weights(), strict=True))


def test_fit_follows_the_warm_schedule_only_when_the_weights_fit(exported_model, sample_dir):
    from modules import trainer
    from modules.data import Split

    raw = dataset.read_split(sample_dir, dataset.TEST)
    split = Split(images=(raw.images[:64] / 255.0).astype(np.float32), labels=raw.labels[:64])
    cold = model_lib.HParams.tuned({"epochs": 3, "batch_size": 64})
    warm = cold.replace(epochs=2, learning_rate=cold.learning_rate / 4)
    result = trainer.fit(cold, split, split, seed=0, base_model=str(exported_model), warm_hparams=warm)
    assert result.warm and result.hparams == warm and len(result.history.history["loss"]) == 2

    other = cold.replace(dense_units=cold.dense_units // 2)  # the Tuner changed the architecture
    result = trainer.fit(other, split, split, seed=0, base_model=str(exported_model),
                         warm_hparams=other.replace(epochs=2))
    assert not result.warm and result.hparams == other and len(result.history.history["loss"]) == 3


def test_the_warm_schedule_follows_its_settings():
    hparams = model_lib.HParams.tuned()
    assert hparams.augment
    warm = warm_start.warm_hparams(hparams, TrainingConfig(warm_start_epochs=6, warm_start_lr_scale=0.5))
    assert (warm.epochs, warm.learning_rate, warm.augment) == (6, hparams.learning_rate * 0.5, False)
    warm = warm_start.warm_hparams(hparams, TrainingConfig(warm_start_augment=True))
    assert (warm.epochs, warm.learning_rate, warm.augment) == (7, hparams.learning_rate, True)
    # augmentation stays off when the cold schedule has none (e.g. the sample profile)
    assert not warm_start.warm_hparams(hparams.replace(augment=False), TrainingConfig(warm_start_augment=True)).augment


# -- the loop's bookkeeping and the runner's first span ----------------------------------------
def test_pending_spans_are_those_after_the_newest_ingested():
    landed = {1: Path("span-1"), 2: Path("span-2"), 3: Path("span-3"), 5: Path("span-5")}
    assert watch.pending_spans(landed, ingested=set()) == [1, 2, 3, 5]
    assert watch.pending_spans(landed, ingested={1, 2}) == [3, 5]
    assert watch.pending_spans(landed, ingested={5}) == []


def test_the_summary_line_says_what_happened_to_the_span():
    run = SpanRun(run_id="r", span=2, examples=500, distances=[Distance("image", "JS", 0.0009, 0.01)],
                  trained_spans=[1, 2], warm_start_from="/m/1", train_seconds=12.4, eval_accuracy=0.86,
                  test_accuracy=0.8267, blessed=True, pushed_version="17")
    assert run.line() == ("span 2: 500 examples; drift image 0.0009/0.01; warm on spans 1+2 12s; "
                          "eval 0.8600, test 0.8267; blessed; pushed version 17")
    stopped = SpanRun(run_id="r", span=3, examples=500)
    assert stopped.line("span 3 drifted") == "span 3: 500 examples; stopped: span 3 drifted"


def test_the_first_run_lands_the_data_dirs_train_files_as_span_1(tmp_path, sample_dir):
    config = local_runner.config_from_args(["--sample", "--output-dir", str(tmp_path)], environ={})
    assert local_runner.span_to_ingest(config) is None
    assert local_runner.preflight(config) == {"train": 1000, "test": 300}
    assert local_runner.land_first_span(config) == 1000
    assert local_runner.land_first_span(config) is None  # only while nothing is landed
    assert list(landing.spans(Path(config.landing_root))) == [1]
    assert local_runner.span_to_ingest(config) == 1


def test_a_span_that_was_never_landed_is_refused_in_preflight(tmp_path, halves):
    train, first, _ = halves
    landing_dir = tmp_path / "landing"
    landing.land(write_span_source(tmp_path / "src", train.images[first], train.labels[first]), landing_dir)
    config = local_runner.config_from_args(["--sample", "--output-dir", str(tmp_path), "--landing-dir",
                                            str(landing_dir), "--span", "4"], environ={})
    with pytest.raises(dataset.DatasetError, match=r"landing: no span 4 \(landed: 1\)"):
        local_runner.preflight(config)
    small = config.replace(span=1, eval_holdout_size=500)
    with pytest.raises(dataset.DatasetError, match="hold-out of 500 examples must be between 1 and 499"):
        local_runner.preflight(small)
