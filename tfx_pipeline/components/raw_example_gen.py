"""ExampleGen that reads the raw Fashion-MNIST files (IDX-gz or Kaggle CSV) directly.

A FileBasedExampleGen with a custom executor. Output splits are declared in input_config; one
split can be a deterministic, stratified hold-out carved out of another split's files (the
official train files become `train` + `eval`), which the stock hash-bucket splitting cannot do.

Image encoding: `image` is an int64 list of 784 pixel values, `label` one int64. Integers, not a
PNG/bytes blob, so StatisticsGen sees every pixel: the schema can then check the 0..255 domain
and the 784-value shape, and ExampleValidator catches a bad pixel. GZIP'd TFRecords keep the
on-disk size close to the raw files.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.proto import example_gen_pb2
from tfx.utils import proto_utils

from fmnist import dataset, features


def _int64_feature(values: np.ndarray) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def to_tf_example(image: np.ndarray, label: int) -> tf.train.Example:
    return tf.train.Example(features=tf.train.Features(feature={
        features.IMAGE_KEY: _int64_feature(image),
        features.LABEL_KEY: _int64_feature([label]),
    }))


def read_split(input_base: str, split: str, input_format: str) -> dataset.RawSplit:
    """Reads one official split through TFX's filesystem layer (local paths or gs://)."""
    return dataset.read_split(input_base, split, input_format,
                              open_fn=lambda path: fileio.open(path, "rb"), exists_fn=fileio.exists)


def select_rows(split: dataset.RawSplit, role: str, holdout_size: int, seed: int) -> np.ndarray:
    """Row indices for a split's role: 'all', 'holdout', or 'rest' (all minus the hold-out)."""
    if role == "all":
        return np.arange(len(split))
    holdout = dataset.stratified_holdout(split.labels, holdout_size, seed)
    if role == "holdout":
        return holdout
    if role == "rest":
        return np.setdiff1d(np.arange(len(split)), holdout, assume_unique=True)
    raise ValueError(f"unknown split role {role!r}")


def _serialized_examples(
    _: Any, input_base: str, source: str, input_format: str, role: str, holdout_size: int, seed: int
) -> Iterator[bytes]:
    split = read_split(input_base, source, input_format)
    for row in select_rows(split, role, holdout_size, seed):
        yield to_tf_example(split.images[row], int(split.labels[row])).SerializeToString()


def _custom_config(exec_properties: dict[str, Any]) -> dict[str, Any]:
    config = example_gen_pb2.CustomConfig()
    proto_utils.json_to_proto(exec_properties.get("custom_config") or "{}", config)
    struct = struct_pb2.Struct()
    if config.custom_config.Is(struct_pb2.Struct.DESCRIPTOR):
        config.custom_config.Unpack(struct)
    return json_format.MessageToDict(struct)


class Executor(BaseExampleGenExecutor):
    """Emits one PCollection of serialized tf.Examples per split in input_config."""

    def GetInputSourceToExamplePTransform(self) -> beam.PTransform:
        raise NotImplementedError("splits are generated in GenerateExamplesByBeam")

    def GenerateExamplesByBeam(
        self, pipeline: beam.Pipeline, exec_properties: dict[str, Any]
    ) -> dict[str, beam.PCollection]:
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties["input_config"], input_config)
        custom = _custom_config(exec_properties)
        holdout_split = custom.get("holdout_split")
        holdout_source = custom.get("holdout_source")
        result = {}
        for split in input_config.splits:
            role = ("holdout" if split.name == holdout_split
                    else "rest" if split.name == holdout_source else "all")
            source = holdout_source if split.name == holdout_split else split.name
            result[split.name] = (
                pipeline
                | f"Start[{split.name}]" >> beam.Create([None])
                | f"Read[{split.name}]" >> beam.FlatMap(
                    _serialized_examples,
                    input_base=exec_properties["input_base"],
                    source=source,
                    input_format=custom.get("input_format", dataset.IDX),
                    role=role,
                    holdout_size=int(custom.get("holdout_size", 0)),
                    seed=int(custom.get("seed", 0)),
                )
                # Spread the examples out of the single reading bundle so writes parallelise.
                | f"Reshuffle[{split.name}]" >> beam.Reshuffle()
            )
        return result


def raw_example_gen(
    input_base: str, input_format: str, eval_holdout_size: int, seed: int
) -> FileBasedExampleGen:
    """ExampleGen producing `train`, `eval` (a stratified hold-out of train) and `test`."""
    if input_format not in dataset.INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {list(dataset.INPUT_FORMATS)}, got {input_format!r}")
    train_pattern = dataset.split_pattern(dataset.TRAIN, input_format)
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=dataset.TRAIN, pattern=train_pattern),
        example_gen_pb2.Input.Split(name=dataset.EVAL, pattern=train_pattern),
        example_gen_pb2.Input.Split(name=dataset.TEST, pattern=dataset.split_pattern(dataset.TEST, input_format)),
    ])
    custom = struct_pb2.Struct()
    custom.update({
        "input_format": input_format,
        "holdout_split": dataset.EVAL,
        "holdout_source": dataset.TRAIN,
        "holdout_size": eval_holdout_size,
        "seed": seed,
    })
    custom_config = example_gen_pb2.CustomConfig()
    custom_config.custom_config.Pack(custom)
    return FileBasedExampleGen(
        input_base=input_base,
        input_config=input_config,
        custom_config=custom_config,
        custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
    )


