"""Training precision (`--precision`): the policy each machine resolves to, bf16 models that still
answer in float32, and their exports: pure float32 signatures that warm starts can read."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_transform as tft
import tf_keras as keras

import local_runner
from fmnist import features
from fmnist.dataset import read_split
from fmnist.settings import SettingsError
from modules import precision, signatures, trainer, warm_start
from modules.config import TrainingConfig
from modules.model import HParams, build_model

BF16 = precision.MIXED_BFLOAT16
AMX = {"fpu", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16"}
EPYC = {"fpu", "avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
PLAIN = {"fpu", "sse4_2", "avx2"}


# -- resolve ------------------------------------------------------------------------------------
@pytest.mark.parametrize(("requested", "flags", "gpus", "policy", "reason"), [
    ("auto", AMX, 0, BF16, "amx_bf16"),
    ("auto", EPYC, 0, BF16, "avx512_bf16"),
    ("auto", PLAIN, 0, "float32", "no amx_bf16/avx512_bf16"),
    ("auto", set(), 0, "float32", "no amx_bf16/avx512_bf16"),  # no /proc/cpuinfo, another architecture
    ("auto", AMX, 1, "float32", "GPU"),
    ("float32", AMX, 0, "float32", "requested"),
    ("float32", PLAIN, 0, "float32", "requested"),
    ("bfloat16", AMX, 0, BF16, "amx_bf16"),
    ("bfloat16", EPYC, 0, BF16, "avx512_bf16"),
    ("bfloat16", PLAIN, 0, BF16, "emulated, slow"),
    ("bfloat16", PLAIN, 2, BF16, "GPU"),
])
def test_resolve_picks_bf16_only_where_the_cpu_computes_it(requested, flags, gpus, policy, reason):
    resolved = precision.resolve(requested, flags, gpus)
    assert (resolved.policy, resolved.requested) == (policy, requested)
    assert reason in resolved.reason
    assert resolved.to_dict() == {"requested": requested, "policy": policy, "reason": resolved.reason}


def test_avx512_bf16_follows_the_measured_gain(monkeypatch):
    monkeypatch.setattr(precision, "AVX512_BF16_GAINS", False)
    assert precision.resolve("auto", EPYC).policy == "float32"
    assert precision.resolve("auto", AMX).policy == BF16
    assert precision.resolve("bfloat16", EPYC).policy == BF16  # explicit values are obeyed


def test_bf16_without_native_support_warns(caplog):
    with caplog.at_level("WARNING", logger=precision.__name__):
        precision.resolve("bfloat16", PLAIN)
    assert "emulated" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger=precision.__name__):
        precision.resolve("bfloat16", EPYC)
    assert not caplog.text


def test_resolve_rejects_unknown_values():
    # custom_config arrives as JSON and bypasses the settings' choices.
    with pytest.raises(ValueError, match=r"precision must be one of auto, float32, bfloat16, got 'fp16'"):
        precision.resolve("fp16", EPYC)


CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme avx2 avx512f avx512_bf16 avx512_vnni
bugs\t\t: sysret_ss_attrs
power management:

processor\t: 1
vendor_id\t: AuthenticAMD
flags\t\t: fpu vme avx2 avx512f avx512_bf16 avx512_vnni amx_bf16
vmx flags\t: vnmi
"""


def test_cpu_flags_are_the_union_of_the_flags_lines(tmp_path):
    (tmp_path / "cpuinfo").write_text(CPUINFO)
    flags = precision.cpu_flags(str(tmp_path / "cpuinfo"))
    assert flags == {"fpu", "vme", "avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16"}
    assert "vnmi" not in flags and "sysret_ss_attrs" not in flags  # other lines with "flags" in the key
    assert precision.cpu_flags(str(tmp_path / "missing")) == frozenset()


# -- the setting --------------------------------------------------------------------------------
def test_precision_is_a_setting_with_checked_choices(capsys):
    assert TrainingConfig().precision == "auto"
    assert local_runner.config_from_args(["--precision", "bfloat16"], {}).training.precision == "bfloat16"
    assert local_runner.config_from_args([], {"FMNIST_PRECISION": "float32"}).training.precision == "float32"
    with pytest.raises(SettingsError, match=r"FMNIST_PRECISION: precision must be one of auto, float32, bfloat16, "
                                            r"got 'fp16'"):
        local_runner.config_from_args([], {"FMNIST_PRECISION": "fp16"})
    assert local_runner.main([], {"FMNIST_PRECISION": "fp16"}) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: FMNIST_PRECISION: precision must be one of auto, float32, bfloat16, got 'fp16'"]
    custom = TrainingConfig(precision="bfloat16").to_custom_config()
    assert TrainingConfig.from_custom_config(json.loads(json.dumps(custom))).precision == "bfloat16"


# -- the model ----------------------------------------------------------------------------------
def test_a_bf16_model_computes_hidden_layers_in_bf16_and_answers_in_float32():
    model = build_model(HParams(), policy=BF16)
    hidden = [layer for layer in model.layers if layer.name != "probabilities" and layer.weights]
    assert hidden and all(layer.compute_dtype == "bfloat16" for layer in hidden)
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert all(weight.dtype == tf.float32 for weight in model.weights)  # variables stay float32
    batch = np.random.default_rng(0).normal(size=(4, features.NUM_PIXELS)).astype(np.float32)
    assert model.output.dtype == tf.float32 and model(batch, training=False).dtype == tf.float32
    # Set per layer: models built next in this process are float32 again (Tuner trials, tests).
    assert keras.mixed_precision.global_policy().name == "float32"
    assert not precision.computes_in_bf16(build_model(HParams()))


def test_the_float32_copy_keeps_names_and_weights():
    model = build_model(HParams(), policy=BF16)
    copy = precision.float32_copy(model)
    assert not precision.computes_in_bf16(copy) and precision.computes_in_bf16(model)
    assert [layer.name for layer in copy.layers] == [layer.name for layer in model.layers]
    assert copy.output_names == ["probabilities"]
    for ours, theirs in zip(copy.get_weights(), model.get_weights(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    batch = np.random.default_rng(0).normal(size=(4, features.NUM_PIXELS)).astype(np.float32)
    # bf16 keeps 8 bits of mantissa: the two agree to about 1e-2 on probabilities.
    np.testing.assert_allclose(copy(batch, training=False), model(batch, training=False), atol=5e-2)


# -- a bf16 fit and its export ------------------------------------------------------------------
@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory, transformed_sample):
    """A 5-step bfloat16 fit on the sample and its export."""
    split = transformed_sample.split
    hparams = HParams.tuned({"epochs": 1, "batch_size": 64})
    result = trainer.fit(hparams, split, split, seed=0, max_steps=5, precision="bfloat16")
    export_dir = tmp_path_factory.mktemp("bf16") / "model"
    tf_transform_output = tft.TFTransformOutput(str(transformed_sample.transform_dir))
    signatures.export_saved_model(result.model, tf_transform_output, str(export_dir), explain_steps=4)
    return result, export_dir, tf_transform_output


@pytest.fixture(scope="module")
def test_images(sample_dir) -> np.ndarray:
    return read_split(sample_dir, "test").images[:6].reshape(-1, *features.IMAGE_SHAPE).astype(np.float32)


def _examples(images: np.ndarray) -> tf.Tensor:
    serialized = []
    for image in images:
        example = tf.train.Example()
        example.features.feature[features.IMAGE_KEY].int64_list.value.extend(image.reshape(-1).astype(np.int64))
        serialized.append(example.SerializeToString())
    return tf.constant(serialized)


def _dtypes_in_graph(export_dir) -> set[int]:
    """Every dtype an op attribute of the SavedModel's functions names (DataType enum values)."""
    from tensorflow.core.protobuf import saved_model_pb2

    graph = saved_model_pb2.SavedModel.FromString((export_dir / "saved_model.pb").read_bytes()).meta_graphs[0]
    found = set()
    for function in graph.graph_def.library.function:
        for node in function.node_def:
            for value in node.attr.values():
                found.add(value.type)
                found.update(value.list.type)
    return found


@pytest.mark.slow
def test_a_bf16_fit_trains_in_bf16_and_says_so(bf16_run, tmp_path):
    result, _, _ = bf16_run
    assert result.precision.policy == BF16 and result.precision.requested == "bfloat16"
    assert precision.computes_in_bf16(result.model)
    path = tmp_path / "summary.json"
    trainer.write_training_summary(str(path), result.model, result.hparams, result.history, result.epoch_logger,
                                   1.0, precision=result.precision)
    assert json.loads(path.read_text())["precision"] == result.precision.to_dict()


@pytest.mark.slow
def test_every_signature_of_a_bf16_export_computes_and_answers_in_float32(bf16_run, test_images):
    result, export_dir, tf_transform_output = bf16_run
    assert tf.bfloat16.as_datatype_enum not in _dtypes_in_graph(export_dir), "an exported function computes in bf16"

    loaded = tf.saved_model.load(str(export_dir))
    images, examples = tf.constant(test_images), _examples(test_images)
    inputs = {features.SERVING_DEFAULT: {"images": images}, features.EXPLAIN_SIGNATURE: {"images": images},
              features.TF_EXAMPLE_SIGNATURE: {"examples": examples}, features.CLASSIFY_SIGNATURE: {"inputs": examples}}
    assert set(loaded.signatures) == set(inputs)
    outputs = {name: loaded.signatures[name](**args) for name, args in inputs.items()}
    for name, answer in outputs.items():
        for key, value in answer.items():
            assert value.dtype != tf.bfloat16, (name, key)
            if value.dtype.is_floating:
                assert value.dtype == tf.float32, (name, key, value.dtype)

    # serving_default is the float32 copy of the trained model, through the Transform.
    transformed = tf_transform_output.transform_raw_features(
        {features.IMAGE_KEY: tf.constant(test_images.reshape(len(test_images), -1), tf.int64)})
    expected = precision.float32_copy(result.model)(transformed[features.transformed_name(features.IMAGE_KEY)],
                                                    training=False).numpy()
    served = outputs[features.SERVING_DEFAULT][features.PROBABILITIES_OUTPUT].numpy()
    np.testing.assert_allclose(served, expected, atol=1e-5)
    np.testing.assert_allclose(outputs[features.TF_EXAMPLE_SIGNATURE][features.PROBABILITIES_OUTPUT].numpy(),
                               served, atol=1e-6)
    np.testing.assert_allclose(outputs[features.EXPLAIN_SIGNATURE][features.PROBABILITIES_OUTPUT].numpy(),
                               served, atol=1e-6)


@pytest.mark.slow
def test_a_warm_start_reads_a_bf16_export(bf16_run):
    result, export_dir, _ = bf16_run
    for policy in ("float32", BF16):  # the next run may train in either
        model = build_model(result.hparams, policy=policy)
        assert warm_start.restore_weights(model, result.hparams, str(export_dir)) is True
        for ours, trained in zip(model.get_weights(), result.model.get_weights(), strict=True):
            np.testing.assert_array_equal(ours, trained)


def test_tuner_trials_train_in_the_configured_precision(monkeypatch, tmp_path):
    import keras_tuner as kt

    from modules import tuner
    from modules.data import Split

    asked = []

    def fake_fit(hparams, train, evaluation, seed, precision="float32"):
        asked.append(precision)
        return SimpleNamespace(history=SimpleNamespace(history={tuner.OBJECTIVE: [0.5]}))

    monkeypatch.setattr(tuner, "fit", fake_fit)
    split = Split(np.zeros((2, features.NUM_PIXELS), np.float32), np.zeros(2, np.int64))
    search = tuner.HParamsSearch(
        HParams(), split, split, 0, precision="bfloat16",
        oracle=kt.oracles.RandomSearchOracle(objective=kt.Objective(tuner.OBJECTIVE, "max"), max_trials=1,
                                             hyperparameters=tuner.search_space(), seed=0),
        directory=str(tmp_path), project_name="p", overwrite=True)
    assert search.run_trial(kt.engine.trial.Trial(tuner.search_space())) == {tuner.OBJECTIVE: 0.5}
    assert asked == ["bfloat16"]
