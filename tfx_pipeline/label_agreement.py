"""Do a span's labels mean what the golden set's labels mean? The label check of the BlessingGate.

A labelling error upstream (two classes swapped, one class's labels replaced, a share of labels
shuffled) moves neither the pixel nor the label distribution, so the drift comparators cannot see
it, and the span's own eval hold-out is as wrong as its training data. What does see it is a model
the span never touched: the latest blessed model (the Evaluator's baseline) scored on the span's
eval hold-out. Where the span's labels mean what the golden set's mean, its recall of each class
there is close to the golden recall of the model serving as stable (the golden Evaluator's
baseline; both models passed the golden gate against it, so they differ by at most its margins).
Where a class's labels are wrong, that recall collapses: class by class, the span disagrees when
the one-sided Wilson upper bound (at the gate's confidence) of the span recall is below the golden
recall minus `max_label_disagreement`. Small spans get wide bounds, so few images never condemn
a span by chance; a missing class is not judged.

Not judged at all without a baseline on either side (the first runs): nothing trusted to ask.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass

from fmnist import features

AGREE, DISAGREE, NOT_JUDGED = "agree", "disagree", "not judged"
BASELINE_MODEL = "baseline"  # the model name TFX's Evaluator gives the baseline_model input


@dataclass(frozen=True)
class ClassAgreement:
    """One class: the trusted model's recall on the span's hold-out against its golden recall."""

    class_id: int
    span_recall: float
    span_examples: int
    span_upper_bound: float  # one-sided Wilson upper bound of span_recall at the check's confidence
    golden_recall: float
    margin: float

    @property
    def agrees(self) -> bool:
        return self.span_upper_bound >= self.golden_recall - self.margin

    def describe(self) -> str:
        name = features.CLASS_NAMES[self.class_id]
        return (f"class {self.class_id} ({name}) recall {self.span_recall:.3f} on {self.span_examples} span "
                f"images (upper bound {self.span_upper_bound:.3f}) vs {self.golden_recall:.3f} on golden")


def wilson_upper_bound(successes: float, trials: float, confidence: float) -> float:
    """One-sided upper confidence bound of a proportion (Wilson score interval); 1.0 with no trials."""
    if trials <= 0:
        return 1.0
    z = statistics.NormalDist().inv_cdf(confidence)
    p = successes / trials
    spread = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials))
    return min(1.0, max(p, (p + z * z / (2 * trials) + spread) / (1 + z * z / trials)))  # >= p, also in floats


def judge(span: Mapping[int, tuple[float, int]] | None, golden: Mapping[int, float] | None, margin: float,
          confidence: float) -> tuple[str, list[ClassAgreement]]:
    """(AGREE | DISAGREE | NOT_JUDGED, the classes that disagree) from the trusted model's
    {class: (recall, examples)} on the span's hold-out and {class: recall} on the golden set;
    None on either side means that evaluation had no baseline."""
    if not span or not golden:
        return NOT_JUDGED, []
    compared = [ClassAgreement(c, recall, int(count), wilson_upper_bound(recall * count, count, confidence),
                               golden[c], margin)
                for c, (recall, count) in sorted(span.items()) if count > 0 and c in golden]
    if not compared:
        return NOT_JUDGED, []
    disagreeing = [row for row in compared if not row.agrees]
    return (DISAGREE if disagreeing else AGREE), disagreeing


def baseline_recalls(evaluation_uri: str) -> dict[int, tuple[float, int]] | None:
    """{class: (recall, examples)} of the baseline model in the TFMA evaluation at `evaluation_uri`
    (accuracy on the `label == c` slice is class c's recall); None when it has no baseline."""
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.metrics import metric_types
    from tensorflow_model_analysis.slicer import slicer_lib

    from tfx_pipeline.eval_config import ACCURACY, EXAMPLE_COUNT

    values: dict[int, dict[str, float]] = {}
    for proto in tfma.load_metrics(evaluation_uri):
        slice_key = slicer_lib.deserialize_slice_key(proto.slice_key)
        if len(slice_key) != 1 or slice_key[0][0] != features.LABEL_KEY:
            continue
        for entry in proto.metric_keys_and_values:
            key = metric_types.MetricKey.from_proto(entry.key)
            if (key.model_name == BASELINE_MODEL and not key.is_diff and key.sub_key is None
                    and key.name in (ACCURACY, EXAMPLE_COUNT) and entry.value.HasField("double_value")):
                values.setdefault(int(slice_key[0][1]), {})[key.name] = entry.value.double_value.value
    found = {c: (v[ACCURACY], round(v[EXAMPLE_COUNT])) for c, v in values.items()
             if ACCURACY in v and EXAMPLE_COUNT in v}
    return found or None
