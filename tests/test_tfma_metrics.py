"""The project's TFMA metrics (tfx_pipeline/tfma_metrics.py): the arithmetic against hand-computed
values, then the whole EvalConfig against the one it replaced, through TFX's Evaluator executor on
the same model and data: same metric keys, same values, same validation result and blessing."""

import json
import math
import os
import pickle

import numpy as np
import pytest

tfma = pytest.importorskip("tensorflow_model_analysis")

from fmnist import dataset, features  # noqa: E402
from tfx_pipeline import eval_config, tfma_metrics  # noqa: E402
from tfx_pipeline.config import EvaluationThresholds  # noqa: E402
from tfx_pipeline.tfma_metrics import Rows  # noqa: E402


def _rows(labels, probabilities, weights=None) -> Rows:
    labels = np.asarray(labels, dtype=np.int64)
    return Rows(labels, np.asarray(probabilities, dtype=np.float32),
                np.ones(len(labels)) if weights is None else np.asarray(weights, dtype=np.float64))


# --- arithmetic ----------------------------------------------------------------------------------

# Three classes; top-1 predictions: 0, 0, 1, 1, 0 (class 2 never predicted).
SMALL = _rows(labels=[0, 0, 1, 1, 2],
              probabilities=[[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.3, 0.6, 0.1], [0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])


def test_precision_and_recall_come_from_the_top1_confusion_matrix():
    confusion = tfma_metrics.top1_confusion(SMALL, 3)
    np.testing.assert_array_equal(confusion, [[2, 0, 0], [0, 2, 0], [1, 0, 0]])
    precision, recall = tfma_metrics.precision_recall(confusion)
    np.testing.assert_allclose(precision[:2], [2 / 3, 1.0])
    assert math.isnan(precision[2])  # never predicted: no denominator
    np.testing.assert_allclose(recall, [1.0, 1.0, 0.0])
    assert tfma_metrics.macro_mean(precision) == pytest.approx((2 / 3 + 1.0) / 2)
    assert tfma_metrics.macro_mean(recall) == pytest.approx(2 / 3)


def test_a_one_class_slice_has_nan_recall_for_the_other_classes():
    only_ones = Rows(*(array[2:4] for array in SMALL))  # the slice label == 1
    precision, recall = tfma_metrics.precision_recall(tfma_metrics.top1_confusion(only_ones, 3))
    assert recall[1] == 1.0 and math.isnan(recall[0]) and math.isnan(recall[2])
    assert precision[1] == 1.0 and math.isnan(precision[0]) and math.isnan(precision[2])
    assert tfma_metrics.macro_mean(recall) == 1.0
    assert math.isnan(tfma_metrics.macro_mean([math.nan, math.nan]))
    # TFMA's AUC sums its curve with nansum: no negatives (or no positives) reads 0.0, not NaN.
    np.testing.assert_array_equal(tfma_metrics.roc_auc(only_ones, 3), [0.0, 0.0, 0.0])


def test_example_weights_count_as_repeated_examples():
    weighted = _rows([0, 1], [[0.9, 0.1], [0.8, 0.2]], weights=[3.0, 1.0])
    repeated = _rows([0, 0, 0, 1], [[0.9, 0.1]] * 3 + [[0.8, 0.2]])
    np.testing.assert_array_equal(tfma_metrics.top1_confusion(weighted, 2), tfma_metrics.top1_confusion(repeated, 2))
    assert tfma_metrics.keras_accuracy(weighted) == tfma_metrics.keras_accuracy(repeated) == np.float32(0.75)
    np.testing.assert_array_equal(tfma_metrics.roc_auc(weighted, 2), tfma_metrics.roc_auc(repeated, 2))


def test_top1_breaks_ties_as_tfma_and_accuracy_as_keras():
    tied = _rows([1], [[0.4, 0.4, 0.2]])
    tfma_top1 = int(tfma.metrics.metric_util.top_k_indices(1, tied.probabilities[0])[0])
    assert tfma_metrics.top1_confusion(tied, 3)[1, tfma_top1] == 1
    assert tfma_metrics.keras_accuracy(tied) == np.float32(0.0)  # Keras' argmax takes the first: class 0


def test_auc_is_the_area_under_the_roc_curve():
    def auc(labels, scores):
        return tfma_metrics.roc_auc(_rows(labels, [[1 - s, s] for s in scores]), 2)[1]

    assert auc([1, 0], [0.8, 0.3]) == pytest.approx(1.0)
    assert auc([1, 0], [0.3, 0.8]) == pytest.approx(0.0)
    assert auc([1, 0], [0.5, 0.5]) == pytest.approx(0.5)  # a tie: the interpolated diagonal
    # 3 of the 4 (positive, negative) pairs are ranked right.
    assert auc([1, 1, 0, 0], [0.9, 0.4, 0.6, 0.1]) == pytest.approx(0.75)
    # Probabilities exactly 0 and 1 sit in the histogram's edge buckets and still count.
    assert auc([1, 0, 1, 0], [1.0, 0.0, 1.0, 0.0]) == pytest.approx(1.0)


def test_accuracy_and_cross_entropy_are_keras_values():
    import tf_keras

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(999, 10)) * 3
    probabilities = (np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)).astype(np.float32)
    probabilities[0] = np.eye(10, dtype=np.float32)[3]  # saturated: clipped to 1e-7 .. 1 - 1e-7
    labels = rng.integers(0, 10, size=999)
    rows = _rows(labels, probabilities)

    keras_accuracy = tf_keras.metrics.SparseCategoricalAccuracy()
    keras_accuracy.update_state(labels.reshape(-1, 1), probabilities)
    keras_loss = tf_keras.metrics.SparseCategoricalCrossentropy()
    keras_loss.update_state(labels.reshape(-1, 1), probabilities)

    accuracy = tfma_metrics.keras_accuracy(rows)
    assert accuracy.dtype == np.float32 and accuracy == keras_accuracy.result().numpy()
    loss = tfma_metrics.keras_cross_entropy(rows)
    assert loss.dtype == np.float32 and loss == pytest.approx(float(keras_loss.result()), abs=1e-6)
    assert tfma_metrics.keras_cross_entropy(_rows([0], [[0.5, 0.25, 0.25]])) == pytest.approx(math.log(2), rel=1e-6)


def test_confusion_matrix_plot_counts_argmax_pairs():
    plot = tfma_metrics.confusion_matrix_plot(_rows([0, 0, 1, 2, 2], [[0.7, 0.2, 0.1], [0.7, 0.2, 0.1],
                                                                     [0.3, 0.6, 0.1], [0.6, 0.1, 0.3],
                                                                     [0.0, 0.0, 0.0]]))
    (matrix,) = plot.matrices
    assert matrix.threshold == 0.0
    cells = {(e.actual_class_id, e.predicted_class_id): e.num_weighted_examples for e in matrix.entries}
    assert cells == {(0, 0): 2.0, (1, 1): 1.0, (2, 0): 1.0, (2, -1): 1.0}  # -1: no probability above 0


def _lookup_cases():
    labels, probabilities = np.array([3]), np.linspace(0.01, 0.19, 10).astype(np.float32)
    config = eval_config.create_eval_config(None)
    two_models = tfma.utils.update_eval_config_with_defaults(config, has_baseline=True)
    by_key = {"probabilities": probabilities, "class_id": np.array([9])}
    return [
        ("", config, dict(labels=labels, predictions=by_key)),
        ("", None, dict(labels=labels.astype(np.float32), predictions=probabilities)),
        ("candidate", two_models, dict(labels=labels, predictions={"candidate": by_key, "baseline": by_key})),
        ("baseline", two_models, dict(labels={"baseline": labels}, predictions={"candidate": {}, "baseline": by_key},
                                      example_weights={"baseline": np.array([2.0])})),
        ("", config, dict(labels={"label": labels}, predictions=by_key, example_weights=np.array([0.5]))),
        # not plain: TFMA's own lookup takes these
        ("", None, dict(labels=labels, predictions=probabilities.reshape(1, -1))),
        ("", None, dict(labels=labels, predictions={"probabilities": probabilities})),  # a default key
    ]


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("case", range(7))
def test_rows_lookup_is_tfma_lookup(case, weighted):
    model_name, config, inputs = _lookup_cases()[case]
    element = tfma.metrics.StandardMetricInputs(**inputs)
    combiner = tfma_metrics._RowsCombiner(tfma.metrics.MetricKey(name="_rows", model_name=model_name), config,
                                          example_weighted=weighted)
    label, prediction, weight = combiner._lookup(element)
    expected = combiner._tfma_lookup(element)
    assert (label, weight) == (expected[0], expected[2]) and label == 3
    np.testing.assert_array_equal(prediction, expected[1])


def test_accumulator_survives_pickling_and_merging():
    """Beam pickles accumulators between stages and merges the fanned-out parts of a slice."""
    key = tfma.metrics.MetricKey(name="_rows")
    combiner = tfma_metrics._RowsCombiner(key, eval_config=None, example_weighted=False)

    def element(label, probabilities):
        return tfma.metrics.StandardMetricInputs(labels=np.array([label]),
                                                 predictions=np.array(probabilities, dtype=np.float32))

    parts = [combiner.create_accumulator() for _ in range(3)]
    for i, (label, probabilities) in enumerate(zip(SMALL.labels, SMALL.probabilities, strict=True)):
        combiner.add_input(parts[i % 2], element(label, probabilities))
    parts = [pickle.loads(pickle.dumps(part)) for part in parts]  # the third one stays empty
    rows = combiner.extract_output(combiner.merge_accumulators(parts))[key]
    order = np.argsort([0, 2, 4, 1, 3])  # parts[0] took examples 0, 2, 4; parts[1] 1, 3
    np.testing.assert_array_equal(rows.labels[order], SMALL.labels)
    np.testing.assert_array_equal(rows.probabilities[order], SMALL.probabilities)
    np.testing.assert_array_equal(rows.weights, np.ones(5))


def test_metrics_refuse_configurations_they_do_not_implement():
    with pytest.raises(ValueError, match="without `binarize`"):
        tfma_metrics.ClassificationSummary().computations(sub_keys=[tfma.metrics.SubKey(class_id=1)])


# --- the whole EvalConfig, old against new, through TFX's Evaluator executor --------------------

BEAM_ARGS = ["--direct_running_mode=in_memory", "--direct_num_workers=1"]  # local_runner's default


def previous_eval_config(thresholds: EvaluationThresholds | None):
    """The EvalConfig before ClassificationSummary (commit 7447c2f): Keras accuracy and
    cross-entropy, TFMA's binarized per-class metrics, MacroAverage of them."""
    def metric(class_name, thresholds=None, module="", **config):
        return tfma.MetricConfig(class_name=class_name, module=module, config=json.dumps(config) if config else "",
                                 per_slice_thresholds=thresholds or [])

    overall = tfma.MetricsSpec(metrics=[
        metric("ExampleCount"),
        metric("SparseCategoricalAccuracy", eval_config._accuracy_thresholds(thresholds) if thresholds else None,
               name="accuracy"),
        metric("SparseCategoricalCrossentropy"),
        metric("MultiClassConfusionMatrixPlot"),
    ])
    per_class = tfma.MetricsSpec(binarize=tfma.BinarizationOptions(class_ids={"values": eval_config.CLASS_IDS}),
                                 metrics=[metric("Precision", top_k=1), metric("Recall", top_k=1), metric("AUC")])
    macro = tfma.MetricsSpec(metrics=[
        metric("MacroAverage", module="tfx_pipeline.tfma_metrics", metric_name=name,
               class_ids=eval_config.CLASS_IDS, top_k=1) for name in ("precision", "recall")])
    config = eval_config.create_eval_config(None)
    del config.metrics_specs[:]
    config.metrics_specs.extend([overall, per_class, macro])
    return config


def _serialized_examples(sample_dir) -> tuple[list[bytes], np.ndarray]:
    import tensorflow as tf

    split = dataset.read_split(sample_dir, dataset.TEST)
    examples = []
    for image, label in zip(split.images, split.labels, strict=True):
        feature = {features.IMAGE_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=image.tolist())),
                   features.LABEL_KEY: tf.train.Feature(int64_list=tf.train.Int64List(value=[int(label)]))}
        examples.append(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
    return examples, split.labels.astype(np.int64)


def _run_evaluator(work, config, model_uri, examples_uri, baseline_uri=None) -> tuple[str, bool | None]:
    """TFX's Evaluator executor as the pipeline's Evaluator calls it; (evaluation uri, blessed)."""
    from tfx.components.evaluator import executor
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    def artifact(cls, uri, **properties):
        made = cls()
        made.uri = str(uri)
        for name, value in properties.items():
            setattr(made, name, value)
        return made

    inputs = {"examples": [artifact(standard_artifacts.Examples, examples_uri, split_names='["eval"]')],
              "model": [artifact(standard_artifacts.Model, model_uri)]}
    if baseline_uri:
        inputs["baseline_model"] = [artifact(standard_artifacts.Model, baseline_uri)]
    evaluation = artifact(standard_artifacts.ModelEvaluation, work / "evaluation")
    blessing = artifact(standard_artifacts.ModelBlessing, work / "blessing")
    for output in (evaluation, blessing):
        os.makedirs(output.uri)
    executor.Executor(BaseBeamExecutor.Context(beam_pipeline_args=BEAM_ARGS, tmp_dir=str(work / "tmp"))).Do(
        inputs, {"evaluation": [evaluation], "blessing": [blessing]},
        {"eval_config": proto_utils.proto_to_json(config), "example_splits": json.dumps(["eval"])})
    blessed = None
    if "blessed" in blessing.mlmd_artifact.custom_properties:
        blessed = blessing.get_int_custom_property("blessed") == 1
    return evaluation.uri, blessed


def _metrics(uri) -> dict:
    from tensorflow_model_analysis.slicer import slicer_lib

    values = {}
    for proto in tfma.load_metrics(uri):
        slice_key = slicer_lib.deserialize_slice_key(proto.slice_key)
        for entry in proto.metric_keys_and_values:
            assert entry.value.HasField("double_value"), entry
            values[(slice_key, tfma.metrics.MetricKey.from_proto(entry.key))] = entry.value.double_value.value
    return values


def _plots(uri) -> dict:
    """{(slice, plot key): plot proto}: the confusion matrices."""
    from tensorflow_model_analysis.slicer import slicer_lib

    return {(slicer_lib.deserialize_slice_key(proto.slice_key), tfma.metrics.PlotKey.from_proto(entry.key)):
            entry.value for proto in tfma.load_plots(uri) for entry in proto.plot_keys_and_values}


def _validation(uri):
    result = tfma.load_validation_result(uri)
    failures = sorted(str(per_slice) for per_slice in result.metric_validations_per_slice)
    del result.metric_validations_per_slice[:]
    return result, failures


# Floors the 15-step sample model cannot all reach: the overall floor fails, some class floors
# pass and some fail, so both kinds of verdict are compared.
FAILING = EvaluationThresholds(min_accuracy=0.95, min_class_recall=0.5, max_accuracy_drop=0.005)
# With the candidate as its own baseline the change is 0: requiring a gain of 0.001 fails it.
NO_GAIN_ALLOWED = EvaluationThresholds(min_accuracy=0.0, min_class_recall=0.0, max_accuracy_drop=-0.001)


@pytest.fixture(scope="module")
def evaluations(tmp_path_factory, exported_model, sample_dir):
    """Old and new EvalConfig through the Evaluator: judged without a baseline (failing floors),
    and with the candidate as its own baseline (a failing change threshold)."""
    import shutil

    import tensorflow as tf

    work = tmp_path_factory.mktemp("evaluator")
    model = work / "model"
    shutil.copytree(exported_model, model / "Format-Serving")
    examples, labels = _serialized_examples(sample_dir)
    (work / "examples" / "Split-eval").mkdir(parents=True)
    with tf.io.TFRecordWriter(str(work / "examples" / "Split-eval" / "data.tfrecord")) as writer:
        for example in examples:
            writer.write(example)
    serving = tf.saved_model.load(str(exported_model)).signatures[features.TF_EXAMPLE_SIGNATURE]
    probabilities = serving(examples=tf.constant(examples))["probabilities"].numpy()

    runs = {}
    for name, make in (("old", previous_eval_config), ("new", eval_config.create_eval_config)):
        runs[name, "floors"] = _run_evaluator(work / name / "floors", make(FAILING), model, work / "examples")
        runs[name, "baseline"] = _run_evaluator(work / name / "baseline", make(NO_GAIN_ALLOWED), model,
                                                work / "examples", baseline_uri=model)
    return {"runs": runs, "rows": _rows(labels, probabilities)}


def _tfma_top1_counts(rows: Rows, c: int) -> tuple[float, float, float]:
    """(tp, fp, fn) for class c as TFMA 0.47's top-k Precision/Recall count them: a histogram of the
    non-empty buckets among {0: c not top-1, 1: top-1 below 1.0, 2: top-1 at 1.0}, and everything
    from the second bucket present on counted as predicted c."""
    top1 = np.argpartition(rows.probabilities, -1, axis=1)[:, -1]
    bucket = np.where(top1 != c, 0, np.where(rows.probabilities[:, c] >= 1.0, 2, 1))
    present = [b for b in range(3) if (bucket == b).any()]
    predicted = np.isin(bucket, present[1:] if len(present) > 1 else present)
    positive = rows.labels == c
    return (float((predicted & positive).sum()), float((predicted & ~positive).sum()),
            float((~predicted & positive).sum()))


def _where_tfma_differs(rows: Rows, slice_key: tuple, key) -> tuple[float, float] | None:
    """(TFMA's value, the confusion matrix's) for a top-1 precision/recall/macro key where TFMA's
    histogram shortcut makes them differ; None where they agree."""
    if key.name not in (eval_config.PRECISION, eval_config.RECALL, eval_config.MACRO_PRECISION,
                        eval_config.MACRO_RECALL):
        return None
    if slice_key:
        rows = Rows(*(array[rows.labels == int(slice_key[0][1])] for array in rows))
    name = key.name.removeprefix("macro_")
    precision, recall = tfma_metrics.precision_recall(tfma_metrics.top1_confusion(rows, features.NUM_CLASSES))
    true_values = precision if name == eval_config.PRECISION else recall
    tfma_values = []
    for c in range(features.NUM_CLASSES):
        tp, fp, fn = _tfma_top1_counts(rows, c)
        denominator = tp + fp if name == eval_config.PRECISION else tp + fn
        tfma_values.append(tp / denominator if denominator > 0 else math.nan)
    if key.name.startswith("macro_"):
        tfma_value, true_value = tfma_metrics.macro_mean(tfma_values), tfma_metrics.macro_mean(true_values)
        differs = not np.allclose(tfma_values, true_values, equal_nan=True)
    else:
        tfma_value, true_value = tfma_values[key.sub_key.class_id], true_values[key.sub_key.class_id]
        differs = not np.isclose(tfma_value, true_value, equal_nan=True)
    return (tfma_value, float(true_value)) if differs else None


def _same(a: float, b: float, tolerance: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or abs(a - b) <= tolerance


@pytest.mark.pipeline
@pytest.mark.parametrize("run", ["floors", "baseline"])
def test_new_config_computes_the_same_metrics_as_the_old_one(evaluations, run):
    old, new = (_metrics(evaluations["runs"][name, run][0]) for name in ("old", "new"))
    assert set(old) == set(new)
    # 11 slices x (3 x 10 per class + 5 overall), then the baseline's and the diffs with a baseline
    assert len(old) == 11 * 35 * (1 if run == "floors" else 3)
    tolerances = {eval_config.AUC: 1e-4}
    compared, shortcut = set(), set()
    for (slice_key, key), old_value in old.items():
        differs = _where_tfma_differs(evaluations["rows"], slice_key, key._replace(is_diff=False))
        if differs is None:
            assert _same(new[slice_key, key], old_value, tolerances.get(key.name, 1e-6)), (
                slice_key, key, old_value, new[slice_key, key])
            compared.add(key.name)
        elif not key.is_diff:  # (a diff of two such values is left out)
            # TFMA's histogram shortcut (tfma_metrics' docstring): the old value is that artifact,
            # the new one the confusion matrix's. The 15-step model leaves some classes unpredicted
            # (so every slice's macro precision is such) and most on the `label == k` slices.
            tfma_value, true_value = differs
            assert _same(old_value, tfma_value, 1e-9), (slice_key, key, old_value, tfma_value)
            assert _same(new[slice_key, key], true_value, 1e-9), (slice_key, key, new[slice_key, key], true_value)
            shortcut.add(key.name)
    assert compared | shortcut == {key.name for _, key in old}
    old_plots, new_plots = (_plots(evaluations["runs"][name, run][0]) for name in ("old", "new"))
    assert old_plots == new_plots and len(old_plots) == 11 * (1 if run == "floors" else 2)
    assert {eval_config.EXAMPLE_COUNT, eval_config.ACCURACY, eval_config.CROSS_ENTROPY, eval_config.AUC,
            eval_config.PRECISION, eval_config.RECALL} <= compared


@pytest.mark.pipeline
@pytest.mark.parametrize("run", ["floors", "baseline"])
def test_new_config_judges_as_the_old_one(evaluations, run):
    (old_uri, old_blessed), (new_uri, new_blessed) = (evaluations["runs"][name, run] for name in ("old", "new"))
    assert old_blessed is False and new_blessed is False
    (old_result, old_failures), (new_result, new_failures) = _validation(old_uri), _validation(new_uri)
    assert new_failures == old_failures
    assert new_result == old_result
    if run == "floors":
        assert any("label" in failure for failure in old_failures)  # class floors were judged
        assert sum("accuracy" in failure for failure in old_failures) >= 2
    else:  # only the comparison with the baseline fails
        (failure,) = old_failures
        assert "is_diff: true" in failure


# --- the golden gate's paired change bound -------------------------------------------------------


def test_paired_change_bound_is_the_one_sided_upper_confidence_bound():
    # 500 images of a class: 30 the baseline got right and the candidate wrong, 11 the reverse.
    change, z95 = (11 - 30) / 500, 1.6448536269514722
    se = math.sqrt(((11 + 30) / 500 - change ** 2) / 500)
    assert tfma_metrics.paired_change_upper_bound(500, 30, 11, 0.95) == pytest.approx(change + z95 * se)
    # -3.8 points is a real drop, but not one of more than 3 points at 95 %: the gate lets it pass.
    assert -0.03 < tfma_metrics.paired_change_upper_bound(500, 30, 11, 0.95) < 0
    assert tfma_metrics.paired_change_upper_bound(500, 30, 11, 0.5) == pytest.approx(change)
    # No disagreement: no change, whatever the confidence; an empty slice changes nothing.
    assert tfma_metrics.paired_change_upper_bound(500, 0, 0, 0.99) == 0
    assert tfma_metrics.paired_change_upper_bound(0, 0, 0, 0.95) == 0
    # A collapsed class (12 of 15 golden images lost) is refused even on the sample's tiny slices.
    assert tfma_metrics.paired_change_upper_bound(15, 12, 0, 0.95) < -0.2
    with pytest.raises(ValueError, match="confidence"):
        tfma_metrics.PairedAccuracyChange(confidence=1.0)


def test_paired_counts_compare_both_models_on_the_same_example():
    from tensorflow_model_analysis.metrics import metric_types

    key = metric_types.MetricKey(name="_paired_counts", model_name="candidate")
    config = tfma.EvalConfig(model_specs=[tfma.ModelSpec(name="candidate", label_key="label"),
                                          tfma.ModelSpec(name="baseline", label_key="label", is_baseline=True)])
    combiner = tfma_metrics._PairedCountsCombiner(key, "baseline", config, example_weighted=False)
    right, wrong = np.array([0.1, 0.9], np.float32), np.array([0.9, 0.1], np.float32)
    # (candidate, baseline) per example, label 1: both right, lost, lost, gained, both wrong.
    answers = [(right, right), (wrong, right), (wrong, right), (right, wrong), (wrong, wrong)]
    accumulators = []
    for candidate, baseline in answers:
        element = metric_types.StandardMetricInputs(labels={"label": np.array([1])},
                                                    predictions={"candidate": candidate, "baseline": baseline},
                                                    example_weights=None)
        accumulators.append(combiner.add_input(combiner.create_accumulator(), element))
    (counts,) = combiner.extract_output(combiner.merge_accumulators(accumulators)).values()
    assert counts.tolist() == [5, 2, 1]


@pytest.mark.pipeline
def test_golden_config_binds_its_margins_to_the_bound_in_the_evaluator(tmp_path, exported_model, sample_dir):
    """The golden EvalConfig through TFX's Evaluator, the candidate as its own baseline: the bound
    is 0 on every slice; asking for a gain overall (a negative margin) fails that slice alone."""
    import shutil

    import tensorflow as tf

    from reports.evaluation import load_split_evaluation

    shutil.copytree(exported_model, tmp_path / "model" / "Format-Serving")
    examples, _ = _serialized_examples(sample_dir)
    (tmp_path / "examples" / "Split-eval").mkdir(parents=True)
    with tf.io.TFRecordWriter(str(tmp_path / "examples" / "Split-eval" / "data.tfrecord")) as writer:
        for example in examples:
            writer.write(example)
    thresholds = EvaluationThresholds(max_golden_drop=-0.001)
    uri, blessed = _run_evaluator(tmp_path / "golden", eval_config.create_eval_config(thresholds, golden=True),
                                  tmp_path / "model", tmp_path / "examples", baseline_uri=tmp_path / "model")
    assert blessed is False
    bounds = {slice_key: value for (slice_key, key), value in _metrics(uri).items()
              if key.name == eval_config.ACCURACY_CHANGE_BOUND}
    assert len(bounds) == 1 + features.NUM_CLASSES and set(bounds.values()) == {0.0}
    checks = load_split_evaluation(uri, "eval", "GoldenEvaluator").checks
    assert [check.slice for check in checks if not check.passed] == ["overall"]
    assert {check.rule for check in checks if check.class_id == 6} == {
        "recall of Shirt (class 6), change vs baseline (paired upper bound)"}
