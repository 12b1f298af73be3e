"""TFMA metrics the project computes itself: every classification metric of the EvalConfig from one
pass over a slice's examples, vectorised with numpy.

Why: TFMA's default extractors end with an UnbatchExtractor, so each metric's combiner sees one
example at a time in Python. The binarized per-class Precision, Recall and AUC cost one
preprocessing step and one calibration histogram per class and metric (about 30 per example and
model), the Keras metrics go through tf_metric_wrapper (autograph, small TF batches), and every
combiner pays TFMA's generic label/prediction lookup: most of the Evaluator's time. Here one
combiner per model and output only keeps each example's (label, probabilities, weight) as a row;
the metrics below derive from a slice's rows at once.

Definitions, as the metrics they replace compute them (tests/test_tfma_metrics.py compares both
on the same model and data):

- `accuracy`, `sparse_categorical_crossentropy`: tf_keras' SparseCategoricalAccuracy and
  SparseCategoricalCrossentropy (argmax, first index on ties; probabilities clipped to
  [1e-7, 1 - 1e-7] and renormalised), returned as float32 like Keras returns them, so threshold
  and baseline comparisons round exactly as before.
- `precision`, `recall` (sub-key classId:c topK:1): one-vs-rest on the top-1 class, TFMA's top-k
  rule (numpy argpartition, whose choice on ties is not argmax's); NaN where the denominator is 0.
- `auc` (sub-key classId:c): TFMA's AUC, ROC curve, 10,000 thresholds, interpolation: the same
  calibration histogram, rebinning and Riemann sum, so a class with no positives (or no
  negatives) in a slice reads 0.0 as in TFMA (its sum skips the NaN rates).
- `macro_precision`, `macro_recall`: mean over the classes whose value is defined on the slice.
- the `multi_class_confusion_matrix_plot` plot: TFMA's MultiClassConfusionMatrixPlot at its
  default threshold 0.0 (argmax, first index on ties), the same proto.

One deliberate difference: TFMA 0.47 derives top-k precision and recall from a calibration
histogram that holds only its non-empty buckets, and takes the second bucket present as "predicted
class c". Where no example of a slice has c as its top-1 class, that bucket is absent and TFMA
counts every example as predicted c (recall 1.0, precision = share of class c: for a class the
model never predicts, and for the off-class entries of each `label == k` slice); where every
example is top-1 c and some probability is exactly 1.0, it counts only those. Here the counts are
the confusion matrix's. Values agree wherever TFMA's histogram has its usual buckets.

`accuracy_change_upper_bound` (PairedAccuracyChange, against the baseline model): the golden
gate's evidence. Both models answer the same examples, so their accuracy change is a paired
difference: with n examples, `lost` that the baseline got right and the candidate wrong and
`gained` the reverse, the change is (gained - lost) / n and its variance
((gained + lost) / n - change^2) / n (the paired-proportion, McNemar-style estimate). The metric
is the change's one-sided upper confidence bound: below -margin means "worse by more than the
margin, at that confidence". A change threshold on it refuses a real drop and lets the sampling
noise of a small golden slice through.

`MacroAverage` stays for evaluations written before these metrics existed: their saved EvalConfig
names it, and TFMA instantiates every metric of a saved config when reports list its thresholds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

import apache_beam as beam
import numpy as np
from tensorflow_model_analysis.metrics import metric_types, metric_util, multi_class_confusion_matrix_metrics
from tensorflow_model_analysis.metrics.multi_class_confusion_matrix_plot import MULTI_CLASS_CONFUSION_MATRIX_PLOT_NAME
from tensorflow_model_analysis.utils import model_util

PRECISION = "precision"
RECALL = "recall"
AUC = "auc"
MACRO_PRECISION = "macro_precision"
MACRO_RECALL = "macro_recall"
ACCURACY = "accuracy"
CROSS_ENTROPY = "sparse_categorical_crossentropy"
TOP_K = 1  # precision and recall are about the top-1 class, as in the confusion matrix

# TFMA's AUC defaults (binary_confusion_matrices, calibration_histogram): 10,000 thresholds over
# [0, 1] with fences at -1e-7 and 1 + 1e-7, over a histogram of 10,000 buckets plus two edge ones.
AUC_NUM_THRESHOLDS = 10_000
_EPSILON = 1e-7
_KERAS_EPSILON = np.float32(1e-7)  # tf_keras.backend.epsilon(), as the float32 tensor it becomes

ACCURACY_CHANGE_BOUND = "accuracy_change_upper_bound"
_PAIRED_COUNTS = "_paired_counts"  # private, as _ROWS
_ROWS = "_classification_rows"  # private: TFMA drops keys starting with "_" from its outputs


class Rows(NamedTuple):
    """A slice's examples for one model and output: what every metric here derives from."""

    labels: np.ndarray  # int64 [N], the class ids
    probabilities: np.ndarray  # float32 [N, classes]
    weights: np.ndarray  # float64 [N], 1.0 unless the metrics are example-weighted


class _Chunks:
    """A combiner accumulator: rows as the examples arrived, kept as a few arrays (pickled between
    Beam stages, so not as thousands of small ones)."""

    def __init__(self) -> None:
        self.labels: list = []
        self.probabilities: list = []
        self.weights: list = []
        self.stacked: list[Rows] = []

    def add(self, label: Any, prediction: np.ndarray, weight: float) -> None:
        self.labels.append(label)
        self.probabilities.append(prediction)
        self.weights.append(weight)

    def compacted(self) -> list[Rows]:
        if self.labels:
            self.stacked.append(Rows(
                labels=np.asarray(self.labels, dtype=np.int64).reshape(-1),
                probabilities=np.stack(self.probabilities).astype(np.float32, copy=False),
                weights=np.asarray(self.weights, dtype=np.float64).reshape(-1),
            ))
            self.labels, self.probabilities, self.weights = [], [], []
        return self.stacked

    def __getstate__(self) -> dict:
        return {"stacked": self.compacted()}

    def __setstate__(self, state: dict) -> None:
        self.__init__()
        self.stacked = state["stacked"]


def _optionally_keyed(value: Any, key: str) -> Any:
    # metric_util.to_label_prediction_example_weight's optionally_get_by_keys, one level.
    return value[key] if isinstance(value, Mapping) and key in value else value


class _RowsCombiner(beam.CombineFn):
    """Collects a slice's rows for one model/output: a dictionary lookup per example, no other
    work (TFMA's generic lookup, to_label_prediction_example_weight, costs about 100 us a call)."""

    def __init__(self, key: metric_types.MetricKey, eval_config: Any, example_weighted: bool):
        self._key = key
        self._eval_config = eval_config
        self._example_weighted = example_weighted
        # The model spec's label and prediction keys, found as TFMA finds them.
        self._label_key = self._prediction_key = ""
        specs = list(eval_config.model_specs) if eval_config is not None else []
        for spec in specs:
            if (spec.name if len(specs) > 1 else "") == key.model_name:
                self._label_key, self._prediction_key = spec.label_key, spec.prediction_key
                break

    def create_accumulator(self) -> _Chunks:
        return _Chunks()

    def _tfma_lookup(self, element: metric_types.StandardMetricInputs) -> tuple[Any, np.ndarray, float]:
        label, prediction, weight = next(metric_util.to_label_prediction_example_weight(
            element, eval_config=self._eval_config, model_name=self._key.model_name,
            output_name=self._key.output_name, example_weighted=self._example_weighted, flatten=False,
            require_single_example_weight=True))
        if label.size != 1:
            raise ValueError(f"{self._key.name}: expects one class id per example (sparse labels), got label {label!r}")
        return label.reshape(-1)[0], prediction.reshape(-1), float(weight.reshape(-1)[0])

    def _lookup(self, element: metric_types.StandardMetricInputs) -> tuple[Any, np.ndarray, float]:
        """(class id, probabilities, weight) by TFMA's steps for numeric arrays under the model name,
        output name and prediction key; anything else goes through TFMA's own function."""
        label, prediction, weight = element.label, element.prediction, element.example_weight
        if self._label_key:
            label = _optionally_keyed(label, self._label_key)
        for name in (self._key.model_name, self._key.output_name):
            if name:
                prediction = prediction.get(name) if isinstance(prediction, Mapping) else None
                label, weight = _optionally_keyed(label, name), _optionally_keyed(weight, name)
        if isinstance(prediction, Mapping) and self._prediction_key:
            prediction = prediction.get(self._prediction_key)
        plain = (isinstance(label, np.ndarray) and label.size == 1 and label.dtype.kind in "iuf"
                 and isinstance(prediction, np.ndarray) and prediction.ndim == 1 and prediction.dtype.kind == "f")
        if not self._example_weighted or weight is None:
            weight = 1.0
        elif isinstance(weight, np.ndarray) and weight.size == 1:
            weight = float(weight.reshape(-1)[0])
        else:
            plain = False
        if not plain:
            return self._tfma_lookup(element)
        return label.reshape(-1)[0], prediction, weight

    def add_input(self, accumulator: _Chunks, element: metric_types.StandardMetricInputs) -> _Chunks:
        accumulator.add(*self._lookup(element))
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[_Chunks]) -> _Chunks:
        accumulators = iter(accumulators)
        result = next(accumulators)
        result.compacted()
        for accumulator in accumulators:
            result.stacked.extend(accumulator.compacted())
        return result

    def compact(self, accumulator: _Chunks) -> _Chunks:
        accumulator.compacted()
        return accumulator

    def extract_output(self, accumulator: _Chunks) -> dict[metric_types.MetricKey, Rows]:
        parts = accumulator.compacted()
        if not parts:
            rows = Rows(np.zeros(0, np.int64), np.zeros((0, 0), np.float32), np.zeros(0, np.float64))
        else:
            rows = Rows(*(np.concatenate(arrays) for arrays in zip(*parts, strict=True)))
        return {self._key: rows}


def _rows_computation(eval_config: Any, model_name: str, output_name: str,
                      example_weighted: bool) -> tuple[metric_types.MetricComputation, metric_types.MetricKey]:
    # Same combiner class and key for every metric below: TFMA keeps one of the identical
    # computations, so the rows are collected once per model/output whatever the metrics.
    key = metric_types.MetricKey(name=_ROWS, model_name=model_name, output_name=output_name,
                                 example_weighted=example_weighted)
    computation = metric_types.MetricComputation(
        keys=[key], preprocessors=None, combiner=_RowsCombiner(key, eval_config, example_weighted))
    return computation, key


def _reject_unsupported(name: str, sub_keys: list | None, aggregation_type: Any, query_key: str | None) -> None:
    if any(sub_key is not None for sub_key in sub_keys or []):
        raise ValueError(f"{name} makes its own per-class keys: put it in a MetricsSpec without `binarize`")
    if aggregation_type is not None or query_key:
        raise ValueError(f"{name} supports neither `aggregate` nor `query_key`")


def _derived_computations(values_fn, name: str, eval_config: Any, model_names: list[str] | None,
                          output_names: list[str] | None, sub_keys: list | None, aggregation_type: Any,
                          example_weighted: bool, query_key: str | None,
                          keys_fn) -> metric_types.MetricComputations:
    """The rows computation and one derived computation per model and output: `keys_fn(model,
    output)` gives {id: MetricKey}, `values_fn(rows, keys)` {MetricKey: value} for a slice."""
    _reject_unsupported(name, sub_keys, aggregation_type, query_key)
    computations = []
    for model_name in model_names or [""]:
        for output_name in output_names or [""]:
            rows_computation, rows_key = _rows_computation(eval_config, model_name, output_name, example_weighted)
            keys = keys_fn(model_name, output_name)

            def result(metrics, rows_key=rows_key, keys=keys):
                return values_fn(metrics[rows_key], keys)

            computations += [rows_computation,
                             metric_types.DerivedMetricComputation(keys=list(keys.values()), result=result)]
    return computations


# --- the arithmetic, on numpy arrays (public: the tests check it against hand-computed values) ---


def keras_accuracy(rows: Rows) -> np.float32:
    """tf_keras SparseCategoricalAccuracy: weighted share of argmax == label, in float32."""
    if len(rows.labels) == 0:
        return np.float32(0.0)
    matches = np.argmax(rows.probabilities, axis=1) == rows.labels
    return _float32_mean(matches.astype(np.float64), rows.weights)


def keras_cross_entropy(rows: Rows) -> np.float32:
    """tf_keras SparseCategoricalCrossentropy (from probabilities), in float32: probabilities
    clipped to [1e-7, 1 - 1e-7], logged and fed to a softmax cross-entropy as logits (which
    renormalises them), then the weighted mean."""
    if len(rows.labels) == 0:
        return np.float32(0.0)
    clipped = np.clip(rows.probabilities.astype(np.float32), _KERAS_EPSILON, np.float32(1) - _KERAS_EPSILON)
    logits = np.log(clipped)
    shifted = logits - logits.max(axis=1, keepdims=True)
    losses = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(len(rows.labels)), rows.labels]
    return _float32_mean(losses.astype(np.float64), rows.weights)


def _float32_mean(values: np.ndarray, weights: np.ndarray) -> np.float32:
    # Keras' Mean keeps float32 `total` and `count` and returns div_no_nan(total, count).
    total, count = np.float32(np.dot(values, weights)), np.float32(weights.sum())
    return np.float32(total / count) if count != 0 else np.float32(0.0)


def top1_confusion(rows: Rows, num_classes: int) -> np.ndarray:
    """Weighted counts [true class, top-1 class], the top-1 class chosen as TFMA's top_k does."""
    top1 = np.argpartition(rows.probabilities, -1, axis=1)[:, -1]
    matrix = np.zeros((num_classes, num_classes))
    np.add.at(matrix, (rows.labels, top1), rows.weights)
    return matrix


def precision_recall(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class one-vs-rest: tp / (tp + fp) and tp / (tp + fn), NaN where the denominator is 0
    (TFMA's Precision and Recall results)."""
    tp = np.diag(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, np.nan)
        recall = np.where(actual > 0, tp / actual, np.nan)
    return precision, recall


def _auc_thresholds(num_thresholds: int) -> np.ndarray:
    # binary_confusion_matrices._interpolated_thresholds, element by element.
    inner = [(i + 1) * 1.0 / (num_thresholds - 1) for i in range(num_thresholds - 2)]
    return np.array([-_EPSILON, *inner, 1.0 + _EPSILON])


def _bucket_to_threshold_index(num_thresholds: int) -> np.ndarray:
    """For each calibration-histogram bucket (TFMA's 10,000 + 2), the threshold interval TFMA's
    `rebin` moves it to: buckets are [start, end) intervals, matrices want (start, end], hence the
    +epsilon fence posts."""
    num_buckets = num_thresholds  # TFMA's histogram and threshold counts are the same default
    thresholds = _auc_thresholds(num_thresholds)
    fences = np.array([t + _EPSILON if t != 0 else t for t in thresholds])
    bucket_ids = np.arange(num_buckets + 2, dtype=np.float64)
    bucket_starts = (bucket_ids - 1) / num_buckets * (1.0 - 0.0) + 0.0
    bucket_starts[0], bucket_starts[-1] = -np.inf, np.inf
    return np.clip(np.searchsorted(fences, bucket_starts, side="right") - 1, 0, num_thresholds - 1)


_REBIN = _bucket_to_threshold_index(AUC_NUM_THRESHOLDS)
_THRESHOLDS = _auc_thresholds(AUC_NUM_THRESHOLDS)


def roc_auc(rows: Rows, num_classes: int) -> np.ndarray:
    """Per class one-vs-rest ROC AUC of the class probability, as TFMA's AUC() computes it."""
    num_thresholds = AUC_NUM_THRESHOLDS
    # calibration_histogram._bucket_index, vectorised: truncation into [0, num_buckets + 1].
    position = (rows.probabilities.astype(np.float64) - 0.0) / 1.0 * num_thresholds + 1
    buckets = np.clip(np.trunc(np.where(position < 0, 0, position)), 0, num_thresholds + 1).astype(np.int64)
    intervals = _REBIN[buckets]  # [N, classes]
    aucs = np.zeros(num_classes)
    for c in range(num_classes):
        positive = (rows.labels == c) * rows.weights
        pos = np.bincount(intervals[:, c], weights=positive, minlength=num_thresholds)
        neg = np.bincount(intervals[:, c], weights=rows.weights, minlength=num_thresholds) - pos
        # _histogram_to_binary_confusion_matrices: tp/fp at or above each threshold, fn/tn below.
        tp, fp = np.cumsum(pos[::-1])[::-1], np.cumsum(neg[::-1])[::-1]
        fn = np.concatenate([[0.0], np.cumsum(pos)[:-1]])
        tn = np.concatenate([[0.0], np.cumsum(neg)[:-1]])
        last = _THRESHOLDS >= 1.0 + _EPSILON  # nothing is predicted above 1 + epsilon
        tp, fp, fn, tn = (np.where(last, 0.0, tp), np.where(last, 0.0, fp),
                          np.where(last, tp[0], fn), np.where(last, fp[0], tn))
        with np.errstate(divide="ignore", invalid="ignore"):
            recall, fp_rate = tp / (tp + fn), fp / (fp + tn)
        heights = (recall[:num_thresholds - 1] + recall[1:]) / 2.0
        aucs[c] = np.nansum((fp_rate[:num_thresholds - 1] - fp_rate[1:]) * heights)
    return aucs


def confusion_matrix_plot(rows: Rows) -> Any:
    """MultiClassConfusionMatrixPlot's value at its default threshold 0.0: weighted counts per
    (class, argmax class), -1 where no probability is above 0, one entry per pair that occurs."""
    predicted = np.argmax(rows.probabilities, axis=1) if len(rows.labels) else np.zeros(0, np.int64)
    if len(rows.labels):
        predicted = np.where(rows.probabilities[np.arange(len(predicted)), predicted] <= 0.0,
                             multi_class_confusion_matrix_metrics.NO_PREDICTED_CLASS_ID, predicted)
    pairs, which = np.unique(np.stack([rows.labels, predicted], axis=1), axis=0, return_inverse=True)
    counts = np.bincount(which.reshape(-1), weights=rows.weights, minlength=len(pairs))
    matrices = multi_class_confusion_matrix_metrics.Matrices()
    matrices[0.0] = {multi_class_confusion_matrix_metrics.MatrixEntryKey(int(actual), int(predicted)): float(count)
                     for (actual, predicted), count in zip(pairs, counts, strict=True)}
    return matrices.to_proto().multi_class_confusion_matrix_at_thresholds


def macro_mean(values: Iterable[float]) -> float:
    """Mean of the defined (non-NaN) values: a slice holding one true class (e.g. label == 3) has no
    positives for the others, so their recall is NaN. NaN if none is defined."""
    defined = [float(v) for v in values if not math.isnan(float(v))]
    return sum(defined) / len(defined) if defined else float("nan")


# --- the metrics --------------------------------------------------------------------------------


def _summary_keys(model_name: str, output_name: str, example_weighted: bool, num_classes: int) -> dict:
    def key(name, sub_key=None):
        return metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                      sub_key=sub_key, example_weighted=example_weighted)

    keys = {MACRO_PRECISION: key(MACRO_PRECISION), MACRO_RECALL: key(MACRO_RECALL)}
    for c in range(num_classes):
        keys[(PRECISION, c)] = key(PRECISION, metric_types.SubKey(class_id=c, top_k=TOP_K))
        keys[(RECALL, c)] = key(RECALL, metric_types.SubKey(class_id=c, top_k=TOP_K))
        keys[(AUC, c)] = key(AUC, metric_types.SubKey(class_id=c))
    return keys


def _summary_values(rows: Rows, keys: dict, num_classes: int) -> dict:
    if not len(rows.labels):  # (TFMA reports no empty slice; an empty accumulator has no width)
        rows = rows._replace(probabilities=np.zeros((0, num_classes), np.float32))
    if rows.probabilities.shape[1] != num_classes:
        raise ValueError(f"ClassificationSummary(num_classes={num_classes}) got predictions over "
                         f"{rows.probabilities.shape[1]} classes")
    if len(rows.labels) and (rows.labels.min() < 0 or rows.labels.max() >= num_classes):
        raise ValueError(f"ClassificationSummary: labels outside 0..{num_classes - 1}")
    precision, recall = precision_recall(top1_confusion(rows, num_classes))
    aucs = roc_auc(rows, num_classes)
    values = {keys[MACRO_PRECISION]: macro_mean(precision), keys[MACRO_RECALL]: macro_mean(recall)}
    for c in range(num_classes):
        values[keys[(PRECISION, c)]] = float(precision[c])
        values[keys[(RECALL, c)]] = float(recall[c])
        values[keys[(AUC, c)]] = float(aucs[c])
    return values


def _classification_summary(num_classes: int, name: str, eval_config: Any = None,
                            model_names: list[str] | None = None, output_names: list[str] | None = None,
                            sub_keys: list | None = None, aggregation_type: Any = None,
                            example_weighted: bool = False,
                            query_key: str | None = None) -> metric_types.MetricComputations:
    def keys_fn(model_name, output_name):
        return _summary_keys(model_name, output_name, example_weighted, num_classes)

    def result(rows, keys):
        return _summary_values(rows, keys, num_classes)

    return _derived_computations(result, name, eval_config, model_names, output_names, sub_keys,
                                 aggregation_type, example_weighted, query_key, keys_fn)


class ClassificationSummary(metric_types.Metric):
    """Per class c: `precision` and `recall` (sub-key classId:c topK:1) and `auc` (classId:c); and
    `macro_precision`, `macro_recall`. Same keys and values as a MetricsSpec binarized over the
    classes with Precision(top_k=1), Recall(top_k=1) and AUC(), plus MacroAverage of the first two
    (see the module docstring for the one case where TFMA's values are an artifact). Configure it
    in a MetricsSpec without `binarize`."""

    def __init__(self, num_classes: int = 10, name: str = "classification_summary"):
        super().__init__(_classification_summary, num_classes=num_classes, name=name)


def _single_metric(value_fn, name: str, eval_config: Any = None, model_names: list[str] | None = None,
                   output_names: list[str] | None = None, sub_keys: list | None = None,
                   aggregation_type: Any = None, example_weighted: bool = False,
                   query_key: str | None = None, key_type: type = metric_types.MetricKey
                   ) -> metric_types.MetricComputations:
    """One value (a metric, or with key_type=PlotKey a plot) computed from a slice's rows."""
    def keys_fn(model_name, output_name):
        return {name: key_type(name=name, model_name=model_name, output_name=output_name,
                               example_weighted=example_weighted)}

    def result(rows, keys):
        return {keys[name]: value_fn(rows)}

    return _derived_computations(result, name, eval_config, model_names, output_names, sub_keys,
                                 aggregation_type, example_weighted, query_key, keys_fn)


def _accuracy(name: str, eval_config: Any = None, model_names: list[str] | None = None,
              output_names: list[str] | None = None, sub_keys: list | None = None, aggregation_type: Any = None,
              example_weighted: bool = False, query_key: str | None = None) -> metric_types.MetricComputations:
    return _single_metric(keras_accuracy, name, eval_config, model_names, output_names, sub_keys,
                          aggregation_type, example_weighted, query_key)


def _cross_entropy(name: str, eval_config: Any = None, model_names: list[str] | None = None,
                   output_names: list[str] | None = None, sub_keys: list | None = None, aggregation_type: Any = None,
                   example_weighted: bool = False, query_key: str | None = None) -> metric_types.MetricComputations:
    return _single_metric(keras_cross_entropy, name, eval_config, model_names, output_names, sub_keys,
                          aggregation_type, example_weighted, query_key)


class SparseCategoricalAccuracy(metric_types.Metric):
    """The numpy twin of tf_keras.metrics.SparseCategoricalAccuracy (same float32 value), computed
    from the rows ClassificationSummary collects: thresholds bind to its `name`."""

    def __init__(self, name: str = ACCURACY):
        super().__init__(_accuracy, name=name)


class SparseCategoricalCrossentropy(metric_types.Metric):
    """The numpy twin of tf_keras.metrics.SparseCategoricalCrossentropy on probabilities (float32,
    equal to Keras' within float32 summation order)."""

    def __init__(self, name: str = CROSS_ENTROPY):
        super().__init__(_cross_entropy, name=name)


def _confusion_matrix_plot(name: str, eval_config: Any = None, model_names: list[str] | None = None,
                           output_names: list[str] | None = None, sub_keys: list | None = None,
                           aggregation_type: Any = None, example_weighted: bool = False,
                           query_key: str | None = None) -> metric_types.MetricComputations:
    return _single_metric(confusion_matrix_plot, name, eval_config, model_names, output_names, sub_keys,
                          aggregation_type, example_weighted, query_key, key_type=metric_types.PlotKey)


class ArgmaxConfusionMatrixPlot(metric_types.Metric):
    """TFMA's MultiClassConfusionMatrixPlot at its default threshold (same plot key and proto),
    from the rows ClassificationSummary collects. (TFMA resolves a registered class name before
    the module, hence another name.)"""

    def __init__(self, name: str = MULTI_CLASS_CONFUSION_MATRIX_PLOT_NAME):
        super().__init__(_confusion_matrix_plot, name=name)


class _PairedCountsCombiner(beam.CombineFn):
    """Per slice, weighted [examples, lost, gained]: examples the baseline got right and the
    candidate wrong, and the reverse (top-1 class, argmax as `accuracy`)."""

    def __init__(self, key: metric_types.MetricKey, baseline_model_name: str, eval_config: Any,
                 example_weighted: bool):
        self._key = key

        def rows(model_name: str) -> _RowsCombiner:  # its lookup, for one model
            return _RowsCombiner(metric_types.MetricKey(name=_ROWS, model_name=model_name, output_name=key.output_name,
                                                        example_weighted=example_weighted),
                                 eval_config, example_weighted)

        self._candidate, self._baseline = rows(key.model_name), rows(baseline_model_name)

    def create_accumulator(self) -> np.ndarray:
        return np.zeros(3)

    def add_input(self, accumulator: np.ndarray, element: metric_types.StandardMetricInputs) -> np.ndarray:
        label, candidate, weight = self._candidate._lookup(element)
        _, baseline, _ = self._baseline._lookup(element)
        candidate_right, baseline_right = np.argmax(candidate) == label, np.argmax(baseline) == label
        accumulator += weight * np.array([1.0, baseline_right and not candidate_right,
                                          candidate_right and not baseline_right])
        return accumulator

    def merge_accumulators(self, accumulators: Iterable[np.ndarray]) -> np.ndarray:
        return np.sum(list(accumulators), axis=0)

    def extract_output(self, accumulator: np.ndarray) -> dict[metric_types.MetricKey, np.ndarray]:
        return {self._key: accumulator}


def paired_change_upper_bound(examples: float, lost: float, gained: float, confidence: float) -> float:
    """One-sided upper confidence bound of the accuracy change (candidate - baseline) from the
    paired counts (see the module docstring); 0.0 on an empty slice."""
    if examples <= 0:
        return 0.0
    change = (gained - lost) / examples
    variance = max((gained + lost) / examples - change * change, 0.0) / examples
    return change + statistics.NormalDist().inv_cdf(confidence) * math.sqrt(variance)


def _paired_change(name: str, confidence: float, eval_config: Any = None, model_names: list[str] | None = None,
                   output_names: list[str] | None = None, sub_keys: list | None = None, aggregation_type: Any = None,
                   example_weighted: bool = False, query_key: str | None = None) -> metric_types.MetricComputations:
    _reject_unsupported(name, sub_keys, aggregation_type, query_key)
    baseline = model_util.get_baseline_model_spec(eval_config) if eval_config is not None else None
    if baseline is None:  # nothing to compare with: no value, and TFX drops the change thresholds
        return []
    computations = []
    for model_name in model_names or [""]:
        if model_name == baseline.name:
            continue
        for output_name in output_names or [""]:
            counts_key = metric_types.MetricKey(name=_PAIRED_COUNTS, model_name=model_name, output_name=output_name,
                                                example_weighted=example_weighted)
            # A diff key, as TFMA's flip rates: the value is already a comparison with the baseline,
            # so change thresholds bind to it and TFMA computes no diff of it.
            key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                         example_weighted=example_weighted, is_diff=True)

            def result(metrics, counts_key=counts_key, key=key):
                return {key: paired_change_upper_bound(*metrics[counts_key], confidence)}

            computations += [
                metric_types.MetricComputation(keys=[counts_key], preprocessors=None, combiner=_PairedCountsCombiner(
                    counts_key, baseline.name, eval_config, example_weighted)),
                metric_types.DerivedMetricComputation(keys=[key], result=result)]
    return computations


class PairedAccuracyChange(metric_types.Metric):
    """`accuracy_change_upper_bound`: the one-sided `confidence` upper bound of the candidate's
    accuracy change against the baseline model on the same examples (a diff key; none without a
    baseline). On the slice `label == c` that is the change of class c's recall."""

    def __init__(self, confidence: float = 0.95, name: str = ACCURACY_CHANGE_BOUND):
        if not 0.5 <= confidence < 1:
            raise ValueError(f"{name}: confidence must be in [0.5, 1), got {confidence}")
        super().__init__(_paired_change, confidence=confidence, name=name)


# --- kept for evaluations written before ClassificationSummary --------------------------------


def _macro_average_computations(
    metric_name: str,
    class_ids: list[int],
    top_k: int,
    name: str,
    model_names: Iterable[str],
    output_names: Iterable[str],
    example_weighted: bool = False,
) -> metric_types.MetricComputations:
    computations = []
    for model_name in model_names:
        for output_name in output_names:
            key = metric_types.MetricKey(name=name, model_name=model_name, output_name=output_name,
                                         example_weighted=example_weighted)
            class_keys = [
                metric_types.MetricKey(name=metric_name, model_name=model_name, output_name=output_name,
                                       sub_key=metric_types.SubKey(class_id=c, top_k=top_k),
                                       example_weighted=example_weighted)
                for c in class_ids
            ]

            def result(metrics, key=key, class_keys=class_keys):
                missing = [str(k) for k in class_keys if k not in metrics]
                if missing:
                    raise ValueError(f"{name} needs the binarized per-class '{metric_name}' (top_k={top_k}) "
                                     f"earlier in the EvalConfig; missing {missing[0]}")
                return {key: macro_mean(metrics[k] for k in class_keys)}

            computations.append(metric_types.DerivedMetricComputation(keys=[key], result=result))
    return computations


class MacroAverage(metric_types.Metric):
    """Unweighted mean over classes of a binarized top-k metric, e.g. macro recall. Superseded by
    ClassificationSummary (TFMA's own `AggregationOptions(macro_average=...)` cannot average top-k
    metrics: it looks up `classId:c` keys while they are stored under `classId:c topK:1`)."""

    def __init__(self, metric_name: str = "recall", class_ids: list[int] | None = None, top_k: int = 1,
                 name: str | None = None):
        super().__init__(_macro_average_computations, metric_name=metric_name,
                         class_ids=list(class_ids or range(10)), top_k=top_k,
                         name=name or f"macro_{metric_name}")
