"""End-to-end LocalDagRunner runs on the committed sample of the real files.

One good run (asserted through ML Metadata and the pushed SavedModel), its re-run (cached up to
the Trainer, which warm-starts from the first model), and bad data that must stop before
Transform, or before the pipeline, and push nothing.
"""

import dataclasses
import gzip
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf
from ml_metadata.proto import metadata_store_pb2

import local_runner
from fmnist import dataset, features
from fmnist.dataset import read_split
from modules import inference, signatures
from modules.inference import read_examples
from tfx_pipeline import console, metadata

EXPECTED_COMPONENTS = {
    "ExampleGen", "TestExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator", "AnomaliesGate",
    "previous_span_resolver", "DriftGate", "span_window_resolver", "Transform", "Trainer",
    "latest_blessed_model_resolver", "stable_model_resolver", "Evaluator", "GoldenEvaluator", "BlessingGate",
    "TestEvaluator", "ServingValidator", "Pusher",
    "UnlabelledExampleGen", "BulkInferrer",  # the good run also labels images (--bulk-inference-input)
}


def _config(data_dir, output_dir, *extra):
    return local_runner.config_from_args(["--sample", "--data-dir", str(data_dir), "--output-dir", str(output_dir),
                                          *extra], environ={})


@pytest.fixture(scope="module")
def good_run(first_sample_run):
    """The session's first run of the sample (its test images labelled by bulk inference), whose
    history this module adds to. It ran cold; this module's reruns warm-start, as users' do."""
    config = first_sample_run()
    return config.replace(training=dataclasses.replace(config.training, warm_start=True))


def _outputs(config, component, key):
    return metadata.latest_outputs(config.metadata_path, config.pipeline_name, component, key)


def test_every_component_ran(good_run):
    runs = metadata.component_runs(good_run.metadata_path, good_run.pipeline_name)
    assert {r.component for r in runs} == EXPECTED_COMPONENTS
    assert {r.state for r in runs} == {"COMPLETE"}, console.format_table(runs)


def test_example_validator_found_no_anomalies(good_run):
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    (anomalies,) = _outputs(good_run, "ExampleValidator", "anomalies")
    split_names = json.loads(anomalies.properties["split_names"].string_value)
    assert sorted(split_names) == ["eval", "train"]  # the span (the fixed test split: pre-flight)
    for split in split_names:
        with tf.io.gfile.GFile(f"{anomalies.uri}/Split-{split}/SchemaDiff.pb", "rb") as stream:
            parsed = anomalies_pb2.Anomalies.FromString(stream.read())
        assert not parsed.anomaly_info and not parsed.dataset_anomaly_info.reason, split


def test_example_splits_have_the_configured_sizes(good_run):
    (examples,) = _outputs(good_run, "ExampleGen", "examples")
    (test_examples,) = _outputs(good_run, "TestExampleGen", "examples")
    assert examples.custom_properties["span"].int_value == 1  # the sample's train files, landed as span 1
    counts = {}
    for uri, split in ((examples.uri, "train"), (examples.uri, "eval"), (test_examples.uri, "golden"),
                       (test_examples.uri, "test")):
        files = tf.io.gfile.glob(f"{uri}/Split-{split}/*")
        counts[split] = sum(1 for _ in tf.data.TFRecordDataset(files, compression_type="GZIP"))
    # The official test split's 300: half the golden set (--golden-share 0.5), half reported.
    assert counts == {"train": 800, "eval": 200, "golden": 150, "test": 150}


def test_pushed_model_returns_probabilities_for_a_test_image(good_run, sample_dir):
    pushed = inference.latest_version_dir(good_run.serving_model_dir)
    assert pushed is not None, "the good run pushed nothing"
    loaded = tf.saved_model.load(pushed)
    test = read_split(sample_dir, "test")
    image = test.images[:1].reshape(1, *features.IMAGE_SHAPE).astype(np.float32)
    outputs = loaded.signatures[signatures.SERVING_DEFAULT](images=tf.constant(image))
    probabilities = outputs["probabilities"].numpy()
    assert probabilities.shape == (1, features.NUM_CLASSES)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    class_id = int(outputs["class_id"].numpy()[0])
    assert outputs["class_name"].numpy()[0].decode() == features.CLASS_NAMES[class_id]


def test_the_pushed_model_is_the_serving_checks_copy_with_its_warmup_requests(good_run):
    """The Pusher ships what the ServingValidator served (InfraBlessing, has_model), warmup included."""
    from tensorflow_serving.apis import prediction_log_pb2

    (infra,) = _outputs(good_run, "ServingValidator", "blessing")
    assert infra.custom_properties["blessed"].int_value == 1 and infra.custom_properties["has_model"].int_value == 1
    pushed = inference.latest_version_dir(good_run.serving_model_dir)
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
               for r in tf.data.TFRecordDataset(f"{pushed}/{features.WARMUP_FILE}")]
    assert len(records) == good_run.serving_validation.warmup_requests
    assert {r.WhichOneof("log_type") for r in records} == {"predict_log", "classify_log"}
    with open(f"{infra.uri}/stamped_model/{features.WARMUP_FILE}", "rb") as validated, \
            open(f"{pushed}/{features.WARMUP_FILE}", "rb") as shipped:
        assert validated.read() == shipped.read()


def test_pushed_model_is_better_than_chance_on_the_test_split(good_run, sample_dir):
    pushed = inference.latest_version_dir(good_run.serving_model_dir)
    assert inference.model_accuracy(pushed, str(sample_dir), "idx") > 0.6


def test_classify_signature_is_marked_for_tf_serving(good_run):
    from tensorflow.core.protobuf import saved_model_pb2

    pushed = inference.latest_version_dir(good_run.serving_model_dir)
    saved_model = saved_model_pb2.SavedModel.FromString(open(f"{pushed}/saved_model.pb", "rb").read())
    signature = saved_model.meta_graphs[0].signature_def[signatures.CLASSIFY_SIGNATURE]
    assert signature.method_name == "tensorflow/serving/classify"
    assert set(signature.inputs) == {"inputs"} and set(signature.outputs) == {"classes", "scores"}


def _release(config) -> tuple[int | None, int | None]:
    from serving.release.labels import FileRelease

    state = FileRelease(str(local_runner.release_config_file(config))).status()
    return state.stable, state.canary


def test_batch_inference_labels_the_unlabelled_images_with_the_blessed_model(good_run, sample_dir, tmp_path):
    from cli.main import main

    out = tmp_path / "predictions.csv"
    assert main(["predictions", "export", "--pipeline-root", good_run.pipeline_root, "--format", "csv",
                 "--out", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0] == "id,class_id,class,probability"
    test = read_split(sample_dir, dataset.TEST)
    assert len(rows) == 1 + len(test.labels)
    ids = [row.split(",")[0] for row in rows[1:]]
    assert ids == [f"{dataset.IDX_FILES[dataset.TEST][0]}:{i}" for i in range(len(test.labels))]
    # The same answers as the pushed model, run in-process on the same images.
    model = tf.saved_model.load(inference.latest_version_dir(good_run.serving_model_dir))
    expected = model.signatures[features.SERVING_DEFAULT](
        **{features.IMAGES_INPUT: tf.constant(test.images.reshape(-1, *features.IMAGE_SHAPE), tf.float32)})
    np.testing.assert_array_equal([int(row.split(",")[1]) for row in rows[1:]],
                                  expected[features.CLASS_ID_OUTPUT].numpy())


def test_the_first_push_is_released_as_stable(good_run):
    pushed = int(inference.latest_version_dir(good_run.serving_model_dir).rsplit("/", 1)[1])
    assert _release(good_run) == (pushed, None)


def test_rerun_on_the_same_span_reuses_the_data_and_warm_starts_from_the_first_model(good_run):
    (first_model,) = _outputs(good_run, "Trainer", "model")
    stable, _ = _release(good_run)
    local_runner.run(good_run)
    runs = metadata.component_runs(good_run.metadata_path, good_run.pipeline_name)
    states = {r.component: r.state for r in runs}
    data_steps = {"ExampleGen", "TestExampleGen", "StatisticsGen", "ImportSchemaGen", "ExampleValidator",
                  "AnomaliesGate", "Transform"}
    assert {states[c] for c in data_steps} == {"CACHED"}, console.format_table(runs)
    # The first model is now the blessed one: the Trainer's base_model input changed, so it
    # trains again, from those weights (and the drift gate compares the span with itself).
    assert states["Trainer"] == states["DriftGate"] == "COMPLETE", console.format_table(runs)
    trainer = metadata.latest_execution_outputs(good_run.metadata_path, good_run.pipeline_name, "Trainer")
    inputs = metadata.execution_artifacts(metadata.open_store(good_run.metadata_path), trainer.execution.id,
                                          [metadata_store_pb2.Event.INPUT])
    assert [a.id for a in inputs["base_model"]] == [first_model.id]
    (second_model,) = trainer.artifacts["model"]
    assert second_model.id != first_model.id
    # The Evaluator's inputs did change: the first run's model is now the blessed baseline, so
    # it re-runs and judges the retrain against it.
    import tensorflow_model_analysis as tfma

    from reports.evaluation import load_latest

    assert states["Evaluator"] == "COMPLETE"
    report = load_latest(good_run.metadata_path, good_run.pipeline_name)
    assert report.baseline_model_uri == first_model.uri and report.judged.has_baseline
    # Blessed or not is the numbers' call (on the sample's 200-image hold-out one image is 0.5
    # points, the allowed drop): the verdict must follow the drop against that baseline.
    validation = tfma.load_validation_result(_outputs(good_run, "Evaluator", "evaluation")[0].uri)
    drop = report.judged.baseline_overall["accuracy"] - report.judged.overall["accuracy"]
    if drop > good_run.thresholds.max_accuracy_drop + 1e-9:
        assert not validation.validation_ok, validation
    # The blessing is the eval hold-out's verdict and the golden gate's (vs stable: the first model).
    assert report.golden_status in ("passed", "failed") and report.golden_baseline_uri == first_model.uri
    assert report.blessed == (validation.validation_ok and report.golden_status == "passed")
    # A pushed retrain is released as the canary beside the first model, which stays stable.
    versions = sorted(int(v) for v in os.listdir(good_run.serving_model_dir))
    assert _release(good_run) == ((stable, versions[-1]) if report.blessed else (stable, None))
    assert len(versions) == (2 if report.blessed else 1)


def _copy_sample(sample_dir, dest):
    shutil.copytree(sample_dir, dest)
    return dest


def test_bad_label_in_a_span_stops_the_pipeline_before_transform(tmp_path, sample_dir):
    # A span written straight into the landing directory by another tool (fmnist land would
    # refuse it): the schema, through ExampleValidator, is the last line of defence.
    span = _copy_sample(sample_dir, tmp_path / "landing" / "span-1")
    labels_file = span / "train-labels-idx1-ubyte.gz"
    labels = bytearray(gzip.decompress(labels_file.read_bytes()))
    labels[8 + 5] = 12  # 8-byte IDX header, then one byte per label
    labels_file.write_bytes(gzip.compress(bytes(labels)))
    config = _config(sample_dir, tmp_path / "out", "--landing-dir", str(tmp_path / "landing"))

    with pytest.raises(Exception, match=r"split '(train|eval)', feature 'label'.*(large|range|domain)") as raised:
        local_runner.run(config)
    assert "stopping before Transform" in str(raised.value)
    assert inference.latest_version_dir(config.serving_model_dir) is None
    ran = {r.component for r in metadata.component_runs(config.metadata_path, config.pipeline_name)}
    assert "Transform" not in ran and "Trainer" not in ran


def test_bad_pixel_in_csv_stops_the_run_before_the_pipeline(tmp_path, sample_dir):
    data = tmp_path / "csv"
    data.mkdir()
    for official, name in dataset.CSV_FILES.items():
        raw = read_split(sample_dir, official)
        images = raw.images.copy()
        if official == "train":
            images[3, 400] = 300
        with open(data / name, "wb") as out:
            dataset.write_csv_split(dataset.RawSplit(images=images, labels=raw.labels), out)
    config = _config(data, tmp_path / "out", "--format", "csv")

    # Checked while it is landed as span 1, before any component runs; nothing is landed.
    with pytest.raises(dataset.DatasetError, match=r"fashion-mnist_train\.csv:5: .*300"):
        local_runner.run(config)
    assert inference.latest_version_dir(config.serving_model_dir) is None
    assert not list((tmp_path / "out" / config.pipeline_name / "landing").glob("span-*"))


def test_exported_model_matches_the_in_memory_model_on_raw_images(good_run, sample_dir, tmp_path):
    """No training/serving skew: raw pixels through the exported signature (Transform graph
    inside) give the same probabilities as the in-memory model on Transform's own output."""
    import tensorflow_transform as tft

    from modules import data, trainer
    from modules.model import HParams

    (transform_graph,) = _outputs(good_run, "Transform", "transform_graph")
    (transformed,) = _outputs(good_run, "Transform", "transformed_examples")
    tf_transform_output = tft.TFTransformOutput(transform_graph.uri)
    train = data.load_transformed([f"{transformed.uri}/Split-train/*"], tf_transform_output)
    eval_xf = data.load_transformed([f"{transformed.uri}/Split-eval/*"], tf_transform_output)
    model = trainer.fit(HParams.tuned({"epochs": 1}), train, train, seed=1, max_steps=5).model

    export_dir = str(tmp_path / "export")
    signatures.export_saved_model(model, tf_transform_output, export_dir)
    serve = tf.saved_model.load(export_dir).signatures[signatures.SERVING_DEFAULT]

    # Transform's output keeps no example order guarantee, so match rows through the raw split:
    # the eval split's transformed images are a per-pixel monotone map of the raw ones.
    (examples,) = _outputs(good_run, "ExampleGen", "examples")
    raw_images, _ = read_examples(examples.uri, "eval")
    in_memory = model.predict(eval_xf.images, verbose=0)
    exported = serve(images=tf.constant(raw_images.reshape(-1, 28, 28).astype(np.float32)))["probabilities"].numpy()
    order_raw = np.lexsort(raw_images.T[::-1])
    order_xf = np.lexsort(eval_xf.images.T[::-1])
    np.testing.assert_allclose(exported[order_raw], in_memory[order_xf], atol=1e-5)


def test_tuner_output_flows_into_the_trainer(good_run):
    """Runs last in this module: it adds a Tuner to the good run's pipeline (upstream cached)."""
    from modules.config import TuningConfig
    from modules.trainer import TRAINING_SUMMARY_FILE

    # Cold: a warm start would train the blessed model's weights on its own shorter schedule. A few
    # steps: what is checked is which hyperparameters the Trainer used, not the model they make.
    tuned_run = good_run.replace(training=dataclasses.replace(
        good_run.training, warm_start=False, max_train_steps=5,
        tuning=TuningConfig(tune=True, tuning_trials=2, tuning_epochs=1)))
    local_runner.run(tuned_run)
    states = {r.component: r.state for r in metadata.component_runs(tuned_run.metadata_path,
                                                                        tuned_run.pipeline_name)}
    assert states["Transform"] == "CACHED" and states["Tuner"] == "COMPLETE"

    (best,) = _outputs(tuned_run, "Tuner", "best_hyperparameters")
    with open(f"{best.uri}/best_hyperparameters.txt") as stream:
        best_values = json.load(stream)["values"]
    from modules.tuner import search_space

    assert set(best_values) == {hp.name for hp in search_space().space}
    (model_run,) = _outputs(tuned_run, "Trainer", "model_run")
    with open(f"{model_run.uri}/{TRAINING_SUMMARY_FILE}") as stream:
        trained_with = json.load(stream)["hparams"]
    assert {k: trained_with[k] for k in best_values} == best_values
