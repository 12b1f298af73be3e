"""The one blessing a candidate carries: the Evaluator's (eval hold-out of its span, against the
latest blessed model) AND the golden gate's (the golden set, against the stable model).

The eval hold-out comes from the same span as the training data, so a span whose labels are
wrong fools it: the candidate learns the wrong labels and is judged on them. The golden set is a
fixed part of the official test split that no span trains on; a candidate that drops there
against what serves as stable is not blessed, whatever its eval score. This component writes the
ModelBlessing the ServingValidator, the Pusher and the next runs' model resolver read (the
Evaluators' own blessings are evidence, not the decision), with the same properties and flag
file as TFX's Evaluator: `blessed`, `current_model`, `current_model_id`, BLESSED / NOT_BLESSED,
plus `reason` (what failed, or "passed"), `golden` (passed, failed, or not judged) and `labels`.

`labels` is the label check (tfx_pipeline/label_agreement.py): the latest blessed model, which
the span never touched, scored on the span's eval hold-out against the stable model on the golden
set. A span whose labels disagree poisons every window it enters even when its own candidate
passes both gates (the baseline is as wrong as the candidate on the swapped labels, and a
candidate trained on a mixed window loses only a little on golden), so it is never blessed and
the span is rejected.
"""

import os

from tfx.dsl.component.experimental.annotations import InputArtifact, OutputArtifact, Parameter
from tfx.dsl.component.experimental.decorators import component
from tfx.types import standard_artifacts
from tfx.utils import io_utils

from tfx_pipeline import label_agreement
from tfx_pipeline.blessing import (
    BLESSED_KEY,
    GOLDEN_FAILED,
    GOLDEN_KEY,
    GOLDEN_NOT_JUDGED,
    GOLDEN_PASSED,
    LABELS_KEY,
    REASON_KEY,
    blessing_state,
)

_FLAG_FILES = {True: "BLESSED", False: "NOT_BLESSED"}  # as TFX's Evaluator writes them


def decide(evaluated: bool | None, golden: bool | None, disagreeing: str = "") -> tuple[bool, str, str]:
    """(blessed, reason, golden status) from the two Evaluators' verdicts and the label check's
    disagreeing classes ("" when the span's labels agree or were not judged)."""
    golden_status = {True: GOLDEN_PASSED, False: GOLDEN_FAILED, None: GOLDEN_NOT_JUDGED}[golden]
    if disagreeing:  # first: whatever the gates said, they judged on these labels
        return False, f"the span's labels disagree with the golden set's: {disagreeing}", golden_status
    if evaluated is not True:
        return False, "the Evaluator did not bless it on the eval hold-out", golden_status
    if golden is False:
        return False, "the golden gate failed: worse than the stable model on the golden set", golden_status
    return True, "passed", golden_status


def check_labels(evaluation_uri: str | None, golden_evaluation_uri: str | None, margin: float,
                 confidence: float) -> tuple[str, str]:
    """(label_agreement status, the disagreeing classes described) of a span from its Evaluator's
    and the golden Evaluator's outputs (label_agreement.judge)."""
    span = label_agreement.baseline_recalls(evaluation_uri) if evaluation_uri else None
    golden = label_agreement.baseline_recalls(golden_evaluation_uri) if golden_evaluation_uri else None
    status, disagreeing = label_agreement.judge(
        span, {c: recall for c, (recall, _) in golden.items()} if golden else None, margin, confidence)
    return status, "; ".join(row.describe() for row in disagreeing)


@component
def BlessingGate(
    model: InputArtifact[standard_artifacts.Model],
    model_blessing: InputArtifact[standard_artifacts.ModelBlessing],
    blessing: OutputArtifact[standard_artifacts.ModelBlessing],
    max_label_disagreement: Parameter[float],
    confidence: Parameter[float],
    golden_blessing: InputArtifact[standard_artifacts.ModelBlessing] = None,
    evaluation: InputArtifact[standard_artifacts.ModelEvaluation] = None,
    golden_evaluation: InputArtifact[standard_artifacts.ModelEvaluation] = None,
) -> None:
    golden = blessing_state(golden_blessing) if golden_blessing is not None else None
    labels, disagreeing = check_labels(evaluation.uri if evaluation is not None else None,
                                       golden_evaluation.uri if golden_evaluation is not None else None,
                                       max_label_disagreement, confidence)
    blessed, reason, golden_status = decide(blessing_state(model_blessing), golden, disagreeing)
    blessing.set_int_custom_property(BLESSED_KEY, int(blessed))
    blessing.set_int_custom_property("current_model_id", model.id)
    blessing.set_string_custom_property("current_model", model.uri)
    blessing.set_string_custom_property(REASON_KEY, reason)
    blessing.set_string_custom_property(GOLDEN_KEY, golden_status)
    blessing.set_string_custom_property(LABELS_KEY, labels)
    io_utils.write_string_file(os.path.join(blessing.uri, _FLAG_FILES[blessed]), "")
