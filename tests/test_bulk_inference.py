"""Batch inference: unlabelled IDX images are read with an id per image, the pipeline adds
UnlabelledExampleGen + BulkInferrer only when asked, TFX's own executors label the committed
sample's test images with a SavedModel exported by the project's code (one classify PredictionLog
per image, the same classes as the model in-process), and `fmnist predictions export` writes
them as CSV or JSON Lines rows sorted by id, or says in one line why it cannot."""

import csv
import gzip
import json
import shutil

import numpy as np
import pytest
import tensorflow as tf

from fmnist import dataset, features
from reports import predictions
from tfx_pipeline import bulk_inference
from tfx_pipeline.components import raw_example_gen as reg

TEST_IMAGES = dataset.IDX_FILES[dataset.TEST][0]


@pytest.fixture(scope="module")
def unlabelled_dir(tmp_path_factory, sample_dir):
    """The sample's test images file alone: no labels file beside it."""
    directory = tmp_path_factory.mktemp("unlabelled")
    shutil.copy(sample_dir / TEST_IMAGES, directory)
    return directory


# -- reading images without labels --
def test_images_without_labels_are_read_with_an_id_per_row(unlabelled_dir, sample_dir):
    unlabelled = dataset.read_unlabelled(unlabelled_dir)
    test = dataset.read_split(sample_dir, dataset.TEST)
    assert np.array_equal(unlabelled.images, test.images)
    assert unlabelled.ids[:2] == (f"{TEST_IMAGES}:0", f"{TEST_IMAGES}:1") and len(unlabelled) == len(test)


def test_examples_carry_image_and_id_but_no_label(unlabelled_dir):
    serialized = list(reg._serialized_examples(None, str(unlabelled_dir), dataset.UNLABELLED, dataset.IDX, "all", 0, 0))
    example = tf.train.Example.FromString(serialized[7])
    assert set(example.features.feature) == {features.IMAGE_KEY, features.ID_KEY}
    assert example.features.feature[features.ID_KEY].bytes_list.value == [f"{TEST_IMAGES}:7".encode()]


def test_no_images_file_is_one_line_error(tmp_path, sample_dir):
    shutil.copy(sample_dir / dataset.IDX_FILES[dataset.TEST][1], tmp_path)  # a labels file is not an images file
    with pytest.raises(dataset.DatasetError, match=r"no unlabelled images \(expected IDX images files"):
        dataset.read_unlabelled(tmp_path)
    with pytest.raises(dataset.DatasetError, match="no unlabelled images"):
        dataset.read_unlabelled(tmp_path / "missing")


@pytest.mark.parametrize("content, message", [
    (b"not gzip at all", "not a valid gzip file"),
    (gzip.compress(b"\x00\x00\x08\x01\x00\x00\x00\x01\x05"), "wrong magic number 0x00000801"),  # labels, renamed
    (gzip.compress(b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x1c\x00\x00\x00\x1c" + bytes(784)),
     r"shape \(2, 28, 28\) = 1568 bytes of data, but the file holds 784"),
], ids=["not-gzip", "a-labels-file", "too-short"])  # gzip bytes hold a timestamp: ids that every worker collects alike
def test_a_corrupt_images_file_is_named(tmp_path, content, message):
    (tmp_path / "new-images-idx3-ubyte.gz").write_bytes(content)
    with pytest.raises(dataset.DatasetError, match=rf"new-images-idx3-ubyte\.gz: .*{message}") as raised:
        dataset.read_unlabelled(tmp_path)
    assert "\n" not in str(raised.value)


def test_preflight_reads_the_unlabelled_images_before_tfx_starts(tmp_path, unlabelled_dir):
    import local_runner

    argv = ["--sample", "--output-dir", str(tmp_path / "out"), "--serving-validator", "project"]
    counts = local_runner.preflight(local_runner.config_from_args(
        [*argv, "--bulk-inference-input", str(unlabelled_dir)], environ={}))
    assert counts[dataset.UNLABELLED] == 300
    with pytest.raises(dataset.DatasetError, match="no unlabelled images"):
        local_runner.preflight(local_runner.config_from_args(
            [*argv, "--bulk-inference-input", str(tmp_path / "none")], environ={}))


def test_ids_sort_by_file_then_row_number():
    ids = ["b-images-idx3-ubyte.gz:0", "a-images-idx3-ubyte.gz:10", "a-images-idx3-ubyte.gz:2"]
    assert sorted(ids, key=dataset.id_sort_key) == [ids[2], ids[1], ids[0]]


# -- the pipeline's wiring --
def _nodes(tmp_path, *flags):
    import local_runner
    from tfx_pipeline.pipeline import create_components

    config = local_runner.config_from_args(["--sample", "--output-dir", str(tmp_path / "out"),
                                            "--serving-validator", "project", *flags], environ={})
    return {node.id: node for node in create_components(config)}


def test_bulk_inferrer_labels_the_unlabelled_examples_with_the_blessed_candidate(tmp_path, unlabelled_dir):
    nodes = _nodes(tmp_path, "--bulk-inference-input", str(unlabelled_dir))
    examples, inferrer = nodes["UnlabelledExampleGen"], nodes["BulkInferrer"]
    assert examples.exec_properties["input_base"] == str(unlabelled_dir)
    assert inferrer.inputs["examples"].producer_component_id == "UnlabelledExampleGen"
    assert inferrer.inputs["model"].producer_component_id == "Trainer"
    assert inferrer.inputs["model_blessing"].producer_component_id == "BlessingGate"  # eval and golden gate
    assert json.loads(inferrer.exec_properties["model_spec"])["model_signature_name"] == [features.CLASSIFY_SIGNATURE]
    assert json.loads(inferrer.exec_properties["data_spec"])["example_splits"] == [dataset.UNLABELLED]
    assert "inference_result" in inferrer.outputs


def test_without_the_setting_the_pipeline_is_unchanged(tmp_path, unlabelled_dir):
    with_inference = _nodes(tmp_path, "--bulk-inference-input", str(unlabelled_dir))
    without = _nodes(tmp_path)
    assert set(with_inference) - set(without) == {"UnlabelledExampleGen", "BulkInferrer"}
    assert list(with_inference)[:len(without)] == list(without)


# -- TFX's executors on real data and a real model --
@pytest.fixture(scope="module")
def inferred(tmp_path_factory, unlabelled_dir, exported_model):
    work = str(tmp_path_factory.mktemp("bulk"))
    examples = bulk_inference.unlabelled_examples(str(unlabelled_dir), work)
    model = bulk_inference.model_artifact(str(exported_model), work)
    return bulk_inference.infer(examples, model, work)


def _logs(inference_result):
    from tensorflow_serving.apis import prediction_log_pb2

    files = predictions.prediction_log_files(inference_result.uri)
    return [prediction_log_pb2.PredictionLog.FromString(record)
            for record in tf.data.TFRecordDataset(files, compression_type="GZIP").as_numpy_iterator()]


@pytest.mark.pipeline
def test_one_classify_log_per_image_with_the_models_own_classes(inferred, unlabelled_dir, exported_model):
    from modules import inference

    logs = _logs(inferred)
    unlabelled = dataset.read_unlabelled(unlabelled_dir)
    assert len(logs) == len(unlabelled)
    expected = inference.predict_probabilities(str(exported_model), unlabelled.images).argmax(axis=1)
    by_id = dict(zip(unlabelled.ids, expected.tolist(), strict=True))
    for log in logs:
        (classification,) = log.classify_log.response.result.classifications
        scores = [c.score for c in classification.classes]
        assert [c.label for c in classification.classes] == list(features.CLASS_NAMES)
        assert len(scores) == 10 and sum(scores) == pytest.approx(1.0, abs=1e-5)
        image_id = log.classify_log.request.input.example_list.examples[0].features.feature[features.ID_KEY]
        assert int(np.argmax(scores)) == by_id[image_id.bytes_list.value[0].decode()]


@pytest.mark.pipeline
def test_export_writes_sorted_rows_as_csv_and_jsonl(inferred, tmp_path):
    from cli.main import main

    for fmt in predictions.FORMATS:
        out = tmp_path / f"predictions.{fmt}"
        assert main(["predictions", "export", "--inference-result", inferred.uri, "--format", fmt,
                     "--out", str(out)]) == 0
        if fmt == "csv":
            with open(out, newline="") as stream:
                rows = list(csv.DictReader(stream))
        else:
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert len(rows) == 300 and list(rows[0]) == list(predictions.COLUMNS)
        assert [r["id"] for r in rows] == [f"{TEST_IMAGES}:{i}" for i in range(300)]
        for row in rows:
            assert features.CLASS_NAMES[int(row["class_id"])] == row["class"]
            assert 0.1 <= float(row["probability"]) <= 1.0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["predictions.csv", "predictions.jsonl"]  # no temp files


@pytest.mark.pipeline
def test_an_unblessed_model_leaves_nothing_to_export(tmp_path, unlabelled_dir, exported_model, inferred, capsys):
    from cli.main import main

    # The examples of the `inferred` run; only the blessing differs.
    examples = bulk_inference.unlabelled_examples(str(unlabelled_dir), str(tmp_path))
    model = bulk_inference.model_artifact(str(exported_model), str(tmp_path))
    result = bulk_inference.infer(examples, model, str(tmp_path), blessed=False)
    out = tmp_path / "rows.csv"
    assert main(["predictions", "export", "--inference-result", result.uri, "--format", "csv",
                 "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "the Evaluator did not bless the model" in error and error.count("\n") == 1
    assert not out.exists()


@pytest.mark.pipeline
def test_an_unreadable_log_is_one_line_error_and_writes_nothing(tmp_path, inferred, capsys):
    from cli.main import main

    broken = tmp_path / "inference_result"
    shutil.copytree(inferred.uri, broken)
    (log_file,) = broken.glob(predictions.PREDICTION_LOGS_PATTERN)
    log_file.write_bytes(log_file.read_bytes()[:200])  # truncated gzip
    out = tmp_path / "rows.jsonl"
    assert main(["predictions", "export", "--inference-result", str(broken), "--format", "jsonl",
                 "--out", str(out)]) == 1
    error = capsys.readouterr().err
    assert "unreadable prediction log" in error and error.count("\n") == 1
    assert not out.exists() and not list(tmp_path.glob(".rows*"))


def test_without_a_bulk_inferrer_run_export_says_so(tmp_path, capsys):
    from cli.main import main

    assert main(["predictions", "export", "--pipeline-root", str(tmp_path / "pipeline_root"), "--format", "csv",
                 "--out", str(tmp_path / "rows.csv")]) == 1
    assert "no ML Metadata store at" in capsys.readouterr().err


def test_the_run_summary_says_why_there_are_no_predictions(tmp_path, unlabelled_dir):
    import local_runner

    config = local_runner.config_from_args(["--sample", "--output-dir", str(tmp_path / "out"),
                                            "--bulk-inference-input", str(unlabelled_dir)], environ={})
    assert local_runner.batch_inference_note(config).startswith("no predictions: no ML Metadata store at")
