"""Settings are declared once (fmnist.settings) and reach both runners as flags, FMNIST_*
variables and YAML keys, parsed by type, with flag > variable > file > default."""

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pytest

import kubeflow_runner
import local_runner
from fmnist import settings
from fmnist.settings import SettingsError, setting
from tfx_pipeline.config import PipelineSettings


def _local(argv, environ=None):
    return local_runner.config_from_args(argv, environ or {})


def test_a_new_setting_is_one_line_and_becomes_a_flag_a_variable_and_a_file_key(tmp_path):
    @dataclass(frozen=True)
    class Extra:
        warmup_steps: int = setting(0, "steps of learning-rate warm-up")

    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Extra)
    assert "--warmup-steps" in parser.format_help() and "FMNIST_WARMUP_STEPS" in parser.format_help()
    assert settings.resolve(Extra, parser.parse_args(["--warmup-steps", "5"]), {}).build(Extra).warmup_steps == 5
    assert settings.resolve(Extra, parser.parse_args([]), {"FMNIST_WARMUP_STEPS": "7"}).build(Extra).warmup_steps == 7
    (tmp_path / "c.yaml").write_text("warmup_steps: 9\n")
    assert settings.resolve(Extra, parser.parse_args([]), {}, tmp_path / "c.yaml").build(Extra).warmup_steps == 9
    assert settings.resolve(Extra, parser.parse_args([]), {}).build(Extra).warmup_steps == 0


def test_both_runners_offer_every_shared_setting():
    shared = {item.flag for item in settings.declared(PipelineSettings)}
    for runner in (local_runner, kubeflow_runner):
        flags = {f for action in runner.build_parser()._actions for f in action.option_strings}
        assert shared <= flags, (runner.__name__, shared - flags)


def test_local_precedence_is_flag_then_variable_then_file_then_default(tmp_path):
    (tmp_path / "c.yaml").write_text("epochs: 3\nbatch_size: 16\nmin_accuracy: 0.5\n")
    environ = {"FMNIST_CONFIG": str(tmp_path / "c.yaml"), "FMNIST_BATCH_SIZE": "64", "FMNIST_EPOCHS": "4"}
    config = _local(["--epochs", "5"], environ)
    assert config.training.epochs == 5  # flag
    assert config.training.batch_size == 64  # variable
    assert config.thresholds.min_accuracy == 0.5  # file
    assert config.thresholds.min_class_recall == 0.70  # declared default
    assert config.training.hparam_overrides() == {"epochs": 5, "batch_size": 64}


def test_sample_with_an_explicit_data_dir_reads_that_dir(tmp_path):
    # Bug: a --data-dir equal to the default path was taken as "not given" and replaced by data/sample.
    assert _local(["--sample", "--data-dir", str(local_runner.DEFAULT_DATA_DIR)]).data_root == str(
        local_runner.DEFAULT_DATA_DIR)
    assert _local(["--sample"]).data_root == str(local_runner.SAMPLE_DIR)
    assert _local([]).data_root == str(local_runner.DEFAULT_DATA_DIR)


def test_the_sample_profile_fills_only_what_nobody_gave():
    config = _local(["--sample", "--epochs", "2"], {"FMNIST_MIN_ACCURACY": "0.8"})
    assert config.training.epochs == 2 and config.training.batch_size == 32
    assert config.thresholds.min_accuracy == 0.8 and config.thresholds.min_class_recall == 0.3
    assert config.settings.eval_holdout == 200 and config.pipeline_name == "fashion-mnist-sample"
    assert config.training.hparam_overrides() == {"augment": False, "epochs": 2, "batch_size": 32}


@pytest.mark.parametrize("text", ["maybe", "2", "", "truee"])
def test_booleans_accept_only_known_words(text):
    with pytest.raises(SettingsError, match=rf"FMNIST_NO_CACHE: invalid value '{text}' for no_cache"):
        _local([], {"FMNIST_NO_CACHE": text})


def test_numbers_and_choices_are_checked_with_their_source(tmp_path, capsys):
    with pytest.raises(SettingsError, match=r"FMNIST_EPOCHS: invalid value '1.5' for epochs"):
        _local([], {"FMNIST_EPOCHS": "1.5"})
    (tmp_path / "c.yaml").write_text("format: parquet\n")
    with pytest.raises(SettingsError, match=r"c.yaml: format: format must be one of idx, csv"):
        _local(["--config", str(tmp_path / "c.yaml")])
    (tmp_path / "d.yaml").write_text("epochz: 3\n")
    with pytest.raises(SettingsError, match=r"unknown settings \['epochz'\]"):
        _local(["--config", str(tmp_path / "d.yaml")])
    assert local_runner.main([], {"FMNIST_SEED": "x"}) == 2
    assert "error: FMNIST_SEED: invalid value 'x' for seed" in capsys.readouterr().err


def test_optional_values_accept_none():
    assert _local(["--max-train-steps", "none"]).training.max_train_steps is None
    assert _local([], {"FMNIST_MAX_TRAIN_STEPS": "12"}).training.max_train_steps == 12


def test_the_trainer_gets_the_typed_config_back():
    from modules.config import TrainingConfig

    config = _local(["--sample", "--tune", "--tuning-trials", "3", "--seed", "7"])
    custom = config.training.to_custom_config()
    assert TrainingConfig.from_custom_config({**custom, "ai_platform_enable_vertex": True}) == config.training
    assert Path(config.data_root).is_dir()


def test_a_profile_cannot_name_an_undeclared_setting():
    values = settings.resolve(local_runner.SETTINGS, local_runner.parse_args([]), {})
    with pytest.raises(TypeError, match=r"undeclared settings \['epoch'\]"):
        values.with_defaults({"epoch": 3})
    assert set(local_runner.SAMPLE_PROFILE) <= set(values.values)


def test_a_command_scope_a_field_alias_and_path_defaults_anchored_at_the_project_root(monkeypatch, tmp_path):
    @dataclass(frozen=True)
    class Command:
        ENV_SCOPE: ClassVar[str] = "CMD_"

        out_file: str | None = setting(None, "where", name="out")
        data: Path = setting(Path("data/raw"), "input")
        mode: str = setting("fast", "how", choices=("fast", "exact"))

    parser = argparse.ArgumentParser()
    settings.add_arguments(parser, Command)
    text = " ".join(parser.format_help().split())
    assert "--out OUT" in text and "[FMNIST_CMD_OUT]" in text and "--mode {fast,exact}" in text
    assert "(default: data/raw)" in text and "(default: fast)" in text
    monkeypatch.setattr(settings.paths, "PROJECT_ROOT", tmp_path)
    built = settings.resolve(Command, parser.parse_args([]), {"FMNIST_CMD_OUT": "x"}).build(Command)
    assert (built.out_file, built.data) == ("x", tmp_path / "data/raw")  # a default: from the project root
    given = settings.resolve(Command, parser.parse_args(["--data", "mine"]), {}).build(Command)
    assert given.data == Path("mine")  # a given path: as given, from the current directory
