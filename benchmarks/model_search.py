"""Model search: training cost and test accuracy per candidate model, and the Pareto table.

    .venv/bin/python benchmarks/model_search.py [--output-dir outputs/fashion-mnist]
        [--data-dir ../shared/data/fashion-mnist] [--candidates NAME ...] [--seeds 42 7]
        [--cost-only] [--results outputs/model_search.jsonl]

A candidate is a named architecture and schedule over the tuned values (CANDIDATES), trained the
way the Trainer trains (modules.trainer.fit, `--precision auto` resolved on this machine) on a
finished local run's Transform output:

- cost: one epoch's seconds, validation included, from the second epoch of a two-epoch fit on the
  full train split (the first also traces); with it the projected Trainer time (epochs x epoch
  seconds) and pipeline time: the reference run's component seconds minus its own training
  seconds (training_summary.json), plus the candidate's Trainer time.
- accuracy (unless --cost-only): a full training per seed; the float32 export's accuracy on the
  eval hold-out and on the official test split, and the epochs run (early stopping may cut them).

Each measurement is appended to --results as a JSON line with the CPU it ran on, so trainings
spread over sessions meet in one table. The table lists, per CPU and candidate, the cost, every
seed's test accuracy and their mean; `pareto` marks the rows no other row beats on both projected
pipeline time and mean test accuracy. Compare times only between rows of the same CPU and run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from fmnist import tf_env

tf_env.configure()  # before TensorFlow loads

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from common import accuracy, cpu_model, markdown_table, project_lines_only, run_splits  # noqa: E402

from fmnist import dataset  # noqa: E402
from modules import model as model_lib  # noqa: E402
from modules import precision as precision_lib  # noqa: E402

REPO = Path(__file__).resolve().parent.parent

# name -> architecture and schedule over the tuned regularisation and learning rate, stated in
# full so that a name means the same model whatever the defaults are. Convolution multiply-adds per
# image: 2 blocks of 2 convolutions, 32-64 filters, 18.3 M; a third block (128 filters at 7x7)
# adds 10.8 M; base 48 makes the 2 blocks 41 M, the 3 blocks 65 M; 3 blocks of one convolution 7.5 M.
_2X2, _3X2 = {"num_blocks": 2, "convs_per_block": 2}, {"num_blocks": 3, "convs_per_block": 2}
CANDIDATES: dict[str, dict] = {
    "2blocks": {**_2X2, "base_filters": 32, "epochs": 24},
    "2blocks-16ep": {**_2X2, "base_filters": 32, "epochs": 16},
    "2blocks-32ep": {**_2X2, "base_filters": 32, "epochs": 32},
    "3blocks": {**_3X2, "base_filters": 32, "epochs": 24},
    "3blocks-16ep": {**_3X2, "base_filters": 32, "epochs": 16},
    "3blocks-20ep": {**_3X2, "base_filters": 32, "epochs": 20},
    "3blocks-1conv-32ep": {"num_blocks": 3, "convs_per_block": 1, "base_filters": 32, "epochs": 32},
    "2blocks-base48": {**_2X2, "base_filters": 48, "epochs": 24},
    "3blocks-base48-32ep": {**_3X2, "base_filters": 48, "epochs": 32},
}


def epoch_seconds(hparams: model_lib.HParams, splits: dict, precision: str) -> float:
    """The second epoch's seconds of a two-epoch fit on the full train split, validation included."""
    from modules import trainer

    result = trainer.fit(hparams.replace(epochs=2), splits[dataset.TRAIN], splits[dataset.EVAL], seed=0,
                         precision=precision)
    return result.epoch_logger.seconds[-1]


def train(hparams: model_lib.HParams, splits: dict, seed: int, precision: str) -> dict:
    """A full training as the Trainer runs it; accuracies of the float32 export it would push."""
    from modules import trainer

    started = time.perf_counter()
    result = trainer.fit(hparams, splits[dataset.TRAIN], splits[dataset.EVAL], seed=seed, precision=precision)
    seconds = time.perf_counter() - started
    exported = precision_lib.float32_copy(result.model) if result.precision.bf16 else result.model
    return {"seed": seed, "train_seconds": seconds, "epochs_run": len(result.history.history["loss"]),
            "median_epoch_seconds": float(statistics.median(result.epoch_logger.seconds)),
            "parameters": int(result.model.count_params()), "policy": result.precision.policy,
            "eval_accuracy": accuracy(exported, splits[dataset.EVAL])[0],
            "test_accuracy": accuracy(exported, splits[dataset.TEST])[0]}


def reference_seconds(output_dir: Path) -> dict:
    """The reference run's seconds outside training: every component's execution time minus the
    Trainer's own training loop (its training_summary.json), i.e. what a candidate does not change."""
    from modules.trainer import TRAINING_SUMMARY_FILE
    from tfx_pipeline import metadata
    from tfx_pipeline.config import TRAINER_ID

    metadata_path = str(output_dir / "metadata.sqlite")
    pipeline = metadata.only_pipeline_name(metadata_path)
    runs = metadata.component_runs(metadata_path, pipeline)
    (model_run,) = metadata.latest_outputs(metadata_path, pipeline, TRAINER_ID, "model_run")
    summary = json.loads(Path(model_run.uri, TRAINING_SUMMARY_FILE).read_text())
    total = sum(run.seconds for run in runs)
    return {"pipeline_seconds": total, "outside_training_seconds": total - summary["train_seconds"]}


def append(results: Path, record: dict) -> None:
    results.parent.mkdir(parents=True, exist_ok=True)
    with results.open("a") as stream:
        stream.write(json.dumps(record) + "\n")


def _architecture(hparams: model_lib.HParams) -> model_lib.HParams:
    """What an epoch's cost depends on: everything but the number of epochs."""
    return hparams.replace(epochs=0)


def pareto_table(records: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Per CPU and candidate: the projected times from the smallest epoch cost measured for its
    architecture on that CPU (the least disturbed: other work only ever slows an epoch down), each
    seed's latest test accuracy and their mean; the header and one row of strings per candidate,
    ordered by CPU and projected pipeline time."""
    costs: dict[tuple[str, model_lib.HParams], dict] = {}
    for record in records:
        if record["kind"] == "cost":
            key = (record["cpu"], _architecture(model_lib.HParams.from_dict(record["hparams"])))
            if key not in costs or record["epoch_seconds"] < costs[key]["epoch_seconds"]:
                costs[key] = record
    groups: dict[tuple[str, str], dict] = {}
    for record in records:
        group = groups.setdefault((record["cpu"], record["candidate"]),
                                  {"hparams": record["hparams"], "policy": record["policy"], "seeds": {}})
        if record["kind"] != "cost":
            group["seeds"][record["seed"]] = record
    rows = []
    for (cpu, name), group in groups.items():
        hparams = model_lib.HParams.from_dict(group["hparams"])
        cost = costs.get((cpu, _architecture(hparams)))
        trainer_s = hparams.epochs * cost["epoch_seconds"] if cost else None
        pipeline_s = cost["outside_training_seconds"] + trainer_s if cost else None
        tests = [seed["test_accuracy"] for seed in group["seeds"].values()]  # in the order seeds were first run
        rows.append({"cpu": cpu, "name": name, "hparams": hparams, "policy": group["policy"], "trainer_s": trainer_s,
                     "pipeline_s": pipeline_s, "tests": tests, "mean": statistics.mean(tests) if tests else None})
    for row in rows:
        peers = [o for o in rows if o["cpu"] == row["cpu"] and o is not row and o["pipeline_s"] is not None
                 and o["mean"] is not None]
        row["pareto"] = row["pipeline_s"] is not None and row["mean"] is not None and not any(
            o["pipeline_s"] <= row["pipeline_s"] and o["mean"] >= row["mean"]
            and (o["pipeline_s"], o["mean"]) != (row["pipeline_s"], row["mean"]) for o in peers)
    header = ["CPU", "candidate", "blocks x convs, filters", "precision", "epochs", "Trainer s (projected)",
              "pipeline s (projected)", "test acc per seed", "mean test acc", "Pareto"]
    table = []
    for row in sorted(rows, key=lambda r: (r["cpu"], r["pipeline_s"] or 0.0)):
        hp = row["hparams"]
        table.append([
            row["cpu"], row["name"], f"{hp.num_blocks} x {hp.convs_per_block}, {'-'.join(map(str, hp.conv_filters))}",
            row["policy"], str(hp.epochs), f"{row['trainer_s']:,.0f}" if row["trainer_s"] else "-",
            f"{row['pipeline_s']:,.0f}" if row["pipeline_s"] else "-",
            " / ".join(f"{t:.4f}" for t in row["tests"]) or "-",
            f"{row['mean']:.4f}" if row["mean"] is not None else "-", "yes" if row["pareto"] else "",
        ])
    return header, table


def measure(args: argparse.Namespace, cpu: str) -> None:
    """Each candidate's epoch cost, then (unless --cost-only) its trainings, appended to --results."""
    splits, source = run_splits(args.output_dir, args.data_dir)
    reference = reference_seconds(args.output_dir)
    policy = precision_lib.resolve_here(args.precision).policy
    print(f"{len(splits[dataset.TRAIN].labels):,} training images from {source}; reference run: "
          f"{reference['pipeline_seconds']:,.0f} s of components, "
          f"{reference['outside_training_seconds']:,.0f} s outside training; precision {policy}")
    costs: dict[model_lib.HParams, float] = {}  # an epoch costs the same whatever the schedule's length
    for name in args.candidates:
        hparams = model_lib.HParams.tuned(CANDIDATES[name])
        common = {"cpu": cpu, "candidate": name, "hparams": hparams.to_dict(), "policy": policy}
        architecture = _architecture(hparams)
        if architecture not in costs:
            costs[architecture] = epoch_seconds(hparams, splits, args.precision)
        append(args.results, {**common, "kind": "cost", "epoch_seconds": costs[architecture], **reference})
        print(f"{name}: {costs[architecture]:.1f} s per epoch, {hparams.epochs} epochs", flush=True)
        for seed in [] if args.cost_only else args.seeds:
            trained = train(hparams, splits, seed, args.precision)
            append(args.results, {**common, "kind": "accuracy", **trained})
            print(f"{name} seed {seed}: test {trained['test_accuracy']:.4f}, "
                  f"eval {trained['eval_accuracy']:.4f}, {trained['epochs_run']} epochs "
                  f"in {trained['train_seconds']:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "fashion-mnist",
                        help="a finished local run (full data): its Transform output and component times")
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "fashion-mnist",
                        help="the official test split")
    parser.add_argument("--candidates", nargs="+", choices=sorted(CANDIDATES), default=list(CANDIDATES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7])
    parser.add_argument("--precision", choices=precision_lib.CHOICES, default="auto")
    parser.add_argument("--cost-only", action="store_true", help="measure the epoch cost, train nothing")
    parser.add_argument("--table-only", action="store_true", help="print the table of --results, measure nothing")
    parser.add_argument("--results", type=Path, default=REPO / "outputs" / "model_search.jsonl",
                        help="JSON lines, appended to")
    parser.add_argument("--log", type=Path, default=REPO / "outputs" / "benchmarks" / "model_search.log",
                        help="where library output goes (the console keeps the project's lines)")
    args = parser.parse_args(argv)

    cpu = cpu_model()
    print(f"CPU: {cpu}")
    if not args.table_only:
        with project_lines_only(args.log):
            measure(args, cpu)
    if not args.results.is_file():
        print(f"error: no results at {args.results}: measure first (without --table-only)", file=sys.stderr)
        return 1
    records = [json.loads(line) for line in args.results.read_text().splitlines() if line.strip()]
    print()
    print(markdown_table(*pareto_table(records)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
