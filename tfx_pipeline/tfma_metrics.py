"""A TFMA metric the library lacks: the macro average of per-class top-1 metrics.

TFMA's own `AggregationOptions(macro_average=...)` cannot average metrics configured with
`top_k` (its averaging looks up `classId:c` keys while the binarized metrics are stored under
`classId:c topK:1`, and it fails with a KeyError). Top-1 is what a reviewer means by a class's
precision and recall (the predicted class is the argmax; the confusion matrix agrees), so this
derived metric averages those per-class values instead. It computes nothing itself: it reads
the per-class values that a binarized MetricsSpec in the same EvalConfig produces, so that spec
must come first.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from tensorflow_model_analysis.metrics import metric_types


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
                # A slice holding one true class (e.g. label == 3) has no positives for the others:
                # their recall is NaN, so average over the classes the slice can measure.
                values = [float(metrics[k]) for k in class_keys if not math.isnan(float(metrics[k]))]
                return {key: sum(values) / len(values) if values else float("nan")}

            computations.append(metric_types.DerivedMetricComputation(keys=[key], result=result))
    return computations


class MacroAverage(metric_types.Metric):
    """Unweighted mean over classes of a binarized top-k metric, e.g. macro recall."""

    def __init__(self, metric_name: str = "recall", class_ids: list[int] | None = None, top_k: int = 1,
                 name: str | None = None):
        super().__init__(_macro_average_computations, metric_name=metric_name,
                         class_ids=list(class_ids or range(10)), top_k=top_k,
                         name=name or f"macro_{metric_name}")
