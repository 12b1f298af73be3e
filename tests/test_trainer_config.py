"""What the Trainer and Tuner read from custom_config, and where replicas export."""

import json
import os

import pytest

from modules.config import TrainingConfig, TuningConfig
from modules.distribution import export_dir_for
from modules.model import HParams, resolve_hparams

CONFIG = TrainingConfig(seed=7, epochs=3, batch_size=None, max_train_steps=5,
                        tuning=TuningConfig(tune=True, tuning_trials=2, tuning_epochs=1, tuning_train_examples=0),
                        hparams={"augment": False})


def test_training_config_round_trips_through_custom_config():
    # custom_config reaches the component as JSON.
    assert TrainingConfig.from_custom_config(json.loads(json.dumps(CONFIG.to_custom_config()))) == CONFIG
    assert TrainingConfig.from_custom_config(None) == TrainingConfig()
    assert TrainingConfig.from_custom_config({}) == TrainingConfig()


def test_training_config_ignores_the_keys_vertex_adds():
    custom_config = {
        **CONFIG.to_custom_config(),
        "ai_platform_enable_vertex": True,
        "ai_platform_vertex_region": "europe-west4",
        "ai_platform_training_args": {"project": "p", "worker_pool_specs": [{"replica_count": 1}]},
    }
    assert TrainingConfig.from_custom_config(custom_config) == CONFIG


def test_resolve_hparams_tuned_then_tuner_then_explicit():
    tuned = HParams.tuned()
    tuner_output = {"space": [], "values": {"learning_rate": tuned.learning_rate * 2, "epochs": tuned.epochs + 5,
                                            "augment": not tuned.augment}}
    config = TrainingConfig(epochs=tuned.epochs + 1, hparams={"augment": tuned.augment})

    assert resolve_hparams(TrainingConfig()) == tuned
    assert resolve_hparams(TrainingConfig(), tuner_output).epochs == tuned.epochs + 5
    resolved = resolve_hparams(config, tuner_output)
    assert resolved.learning_rate == tuned.learning_rate * 2  # the Tuner's value over the tuned one
    assert resolved.epochs == tuned.epochs + 1  # the explicit epochs over the Tuner's
    assert resolved.augment == tuned.augment  # a profile's hparams over the Tuner's
    assert resolved.base_filters == tuned.base_filters  # untouched: the tuned value
    assert resolve_hparams(TrainingConfig(batch_size=16)).batch_size == 16


def test_the_chief_exports_to_the_serving_model_dir_and_keeps_it(tmp_path):
    serving_model_dir = str(tmp_path / "serving")
    with export_dir_for(serving_model_dir, chief=True) as export_dir:
        assert export_dir == serving_model_dir
        (tmp_path / "serving").mkdir()
        (tmp_path / "serving" / "saved_model.pb").write_bytes(b"model")
    assert (tmp_path / "serving" / "saved_model.pb").read_bytes() == b"model"


def test_other_replicas_export_to_a_temporary_dir_that_is_removed(tmp_path):
    serving_model_dir = str(tmp_path / "serving")
    with export_dir_for(serving_model_dir, chief=False) as export_dir:
        assert export_dir != serving_model_dir
        with open(f"{export_dir}/saved_model.pb", "wb") as stream:
            stream.write(b"copy")
    assert not (tmp_path / "serving").exists()
    assert not os.path.exists(export_dir)

    with pytest.raises(RuntimeError, match="save failed"), export_dir_for(serving_model_dir, chief=False) as failed:
        with open(f"{failed}/partial", "wb") as stream:
            stream.write(b"partial")
        raise RuntimeError("save failed")
    assert not os.path.exists(failed)
