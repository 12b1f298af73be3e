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
    per_class = next(spec for spec in judged.metrics_specs if spec.HasField("binarize"))
    assert list(per_class.binarize.class_ids.values) == list(range(features.NUM_CLASSES))
    assert {m.class_name for m in per_class.metrics} == {"Precision", "Recall", "AUC"}


def test_macro_average_metric_loads_from_its_config():
    """TFMA instantiates custom metrics from (module, class_name, config): that path must work."""
    from tensorflow_model_analysis.metrics import metric_specs

    macro_spec = eval_config.create_eval_config(None).metrics_specs[-1]
    names = set()
    for config in macro_spec.metrics:
        metric = metric_specs.metric_instance(config)  # what TFMA calls for each MetricConfig
        names.add(metric.name)
    assert names == {eval_config.MACRO_PRECISION, eval_config.MACRO_RECALL}


def test_rules_read_as_a_reviewer_would_write_them():
    from reports.evaluation import _describe_bound

    assert _describe_bound(tfma.GenericValueThreshold(lower_bound={"value": 0.9})) == ">= 0.9000"
    assert _describe_bound(tfma.GenericValueThreshold(lower_bound={"value": 0.1}, upper_bound={"value": 0.5})) == (
        ">= 0.1000 and <= 0.5000")
    assert _describe_bound(tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.HIGHER_IS_BETTER, absolute={"value": -0.005})) == ">= -0.0050"
    assert _describe_bound(tfma.GenericChangeThreshold(
        direction=tfma.MetricDirection.LOWER_IS_BETTER, relative={"value": 0.1})) == "<= +10.00% relative"
