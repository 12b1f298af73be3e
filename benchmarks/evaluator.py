"""What the Evaluators cost, on a finished pipeline run's artifacts (found through ML Metadata).

    .venv/bin/python benchmarks/evaluator.py --components      # Evaluator + TestEvaluator, old vs new EvalConfig
    .venv/bin/python benchmarks/evaluator.py                   # TFMA on one split, EvalConfig variants
    .venv/bin/python benchmarks/evaluator.py --split test --repeats 3

--components runs TFX's Evaluator executor as the pipeline configures it: the `eval` split with
the blessed baseline and the blessing thresholds (Evaluator), then the `test` split, candidate only,
no thresholds (TestEvaluator), in one fresh process per repeat as the local runner runs them in
one, with the Beam DirectRunner settings of local runs. It compares the project's EvalConfig with
the one before tfx_pipeline/tfma_metrics.py's ClassificationSummary (binarized TFMA metrics and
Keras metrics): seconds per component, metric differences and blessings. Without a recorded
baseline, an older Trainer model of the store is the baseline, else the candidate itself (a
baseline costs the same either way: a second model scored on every example).

The default mode runs tfma.run_model_analysis on one split with the project EvalConfig, the
previous one, and parts of the project's removed, to see where the time goes.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))  # test_tfma_metrics.previous_eval_config: the replaced EvalConfig

from common import cpu_model  # noqa: E402

import local_runner  # noqa: E402
from fmnist import dataset, tf_env  # noqa: E402

BEAM_ARGS = list(local_runner.beam_args(1))  # the local runner's default
BUDGET_S = 40.0  # issue #14: Evaluator + TestEvaluator on the full data
CONFIGS = ("old", "new")
TOP1_METRICS = ("precision", "recall", "macro_precision", "macro_recall")


def eval_configs(thresholds) -> dict:
    """{"old": the EvalConfig before ClassificationSummary, "new": the project's}, for `thresholds`."""
    from test_tfma_metrics import previous_eval_config

    from tfx_pipeline import eval_config

    return {"old": previous_eval_config(thresholds), "new": eval_config.create_eval_config(thresholds)}


def _tfx_artifacts(store, artifacts: list) -> list:
    from tfx.types import artifact_utils

    types = {t.id: t for t in store.get_artifact_types_by_id(list({a.type_id for a in artifacts}))}
    return [artifact_utils.deserialize_artifact(types[a.type_id], a) for a in artifacts]


def component_inputs(output_dir: Path) -> dict:
    """{component: (TFX input dict, split)} of the latest Evaluator and TestEvaluator runs, and
    "baseline_note": where the Evaluator's baseline came from."""
    from tfx_pipeline import metadata
    from tfx_pipeline.config import BLESSING_SPLIT, EVALUATOR_ID, REPORTED_SPLIT, TEST_EVALUATOR_ID, TRAINER_ID

    path = str(output_dir / "metadata.sqlite")
    name = metadata.only_pipeline_name(path)
    store = metadata.open_store(path)
    judged = metadata.executions_inputs(path, name, EVALUATOR_ID)[-1]
    reported = metadata.executions_inputs(path, name, TEST_EVALUATOR_ID)[-1]
    (model,) = judged["model"]
    baseline = judged.get("baseline_model") or []
    note = "the run's blessed baseline"
    if not baseline:
        older = [m for m in metadata.all_outputs(path, name, TRAINER_ID, "model") if m.id != model.id]
        baseline = older[-1:] or [model]
        note = "an older Trainer model" if older else "the candidate itself (the run had no baseline)"
    evaluator = {"examples": judged["examples"], "model": [model], "baseline_model": baseline}
    test_evaluator = {"examples": reported["examples"], "model": reported["model"]}
    return {"Evaluator": ({k: _tfx_artifacts(store, v) for k, v in evaluator.items()}, BLESSING_SPLIT),
            "TestEvaluator": ({k: _tfx_artifacts(store, v) for k, v in test_evaluator.items()}, REPORTED_SPLIT),
            "baseline_note": note}


def run_executor(inputs: dict, split: str, config, work: Path) -> tuple[str, bool | None, float, float]:
    """TFX's Evaluator executor on one split: (evaluation uri, blessed or None, wall seconds, CPU
    seconds of the process: all its threads, so less sensitive than wall time to other work)."""
    from tfx.components.evaluator import executor
    from tfx.dsl.components.base.base_beam_executor import BaseBeamExecutor
    from tfx.types import standard_artifacts
    from tfx.utils import proto_utils

    evaluation, blessing = standard_artifacts.ModelEvaluation(), standard_artifacts.ModelBlessing()
    for artifact, directory in ((evaluation, work / "evaluation"), (blessing, work / "blessing")):
        directory.mkdir(parents=True)
        artifact.uri = str(directory)
    properties = {"eval_config": proto_utils.proto_to_json(config), "example_splits": json.dumps([split])}
    started, cpu_started = time.perf_counter(), time.process_time()
    executor.Executor(BaseBeamExecutor.Context(beam_pipeline_args=BEAM_ARGS, tmp_dir=str(work / "tmp"))).Do(
        inputs, {"evaluation": [evaluation], "blessing": [blessing]}, properties)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    blessed = None
    if "blessed" in blessing.mlmd_artifact.custom_properties:
        blessed = blessing.get_int_custom_property("blessed") == 1
    return evaluation.uri, blessed, seconds, cpu_seconds


def worker(config_name: str, output_dir: Path, work: Path) -> dict:
    """One repeat in this (fresh) process: Evaluator, then TestEvaluator, as a local run orders them."""
    tf_env.configure()
    from tfx_pipeline.config import EvaluationThresholds

    inputs = component_inputs(output_dir)
    result = {}
    for component, thresholds in (("Evaluator", EvaluationThresholds()), ("TestEvaluator", None)):
        component_input, split = inputs[component]
        uri, blessed, seconds, cpu_seconds = run_executor(component_input, split,
                                                          eval_configs(thresholds)[config_name], work / component)
        result[component] = {"uri": uri, "blessed": blessed, "seconds": seconds, "cpu_seconds": cpu_seconds,
                             "split": split, "models": 1 + bool(component_input.get("baseline_model"))}
    return result


def _metrics(uri: str) -> dict:
    import tensorflow_model_analysis as tfma
    from tensorflow_model_analysis.metrics import metric_types
    from tensorflow_model_analysis.slicer import slicer_lib

    values = {}
    for proto in tfma.load_metrics(uri):
        slice_key = slicer_lib.deserialize_slice_key(proto.slice_key)
        for entry in proto.metric_keys_and_values:
            if entry.value.HasField("double_value"):
                values[slice_key, metric_types.MetricKey.from_proto(entry.key)] = entry.value.double_value.value
    return values


def _difference(old: float, new: float) -> float:
    if math.isnan(old) and math.isnan(new):
        return 0.0
    return math.inf if math.isnan(old) or math.isnan(new) else abs(old - new)


def compare(old_uri: str, new_uri: str) -> dict:
    """Largest |new - old| outside the top-1 precision/recall family, and how many keys of that
    family differ, on the overall slice and on the class slices (TFMA's histogram shortcut)."""
    old, new = _metrics(old_uri), _metrics(new_uri)
    if set(old) != set(new):
        raise SystemExit(f"metric keys differ: {sorted(map(str, set(old) ^ set(new)))[:5]}")
    result = {"max_delta": 0.0, "top1_overall": 0, "top1_slices": 0, "keys": len(old),
              "top1_keys": sum(key.name in TOP1_METRICS for _, key in old)}
    for (slice_key, key), value in old.items():
        delta = _difference(value, new[slice_key, key])
        if key.name not in TOP1_METRICS:
            result["max_delta"] = max(result["max_delta"], delta)
        elif delta > 1e-6:
            result["top1_slices" if slice_key else "top1_overall"] += 1
    return result


def components_benchmark(args: argparse.Namespace) -> int:
    tf_env.configure()
    inputs = component_inputs(args.output_dir)
    print(cpu_model())
    print(f"run: {args.output_dir}; Evaluator baseline: {inputs['baseline_note']}; DirectRunner {' '.join(BEAM_ARGS)}; "
          f"load average at start {os.getloadavg()[0]:.1f} (other work shares these CPUs: timings are contended)",
          flush=True)
    runs = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="evaluator-bench-") as scratch:
        for repeat in range(args.repeats):
            for name in CONFIGS:  # interleaved, so both configs see the same contention
                work = Path(scratch) / f"{name}-{repeat}"
                result_file = work / "result.json"
                work.mkdir()
                with open(work / "output.log", "w") as log:
                    done = subprocess.run([sys.executable, __file__, "--worker", name, "--output-dir",
                                           str(args.output_dir), "--work", str(work)], stdout=log, stderr=log)
                if done.returncode:
                    print((work / "output.log").read_text()[-5000:], file=sys.stderr)
                    raise SystemExit(f"the {name} EvalConfig's run failed ({done.returncode})")
                runs[name].append(json.loads(result_file.read_text()))
                seconds = {c: f"{r['seconds']:.1f} s" for c, r in runs[name][-1].items()}
                print(f"  repeat {repeat + 1}, {name} EvalConfig: {seconds}", flush=True)
        table = _table(runs, args.repeats)
    print(f"\nload average at end {os.getloadavg()[0]:.1f}\n")
    print("\n".join(table))
    return 0


def _table(runs: dict, repeats: int) -> list[str]:
    lines = ["| component | split | examples | models | EvalConfig | median s | min | max | CPU s² | max |Δ| vs old¹ "
             "| same blessing |", "| --- | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    totals = {name: [0.0] * repeats for name in CONFIGS}
    cpu_totals = {name: [0.0] * repeats for name in CONFIGS}
    notes = []
    for component in ("Evaluator", "TestEvaluator"):
        first = {name: runs[name][0][component] for name in CONFIGS}
        difference = compare(first["old"]["uri"], first["new"]["uri"])
        examples = int(_metrics(first["new"]["uri"])[(), _candidate_key(first["new"]["uri"])])
        for name in CONFIGS:
            seconds = [run[component]["seconds"] for run in runs[name]]
            cpu_seconds = [run[component]["cpu_seconds"] for run in runs[name]]
            for i in range(repeats):
                totals[name][i] += seconds[i]
                cpu_totals[name][i] += cpu_seconds[i]
            blessings = {run[component]["blessed"] for run in runs[name]}
            if name == "old":
                delta, same = "", ""
            else:
                delta = f"{difference['max_delta']:.1e}"
                old_blessings = {run[component]["blessed"] for run in runs["old"]}
                same = ("yes" if blessings == old_blessings else "NO") + (
                    f" ({'blessed' if blessings == {True} else 'not blessed'})" if None not in blessings
                    else " (not judged)")
            lines.append(f"| {component} | {first[name]['split']} | {examples:,} | {first[name]['models']} | {name} | "
                         f"{statistics.median(seconds):.1f} | {min(seconds):.1f} | {max(seconds):.1f} | "
                         f"{statistics.median(cpu_seconds):.1f} | {delta} | {same} |")
        notes.append(f"{component}: {difference['top1_overall']} of the top-1 precision/recall/macro keys differ on "
                     f"the overall slice, {difference['top1_slices']} on the class slices "
                     f"(of {difference['top1_keys']}; {difference['keys']} keys in all)")
    for name in CONFIGS:
        total = statistics.median(totals[name])
        verdict = "within" if total <= BUDGET_S else "over"
        lines.append(f"| **total** | | | | {name} | **{total:.1f}** | {min(totals[name]):.1f} | "
                     f"{max(totals[name]):.1f} | {statistics.median(cpu_totals[name]):.1f} | | "
                     f"{verdict} the {BUDGET_S:.0f} s budget |")
    lines += ["", f"Median of {repeats}, one fresh process per repeat running both components.",
              "¹ accuracy, cross-entropy, AUC and example count, every slice and model (diffs included). The top-1 "
              "precision/recall keys differ where TFMA's histogram shortcut counts a class no example of the slice "
              "has as top-1 as predicted for all (tfx_pipeline/tfma_metrics.py):"] + [f"- {n}" for n in notes] + [
              "² CPU seconds of the process (all threads) during the component: wall time minus waiting for the "
              "CPUs, plus TensorFlow's parallel threads."]
    return lines


def _candidate_key(uri: str):
    """The candidate's example-count key (model name "candidate" when there is a baseline)."""
    from tensorflow_model_analysis.metrics import metric_types

    names = {key.model_name for _, key in _metrics(uri)}
    model = "candidate" if "candidate" in names else ""
    return metric_types.MetricKey(name="example_count", model_name=model)


# --- default mode: TFMA on one split, EvalConfig variants -------------------------------------


def variants() -> dict:
    from tfx_pipeline import eval_config

    configs = eval_configs(None)
    project = configs["new"]
    overall_only = copy.deepcopy(project)
    del overall_only.slicing_specs[1:]
    count_only = copy.deepcopy(project)
    kept = [m for m in count_only.metrics_specs[0].metrics if m.class_name == "ExampleCount"]
    del count_only.metrics_specs[0].metrics[:]
    count_only.metrics_specs[0].metrics.extend(kept)
    without_plot = copy.deepcopy(project)
    kept = [m for m in without_plot.metrics_specs[0].metrics if m.class_name != eval_config.CONFUSION_MATRIX_PLOT]
    del without_plot.metrics_specs[0].metrics[:]
    without_plot.metrics_specs[0].metrics.extend(kept)
    return {
        "project EvalConfig (overall + 10 class slices)": project,
        "previous EvalConfig (binarized TFMA + Keras metrics)": configs["old"],
        "project, without the confusion-matrix plot": without_plot,
        "project, overall slice only": overall_only,
        "example count only (inference, slicing, Beam)": count_only,
    }


def variants_benchmark(args: argparse.Namespace) -> int:
    tf_env.configure()
    import tensorflow_model_analysis as tfma
    from apache_beam.options.pipeline_options import PipelineOptions
    from tfx.utils import path_utils

    component = "Evaluator" if args.split == dataset.EVAL else "TestEvaluator"
    component_input, split = component_inputs(args.output_dir)[component]
    (model,) = component_input["model"]
    (examples,) = component_input["examples"]
    data = f"{examples.uri}/Split-{split}/*"
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for label, config in variants().items():
            seconds = []
            for repeat in range(args.repeats):
                started = time.perf_counter()
                tfma.run_model_analysis(
                    eval_shared_model=tfma.default_eval_shared_model(
                        eval_saved_model_path=path_utils.serving_model_path(model.uri), eval_config=config),
                    eval_config=config, data_location=data, file_format="tfrecords",
                    output_path=f"{scratch}/{len(rows)}-{repeat}", pipeline_options=PipelineOptions(BEAM_ARGS))
                seconds.append(time.perf_counter() - started)
            rows.append((label, seconds))
            print(f"  {label}: {statistics.median(seconds):.1f} s", flush=True)

    print(f"\n{cpu_model()}\nTFMA on split '{split}' of {args.output_dir}, candidate only, DirectRunner, "
          f"median of {args.repeats}\n")
    print("| EvalConfig | median s | min s | max s | vs project config |")
    print("| --- | ---: | ---: | ---: | ---: |")
    reference = statistics.median(rows[0][1])
    for label, seconds in rows:
        median = statistics.median(seconds)
        print(f"| {label} | {median:.1f} | {min(seconds):.1f} | {max(seconds):.1f} | {median / reference:.2f}x |")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output-dir", type=Path, default=REPO / "outputs" / "fashion-mnist",
                        help="a local run's output directory (metadata.sqlite inside)")
    parser.add_argument("--components", action="store_true",
                        help="TFX's Evaluator and TestEvaluator executors, previous vs project EvalConfig")
    parser.add_argument("--split", default=dataset.EVAL, help="default mode: the split TFMA reads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", choices=CONFIGS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if not (args.output_dir / "metadata.sqlite").exists():
        print(f"no pipeline run under {args.output_dir}: run `make run` first (or pass --output-dir)", file=sys.stderr)
        return 2
    if args.worker:
        (args.work / "result.json").write_text(json.dumps(worker(args.worker, args.output_dir, args.work)))
        return 0
    return components_benchmark(args) if args.components else variants_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
