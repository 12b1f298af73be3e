"""Model-quality benchmark: runs the default local pipeline on the full data, then trains a
linear-softmax baseline on the same Transform output and prints both side by side.

    .venv/bin/python benchmarks/model_quality.py [--output-dir /tmp/fmnist-bench] [--baseline-epochs 10]

Prints the full-pipeline wall time, and for each model: parameters, epochs, training images/s
(median over epochs), training wall time, eval and test accuracy, per-class test accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from fmnist import tf_env

tf_env.configure()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import local_runner  # noqa: E402
from fmnist import features  # noqa: E402
from modules.config import DEFAULT_SEED  # noqa: E402

SHORT_NAMES = features.SHORT_CLASS_NAMES


def build_baseline(learning_rate: float = 1e-3):
    """Multinomial logistic regression on the standardised pixels."""
    import tf_keras as keras

    inputs = keras.Input(shape=(features.NUM_PIXELS,), name=features.transformed_name(features.IMAGE_KEY))
    outputs = keras.layers.Dense(features.NUM_CLASSES, activation="softmax")(inputs)
    model = keras.Model(inputs, outputs, name="linear_softmax")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    return model


def per_class_accuracy(predicted, labels) -> list[float]:
    import numpy as np

    return [float(np.mean(predicted[labels == c] == c)) for c in range(features.NUM_CLASSES)]


def train_baseline(train, evaluation, test, epochs: int, seed: int) -> dict:
    import numpy as np

    from modules import trainer
    from modules.callbacks import EpochLogger

    trainer.seed_everything(seed)
    model = build_baseline()
    logger = EpochLogger(len(train.labels))
    started = time.perf_counter()
    model.fit(train.images, train.labels, batch_size=128, epochs=epochs, callbacks=[logger], verbose=0,
              shuffle=True)
    seconds = time.perf_counter() - started
    predict = lambda split: np.argmax(model.predict(split.images, batch_size=1024, verbose=0), axis=1)  # noqa: E731
    test_predicted = predict(test)
    return {
        "model": "linear softmax (baseline)",
        "parameters": model.count_params(),
        "epochs": epochs,
        "images_per_second": logger.images_per_second,
        "train_seconds": seconds,
        "eval_accuracy": float(np.mean(predict(evaluation) == evaluation.labels)),
        "test_accuracy": float(np.mean(test_predicted == test.labels)),
        "per_class": per_class_accuracy(test_predicted, test.labels),
    }


def evaluate_pushed(pushed: str, summary: dict, evaluation_raw, test_raw) -> dict:
    import numpy as np

    from modules.inference import predict_classes

    test_predicted = predict_classes(pushed, test_raw)
    return {
        "model": "CNN (pushed by the pipeline)",
        "parameters": summary["parameters"],
        "epochs": summary["epochs_run"],
        "images_per_second": summary["train_images_per_second"],
        "train_seconds": summary["train_seconds"],
        "eval_accuracy": float(np.mean(predict_classes(pushed, evaluation_raw) == evaluation_raw.labels)),
        "test_accuracy": float(np.mean(test_predicted == test_raw.labels)),
        "per_class": per_class_accuracy(test_predicted, test_raw.labels),
    }


def format_table(rows: list[dict]) -> str:
    header = ["model", "params", "epochs", "train img/s", "train s", "eval acc", "test acc", *SHORT_NAMES]
    lines = [" | ".join(header), " | ".join("---" for _ in header)]
    for r in rows:
        lines.append(" | ".join([
            r["model"], f"{r['parameters']:,}", str(r["epochs"]), f"{r['images_per_second']:.0f}",
            f"{r['train_seconds']:.0f}", f"{r['eval_accuracy']:.4f}", f"{r['test_accuracy']:.4f}",
            *(f"{a:.3f}" for a in r["per_class"]),
        ]))
    return "\n".join(f"| {line} |" for line in lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=local_runner.REPO / "data" / "raw")
    parser.add_argument("--output-dir", type=Path, default=None, help="default: a new temporary directory")
    parser.add_argument("--baseline-epochs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)

    output_dir = args.output_dir or Path(tempfile.mkdtemp(prefix="fmnist-bench-"))
    config = local_runner.config_from_args(
        ["--data-dir", str(args.data_dir), "--output-dir", str(output_dir), "--seed", str(args.seed), "--no-cache"])
    started = time.perf_counter()
    local_runner.run(config)
    pipeline_seconds = time.perf_counter() - started

    import tensorflow_transform as tft

    from fmnist import dataset
    from modules import data, inference, trainer
    from tfx_pipeline import console, metadata
    from tfx_pipeline.components.raw_example_gen import select_rows

    outputs = lambda component, key: metadata.latest_outputs(  # noqa: E731
        config.metadata_path, config.pipeline_name, component, key)[0].uri
    tf_transform_output = tft.TFTransformOutput(outputs("Transform", "transform_graph"))
    transformed = outputs("Transform", "transformed_examples")
    split = lambda name: data.load_transformed([f"{transformed}/Split-{name}/*"], tf_transform_output)  # noqa: E731
    baseline = train_baseline(split(dataset.TRAIN), split(dataset.EVAL), split(dataset.TEST), args.baseline_epochs,
                              args.seed)

    with open(os.path.join(outputs("Trainer", "model_run"), trainer.TRAINING_SUMMARY_FILE)) as stream:
        summary = json.load(stream)
    pushed = inference.latest_version_dir(config.serving_model_dir)
    if pushed is None:
        print("the pipeline pushed no model (not blessed); evaluating the Trainer's model instead")
        pushed = os.path.join(outputs("Trainer", "model"), "Format-Serving")
    train_raw = dataset.read_split(config.data_root, dataset.TRAIN, config.input_format)
    holdout = select_rows(train_raw, "holdout", config.settings.eval_holdout_spec, config.training.seed)
    evaluation_raw = dataset.RawSplit(train_raw.images[holdout], train_raw.labels[holdout])
    cnn = evaluate_pushed(pushed, summary, evaluation_raw,
                          dataset.read_split(config.data_root, dataset.TEST, config.input_format))

    print()
    print(console.format_table(metadata.component_runs(config.metadata_path, config.pipeline_name)))
    minutes = pipeline_seconds / 60
    print(f"\nfull pipeline wall time: {pipeline_seconds:.0f}s ({minutes:.1f} min) on {os.cpu_count()} CPUs")
    print(f"pushed model: {pushed}\n")
    print(format_table([cnn, baseline]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
