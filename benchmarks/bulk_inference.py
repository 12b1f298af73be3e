"""Batch inference on 10,000 images: TFX's BulkInferrer executor (Beam DirectRunner, the pipeline's
Classify model spec) over the official test images as the unlabelled input, then the export of its
PredictionLogs to CSV. Median of --repeats runs (the examples are written once, by
UnlabelledExampleGen's executor, and not timed).

    .venv/bin/python benchmarks/bulk_inference.py                      # newest model in --serving-model-dir
    .venv/bin/python benchmarks/bulk_inference.py --model PATH/TO/SAVED_MODEL --repeats 3

The model: a pushed version (a full-data run of the pipeline; default the newest under
/tmp/fmnist-loop/fashion-mnist/serving_model, else outputs/fashion-mnist/serving_model), or any
SavedModel with the project's `classification` signature via --model. Without one, run the
pipeline first (`make run`); tests/conftest.py's `exported_model` shows how to export one quickly.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from common import cpu_model  # noqa: E402

import local_runner  # noqa: E402
from fmnist import dataset, tf_env  # noqa: E402

DEFAULT_INPUT = REPO.parent / "shared" / "data" / "fashion-mnist"
SERVING_MODEL_DIRS = [Path("/tmp/fmnist-loop/fashion-mnist/serving_model"), REPO / "outputs" / "fashion-mnist" /
                      "serving_model"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", type=Path, default=DEFAULT_INPUT,
                        help="directory whose t10k images file is the unlabelled input (labels are not read)")
    parser.add_argument("--model", type=Path, default=None, help="SavedModel directory (default: newest pushed)")
    parser.add_argument("--repeats", type=int, default=3)
    return parser.parse_args(argv)


def newest_pushed_model() -> Path:
    from modules.inference import latest_version_dir

    for directory in SERVING_MODEL_DIRS:
        found = latest_version_dir(str(directory))
        if found:
            return Path(found)
    raise SystemExit(f"no pushed model in {', '.join(map(str, SERVING_MODEL_DIRS))}: run the pipeline or pass --model")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tf_env.configure()
    from reports import predictions
    from tfx_pipeline import bulk_inference

    model_dir = args.model or newest_pushed_model()
    beam_args = list(local_runner.beam_args(1))  # the local runner's default
    with tempfile.TemporaryDirectory(prefix="bulk-inference-") as work:
        # Only the images file: the unlabelled role, as a pipeline's --bulk-inference-input would hold it.
        images = Path(work) / "input" / dataset.IDX_FILES[dataset.TEST][0]
        images.parent.mkdir()
        images.symlink_to((args.input / images.name).resolve())
        examples = bulk_inference.unlabelled_examples(str(images.parent), work, beam_args)
        model = bulk_inference.model_artifact(str(model_dir), work)
        infer_s, export_s, count = [], [], 0
        for run in range(args.repeats):
            run_dir = str(Path(work) / f"run-{run}")
            started = time.perf_counter()
            result = bulk_inference.infer(examples, model, run_dir, beam_pipeline_args=beam_args)
            infer_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            count = predictions.write_predictions(predictions.read_predictions(result.uri),
                                                  Path(run_dir) / "predictions.csv", "csv")
            export_s.append(time.perf_counter() - started)
    infer, export = statistics.median(infer_s), statistics.median(export_s)
    print(f"CPU: {cpu_model()}")
    print(f"model: {model_dir}")
    print(f"{count:,} images ({images.name}), median of {args.repeats} runs, Beam DirectRunner in_memory, 1 worker")
    print(f"{'step':<48}{'seconds':>9}{'images/s':>10}   runs (s)")
    for step, median, runs in (("BulkInferrer executor (read, classify, write)", infer, infer_s),
                               ("export to CSV (read logs, sort, write)", export, export_s)):
        print(f"{step:<48}{median:>9.2f}{count / median:>10,.0f}   {' '.join(f'{s:.2f}' for s in runs)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
