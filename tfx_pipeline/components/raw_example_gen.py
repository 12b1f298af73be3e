"""ExampleGens that read the raw Fashion-MNIST files (IDX-gz or Kaggle CSV) directly.

A FileBasedExampleGen with a custom executor. Output splits are declared in input_config; one
split can be a deterministic, stratified hold-out carved out of another split's files (a span's
train files become `train` + `eval`), which the stock hash-bucket splitting cannot do.

Two of them in the pipeline: `span_example_gen` ingests one landed span (`span-{SPAN}/`, TFX's
span spec: the newest span, or the one a RangeConfig names; the span is recorded on the Examples
artifact), `test_example_gen` the official test files, the same for every span. A third,
`unlabelled_example_gen`, feeds the optional BulkInferrer: images without labels, each with an
`id` ("<file name>:<row>") so that a prediction can be joined back to its image.

Memory stays flat whatever a span's size: an IDX split is read in chunks of CHUNK_ROWS rows, one
Beam element each, and written as it is read (no GroupByKey, which the DirectRunner would hold in
memory whole); on the DirectRunner the files hold each split in row order.

Image encoding: `image` is an int64 list of 784 pixel values, `label` one int64. Integers, not a
PNG/bytes blob, so StatisticsGen sees every pixel: the schema can then check the 0..255 domain
and the 784-value shape, and ExampleValidator catches a bad pixel. GZIP'd TFRecords keep the
on-disk size close to the raw files.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
import tensorflow as tf
from google.protobuf import json_format, struct_pb2
from tfx import types
from tfx.components.example_gen import utils as example_gen_utils
from tfx.components.example_gen import write_split
from tfx.components.example_gen.base_example_gen_executor import BaseExampleGenExecutor
from tfx.components.example_gen.component import FileBasedExampleGen
from tfx.components.util import examples_utils
from tfx.dsl.components.base import executor_spec
from tfx.dsl.io import fileio
from tfx.orchestration import data_types
from tfx.proto import example_gen_pb2, range_config_pb2
from tfx.types import artifact_utils, standard_component_specs
from tfx.utils import proto_utils

from fmnist import dataset, features, landing

SPAN_SPEC = "{SPAN}"  # ExampleGen replaces it by the span it ingests


def _int64_feature(values: np.ndarray | Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def to_tf_example(image: np.ndarray | Sequence[int], label: int | None = None,
                  example_id: str | None = None) -> tf.train.Example:
    """`image` (784 grey levels) and, when given, `label` and the string `id`."""
    feature = {features.IMAGE_KEY: _int64_feature(image)}
    if label is not None:
        feature[features.LABEL_KEY] = _int64_feature([label])
    if example_id is not None:
        feature[features.ID_KEY] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[example_id.encode()]))
    return tf.train.Example(features=tf.train.Features(feature=feature))


def read_split_through_fileio(input_base: str, split: str, input_format: str) -> dataset.RawSplit:
    """Reads one official split through TFX's filesystem layer (local paths or gs://)."""
    return dataset.read_split(input_base, split, input_format,
                              open_fn=lambda path: fileio.open(path, "rb"), exists_fn=fileio.exists)


def read_unlabelled(directory: str) -> dataset.UnlabelledImages:
    """Reads the IDX images files of `directory` through TFX's filesystem layer (local or gs://)."""
    return dataset.read_unlabelled(directory, open_fn=lambda path: fileio.open(path, "rb"), glob_fn=fileio.glob)


def select_rows(labels: np.ndarray, role: str, holdout: dataset.HoldoutSpec | int, seed: int,
                source: str = "the split") -> np.ndarray:
    """Row indices (ascending) of a split's role, from its labels alone: 'all', 'holdout' (the
    stratified hold-out, sized by `holdout` for this many labels) or 'rest' (all minus the hold-out).
    A split too small for its hold-out raises DatasetError naming `source`."""
    if role == "all":
        return np.arange(len(labels))
    spec = holdout if isinstance(holdout, dataset.HoldoutSpec) else dataset.HoldoutSpec(holdout)
    holdout = dataset.stratified_holdout(labels, spec.size(len(labels), source), seed)
    if role == "holdout":
        return holdout
    if role == "rest":
        return np.setdiff1d(np.arange(len(labels)), holdout, assume_unique=True)
    raise ValueError(f"unknown split role {role!r}")


# -- reading a split in chunks of rows --
# A chunk is a half-open row range of the official file; WHOLE_SPLIT, the whole split at once.
# Memory is bounded by a chunk: a split is never held whole (read whole, a 600,000-image span
# was 3.8 GB of int64 pixels, twice: train and eval). Only IDX labelled splits are chunked: spans
# always land as IDX; CSV (the fixed official Kaggle files) and unlabelled images are read whole.
CHUNK_ROWS = 10_000
Chunk = tuple[int, int]
WHOLE_SPLIT: Chunk = (0, -1)
_IDX_HEADER_BYTES = 16  # magic + 3 dimensions, 4 bytes each
_SKIP_BLOCK_ROWS = 1_000  # rows inflated and dropped at a time when a chunk starts further on


def _labelled_paths(directory: str, source: str) -> tuple[str, str]:
    """The (images, labels) IDX paths of official split `source`, each checked to exist."""
    paths = [os.path.join(directory, name) for name in dataset.split_files(source, dataset.IDX)]
    for path in paths:
        if not fileio.exists(path):
            raise dataset.DatasetError(f"{path}: missing (the {source} split of the {dataset.IDX} input)")
    images, labels = paths
    return images, labels


def read_labels(directory: str, source: str) -> np.ndarray:
    """The labels (int64) of an official IDX split: one byte an image, read whole."""
    _, path = _labelled_paths(directory, source)
    with fileio.open(path, "rb") as stream:
        return dataset.read_idx_gz(stream, path, dataset.IDX_LABELS_MAGIC).astype(np.int64)


class _ImageRows:
    """An IDX-gz images file read forward, a block of rows at a time. Gzip has no random access:
    reaching row r inflates every row before it, so the reader keeps its position for the next
    chunk (in order, a split is inflated once) and reopens only to go back."""

    def __init__(self, path: str):
        self.path = path
        self._file = fileio.open(path, "rb")
        self._stream = gzip.GzipFile(fileobj=self._file)
        try:
            self.shape = self._read_header()
        except BaseException:
            self.close()
            raise
        self.row = 0  # the next row the stream gives

    def _read_header(self) -> tuple[int, ...]:
        with dataset.gzip_errors(self.path):
            header = self._stream.read(_IDX_HEADER_BYTES)
        shape, _ = dataset.parse_idx_header(header, self.path, dataset.IDX_IMAGES_MAGIC)
        dataset.check_image_shape(shape, self.path)
        return shape

    def __len__(self) -> int:
        return self.shape[0]

    def read(self, count: int) -> np.ndarray:
        """The next `count` rows, uint8 [count, 784]; a DatasetError if the file ends before."""
        wanted = count * features.NUM_PIXELS
        with dataset.gzip_errors(self.path):
            data = self._stream.read(wanted)
        if len(data) < wanted:
            raise self._size_error(self.row * features.NUM_PIXELS + len(data))
        self.row += count
        return np.frombuffer(data, dtype=np.uint8).reshape(count, features.NUM_PIXELS)

    def skip_to(self, row: int) -> None:
        while self.row < row:  # in blocks: the skipped rows are never held
            self.read(min(_SKIP_BLOCK_ROWS, row - self.row))

    def check_end(self) -> None:
        """After the last row: nothing may follow (the header's size is the file's)."""
        extra = 0
        with dataset.gzip_errors(self.path):
            while block := self._stream.read(1 << 20):
                extra += len(block)
        if extra:
            raise self._size_error(len(self) * features.NUM_PIXELS + extra)

    def _size_error(self, actual: int) -> dataset.DatasetError:
        return dataset.idx_size_error(self.path, self.shape, actual)

    def close(self) -> None:
        self._stream.close()
        self._file.close()


def _chunked(source: str, input_format: str) -> bool:
    return source != dataset.UNLABELLED and input_format == dataset.IDX


def plan_chunks(directory: str, source: str, input_format: str, role: str, holdout: dataset.HoldoutSpec, seed: int,
                chunk_rows: int | None = None) -> list[Chunk]:
    """The chunks a split is read in, in row order (`chunk_rows` rows each, CHUNK_ROWS by default).

    Runs when the Beam pipeline is built, so a missing file, a bad labels file, an images header
    that disagrees with it or a hold-out larger than the split is one DatasetError before Beam
    starts; corrupt image data further in is found by the chunk that reads it."""
    if not _chunked(source, input_format):
        return [WHOLE_SPLIT]
    labels = read_labels(directory, source)
    images_path, labels_path = _labelled_paths(directory, source)
    images = _ImageRows(images_path)
    images.close()
    if len(images) != len(labels):
        raise dataset.DatasetError(f"{images_path} holds {len(images)} images but {labels_path} holds "
                                   f"{len(labels)} labels")
    select_rows(labels, role, holdout, seed, labels_path)  # the hold-out's size is checked here
    step = chunk_rows or CHUNK_ROWS
    return [(start, min(start + step, len(labels))) for start in range(0, len(labels), step)]


class ReadChunk(beam.DoFn):
    """Serialized tf.Examples of one split, a chunk of rows at a time, in row order.

    One instance reads one split: it reads the labels (one byte an image) once, and keeps its
    images stream open between chunks, so chunks that arrive in order (the DirectRunner's) inflate
    the file once; a chunk behind the stream reopens it (a runner that spreads chunks over workers)."""

    def __init__(self, directory: str, source: str, input_format: str, role: str, holdout: dataset.HoldoutSpec,
                 seed: int):
        super().__init__()
        self.directory, self.source, self.input_format = directory, source, input_format
        self.role, self.holdout, self.seed = role, holdout, seed
        self._labels: np.ndarray | None = None
        self._selected: np.ndarray | None = None
        self._images: _ImageRows | None = None

    def process(self, chunk: Chunk) -> Iterator[bytes]:
        if not _chunked(self.source, self.input_format):
            yield from _whole_split_examples(self.directory, self.source, self.input_format, self.role,
                                             self.holdout, self.seed)
            return
        start, stop = chunk
        if self._labels is None:
            self._labels = read_labels(self.directory, self.source)
            self._selected = np.zeros(len(self._labels), dtype=bool)
            self._selected[select_rows(self._labels, self.role, self.holdout, self.seed)] = True
        if self._images is not None and self._images.row > start:
            self._close()
        if self._images is None:
            self._images = _ImageRows(_labelled_paths(self.directory, self.source)[0])
        self._images.skip_to(start)
        pixels = self._images.read(stop - start)
        if stop == len(self._images):
            self._images.check_end()
        for offset in np.flatnonzero(self._selected[start:stop]):
            # tolist(): Python ints fill the Int64List fastest; the bytes are the same as from int64.
            yield to_tf_example(pixels[offset].tolist(), int(self._labels[start + offset])).SerializeToString()

    def teardown(self) -> None:
        self._close()

    def _close(self) -> None:
        if self._images is not None:
            self._images.close()
            self._images = None


def _whole_split_examples(directory: str, source: str, input_format: str, role: str, holdout: dataset.HoldoutSpec,
                          seed: int) -> Iterator[bytes]:
    if source == dataset.UNLABELLED:
        unlabelled = read_unlabelled(directory)
        for image, image_id in zip(unlabelled.images, unlabelled.ids, strict=True):
            yield to_tf_example(image, example_id=image_id).SerializeToString()
        return
    split = read_split_through_fileio(directory, source, input_format)
    for row in select_rows(split.labels, role, holdout, seed):
        yield to_tf_example(split.images[row], int(split.labels[row])).SerializeToString()


def _serialized_examples(
    _: Any, directory: str, source: str, input_format: str, role: str, holdout: dataset.HoldoutSpec, seed: int
) -> Iterator[bytes]:
    """A whole split's examples in row order, chunk after chunk, as the executor reads them."""
    reader = ReadChunk(directory, source, input_format, role, holdout, seed)
    try:
        for chunk in plan_chunks(directory, source, input_format, role, holdout, seed):
            yield from reader.process(chunk)
    finally:
        reader.teardown()


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
            split_args = dict(
                directory=os.path.dirname(os.path.join(exec_properties["input_base"], split.pattern)),
                source=spec["source"],
                input_format=custom.get("input_format", dataset.IDX),
                role=spec["role"],
                holdout=holdout_from_config(custom),
                seed=int(custom.get("seed", 0)),
            )
            # One element per chunk of rows: each reads only its rows, so memory is bounded by a
            # chunk, and a runner with several workers spreads the chunks (Create reshuffles them),
            # which is what the Reshuffle after the single reading bundle was for.
            result[split.name] = (
                pipeline
                | f"Chunks[{split.name}]" >> beam.Create(plan_chunks(**split_args))
                | f"Read[{split.name}]" >> beam.ParDo(ReadChunk(**split_args))
            )
        return result

    def Do(self, input_dict: dict[str, list[types.Artifact]], output_dict: dict[str, list[types.Artifact]],
           exec_properties: dict[str, Any]) -> None:
        """BaseExampleGenExecutor.Do, less the shuffle before the write.

        TFX's WriteSplit reshuffles each split before writing it: a GroupByKey, which the
        DirectRunner holds in memory whole (measured: 0.9 GB more peak for 175,000 examples, ~4.7
        GB a process at 10x) without shuffling much (measured: the file held the examples in row
        order but for one block moved). Written as read, the file holds the same examples in row
        order, deterministically, and memory stays at a chunk; on Dataflow the chunks already
        spread reading and writing over workers."""
        self._log_startup(input_dict, output_dict, exec_properties)
        input_config = example_gen_pb2.Input()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.INPUT_CONFIG_KEY], input_config)
        output_config = example_gen_pb2.Output()
        proto_utils.json_to_proto(exec_properties[standard_component_specs.OUTPUT_CONFIG_KEY], output_config)
        examples = output_dict[standard_component_specs.EXAMPLES_KEY]
        artifact_utils.get_single_instance(examples).split_names = artifact_utils.encode_split_names(
            example_gen_utils.generate_output_split_names(input_config, output_config))
        with self._make_beam_pipeline() as pipeline:
            for name, split in self.GenerateExamplesByBeam(pipeline, exec_properties).items():
                # WriteSplit's own sink and file names, so readers find the files as before.
                _ = split | f"WriteSplit[{name}]" >> beam.io.WriteToTFRecord(
                    os.path.join(artifact_utils.get_split_uri(examples, name), write_split.DEFAULT_FILE_NAME),
                    file_name_suffix=".gz")
        payload_format = exec_properties.get(standard_component_specs.OUTPUT_DATA_FORMAT_KEY)
        file_format = exec_properties.get(standard_component_specs.OUTPUT_FILE_FORMAT_KEY)
        for artifact in examples:
            if payload_format:
                examples_utils.set_payload_format(artifact, payload_format)
            if file_format:
                examples_utils.set_file_format(artifact, write_split.to_file_format_str(file_format))


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


def holdout_from_config(custom: dict[str, Any]) -> dataset.HoldoutSpec:
    """The HoldoutSpec an ExampleGen's custom config carries (raw_example_gen writes it)."""
    cap = custom.get("holdout_cap")
    return dataset.HoldoutSpec(float(custom.get("holdout", 1)), int(custom.get("holdout_floor", 0)),
                               int(cap) if cap else None)


def raw_example_gen(
    input_base: str, splits: list[SplitSpec], input_format: str = dataset.IDX,
    holdout: dataset.HoldoutSpec | None = None, seed: int = 0,
    range_config: range_config_pb2.RangeConfig | data_types.RuntimeParameter | None = None,
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
        # Sized at run time from the split's labels: a fraction fits spans of any size.
        **({"holdout": holdout.value, "holdout_floor": holdout.floor, "holdout_cap": holdout.cap or 0}
           if holdout is not None else {}),
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
    landing_root: str, eval_holdout: dataset.HoldoutSpec, seed: int,
    range_config: range_config_pb2.RangeConfig | data_types.RuntimeParameter | None = None,
) -> FileBasedExampleGen:
    """`train` and `eval` (a stratified hold-out) of one landed span, `<landing>/span-N/` in the
    official IDX layout (fmnist.landing writes every span so): the newest, or `range_config`'s."""
    span_dir = f"{landing.SPAN_PREFIX}{SPAN_SPEC}"
    return raw_example_gen(landing_root, [
        SplitSpec(dataset.TRAIN, source=dataset.TRAIN, role="rest", directory=span_dir),
        SplitSpec(dataset.EVAL, source=dataset.TRAIN, role="holdout", directory=span_dir),
    ], dataset.IDX, eval_holdout, seed, range_config)


def test_example_gen(data_root: str, input_format: str, golden: dataset.HoldoutSpec, seed: int) -> FileBasedExampleGen:
    """The official test split, fixed across spans, as `golden` (a stratified hold-out of it drawn
    with `seed`: the golden gate decides there) and `test` (the rest: reported, never decided on)."""
    return raw_example_gen(data_root, [
        SplitSpec(dataset.GOLDEN, source=dataset.TEST, role="holdout"),
        SplitSpec(dataset.TEST, source=dataset.TEST, role="rest"),
    ], input_format, golden, seed)


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
