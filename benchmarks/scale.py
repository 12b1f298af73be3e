"""Scale benchmark: ExampleGen, StatisticsGen, Transform and one training epoch at 1x, 3x and 10x the data.

    .venv/bin/python benchmarks/scale.py [--scales 1 3 10] [--work-dir /tmp/fmnist-scale] [--keep]
        [--data-dir ../shared/data/fashion-mnist] [LOCAL_RUNNER_FLAGS ...]

For scale k, span 1 of a fresh landing directory holds the official 60,000 train images k times:
the originals, then k-1 augmented copies (each image shifted by 1-2 pixels, some also mirrored
left-right, from a fixed seed: no copy repeats an image byte for byte), written with the project's
IDX writer. The local pipeline (the local runner's config, LocalDagRunner, cache on) then runs up
to each stage in turn, each in its own process: ExampleGen, StatisticsGen, Transform, and the
Trainer with `--epochs 1 --no-warm-start`; the stages before it come from the cache. Other flags
(e.g. `--beam-workers 2`) go to the local runner's config.

Per stage: the component's own execution time from ML Metadata, the process's peak resident memory
(os.wait4's ru_maxrss; the span is written by a process of its own, so the measuring process stays
small: see run_scale. Every stage process pays the ~0.8 GB of TensorFlow, TFX and Beam, printed
as the floor) and, for the Trainer, images/s from its training_summary.json. Then the table per
scale and each figure's growth against the first scale. A scale's data (~0.35 GB a 1x, mostly
TFRecords) is deleted after its stages unless --keep.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fmnist import tf_env

tf_env.configure()  # before TensorFlow loads (in the stage processes)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import cpu_model  # noqa: E402

from fmnist import dataset, features, landing  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
# Node ids (tfx_pipeline.config names ExampleGen's and the Trainer's; the others keep TFX's default).
STAGES = ("ExampleGen", "StatisticsGen", "Transform", "Trainer")
FLOOR = "floor"  # the last stage's pipeline again, every node cached: what a stage process costs idle
GB_PER_SCALE = 0.3  # disk a 1x scale needs, with room (measured 0.1 GB: span, examples, transformed examples)
MAX_SHIFT = 2  # pixels, each way; the Trainer's own augmentation shifts as much


def augmented(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A copy of uint8 images [N, 28, 28], each shifted by a non-zero offset of up to MAX_SHIFT
    pixels (the uncovered border black) and half of them mirrored left-right: clothes stay clothes,
    and a non-zero shift never gives back the same bytes for an image that is not all black."""
    offsets = [(dy, dx) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1) for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)
               if (dy, dx) != (0, 0)]
    chosen = rng.integers(len(offsets), size=len(images))
    flip = rng.random(len(images)) < 0.5
    out = np.zeros_like(images)
    height, width = features.IMAGE_SHAPE
    for index, (dy, dx) in enumerate(offsets):  # one vectorised shift per offset
        rows = np.flatnonzero(chosen == index)
        source = images[rows]
        out[rows, max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
            source[:, max(-dy, 0):height + min(-dy, 0), max(-dx, 0):width + min(-dx, 0)]
    out[flip] = out[flip, :, ::-1]
    return out


def land_scaled_span(data_dir: Path, landing_dir: Path, scale: int, seed: int = 0) -> int:
    """Writes span 1 of `landing_dir`: the official train split and scale-1 augmented copies
    (copy c from seed + c). Returns the images written."""
    train = dataset.read_split(data_dir, dataset.TRAIN)
    originals = train.images.astype(np.uint8).reshape(-1, *features.IMAGE_SHAPE)
    count = len(originals)
    images = np.empty((count * scale, *features.IMAGE_SHAPE), dtype=np.uint8)
    images[:count] = originals
    for copy in range(1, scale):
        images[copy * count:(copy + 1) * count] = augmented(originals, np.random.default_rng(seed + copy))
    span = landing_dir / f"{landing.SPAN_PREFIX}1"
    dataset.write_idx_split(span, dataset.TRAIN, images, np.tile(train.labels, scale))
    return len(images)


@dataclass
class StageResult:
    stage: str
    seconds: float  # the component's execution in ML Metadata
    wall: float  # the whole stage process
    peak_mib: float
    ran: list[tuple[str, str, float]]  # (component, state, seconds) of the process's pipeline run
    eval_holdout_size: int
    images_per_second: float | None = None
    fit_seconds: float | None = None
    train_examples: int = 0  # the span's train split: its images less the eval hold-out


def run_measured(command: Sequence[str], log_file: Path) -> tuple[int, float, float]:
    """Runs `command` with its output appended to `log_file`: (exit status, wall seconds, peak
    resident MiB of the process and the children it waited for, from os.wait4)."""
    started = time.perf_counter()
    with open(log_file, "ab") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped by wait4, not by Popen
    return process.returncode, time.perf_counter() - started, usage.ru_maxrss / 1024  # Linux: KiB


def measure_stage(label: str, node: str, runner_flags: list[str], work: Path) -> StageResult:
    """The pipeline up to `node` in a fresh process, reported as `label`; raises with the log's
    tail on failure. `seconds` is the node's execution, or the process's wall time if it was cached."""
    result_file = work / f"{label}.json"
    log_file = work / "stages.log"
    status, wall, peak = run_measured(
        [sys.executable, str(Path(__file__).resolve()), "--stage", node, "--result", str(result_file), "--",
         *runner_flags], log_file)
    if status != 0 or not result_file.exists():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"stage {label} failed (exit {status}); end of {log_file}:\n{tail}")
    found = json.loads(result_file.read_text())
    ran = [tuple(row) for row in found["ran"]]
    seconds = next((s for component, state, s in ran if component == node and state == "COMPLETE"), wall)
    return StageResult(label, seconds, wall, peak, ran, found["eval_holdout_size"],
                       found.get("images_per_second"), found.get("fit_seconds"))


def run_stage(node: str, result_file: Path, runner_flags: list[str]) -> None:
    """In the stage process: the local pipeline up to `node`, then what ML Metadata recorded of
    that run, as JSON in `result_file`."""
    from tfx import v1 as tfx

    import local_runner
    from modules.trainer import TRAINING_SUMMARY_FILE
    from tfx_pipeline import metadata
    from tfx_pipeline.pipeline import components_upto, create_pipeline

    config = local_runner.config_from_args(runner_flags, environ={})
    tfx.orchestration.LocalDagRunner().run(create_pipeline(
        config, components=components_upto(config, node),
        metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(config.metadata_path)))
    runs = metadata.component_runs(config.metadata_path, config.pipeline_name)
    found: dict = {"ran": [(run.component, run.state, run.seconds) for run in runs],
                   "eval_holdout_size": int(config.settings.eval_holdout)}
    if ("Trainer", "COMPLETE") in {(run.component, run.state) for run in runs}:  # trained in this run
        model_run = metadata.latest_outputs(config.metadata_path, config.pipeline_name, "Trainer", "model_run")
        with open(os.path.join(model_run[0].uri, TRAINING_SUMMARY_FILE)) as stream:
            summary = json.load(stream)
        found |= {"images_per_second": summary["train_images_per_second"], "fit_seconds": summary["train_seconds"]}
    result_file.write_text(json.dumps(found))


def run_scale(scale: int, data_dir: Path, work: Path, stages: Sequence[str], runner_flags: list[str],
              floor: bool) -> list[StageResult]:
    """Lands the scale's span under `work` and measures each of `stages` (then the floor, if asked)."""
    started = time.perf_counter()
    # In a process of its own: Python starts the stage processes with vfork, and a child's ru_maxrss
    # then starts from this process's own peak (Linux keeps the old mm's high-water mark at exec),
    # so this process must never hold the 10x images itself (it did: every 10x stage read 2,279 MiB).
    landed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--land", str(scale),
                             "--data-dir", str(data_dir), "--work-dir", str(work)], capture_output=True, text=True)
    if landed.returncode != 0:
        raise RuntimeError(f"landing the {scale}x span failed: {(landed.stderr.strip().splitlines() or ['?'])[-1]}")
    images = int(landed.stdout.split()[-1])
    span_mib = sum(p.stat().st_size for p in (work / "landing").rglob("*.gz")) / 2**20
    print(f"\nscale {scale}x: {images:,} train images in span 1 ({span_mib:.0f} MiB of IDX-gz, "
          f"{time.perf_counter() - started:.0f} s to write) under {work}", flush=True)
    flags = ["--data-dir", str(data_dir), "--landing-dir", str(work / "landing"), "--output-dir", str(work / "out"),
             "--epochs", "1", "--no-warm-start", "--serving-validator", "project",
             "--eval-holdout", "5000", *runner_flags]  # a count: the stages compare at every scale
    results = []
    plan = [(stage, stage) for stage in stages] + ([(FLOOR, stages[-1])] if floor else [])
    for stage, node in plan:
        result = measure_stage(stage, node, flags, work)
        result.train_examples = images - result.eval_holdout_size
        results.append(result)
        others = ", ".join(f"{c} {s:.1f} s" for c, state, s in result.ran if state == "COMPLETE" and c != stage)
        cached = ", ".join(c for c, state, _ in result.ran if state == "CACHED")
        extra = (f"; fit {result.fit_seconds:.1f} s at {result.images_per_second:,.0f} img/s"
                 if result.images_per_second else "")
        label = f"floor (up to {node} again)" if stage == FLOOR else f"{stage}: {result.seconds:.1f} s"
        print(f"  {label}{extra}; process {result.wall:.1f} s, peak {result.peak_mib:,.0f} MiB"
              f"{'; also ran ' + others if others else ''}{'; cached ' + cached if cached else ''}", flush=True)
    return results


def table(rows: dict[int, list[StageResult]]) -> str:
    """One row per scale; "-" for a stage not measured."""
    header = ("| scale | train ex. | ExampleGen s / peak MiB | StatisticsGen s / MiB | Transform s / MiB | "
              "Trainer epoch s / img/s / MiB |")
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for scale, results in rows.items():
        by_stage = {r.stage: r for r in results if r.stage != FLOOR}
        cells = [f"{by_stage[s].seconds:.0f} / {by_stage[s].peak_mib:,.0f}" if s in by_stage else "-"
                 for s in STAGES[:-1]]
        trainer = by_stage.get("Trainer")
        cells.append(f"{trainer.seconds:.0f} / {trainer.images_per_second or 0:,.0f} / {trainer.peak_mib:,.0f}"
                     if trainer else "-")
        lines.append(f"| {scale}x | {results[0].train_examples:,} | {' | '.join(cells)} |")
    return "\n".join(lines)


def growth_table(rows: dict[int, list[StageResult]]) -> str:
    """Each figure over the first scale's; linear cost means time grows no faster than the data."""
    first_scale, first = next(iter(rows.items()))
    base = {r.stage: r for r in first}
    header = ("| scale | data | ExampleGen time / MiB | StatisticsGen time / MiB | Transform time / MiB | "
              "Trainer time / MiB |")
    lines = [f"growth vs {first_scale}x:", header, "|" + " --- |" * (header.count("|") - 1)]
    for scale, results in list(rows.items())[1:]:
        by_stage = {r.stage: r for r in results}
        data = results[0].train_examples / first[0].train_examples
        cells = [f"{by_stage[s].seconds / base[s].seconds:.2f}x / {by_stage[s].peak_mib / base[s].peak_mib:.2f}x"
                 if s in by_stage and s in base else "-" for s in STAGES]
        lines.append(f"| {scale}x | {data:.2f}x | {' | '.join(cells)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=int, nargs="+", default=[1, 3, 10])
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/fmnist-scale"))
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "fashion-mnist")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES),
                        help="the stages to measure (the ones before each still run, cached or not)")
    parser.add_argument("--keep", action="store_true", help="keep each scale's data and pipeline outputs")
    parser.add_argument("--stage", help=argparse.SUPPRESS)  # inside a stage process
    parser.add_argument("--land", type=int, help=argparse.SUPPRESS)  # inside the landing process: the scale
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args, runner_flags = parser.parse_known_args(argv)
    runner_flags = [flag for flag in runner_flags if flag != "--"]
    if args.stage:
        run_stage(args.stage, args.result, runner_flags)
        return 0
    if args.land:
        print(land_scaled_span(args.data_dir, args.work_dir / "landing", args.land))
        return 0
    if any(scale < 1 for scale in args.scales):
        parser.error("scales are whole multiples of the official train split, 1 or more")

    stages = [stage for stage in STAGES if stage in args.stages]  # pipeline order
    print(f"CPU: {cpu_model()}", flush=True)
    rows: dict[int, list[StageResult]] = {}
    for scale in args.scales:
        work = args.work_dir.resolve() / f"x{scale}"
        if work.exists():
            shutil.rmtree(work)  # a fresh ML Metadata store: nothing cached from an earlier run
        work.mkdir(parents=True)
        free_gb = shutil.disk_usage(work).free / 1e9
        if free_gb < GB_PER_SCALE * scale:
            print(f"error: {scale}x needs about {GB_PER_SCALE * scale:.1f} GB under {work}, {free_gb:.1f} GB free",
                  file=sys.stderr)
            return 1
        try:
            rows[scale] = run_scale(scale, args.data_dir, work, stages, runner_flags, floor=not rows)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        finally:
            if not args.keep:
                shutil.rmtree(work, ignore_errors=True)
    floor = next(r for r in next(iter(rows.values())) if r.stage == FLOOR)
    print(f"\nfloor: a stage process with every node cached peaks at {floor.peak_mib:,.0f} MiB in {floor.wall:.0f} s "
          "(imports, Beam, ML Metadata); seconds are the component's execution in ML Metadata\n")
    print(table(rows))
    if len(rows) > 1:
        print()
        print(growth_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
