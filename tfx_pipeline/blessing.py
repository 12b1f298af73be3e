"""What a ModelBlessing says: the custom properties the BlessingGate writes (beside TFX's
Evaluator's `blessed`) and the readers (span verdicts, reports) look up. Kept apart from the
component, so that tfx_pipeline.span_verdicts needs ML Metadata only, not TFX and TensorFlow,
to decide a span's verdict. (`fmnist spans` still loads them: reports/spans.py imports
TensorFlow, TFDV and the DriftGate component at module level.)"""

from __future__ import annotations

BLESSED_KEY = "blessed"
REASON_KEY = "reason"
GOLDEN_KEY = "golden"  # passed | failed | not judged (no stable model yet)
GOLDEN_PASSED, GOLDEN_FAILED, GOLDEN_NOT_JUDGED = "passed", "failed", "not judged"
LABELS_KEY = "labels"  # label_agreement.AGREE | DISAGREE | NOT_JUDGED


def blessing_state(blessing) -> bool | None:
    """A ModelBlessing's verdict: True/False, or None when its Evaluator judged nothing (TFX
    writes no `blessed` property without thresholds, e.g. change thresholds with no baseline)."""
    properties = getattr(blessing, "mlmd_artifact", blessing).custom_properties
    if BLESSED_KEY not in properties:
        return None
    return properties[BLESSED_KEY].int_value == 1
