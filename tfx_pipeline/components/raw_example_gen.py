"""ExampleGens that read the raw Fashion-MNIST files (IDX-gz or Kaggle CSV) directly.

A FileBasedExampleGen with a custom executor. Output splits are declared in input_config; one
split can be a deterministic, stratified hold-out carved out of another split's files (a span's
train files become `train` + `eval`), which the stock hash-bucket splitting cannot do.

Two of them in the pipeline: `span_example_gen` ingests one landed span (`span-{SPAN}/`, TFX's
span spec: the newest span, or the one a RangeConfig names; the span is recorded on the Examples
artifact), `test_example_gen` the official test files, the same for every span. A third,
`unlabelled_example_gen`, feeds the optional BulkInferrer: images without labels, each with an
`id` ("<file name>:<row>") so that a prediction can be joined back to its image.

Image encoding: `image` is an int64 list of 784 pixel values, `label` one int64. Integers, not a
PNG/bytes blob, so StatisticsGen sees every pixel: the schema can then check the 0..255 domain
and the 784-value shape, and ExampleValidator catches a bad pixel. GZIP'd TFRecords keep the
on-disk size close to the raw files.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.orchestration import data_types
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.utils import proto_utils

from fmnist import dataset, features, landing

SPAN_SPEC = "{SPAN}"  # ExampleGen replaces it by the span it ingests


def _int64_feature(values: np.ndarray) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def to_tf_example(image: np.ndarray, label: int | None = None, example_id: str | None = None) -> tf.train.Example:
    """`image` (784 grey levels) and, when given, `label` and the string `id`."""
    feature = {features.IMAGE_KEY: _int64_feature(image)}
    if label is not None:
        feature[features.LABEL_KEY] = _int64_feature([label])
    if example_id is not None:
        feature[features.ID_KEY] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[example_id.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def read_split(input_base: str, split: str, input_format: str) -> dataset.RawSplit:
    """Reads one official split through TFX's filesystem layer (local paths or gs://)."""
    return dataset.read_split(input_base, split, input_format,
                              open_fn=lambda path: fileio.open(path, "rb"), exists_fn=fileio.exists)


def read_unlabelled(directory: str) -> dataset.UnlabelledImages:
    """Reads the IDX images files of `directory` through TFX's filesystem layer (local or gs://)."""
    return dataset.read_unlabelled(directory, open_fn=lambda path: fileio.open(path, "rb"), glob_fn=fileio.glob)


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
    _: Any, directory: str, source: str, input_format: str, role: str, holdout_size: int, seed: int
) -> Iterator[bytes]:
    if source == dataset.UNLABELLED:
        unlabelled = read_unlabelled(directory)
        for image, image_id in zip(unlabelled.images, unlabelled.ids, strict=True):
            yield to_tf_example(image, example_id=image_id).SerializeToString()
        return
    split = read_split(directory, source, input_format)
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
        # The driver has already replaced {SPAN} in each pattern by the span it resolved.
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties["input_config"], input_config)
        custom = _custom_config(exec_properties)
        result = {}
        for split in input_config.splits:
            spec = custom["splits"][split.name]
            result[split.name] = (
                pipeline
                | f"Start[{split.name}]" >> beam.Create([None])
                | f"Read[{split.name}]" >> beam.FlatMap(
                    _serialized_examples,
                    directory=os.path.dirname(os.path.join(exec_properties["input_base"], split.pattern)),
                    source=spec["source"],
                    input_format=custom.get("input_format", dataset.IDX),
                    role=spec["role"],
                    holdout_size=int(custom.get("holdout_size", 0)),
                    seed=int(custom.get("seed", 0)),
                )
                # Spread the examples out of the single reading bundle so writes parallelise.
                | f"Reshuffle[{split.name}]" >> beam.Reshuffle()
            )
        return result


@dataclass(frozen=True)
class SplitSpec:
    """One output split: it reads the files of the official split `source` in `directory`
    (relative to input_base; may hold ExampleGen's {SPAN} spec) and keeps the rows of `role`:
    'all', 'holdout' (the stratified hold-out) or 'rest' (all but the hold-out)."""

    name: str
    source: str
    role: str = "all"
    directory: str = ""

    def pattern(self, input_format: str) -> str:
        return os.path.join(self.directory, dataset.split_pattern(self.source, input_format))


def raw_example_gen(
    input_base: str, splits: list[SplitSpec], input_format: str = dataset.IDX, eval_holdout_size: int = 0,
    seed: int = 0, range_config: range_config_pb2.RangeConfig | data_types.RuntimeParameter | None = None,
) -> FileBasedExampleGen:
    """A FileBasedExampleGen over the raw files, one output split per SplitSpec. With {SPAN} in the
    directories it ingests the newest span, or the one `range_config` names (a static range)."""
    if input_format not in dataset.INPUT_FORMATS:
        raise ValueError(f"input_format must be one of {list(dataset.INPUT_FORMATS)}, got {input_format!r}")
    input_config = example_gen_pb2.Input(splits=[
        example_gen_pb2.Input.Split(name=split.name, pattern=split.pattern(input_format)) for split in splits
    ])
    custom = struct_pb2.Struct()
    custom.update({
        "input_format": input_format,
        "holdout_size": eval_holdout_size,
        "seed": seed,
        "splits": {split.name: {"source": split.source, "role": split.role} for split in splits},
    })
    custom_config = example_gen_pb2.CustomConfig()
    custom_config.custom_config.Pack(custom)
    # One input split alone would get ExampleGen's default 2:1 train/eval hash split as output.
    output_config = example_gen_pb2.Output(split_config=example_gen_pb2.SplitConfig(splits=[
        example_gen_pb2.SplitConfig.Split(name=splits[0].name, hash_buckets=1)])) if len(splits) == 1 else None
    return FileBasedExampleGen(
        input_base=input_base,
        input_config=input_config,
        output_config=output_config,
        custom_config=custom_config,
        range_config=range_config,
        custom_executor_spec=executor_spec.BeamExecutorSpec(Executor),
    )


def span_example_gen(
    landing_root: str, eval_holdout_size: int, seed: int,
    range_config: range_config_pb2.RangeConfig | data_types.RuntimeParameter | None = None,
) -> FileBasedExampleGen:
    """`train` and `eval` (a stratified hold-out) of one landed span, `<landing>/span-N/` in the
    official IDX layout (fmnist.landing writes every span so): the newest, or `range_config`'s."""
    span_dir = f"{landing.SPAN_PREFIX}{SPAN_SPEC}"
    return raw_example_gen(landing_root, [
        SplitSpec(dataset.TRAIN, source=dataset.TRAIN, role="rest", directory=span_dir),
        SplitSpec(dataset.EVAL, source=dataset.TRAIN, role="holdout", directory=span_dir),
    ], dataset.IDX, eval_holdout_size, seed, range_config)


def test_example_gen(data_root: str, input_format: str) -> FileBasedExampleGen:
    """The official test split, fixed across spans so test accuracies stay comparable."""
    return raw_example_gen(data_root, [SplitSpec(dataset.TEST, source=dataset.TEST)], input_format)


def unlabelled_example_gen(input_dir: str) -> FileBasedExampleGen:
    """One split, `unlabelled`: every IDX images file in `input_dir` (no labels files), for the
    BulkInferrer. Examples carry `image` and `id`, no `label`."""
    return raw_example_gen(input_dir, [SplitSpec(dataset.UNLABELLED, source=dataset.UNLABELLED)], dataset.IDX)


def span_range_config(span: int) -> range_config_pb2.RangeConfig | None:
    """ExampleGen's RangeConfig for one span; None (the newest span) for 0."""
    if span < 0:
        raise ValueError(f"span must be >= 0 (0: the newest), got {span}")
    if span == 0:
        return None
    return range_config_pb2.RangeConfig(static_range=range_config_pb2.StaticRange(
        start_span_number=span, end_span_number=span))
