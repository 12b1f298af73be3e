"""The BulkInferrer's predictions as rows: found through ML Metadata (or given as a directory), read
from its gzipped PredictionLog TFRecords (`prediction_logs-*.gz`, one classify_log per image) and
written as CSV or JSON Lines, `id, class_id, class, probability`, sorted by id.

The id is the `id` feature of the example in the log's request (raw_example_gen's unlabelled
examples: "<file name>:<row>"), so every row joins back to its image.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable
from dataclasses import asdict, dataclass

from fmnist import dataset, features
from fmnist.files import replaced_atomically
from tfx_pipeline import metadata
from tfx_pipeline.config import BULK_INFERRER_ID

PREDICTION_LOGS_PATTERN = "prediction_logs-*.gz"  # what TFX's BulkInferrer writes in inference_result
FORMATS = ("csv", "jsonl")
COLUMNS = ("id", "class_id", "class", "probability")


class PredictionsNotFoundError(LookupError):
    """No BulkInferrer output to export; the message says what is missing."""


class PredictionsError(ValueError):
    """A prediction log that cannot be read or is not a classification of one example."""


@dataclass(frozen=True)
class Prediction:
    id: str
    class_id: int
    class_name: str
    probability: float  # of the top class

    def row(self) -> dict:
        values = asdict(self)
        values["class"] = values.pop("class_name")
        return {column: values[column] for column in COLUMNS}


def latest_inference_result(metadata_path: str, pipeline_name: str | None = None) -> str:
    """The `inference_result` directory of the BulkInferrer's latest successful execution."""
    if not os.path.isfile(metadata_path):
        raise PredictionsNotFoundError(f"no ML Metadata store at {metadata_path} (run the pipeline, or pass "
                                       "--metadata or --inference-result)")
    pipeline_name = pipeline_name or metadata.only_pipeline_name(metadata_path)
    results = metadata.latest_outputs(metadata_path, pipeline_name, BULK_INFERRER_ID, "inference_result")
    if not results:
        raise PredictionsNotFoundError(f"{metadata_path}: pipeline {pipeline_name} has no {BULK_INFERRER_ID} output "
                                       "(run it with --bulk-inference-input DIR)")
    return results[0].uri


def prediction_log_files(inference_result: str) -> list[str]:
    """The PredictionLog files of an inference_result directory; none means nothing was inferred."""
    from tfx.dsl.io import fileio

    if not fileio.isdir(inference_result):
        raise PredictionsNotFoundError(f"{inference_result}: no such directory")
    files = sorted(fileio.glob(os.path.join(inference_result, PREDICTION_LOGS_PATTERN)))
    if not files:
        # TFX's BulkInferrer returns without writing when the model_blessing says not blessed.
        raise PredictionsNotFoundError(f"{inference_result}: no {PREDICTION_LOGS_PATTERN} files (the BulkInferrer "
                                       "writes none when the Evaluator did not bless the model)")
    return files


def to_prediction(log) -> Prediction:
    """One classify_log PredictionLog -> its example's id and top class."""
    if not log.HasField("classify_log"):
        raise PredictionsError(f"a {log.WhichOneof('log_type') or 'empty'} log, expected classify_log "
                               f"(the `{features.CLASSIFY_SIGNATURE}` signature)")
    examples = log.classify_log.request.input.example_list.examples
    classifications = log.classify_log.response.result.classifications
    if len(examples) != 1 or len(classifications) != 1:
        raise PredictionsError(f"a classify_log of {len(examples)} examples and {len(classifications)} "
                               "classifications, expected one of each")
    ids = examples[0].features.feature[features.ID_KEY].bytes_list.value
    if not ids:
        raise PredictionsError(f"an example without the `{features.ID_KEY}` feature (not from UnlabelledExampleGen)")
    scores = [c.score for c in classifications[0].classes]
    if len(scores) != features.NUM_CLASSES:
        raise PredictionsError(f"{ids[0].decode()}: {len(scores)} class scores, expected {features.NUM_CLASSES}")
    class_id = max(range(len(scores)), key=scores.__getitem__)
    return Prediction(id=ids[0].decode(), class_id=class_id, class_name=features.CLASS_NAMES[class_id],
                      probability=float(scores[class_id]))


def read_predictions(inference_result: str) -> list[Prediction]:
    """Every prediction in an inference_result directory, sorted by id (file, then row)."""
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_log_pb2

    predictions = []
    for path in prediction_log_files(inference_result):
        try:
            for record in tf.data.TFRecordDataset(path, compression_type="GZIP").as_numpy_iterator():
                predictions.append(to_prediction(prediction_log_pb2.PredictionLog.FromString(record)))
        except (tf.errors.OpError, PredictionsError, ValueError) as err:
            message = err.message if isinstance(err, tf.errors.OpError) else str(err)
            raise PredictionsError(f"{path}: unreadable prediction log ({' '.join(message.split())})") from err
    return sorted(predictions, key=lambda p: dataset.id_sort_key(p.id))


def write_predictions(predictions: Iterable[Prediction], out: str | os.PathLike, fmt: str) -> int:
    """Writes the rows to `out` as `fmt` (csv: with a header; jsonl: one object a line), through a
    temporary file renamed into place, so `out` is never half-written. Returns the rows written."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    count = 0
    with replaced_atomically(out, newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=COLUMNS, lineterminator="\n") if fmt == "csv" else None
        if writer:
            writer.writeheader()
        for prediction in predictions:
            row = prediction.row()
            if writer:
                writer.writerow(row)
            else:
                stream.write(json.dumps(row) + "\n")
            count += 1
    return count
