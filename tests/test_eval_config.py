"""The EvalConfig as TFMA itself reads it: which thresholds bind which metric on which slice."""

import pytest

tfma = pytest.importorskip("tensorflow_model_analysis")

from fmnist import features  # noqa: E402
from tfx_pipeline import eval_config  # noqa: E402
from tfx_pipeline.config import EvaluationThresholds  # noqa: E402

THRESHOLDS = EvaluationThresholds(min_accuracy=0.91, min_class_recall=0.72, max_accuracy_drop=0.004)


def _effective_thresholds(config):
    """{(metric name, is_diff): {slice spec as text: threshold}}, as TFMA's validator sees them."""
    found = {}
    for key, scoped in tfma.metrics.metric_thresholds_from_metrics_specs(config.metrics_specs, config).items():
        for slice_spec, threshold in scoped:
            spec_text = str(dict(slice_spec.feature_values)) if slice_spec is not None else "every slice"
            found.setdefault((key.name, key.is_diff), {})[spec_text] = threshold
    return found


def test_blessing_rules_are_scoped_to_the_slices_they_are_about():
    found = _effective_thresholds(eval_config.create_eval_config(THRESHOLDS))

    assert set(found) == {(eval_config.ACCURACY, False), (eval_config.ACCURACY, True)}, found
    floors = found[(eval_config.ACCURACY, False)]
    assert "every slice" not in floors  # an unscoped floor would hit every class slice too
    assert floors["{}"].lower_bound.value == pytest.approx(0.91)
    for c in range(features.NUM_CLASSES):
        assert floors[str({features.LABEL_KEY: str(c)})].lower_bound.value == pytest.approx(0.72)
    assert len(floors) == 1 + features.NUM_CLASSES

    (change,) = found[(eval_config.ACCURACY, True)].items()
    assert change[0] == "{}"  # baseline comparison on the whole split only
    assert change[1].absolute.value == pytest.approx(-0.004)
    assert change[1].direction == tfma.MetricDirection.HIGHER_IS_BETTER


def test_reporting_config_judges_nothing():
    assert _effective_thresholds(eval_config.create_eval_config(None)) == {}


def test_both_configs_compute_the_same_metrics_on_the_same_slices():
    judged, reported = eval_config.create_eval_config(THRESHOLDS), eval_config.create_eval_config(None)

    def metric_names(config):
        return [[(m.class_name, m.module, m.config) for m in spec.metrics] for spec in config.metrics_specs]

    assert metric_names(judged) == metric_names(reported)
    assert list(judged.slicing_specs) == list(reported.slicing_specs)
    # ClassificationSummary makes the per-class keys itself: nothing is binarized by TFMA.
    assert not any(spec.HasField("binarize") for spec in judged.metrics_specs)


def _computations(config, has_baseline: bool):
    """What TFMA's evaluator computes for `config`, as the TFX Evaluator prepares it."""
    from tensorflow_model_analysis.metrics import metric_specs

    config = tfma.utils.update_eval_config_with_defaults(config, has_baseline=has_baseline, rubber_stamp=True)
    return metric_specs.to_computations(config.metrics_specs, eval_config=config)


@pytest.mark.parametrize("has_baseline", [False, True])
def test_config_computes_the_keys_reports_read(has_baseline):
    """Reports look metrics up by name and sub-key (reports/evaluation.py): each key must be made."""
    computations = _computations(eval_config.create_eval_config(THRESHOLDS), has_baseline)
    keys = {key for computation in computations for key in computation.keys}
    models = ["candidate", "baseline"] if has_baseline else [""]
    for model in models:
        def key(name, class_id=None, top_k=None, model=model):
            sub_key = tfma.metrics.SubKey(class_id=class_id, top_k=top_k) if class_id is not None else None
            return tfma.metrics.MetricKey(name=name, model_name=model, sub_key=sub_key)

        for name in (eval_config.EXAMPLE_COUNT, eval_config.ACCURACY, eval_config.CROSS_ENTROPY,
                     eval_config.MACRO_PRECISION, eval_config.MACRO_RECALL):
            assert key(name) in keys, name
        for c in range(features.NUM_CLASSES):
            assert key(eval_config.PRECISION, c, eval_config.TOP_K) in keys
            assert key(eval_config.RECALL, c, eval_config.TOP_K) in keys
            assert key(eval_config.AUC, c) in keys
        assert any(isinstance(k, tfma.metrics.PlotKey) and k.model_name == model for k in keys)  # the matrix
    # The speed-up: accuracy, cross-entropy, the plot and the summary share one pass per model over
    # the examples (TFMA keeps one of identical computations), none per class.
    per_example = {c for c in computations if isinstance(c, tfma.metrics.MetricComputation)}
    rows = [c for c in per_example if c.keys[0].name.startswith("_classification_rows")]
    assert len(rows) == len(models)
    assert len(per_example) == 2 * len(models)  # the rows and TFMA's example count


def test_project_metrics_load_from_their_config():
    """TFMA instantiates custom metrics from (module, class_name, config): that path must work."""
    from tensorflow_model_analysis.metrics import metric_specs

    (spec,) = eval_config.create_eval_config(None).metrics_specs
    names = {metric_specs.metric_instance(config).name for config in spec.metrics if config.module}
    assert names == {eval_config.ACCURACY, eval_config.CROSS_ENTROPY, "classification_summary",
                     "multi_class_confusion_matrix_plot"}


def test_evaluations_saved_with_the_previous_config_still_load():
    """Evaluations written before ClassificationSummary name MacroAverage in their saved config;
    reports list a saved config's thresholds, which instantiates every metric in it."""
    from tensorflow_model_analysis.metrics import metric_specs

    macro = tfma.MetricConfig(class_name="MacroAverage", module="tfx_pipeline.tfma_metrics",
                              config='{"metric_name": "recall", "class_ids": [0, 1, 2], "top_k": 1}')
    assert metric_specs.metric_instance(macro).name == eval_config.MACRO_RECALL


def test_rules_read_as_a_reviewer_would_write_them():
    from reports.evaluation import _describe_bound

    assert _describe_bound(tfma.GenericValueThreshold(lower_bound={"value": 0.9})) == ">= 0.9000"
    assert _describe_bound(tfma.GenericValueThreshold(lower_bound={"value": 0.1}, upper_bound={"value": 0.5})) == (
        ">= 0.1000 and <= 0.5000")
    assert _describe_bound(tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -0.005})) == ">= -0.0050"
    assert _describe_bound(tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.LOWER_IS_BETTER, relative={"value": 0.1})) == "<= +10.00% relative"


@pytest.mark.parametrize("has_baseline", [False, True])
def test_golden_gate_judges_the_paired_change_bound_only_against_a_baseline(has_baseline):
    """The golden config adds the paired bound for the candidate (a diff key the change thresholds
    bind to, one per slice rule); with no stable model TFX drops those thresholds and the bound
    is not computed, so the golden Evaluator judges nothing."""
    config = eval_config.create_eval_config(THRESHOLDS, golden=True)
    prepared = tfma.utils.update_eval_config_with_defaults(config, has_baseline=has_baseline, rubber_stamp=True)
    thresholds = tfma.metrics.metric_thresholds_from_metrics_specs(prepared.metrics_specs, prepared)
    keys = {key for computation in _computations(config, has_baseline) for key in computation.keys}
    bound = tfma.metrics.MetricKey(name=eval_config.ACCURACY_CHANGE_BOUND, model_name="candidate", is_diff=True)
    if not has_baseline:
        assert not thresholds and not any(key.name == eval_config.ACCURACY_CHANGE_BOUND for key in keys)
        return
    # (TFMA also keys each threshold for the baseline, and skips those: a model is not judged against itself.)
    assert bound in keys and [key for key in thresholds if key.model_name == "candidate"] == [bound]
    margins = sorted(-threshold.absolute.value for _, threshold in thresholds[bound])
    assert margins == [THRESHOLDS.max_golden_drop] + [THRESHOLDS.max_golden_class_drop] * features.NUM_CLASSES
    # Accuracy itself carries no golden threshold: a point drop within noise refuses nothing.
    assert not any(key.name == eval_config.ACCURACY for key in thresholds)


def test_golden_confidence_is_a_one_sided_level():
    from fmnist.settings import SettingsError
    from tfx_pipeline.config import EvaluationThresholds

    for bad in (0.4, 1.0):
        with pytest.raises(SettingsError, match="golden_confidence"):
            EvaluationThresholds(golden_confidence=bad)
