"""The label check: a model the span never touched, scored on the span's hold-out, against the
stable model's golden recall (tfx_pipeline/label_agreement.py)."""

import math
import statistics

import pytest

from tfx_pipeline import blessing as blessing_keys
from tfx_pipeline import label_agreement, span_verdicts

GOLDEN = {c: 0.9 for c in range(10)} | {6: 0.75}  # a trusted model's golden recalls (Shirt is hard)


@pytest.mark.parametrize(("successes", "trials"), [(0, 20), (3, 20), (57, 60), (60, 60), (412, 500)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_the_wilson_bound_is_where_the_score_test_reaches_its_critical_value(successes, trials, confidence):
    upper = label_agreement.wilson_upper_bound(successes, trials, confidence)
    z = statistics.NormalDist().inv_cdf(confidence)
    p = successes / trials
    assert p <= upper <= 1
    if upper < 1:  # the score statistic at the bound is exactly z (the interval's definition)
        assert (upper - p) / math.sqrt(upper * (1 - upper) / trials) == pytest.approx(z, rel=1e-9)
    assert label_agreement.wilson_upper_bound(successes, trials, confidence + 0.005) > upper or upper == 1


def test_the_bound_of_nothing_observed_is_one():
    assert label_agreement.wilson_upper_bound(0, 0, 0.95) == 1.0


def test_two_swapped_classes_disagree_and_name_themselves():
    span = {c: (GOLDEN[c] - 0.02, 60) for c in range(10)} | {2: (0.0, 60), 4: (0.033, 60)}
    status, disagreeing = label_agreement.judge(span, GOLDEN, margin=0.15, confidence=0.95)
    assert status == label_agreement.DISAGREE
    assert [row.class_id for row in disagreeing] == [2, 4]
    assert disagreeing[0].describe() == ("class 2 (Pullover) recall 0.000 on 60 span images (upper bound 0.043) "
                                         "vs 0.900 on golden")


def test_an_honest_span_agrees_even_where_few_images_fall_far_below_golden():
    # 9 of 20 Shirts right is 0.45 against 0.75 on golden: far, but 20 images cannot show it.
    span = {c: (GOLDEN[c], 100) for c in range(10)} | {6: (0.45, 20)}
    assert label_agreement.judge(span, GOLDEN, margin=0.15, confidence=0.95) == (label_agreement.AGREE, [])
    # With 200 Shirts at that rate, they do.
    status, (shirt,) = label_agreement.judge(span | {6: (0.45, 200)}, GOLDEN, margin=0.15, confidence=0.95)
    assert status == label_agreement.DISAGREE and shirt.class_id == 6


def test_a_share_of_shuffled_labels_disagrees_once_it_exceeds_the_margin():
    def shuffled(share: float) -> dict:
        # A share of each class's labels replaced at random: its recall falls by about that share.
        return {c: (GOLDEN[c] * (1 - share) + share / 10, 1000) for c in range(10)}

    assert label_agreement.judge(shuffled(0.05), GOLDEN, 0.15, 0.95)[0] == label_agreement.AGREE
    assert label_agreement.judge(shuffled(0.30), GOLDEN, 0.15, 0.95)[0] == label_agreement.DISAGREE


@pytest.mark.parametrize(("span", "golden"), [(None, GOLDEN), ({0: (0.0, 50)}, None), ({}, GOLDEN),
                                              ({3: (0.0, 0)}, GOLDEN)])
def test_without_a_trusted_model_on_both_sides_nothing_is_judged(span, golden):
    assert label_agreement.judge(span, golden, 0.15, 0.95) == (label_agreement.NOT_JUDGED, [])


def test_a_span_whose_labels_disagree_is_rejected_even_when_only_the_floors_failed():
    blessing = {"blessed": 0, "golden": "passed", "labels": label_agreement.DISAGREE,
                "reason": "the span's labels disagree with the golden set's: class 2"}
    assert span_verdicts.decide(4, None, "", blessing, None, None) == (
        4, span_verdicts.REJECTED, "not blessed: the span's labels disagree with the golden set's: class 2")
    # The same blessing with labels that agree (and no comparison failed): kept for training.
    agreeing = blessing | {"labels": label_agreement.AGREE}
    kept = span_verdicts.decide(4, None, "", agreeing, None, None)
    assert kept[1] == span_verdicts.ACCEPTED and kept[2].startswith("kept for training")
    assert blessing_keys.LABELS_KEY == "labels"
