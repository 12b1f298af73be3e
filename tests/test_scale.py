"""The scale benchmark's pieces: the pipeline cut at a stage (tfx_pipeline.pipeline.components_upto)
and the augmented copies that make the larger spans."""

import dataclasses

import numpy as np
import pytest

from fmnist import dataset
from tfx_pipeline.config import (
    EVALUATOR_ID,
    EXAMPLE_GEN_ID,
    PUSHER_ID,
    SERVING_VALIDATOR_ID,
    TEST_EVALUATOR_ID,
    TEST_EXAMPLE_GEN_ID,
    TRAINER_ID,
)
from tfx_pipeline.pipeline import components_upto


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    import local_runner

    return local_runner.config_from_args(["--sample", "--output-dir", str(tmp_path_factory.mktemp("out")),
                                          "--serving-validator", "project"], environ={})


def _ids(config, node_id):
    return [node.id for node in components_upto(config, node_id)]


def test_up_to_the_trainer_is_the_training_half_in_run_order(config):
    ids = _ids(config, TRAINER_ID)
    assert ids == [EXAMPLE_GEN_ID, "ImportSchemaGen", "StatisticsGen", "ExampleValidator", "AnomaliesGate",
                   "previous_span_resolver", "DriftGate", "span_window_resolver", "Transform",
                   "latest_blessed_model_resolver", TRAINER_ID]
    assert not {EVALUATOR_ID, TEST_EVALUATOR_ID, SERVING_VALIDATOR_ID, PUSHER_ID, TEST_EXAMPLE_GEN_ID} & set(ids)


def test_without_warm_start_the_trainer_needs_no_blessed_model(config):
    cold = config.replace(training=dataclasses.replace(config.training, warm_start=False))
    assert "latest_blessed_model_resolver" not in _ids(cold, TRAINER_ID)


def test_earlier_stages_need_only_what_feeds_them(config):
    assert _ids(config, EXAMPLE_GEN_ID) == [EXAMPLE_GEN_ID]
    assert _ids(config, "StatisticsGen") == [EXAMPLE_GEN_ID, "ImportSchemaGen", "StatisticsGen"]
    # Transform waits for the gates (placed after them) though it reads none of their outputs.
    assert {"AnomaliesGate", "DriftGate"} <= set(_ids(config, "Transform"))


def test_an_unknown_node_is_named(config):
    with pytest.raises(KeyError, match="no node 'Nope' in the pipeline; its nodes are ExampleGen, "):
        components_upto(config, "Nope")


def test_the_cut_pipeline_compiles(config):
    from tfx.dsl.compiler import compiler

    from tfx_pipeline.pipeline import create_pipeline

    ir = compiler.Compiler().compile(create_pipeline(config, components=components_upto(config, "Transform")))
    assert [node.pipeline_node.node_info.id for node in ir.nodes][-1] == "Transform"


# -- the larger spans --
@pytest.fixture(scope="module")
def scale(import_benchmark):
    return import_benchmark("scale")


def test_augmented_copies_are_new_bytes_from_a_fixed_seed(scale, sample_dir):
    images = dataset.read_split(sample_dir, dataset.TRAIN).images.astype(np.uint8).reshape(-1, 28, 28)
    copy = scale.augmented(images, np.random.default_rng(1))
    assert np.array_equal(copy, scale.augmented(images, np.random.default_rng(1)))
    assert not (copy.reshape(len(copy), -1) == images.reshape(len(images), -1)).all(axis=1).any()
    # A shift moves the picture, it does not repaint it: ink is lost only at the border.
    assert 0.9 < copy.sum() / images.sum() <= 1.0


def test_the_scaled_span_holds_the_originals_then_the_copies(scale, sample_dir, tmp_path):
    assert scale.land_scaled_span(sample_dir, tmp_path, 3) == 3000
    span = dataset.read_split(tmp_path / "span-1", dataset.TRAIN)
    original = dataset.read_split(sample_dir, dataset.TRAIN)
    assert np.array_equal(span.images[:1000], original.images)
    assert np.array_equal(span.labels, np.tile(original.labels, 3))
    assert not np.array_equal(span.images[1000:2000], span.images[2000:])  # each copy from its own seed
