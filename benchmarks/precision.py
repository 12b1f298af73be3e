"""float32 vs mixed bfloat16 training: speed and accuracy, same data, same seeds, one run.

    .venv/bin/python benchmarks/precision.py [--output-dir outputs/fashion-mnist] [--seeds 42 7]
        [--epochs N] [--precision float32 bfloat16]

Trains the pipeline's CNN (the tuned hyperparameters, the Trainer's fit) on a finished local
run's Transform output, once per precision and seed, and evaluates each model on the run's eval
hold-out and on the official test split, twice for bf16: the model as trained (bf16 layers) and
the float32 copy the Trainer exports (modules.precision.float32_copy). Before training, a short
fit per precision runs with ONEDNN_VERBOSE=1 in a subprocess to show which oneDNN convolution
kernel ran (e.g. brgconv:avx512_core_amx on AMX, ...avx512_core_bf16 on AVX512-BF16).

Prints the CPU and one row per training: kernel, epochs run, images/s (median epoch), training
seconds, speed-up over float32 with the same seed, eval and test accuracy, the test accuracy
difference to float32 with the same seed in points, and the largest probability difference
between the bf16 model and its float32 export.
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import time
from pathlib import Path

from fmnist import tf_env

tf_env.configure()  # before TensorFlow loads

import numpy as np  # noqa: E402
from common import accuracy, cpu_model, markdown_table, project_lines_only, run_splits  # noqa: E402

from fmnist import dataset  # noqa: E402
from modules import data, trainer  # noqa: E402
from modules import model as model_lib  # noqa: E402
from modules import precision as precision_lib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PROBE_STEPS = 3


def probe(requested: str) -> None:
    """A few training steps, for ONEDNN_VERBOSE to log the kernels (run as a subprocess)."""
    hparams = model_lib.HParams.tuned()
    rng = np.random.default_rng(0)
    split = data.Split(rng.standard_normal((hparams.batch_size * PROBE_STEPS, 784), dtype=np.float32),
                       rng.integers(0, 10, hparams.batch_size * PROBE_STEPS))
    trainer.fit(hparams.replace(augment=False), split, split, seed=1, max_steps=PROBE_STEPS, precision=requested)


def convolution_kernel(requested: str) -> str:
    """The oneDNN convolution implementation a short fit in `requested` precision ran most."""
    env = {**os.environ, "ONEDNN_VERBOSE": "1"}
    result = subprocess.run([sys.executable, __file__, "--probe", requested], env=env, capture_output=True,
                            text=True, timeout=300)
    kernels: collections.Counter = collections.Counter()
    for line in result.stdout.splitlines():
        fields = line.split(",")
        # onednn_verbose,[primitive,]exec,cpu,convolution,brgconv:avx512_core_bf16,... (the
        # "primitive" field came with oneDNN 3.x)
        if fields[0] == "onednn_verbose" and "exec" in fields[:3]:
            at = fields.index("exec")
            if fields[at + 2:at + 3] == ["convolution"] and len(fields) > at + 3:
                kernels[fields[at + 3]] += 1
    return kernels.most_common(1)[0][0] if kernels else "(no oneDNN convolution logged)"


def measure(args: argparse.Namespace) -> list[list[str]]:
    """One table row per seed and precision (float32 first: the speed-up and Δ refer to it)."""
    splits, source = run_splits(args.output_dir, args.data_dir)
    hparams = model_lib.HParams.tuned({"epochs": args.epochs} if args.epochs else {})
    print(f"CPU: {cpu_model()}")
    print(f"{len(splits[dataset.TRAIN].labels):,} training images from {source}; {hparams}")
    kernels = {p: convolution_kernel(p) for p in args.precision}

    rows, float32_runs = [], {}
    for seed in args.seeds:
        for requested in args.precision:
            started = time.perf_counter()
            result = trainer.fit(hparams, splits[dataset.TRAIN], splits[dataset.EVAL], seed=seed,
                                 precision=requested)
            seconds = time.perf_counter() - started
            exported = precision_lib.float32_copy(result.model) if result.precision.bf16 else result.model
            test_exported, probabilities = accuracy(exported, splits[dataset.TEST])
            test_trained, trained_probabilities = accuracy(result.model, splits[dataset.TEST])
            rate = result.epoch_logger.images_per_second
            if not result.precision.bf16:
                float32_runs[seed] = (rate, test_exported)
            base_rate, base_test = float32_runs.get(seed, (None, None))
            rows.append([
                result.precision.policy, str(seed), kernels[requested], str(len(result.history.history["loss"])),
                f"{rate:,.0f}", f"{seconds:.0f}", f"{rate / base_rate:.2f}x" if base_rate else "-",
                f"{accuracy(exported, splits[dataset.EVAL])[0]:.4f}", f"{test_exported:.4f}", f"{test_trained:.4f}",
                f"{(test_exported - base_test) * 100:+.2f}" if base_test is not None else "-",
                f"{np.abs(probabilities - trained_probabilities).max():.1e}",
            ])
            print(" | ".join(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "fashion-mnist",
                        help="a finished local run's output directory (metadata.sqlite inside)")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data" / "raw", help="the official test split")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    parser.add_argument("--epochs", type=int, default=None, help="default: the tuned schedule")
    parser.add_argument("--precision", nargs="+", default=[precision_lib.FLOAT32, precision_lib.BFLOAT16],
                        choices=[precision_lib.FLOAT32, precision_lib.BFLOAT16])
    parser.add_argument("--probe", choices=precision_lib.CHOICES, help=argparse.SUPPRESS)
    parser.add_argument("--log", type=Path, default=REPO / "outputs" / "benchmarks" / "precision.log",
                        help="where library output goes (the console keeps the project's lines)")
    args = parser.parse_args(argv)
    if args.probe:
        probe(args.probe)
        return 0

    with project_lines_only(args.log):
        rows = measure(args)
    header = ["precision", "seed", "oneDNN convolution", "epochs", "img/s", "train s", "speed-up",
              "eval acc", "test acc (float32 export)", "test acc (as trained)", "Δ test vs float32 (pt)",
              "max |Δprob| export vs trained"]
    print()
    print(markdown_table(header, rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
