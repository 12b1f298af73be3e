"""TFMA EvalConfig built from the typed pipeline config: metrics, slices and blessing rules."""

from __future__ import annotations

import tensorflow_model_analysis as tfma

from modules import features, signatures
from tfx_pipeline.config import EvaluationThresholds

ACCURACY = "accuracy"
OVERALL_SLICE = tfma.SlicingSpec()


def class_slice(class_id: int) -> tfma.SlicingSpec:
    return tfma.SlicingSpec(feature_values={features.LABEL_KEY: str(class_id)})


def _accuracy_thresholds(thresholds: EvaluationThresholds) -> list:
    """Overall floor and baseline comparison on the overall slice; a recall floor per class.

    On the slice `label == c`, accuracy *is* class c's recall, so one metric serves both."""
    overall = tfma.MetricThreshold(
        value_threshold=tfma.GenericValueThreshold(lower_bound={"value": thresholds.min_accuracy}),
        change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.HIGHER_IS_BETTER,
            absolute={"value": -thresholds.max_accuracy_drop},
        ),
    )
    per_slice = [tfma.PerSliceMetricThreshold(slicing_specs=[OVERALL_SLICE], threshold=overall)]
    per_slice += [
        tfma.PerSliceMetricThreshold(
            slicing_specs=[class_slice(c)],
            threshold=tfma.MetricThreshold(
                value_threshold=tfma.GenericValueThreshold(
                    lower_bound={"value": thresholds.min_class_recall}
                )
            ),
        )
        for c in range(features.NUM_CLASSES)
    ]
    return per_slice


def create_eval_config(thresholds: EvaluationThresholds) -> tfma.EvalConfig:
    return tfma.EvalConfig(
        model_specs=[
            tfma.ModelSpec(
                signature_name=signatures.TF_EXAMPLE_SIGNATURE,
                label_key=features.LABEL_KEY,
                prediction_key="probabilities",
            )
        ],
        slicing_specs=[OVERALL_SLICE, tfma.SlicingSpec(feature_keys=[features.LABEL_KEY])],
        metrics_specs=[
            tfma.MetricsSpec(
                metrics=[
                    tfma.MetricConfig(class_name="ExampleCount"),
                    tfma.MetricConfig(
                        class_name="SparseCategoricalAccuracy",
                        config=f'{{"name": "{ACCURACY}"}}',
                        per_slice_thresholds=_accuracy_thresholds(thresholds),
                    ),
                    tfma.MetricConfig(class_name="SparseCategoricalCrossentropy"),
                    tfma.MetricConfig(class_name="MultiClassConfusionMatrixPlot"),
                ],
            )
        ],
    )
