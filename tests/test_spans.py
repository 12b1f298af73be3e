"""The pieces of the continuous-training loop, one by one, on the committed sample: which span
ExampleGen reads, the drift comparators of the curated schema, the rolling window, the warm
start, the loop's bookkeeping and the runner's first span. The whole loop: tests/e2e."""

import dataclasses
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
from tfx_pipeline import metadata, span_verdicts, span_window
from tfx_pipeline.components import blessing_gate
from tfx_pipeline.components import raw_example_gen as reg
from tfx_pipeline.components.drift_gate import SPAN, Distance, SpanStatistics, drift_distances
from tfx_pipeline.span_window import AcceptedSpanWindow, newest_spans

REPO = Path(__file__).resolve().parent.parent
SCHEMA = tfdv.load_schema_text(str(REPO / "schema" / "schema.pbtxt"))


def write_span_source(directory: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """An official-layout train pair, what `fmnist land` takes."""
    dataset.write_idx_split(directory, dataset.TRAIN, images, labels)
    return directory


# -- which span ExampleGen reads ----------------------------------------------------------------
def test_span_example_gen_reads_train_and_its_holdout_from_the_span_directory():
    gen = reg.span_example_gen("/landing", eval_holdout=dataset.HoldoutSpec(0.1, 200, 5000), seed=7)
    config = json.loads(gen.exec_properties["input_config"])
    assert [(s["name"], s["pattern"]) for s in config["splits"]] == [
        ("train", "span-{SPAN}/train-*-ubyte.gz"), ("eval", "span-{SPAN}/train-*-ubyte.gz")]
    assert gen.exec_properties["range_config"] is None  # the newest span
    custom = json.loads(gen.exec_properties["custom_config"])["custom_config"]["value"]
    assert custom["splits"] == {"train": {"source": "train", "role": "rest"},
                                "eval": {"source": "train", "role": "holdout"}}
    # A fraction, sized from each span's labels when the span is read: a span of any size fits.
    assert reg.holdout_from_config(custom) == dataset.HoldoutSpec(0.1, 200, 5000)


def test_test_example_gen_splits_the_official_test_split_into_golden_and_test():
    gen = reg.test_example_gen("/official", dataset.CSV, dataset.HoldoutSpec(0.5), seed=3)
    assert json.loads(gen.exec_properties["input_config"])["splits"] == [
        {"name": "golden", "pattern": "fashion-mnist_test.csv"}, {"name": "test", "pattern": "fashion-mnist_test.csv"}]
    custom = json.loads(gen.exec_properties["custom_config"])["custom_config"]["value"]
    assert custom["splits"] == {"golden": {"source": "test", "role": "holdout"},
                                "test": {"source": "test", "role": "rest"}}
    assert custom["seed"] == 3 and reg.holdout_from_config(custom) == dataset.HoldoutSpec(0.5)


def test_the_golden_set_and_the_reported_test_split_partition_the_test_split_by_class(sample_dir):
    labels = dataset.read_split(sample_dir, dataset.TEST).labels
    golden = reg.select_rows(labels, "holdout", dataset.HoldoutSpec(0.5), 11)
    rest = reg.select_rows(labels, "rest", dataset.HoldoutSpec(0.5), 11)
    assert len(golden) == len(rest) == 150 and not set(golden) & set(rest)
    assert np.bincount(labels[golden]).tolist() == [15] * 10  # stratified: the classes' shares
    np.testing.assert_array_equal(golden, reg.select_rows(labels, "holdout", dataset.HoldoutSpec(0.5), 11))


@pytest.mark.parametrize(("examples", "size"), [(60_000, 5000), (20_000, 2000), (10_000, 1000), (1_500, 200),
                                                (1_673, 200), (400, 200)])
def test_a_fractional_hold_out_fits_the_span_between_its_floor_and_cap(examples, size):
    assert dataset.HoldoutSpec(0.1, 200, 5000).size(examples) == size


def test_a_span_too_small_to_evaluate_is_one_line():
    with pytest.raises(dataset.DatasetError, match=r"^span-9: 399 examples is too small to evaluate: a 0.1 hold-out "
                                                   r"of at least 200 examples and as many to train on need >= 400 "
                                                   r"examples$"):
        dataset.HoldoutSpec(0.1, 200, 5000).size(399, "span-9")
    with pytest.raises(dataset.DatasetError, match="a fraction in"):
        dataset.HoldoutSpec(2.5)
    with pytest.raises(dataset.DatasetError, match="hold-out of 500 examples must be between 1 and 299"):
        dataset.HoldoutSpec(500).size(300)


def test_span_range_config():
    assert reg.span_range_config(0) is None
    static = reg.span_range_config(4).static_range
    assert (static.start_span_number, static.end_span_number) == (4, 4)
    with pytest.raises(ValueError, match="span must be >= 0"):
        reg.span_range_config(-1)


def test_unknown_format_is_rejected():
    with pytest.raises(ValueError, match="input_format must be one of"):
        reg.test_example_gen("/data", "parquet", dataset.HoldoutSpec(0.5), seed=1)


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


@pytest.mark.slow
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


def _verdicts(**by_span: str) -> dict[int, span_verdicts.Verdict]:
    return {int(span[1:]): span_verdicts.Verdict(int(span[1:]), verdict, "why", "who", 0.0)
            for span, verdict in by_span.items()}


def test_the_window_holds_this_span_and_the_newest_trainable_ones_once_each():
    examples = [_examples(1, 1), _examples(2, 2), _examples(3, 3), _examples(4, 4), _examples(5, 2, version=1),
                _examples(6, 5), _examples(7, 6), _examples(8, 7), _examples(9, 8)]
    verdicts = _verdicts(s1="accepted", s2="released", s3="rejected", s4="accepted", s5="quarantined", s6="drifted")
    trainable = span_window.trainable_spans(verdicts)
    assert trainable == {1, 2, 4}
    # Span 8 is this run's (no verdict yet); 3, 5 and 6 were judged out, 7's run never finished.
    window = newest_spans(examples, current=8, trainable=trainable, num_spans=3)
    assert [(a.get_int_custom_property(SPAN), a.id) for a in window] == [(2, 5), (4, 4), (8, 9)]
    assert [a.id for a in newest_spans(examples, current=8, trainable=trainable, num_spans=1)] == [9]
    assert newest_spans(examples[:1], current=None, trainable=set(), num_spans=3) == []
    with pytest.raises(ValueError, match="at least one span"):
        AcceptedSpanWindow(num_spans=0)


def test_the_drift_baseline_is_the_newest_trainable_spans_statistics():
    statistics = []
    for artifact_id, span in ((11, 1), (12, 2), (13, 3)):
        stats = SpanStatistics()
        stats.id = artifact_id
        stats.set_int_custom_property(SPAN, span)
        statistics.append(stats)
    trainable = span_window.trainable_spans(_verdicts(s1="accepted", s2="rejected"))
    assert [a.id for a in span_window.latest_trainable(statistics, trainable)] == [11]
    assert span_window.latest_trainable(statistics, set()) == []


def test_verdicts_are_recorded_beside_the_examples_never_on_them(tmp_path):
    """A verdict is its own artifact: the Examples keep their bytes, so TFX's cache (which hashes
    input artifacts whole) still reuses every step downstream of an unchanged span."""
    from ml_metadata import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    path = str(tmp_path / "metadata.sqlite")
    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = path
    config.sqlite.connection_mode = metadata_store_pb2.SqliteMetadataSourceConfig.READWRITE_OPENCREATE
    store = metadata_store.MetadataStore(config)
    examples_type = store.put_artifact_type(metadata_store_pb2.ArtifactType(name="Examples"))
    node_type = store.put_context_type(metadata_store_pb2.ContextType(name="node"))
    pipeline_type = store.put_context_type(metadata_store_pb2.ContextType(name="pipeline"))
    node = metadata_store_pb2.Context(type_id=node_type, name="p.ExampleGen")
    pipeline = metadata_store_pb2.Context(type_id=pipeline_type, name="p")
    [node.id, pipeline.id] = store.put_contexts([node, pipeline])
    examples = metadata_store_pb2.Artifact(type_id=examples_type, uri="/x")
    examples.custom_properties[SPAN].int_value = 3
    [examples.id] = store.put_artifacts([examples])
    store.put_attributions_and_associations([metadata_store_pb2.Attribution(artifact_id=examples.id,
                                                                             context_id=node.id)], [])
    before = store.get_artifacts_by_id([examples.id])[0].SerializeToString(deterministic=True)

    span_verdicts.record(path, "p", 3, "rejected", "golden gate failed", by="loop")
    made = span_verdicts.record(path, "p", 3, "released", "  relabelled,\nchecked ", by="qa",
                                allowed_from=["rejected"])
    assert (made.verdict, made.reason, made.by) == ("released", "relabelled, checked", "qa")
    assert span_verdicts.span_verdicts(path, "p")[3].verdict == "released"
    assert [v.verdict for v in span_verdicts.history(path, "p")] == ["rejected", "released"]
    assert span_verdicts.span_verdicts(path, "other") == {}
    reopened = metadata.open_store(path)
    assert reopened.get_artifacts_by_id([examples.id])[0].SerializeToString(deterministic=True) == before
    with pytest.raises(span_verdicts.VerdictError, match="span 3 is released; only a span that is rejected"):
        span_verdicts.record(path, "p", 3, "released", "again", allowed_from=["rejected"])
    with pytest.raises(span_verdicts.VerdictError, match="span 4 was never ingested"):
        span_verdicts.record(path, "p", 4, "quarantined", "x")
    with pytest.raises(span_verdicts.VerdictError, match="a verdict needs a reason"):
        span_verdicts.record(path, "p", 3, "quarantined", "  ")


@pytest.mark.parametrize(("evaluated", "golden", "blessed", "status"), [
    (True, True, True, "passed"), (True, None, True, "not judged"), (True, False, False, "failed"),
    (False, True, False, "passed"), (None, None, False, "not judged")])
def test_the_blessing_needs_the_evaluator_and_a_golden_gate_that_did_not_fail(evaluated, golden, blessed, status):
    decided, reason, golden_status = blessing_gate.decide(evaluated, golden)
    assert (decided, golden_status) == (blessed, status)
    assert (reason == "passed") == blessed
    # Labels that disagree with the golden set's refuse the blessing whatever the gates said.
    refused, why, _ = blessing_gate.decide(evaluated, golden, "class 2 (Pullover) recall 0.000")
    assert not refused and why == "the span's labels disagree with the golden set's: class 2 (Pullover) recall 0.000"


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


@pytest.mark.slow
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
    judged = dataclasses.replace(run, golden_accuracy=0.81, golden_stable_accuracy=0.8, golden_status="passed",
                                 verdict="accepted")
    assert judged.line().endswith("eval 0.8600, golden 0.8100 vs stable 0.8000 (passed), test 0.8267; blessed; "
                                  "pushed version 17; span accepted")
    poisoned = dataclasses.replace(judged, labels_status="disagree", blessed=False, pushed_version=None,
                                   verdict="rejected")
    assert poisoned.line().endswith("golden 0.8100 vs stable 0.8000 (passed), labels disagree with golden, "
                                    "test 0.8267; NOT blessed; nothing pushed; span rejected")
    assert dataclasses.replace(judged, labels_status="agree").line() == judged.line()  # said only when it matters
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
    small = config.replace(span=1, eval_holdout=500)
    with pytest.raises(dataset.DatasetError, match="hold-out of 500 examples must be between 1 and 499"):
        local_runner.preflight(small)


# -- the spans command and the loop's release settings --------------------------------------------
def test_spans_refuses_a_change_without_span_reason_or_store_in_one_line(tmp_path, capsys):
    from cli.main import main

    flags = ["--sample", "--output-dir", str(tmp_path)]
    assert main(["spans", "quarantine", *flags, "--why", "x"]) == 2
    assert capsys.readouterr().err.strip() == "error: `fmnist spans quarantine` needs a span number and --why TEXT"
    assert main(["spans", "release", "3", *flags, "--why", "checked"]) == 2
    assert "no ML Metadata store at" in capsys.readouterr().err
    assert main(["spans", "list", "3", *flags]) == 2
    assert capsys.readouterr().err.strip() == "error: `fmnist spans list` takes no span number"


def test_spans_lists_landed_spans_before_any_run_with_what_pre_flight_says(tmp_path, halves, capsys):
    from cli.main import main

    train, first, _ = halves
    landing_dir = tmp_path / "landing"
    landing.land(write_span_source(tmp_path / "src-1", train.images[first], train.labels[first]), landing_dir)
    landing.land(write_span_source(tmp_path / "src-2", train.images[first[:250]], train.labels[first[:250]]),
                 landing_dir)
    assert main(["spans", "--sample", "--output-dir", str(tmp_path), "--landing-dir", str(landing_dir),
                 "--eval-holdout", "0.2"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].split() == ["span", "examples", "verdict", "reason", "golden", "gate", "model", "version"]
    assert rows[1].split()[:6] == ["1", "500", "not", "ingested", "waiting", "for"]
    assert rows[2].split()[:7] == ["2", "-", "not", "ingested", "refused", "before", "a"]
    assert "250 examples is too small to evaluate" in rows[2]


def test_the_loop_refuses_impossible_canary_thresholds_before_any_span(tmp_path, capsys):
    from cli.main import main

    assert main(["watch", "--sample", "--output-dir", str(tmp_path), "--once", "--min-agreement", "1.5"]) == 2
    assert capsys.readouterr().err.strip() == "error: min-agreement is a fraction within 0..1, got 1.5"
