"""Model construction and hyperparameter handling."""

import json

import numpy as np
import pytest

from fmnist import features
from modules.model import TUNED_HPARAMS_FILE, HParams, build_model


def test_cnn_outputs_a_distribution_per_image():
    model = build_model(HParams())
    batch = np.random.default_rng(0).normal(size=(5, features.NUM_PIXELS)).astype(np.float32)
    probabilities = model(batch, training=False).numpy()
    assert probabilities.shape == (5, features.NUM_CLASSES)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert model.input_names == [features.transformed_name(features.IMAGE_KEY)]
    assert any("batch_normalization" in layer.name for layer in model.layers)
    assert any("dropout" in layer.name for layer in model.layers)


def test_a_built_model_is_traced_without_autograph_converting_keras_itself():
    """AutoGraph still converts the project's functions, but no longer tf_keras's layer and engine
    code at each trace (15 of a 17.5 s sample fit): build_model puts it on the do-not-convert list."""
    import tensorflow as tf
    import tf_keras as keras
    from tensorflow.python.autograph.impl import conversion

    from modules import data

    model = build_model(HParams())
    assert conversion.is_allowlisted(keras.layers.Conv2D.call) and conversion.is_allowlisted(model.train_step)
    assert not conversion.is_allowlisted(data.augment)
    # The rule does not change what a traced model computes.
    batch = np.random.default_rng(0).normal(size=(4, features.NUM_PIXELS)).astype(np.float32)
    np.testing.assert_allclose(tf.function(model)(batch).numpy(), model(batch).numpy(), rtol=1e-5, atol=1e-6)


def test_architecture_follows_hyperparameters():
    small = build_model(HParams(base_filters=8, num_blocks=1, convs_per_block=1, dense_units=16))
    large = build_model(HParams())
    assert small.count_params() < large.count_params()
    conv_layers = [layer for layer in large.layers if layer.__class__.__name__ == "Conv2D"]
    assert [layer.filters for layer in conv_layers] == [32, 32, 64, 64]


def test_tuner_search_space_covers_the_architecture_and_every_choice_builds():
    from modules.tuner import search_space

    space = {hp.name: hp for hp in search_space().space}
    assert set(space) <= set(HParams().to_dict()), "the Tuner may only search HParams fields"
    assert {"num_blocks", "convs_per_block", "base_filters"} <= set(space)
    batch = np.random.default_rng(0).normal(size=(3, features.NUM_PIXELS)).astype(np.float32)
    for blocks in space["num_blocks"].values:
        for convs in space["convs_per_block"].values:
            hparams = HParams(num_blocks=blocks, convs_per_block=convs, base_filters=min(space["base_filters"].values))
            model = build_model(hparams)
            conv_layers = [layer for layer in model.layers if layer.__class__.__name__ == "Conv2D"]
            assert len(conv_layers) == blocks * convs
            assert conv_layers[-1].filters == hparams.conv_filters[-1]
            assert model(batch, training=False).shape == (3, features.NUM_CLASSES)


def test_tuned_values_are_checked_in_and_overridable():
    with open(TUNED_HPARAMS_FILE) as stream:
        stored = json.load(stream)["values"]
    # One truth: HParams' defaults are the stored tuned values, field for field.
    assert {name: HParams().to_dict()[name] for name in stored} == stored
    assert HParams.tuned() == HParams()
    assert HParams.tuned({"epochs": 2}).epochs == 2


def _space(config: list[dict]) -> dict[str, tuple]:
    """name -> (kind, choices) of a KerasTuner space config, the form the JSON stores."""
    return {hp["config"]["name"]: (hp["class_name"], tuple(hp["config"].get("values", ())))
            for hp in config}


def test_the_stored_search_space_is_the_tuners_and_every_searched_value_is_stored():
    from modules.tuner import search_space

    with open(TUNED_HPARAMS_FILE) as stream:
        stored = json.load(stream)
    searched = _space(search_space().get_config()["space"])
    assert _space(stored["space"]) == searched, "tuned_hyperparameters.json was tuned over another search space"
    assert set(stored["values"]) == set(searched), "the tuned values must cover exactly the searched parameters"
    for name, (kind, choices) in searched.items():
        if kind == "Choice":
            assert stored["values"][name] in choices, f"{name}: tuned value outside the searched choices"


def test_hparams_round_trip_and_reject_unknown_names():
    hparams = HParams(base_filters=16, epochs=3, flip=False)
    assert HParams.from_dict(hparams.to_dict()) == hparams
    assert hparams.conv_filters == (16, 32)
    # Values arrive from JSON and KerasTuner: coerced to the field's type.
    assert HParams.from_dict({"weight_decay": 0, "epochs": 3.0}).weight_decay == 0.0
    with pytest.raises(ValueError, match=r"unknown hyperparameters \['learning_rat'\]"):
        HParams.from_dict({"learning_rat": 0.1})


@pytest.mark.parametrize(("tf_config", "gpus", "kind", "chief"), [
    (None, 0, "default", True),
    (None, 1, "default", True),
    (None, 4, "mirrored", True),
    ('{"cluster": {"workerpool0": ["a:1"]}, "task": {"type": "workerpool0", "index": 0}}', 1, "default", True),
    ('{"cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1", "c:1"]}, '
     '"task": {"type": "workerpool1", "index": 0}}', 0, "multi_worker", False),
    ('{"cluster": {"workerpool0": ["a:1"], "workerpool1": ["b:1"]}, '
     '"task": {"type": "workerpool0", "index": 0}}', 0, "multi_worker", True),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}', 0, "multi_worker", False),
    ('{"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}', 0, "multi_worker", True),
])
def test_distribution_strategy_follows_where_the_trainer_runs(tf_config, gpus, kind, chief):
    from modules.distribution import is_chief, strategy_kind

    assert strategy_kind(tf_config, gpus) == kind
    assert is_chief(tf_config) is chief


def test_short_class_names_follow_the_class_names():
    assert len(features.SHORT_CLASS_NAMES) == features.NUM_CLASSES
    for short, full in zip(features.SHORT_CLASS_NAMES, features.CLASS_NAMES, strict=True):
        assert short.lower() in full.lower()
