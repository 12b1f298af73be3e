"""Runs the Fashion-MNIST pipeline on this machine: LocalDagRunner, SQLite ML Metadata,
Beam DirectRunner, local disk.

    python local_runner.py                     # full data in data/raw (see `fmnist fetch`)
    python local_runner.py --sample            # the committed 1,300-image sample, minutes

Every setting is a flag, an FMNIST_* variable or a key of the --config YAML file (in that order
of precedence). The console shows the project's own lines; everything else goes to
<output>/<pipeline>/logs/pipeline.log (--verbose shows it all). Exit status: 0 done, 1 the
pipeline failed, 2 bad settings or raw input (found before TFX starts), 3 another run holds the
output directory.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import fcntl
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from fmnist import dataset, landing, paths, settings, tf_env
from fmnist.settings import setting
from tfx_pipeline.config import METADATA_FILE, PIPELINE_NAME, PUSHER_ID, PipelineConfig, PipelineSettings

REPO = Path(__file__).resolve().parent
SAMPLE_DIR = paths.anchored(paths.SAMPLE_DIR)
DEFAULT_DATA_DIR = paths.anchored(paths.DATA_DIR)
DEFAULT_LANDING_DIR = paths.anchored(paths.LANDING_DIR)
LOCK_FILE = ".run.lock"
LOG_FILE = os.path.join("logs", "pipeline.log")

# The committed sample is 1,000 train + 300 test images: a smaller hold-out, a short training
# run and floors that a model trained on 800 images clears. Applies to settings nobody gave.
# The golden set is then 150 images (15 a class): one image moves a class recall 6.7 points, so
# the golden margins are wider than the full data's, and so is the label check's (its golden side
# is one such recall).
SAMPLE_PROFILE = dict(pipeline_name=f"{PIPELINE_NAME}-sample", eval_holdout=200, epochs=15, batch_size=32,
                      min_accuracy=0.7, min_class_recall=0.3, max_golden_drop=0.03, max_golden_class_drop=0.2,
                      max_label_disagreement=0.3)
SAMPLE_HPARAMS = {"augment": False}


@dataclass(frozen=True)
class LocalSettings:
    """Settings of the local runner only (PipelineSettings holds the shared ones)."""

    data_dir: Path | None = setting(None, f"directory with the raw files (default: {paths.DATA_DIR}; "
                                          f"{paths.SAMPLE_DIR} with --sample)")
    sample: bool = setting(False, "run on the committed sample with the sample profile of defaults")
    output_dir: Path = setting(paths.OUTPUT_DIR, "pipeline root, metadata, logs and serving_model/ go here, in a "
                                                 "folder named like the pipeline")
    landing_dir: Path | None = setting(None, f"landed spans, span-N/ (default: {paths.LANDING_DIR}; with --sample: "
                                             "<output>/landing); empty: the data dir's train files become span 1")
    beam_workers: int = setting(1, "Beam DirectRunner parallelism (>1 uses multi-processing mode)")
    verbose: bool = setting(False, "show every library's log lines on the console, not only the project's")


SETTINGS = (PipelineSettings, LocalSettings)


class RunError(Exception):
    """A run that cannot start; `status` is the process exit status."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


def build_parser() -> argparse.ArgumentParser:
    """Flags generated from the setting declarations (each also an FMNIST_* variable and YAML key)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_arguments(parser, *SETTINGS)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def beam_args(workers: int) -> tuple[str, ...]:
    # --setup_file names what the workers would need (this project) so TFX does not build its
    # "ephemeral" sdist of itself before every Beam component: 3 s each and 52 MB left in /tmp
    # every time, for a DirectRunner that stages nothing.
    mode = (("--direct_running_mode=multi_processing", f"--direct_num_workers={workers}") if workers > 1
            else ("--direct_running_mode=in_memory", "--direct_num_workers=1"))
    return (*mode, f"--setup_file={REPO / 'setup.py'}")


def build_config(values: settings.Values) -> tuple[PipelineConfig, LocalSettings]:
    """The PipelineConfig for resolved settings; the sample profile fills what nobody gave."""
    local: LocalSettings = values.build(LocalSettings)
    if local.sample:
        values = values.with_defaults(SAMPLE_PROFILE)
    shared: PipelineSettings = values.build(PipelineSettings)
    if local.sample:
        shared = dataclasses.replace(shared, training=dataclasses.replace(shared.training, hparams=SAMPLE_HPARAMS))
    data_dir = local.data_dir or (SAMPLE_DIR if local.sample else DEFAULT_DATA_DIR)
    output = paths.pipeline_output(shared.pipeline_name, local.output_dir).resolve()
    landing_dir = local.landing_dir or (output / "landing" if local.sample else DEFAULT_LANDING_DIR)
    config = PipelineConfig(
        landing_root=str(Path(landing_dir).resolve()),
        pipeline_root=str(output / paths.PIPELINE_ROOT),
        metadata_path=str(output / METADATA_FILE),
        serving_model_dir=str(output / paths.SERVING_MODEL),
        data_root=str(Path(data_dir).resolve()),
        settings=shared,
        beam_pipeline_args=beam_args(local.beam_workers),
    )
    return config, local


def config_from_args(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> PipelineConfig:
    """Flags (then FMNIST_* variables, then the --config file) -> the PipelineConfig."""
    return build_config(settings.resolve(SETTINGS, parse_args(argv), environ))[0]


def output_dir(config: PipelineConfig) -> Path:
    return Path(config.pipeline_root).parent


def span_to_ingest(config: PipelineConfig) -> int | None:
    """The span a run ingests: --span, else the newest landed; None while nothing is landed (the
    run then lands the data dir's train files as span 1). Raises DatasetError for a missing span."""
    landed = landing.spans(Path(config.landing_root))
    if not landed:
        if config.settings.span > 1:
            raise dataset.DatasetError(f"{config.landing_root}: no spans landed, so no span {config.settings.span}")
        return None
    span = config.settings.span or max(landed)
    if span not in landed:
        raise dataset.DatasetError(f"{config.landing_root}: no span {span} (landed: {', '.join(map(str, landed))})")
    return span


def preflight(config: PipelineConfig) -> dict[str, int]:
    """Checks the raw inputs in seconds, before TFX and Beam start: files present, gzip/IDX/CSV
    well-formed, labels and grey levels in range, hold-out smaller than the span. Returns the
    examples of the span to ingest (`train`; the data dir's train files when nothing is landed
    yet) and of the official `test` split (and the `unlabelled` images of --bulk-inference-input);
    raises DatasetError naming the file (and line)."""
    span = span_to_ingest(config)
    if span is None:
        train = dataset.read_split(config.data_root, dataset.TRAIN, config.input_format)
    else:
        train = dataset.read_split(landing.spans(Path(config.landing_root))[span], dataset.TRAIN)
    test = dataset.read_split(config.data_root, dataset.TEST, config.input_format)
    for split in (train, test):
        dataset.check_split(split)
    config.settings.eval_holdout_spec.size(len(train), train.source)  # raises for a span too small
    config.settings.golden_share_spec.size(len(test), test.source)
    counts = {dataset.TRAIN: len(train), dataset.TEST: len(test)}
    if config.settings.bulk_inference_input:
        counts[dataset.UNLABELLED] = len(dataset.read_unlabelled(config.settings.bulk_inference_input))
    return counts


def land_first_span(config: PipelineConfig) -> int | None:
    """With nothing landed, lands the data dir's train files as span 1 (what `make run` ingests);
    returns its examples, or None when spans exist."""
    if landing.spans(Path(config.landing_root)):
        return None
    _, _, examples = landing.land(Path(config.data_root), Path(config.landing_root), config.input_format)
    return examples


@contextlib.contextmanager
def exclusive(directory: Path) -> Iterator[None]:
    """Holds `directory` for one run. The kernel drops an flock when its process dies, so a lock
    file left by a killed run is stale and taken over; a live holder makes this raise at once."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / LOCK_FILE
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunError(f"{directory} is in use by another run ({holder}); wait for it to finish or stop it",
                           status=3) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def run(config: PipelineConfig, verbose: bool = True) -> None:
    """Runs the pipeline with LocalDagRunner and SQLite ML Metadata; raises if a component fails.
    Records the span's verdict (record_verdict) and releases a push as the canary. Progress lines
    go to the console, the full log to <output>/logs/pipeline.log."""
    tf_env.configure(verbose)
    from tfx import v1 as tfx

    from tfx_pipeline import progress
    from tfx_pipeline.pipeline import create_components, create_pipeline

    log_file = output_dir(config) / LOG_FILE
    log_file.parent.mkdir(parents=True, exist_ok=True)
    land_first_span(config)
    components = create_components(config)
    try:
        with progress.attach(total=len(components), log_file=str(log_file), verbose=verbose):
            tfx.orchestration.LocalDagRunner().run(create_pipeline(
                config,
                metadata_connection_config=tfx.orchestration.metadata.sqlite_metadata_connection_config(
                    config.metadata_path),
                components=components,
            ))
    except Exception as err:  # a gate's stop is a verdict too; then the failure goes on up
        record_verdict(config, err)
        raise
    record_verdict(config, None)
    note = release_pushed(config)
    if note:
        print(f"release: {note}", flush=True)


def release_config_file(config: PipelineConfig) -> Path:
    """The TF Serving model config with the release labels, beside the push directory (as
    `fmnist serve` and `fmnist release` expect it for the default output directory)."""
    return Path(config.serving_model_dir).parent / paths.MODELS_CONFIG


def release_pushed(config: PipelineConfig) -> str | None:
    """After a push, the new version becomes the `canary` label beside `stable` in
    release_config_file (the first version ever becomes stable); returns what happened, or None
    when this run pushed nothing. A running canary is replaced by the newer push (release_history.jsonl
    records it as superseded; FileRelease.start_canary's busy policy)."""
    from serving.release.labels import FileRelease, ReleaseError
    from tfx_pipeline import metadata

    pushed = metadata.latest_outputs(config.metadata_path, config.pipeline_name, PUSHER_ID, "pushed_model")
    if not pushed or pushed[0].custom_properties["pushed"].int_value != 1:
        return None
    version = pushed[0].custom_properties["pushed_version"].string_value
    release = FileRelease(str(release_config_file(config)), base_path=config.serving_model_dir)
    try:
        state = release.start_canary(version, actor="local runner")
    except ReleaseError as refused:
        return f"version {version} pushed, not labelled: {refused}"
    return f"{state.notes[-1]} ({release.config_file}; `fmnist release promote|rollback`)"


def print_summary(config: PipelineConfig, elapsed: float) -> None:
    """Component times from ML Metadata, peak memory, the pushed model's test accuracy, the
    blessing decision rule by rule, and the HTML report."""
    from modules import inference
    from tfx_pipeline import console, metadata

    print()
    print(console.format_table(metadata.component_runs(config.metadata_path, config.pipeline_name)))
    pushed = inference.latest_version_dir(config.serving_model_dir)
    print(f"\nwall time {elapsed:.1f}s; peak memory {peak_memory_mib():.0f} MiB (largest process)")
    print(f"training: {training_note(config)}")
    if pushed:
        rows = reported_test_rows(config)
        accuracy = inference.model_accuracy(pushed, config.data_root, config.input_format, rows=rows)
        print(f"pushed model: {pushed}\ntest-split accuracy of the pushed model: {accuracy:.4f} (the "
              f"{len(rows):,} test images the golden gate never sees)")
    else:
        print("no model was pushed (not blessed, or not infra-blessed); see the evaluation report")
    if config.settings.bulk_inference_input:
        print(f"batch inference: {batch_inference_note(config)}")
    print_evaluation(config)


def reported_test_rows(config: PipelineConfig):
    """Rows of the official test split that are the reported `test` split: all but the golden set."""
    from tfx_pipeline.components.raw_example_gen import select_rows
    from tfx_pipeline.config import GOLDEN_SEED

    labels = dataset.read_split(config.data_root, dataset.TEST, config.input_format).labels
    return select_rows(labels, "rest", config.settings.golden_share_spec, GOLDEN_SEED)


def training_note(config: PipelineConfig) -> str:
    """The latest Trainer run in a line: epochs, speed, and the precision it computed in."""
    from reports.spans import training_summary
    from tfx_pipeline import metadata
    from tfx_pipeline.config import TRAINER_ID

    runs = metadata.latest_outputs(config.metadata_path, config.pipeline_name, TRAINER_ID, "model_run")
    summary = training_summary(runs[0].uri) if runs else {}
    if not summary:
        return "no training summary (the Trainer did not run)"
    precision = summary.get("precision") or {}
    return (f"{summary['epochs_run']} epochs in {summary['train_seconds']:.0f}s, "
            f"{summary['train_images_per_second']:,.0f} images/s; precision {precision.get('policy', '?')} "
            f"({precision.get('reason', 'not recorded')})")


def batch_inference_note(config: PipelineConfig) -> str:
    """What the BulkInferrer left: how many images it labelled and where, or why there is nothing."""
    from reports import predictions

    try:
        directory = predictions.latest_inference_result(config.metadata_path, config.pipeline_name)
        count = len(predictions.read_predictions(directory))
    except (predictions.PredictionsNotFoundError, predictions.PredictionsError) as err:
        return f"no predictions: {err}"
    return (f"{count:,} images of {config.settings.bulk_inference_input} labelled by the blessed model in "
            f"{directory} (`fmnist predictions export --format csv|jsonl --out FILE`)")


def print_evaluation(config: PipelineConfig) -> None:
    """The blessing decision with each rule, and the HTML report written for it."""
    from reports.evaluation import EvaluationNotFoundError, load_latest
    from reports.html_report import default_report_path, write_report

    try:
        evaluation = load_latest(config.metadata_path, config.pipeline_name)
    except EvaluationNotFoundError as missing:
        print(f"no evaluation to report: {missing}")
        return
    judged = evaluation.judged
    print(f"\nEvaluator on the {judged.split} split: {evaluation.verdict}")
    for check in judged.checks:
        print(f"  {'pass' if check.passed else 'FAIL'}  {check.rule} on {check.slice}: "
              f"{check.value:.4f} (needs {check.bound})")
    golden = evaluation.golden
    if golden is not None:
        stable = golden.baseline_overall.get("accuracy")
        against = f" vs stable {stable:.4f}" if stable is not None else " (no stable model yet: not judged)"
        print(f"Golden gate on {golden.overall['example_count']:.0f} golden images: accuracy "
              f"{golden.overall['accuracy']:.4f}{against}: {evaluation.golden_status.upper()}")
        for check in golden.checks:
            print(f"  {'pass' if check.passed else 'FAIL'}  {check.rule} on {check.slice}: "
                  f"{check.value:+.4f} (needs {check.bound})")
    if evaluation.blessing_reason and evaluation.blessing_reason != "passed":
        print(f"Blessing: NOT BLESSED: {evaluation.blessing_reason}")
    served = evaluation.serving_validation
    if served and served["blessed"] and "requests" in served:
        print(f"Serving validation: passed on the {served['server']} (AVAILABLE after {served['load_seconds']:.1f}s, "
              f"{served['requests']} requests, p99 {served['p99_ms']:.0f} ms, {served['warmup_requests']} warmup "
              f"requests shipped)")
    elif served and served["blessed"]:
        print(f"Serving validation: passed ({served['server']})")
    elif served:
        print(f"Serving validation: NOT INFRA-BLESSED: {served['reason']}")
    report = write_report(evaluation, default_report_path(output_dir(config)))
    print(f"evaluation report: {report}")


def peak_memory_mib() -> float:
    usage = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    return usage / 1024


def log_failure(log_file: Path, err: BaseException) -> None:
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "a") as stream:
        stream.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} ERROR local_runner: {err}\n")
        traceback.print_exception(err, file=stream)


def error_line(err: BaseException) -> str:
    """What a failed run says on the console: the project's own message, else the first line."""
    from tfx_pipeline.components.anomalies_gate import DataAnomaliesError
    from tfx_pipeline.components.drift_gate import DataDriftError

    if isinstance(err, DataAnomaliesError | DataDriftError | dataset.DatasetError):
        return str(err)
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def run_quietly(config: PipelineConfig, verbose: bool, then: Callable[[], None] | None = None) -> str | None:
    """run() (then `then`, e.g. the summary) with the console quiet: library output and any
    traceback go to the log. Returns None, or the one line saying why the run failed."""
    from tfx_pipeline import progress

    log_file = output_dir(config) / LOG_FILE
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with progress.quiet_console(log_file, enabled=not verbose):
        try:
            run(config, verbose=verbose)
            if then is not None:
                then()
        except Exception as err:  # the traceback goes to the log; the console gets the message
            log_failure(log_file, err)
            return error_line(err)
    return None


def record_verdict(config: PipelineConfig, err: BaseException | None) -> str | None:
    """Records the verdict of the run that just ended on its span (tfx_pipeline.span_verdicts):
    drifted/anomalous when a gate stopped it, else accepted or rejected from its blessings.
    Returns the verdict, or None when the run ingested nothing or failed for another reason."""
    from tfx_pipeline import metadata, span_verdicts
    from tfx_pipeline.components.anomalies_gate import DataAnomaliesError
    from tfx_pipeline.components.drift_gate import DataDriftError

    if not Path(config.metadata_path).exists():
        return None
    stopped_by = (span_verdicts.DRIFTED if isinstance(err, DataDriftError) else
                  span_verdicts.ANOMALOUS if isinstance(err, DataAnomaliesError) else None)
    if err is not None and stopped_by is None:
        return None
    run_id = metadata.latest_run_id(metadata.open_store(config.metadata_path), config.pipeline_name)
    found = span_verdicts.run_verdict(config.metadata_path, config.pipeline_name, run_id, stopped_by,
                                      error_line(err) if err is not None else "")
    if found is None:
        return None
    span, verdict, reason = found
    span_verdicts.record(config.metadata_path, config.pipeline_name, span, verdict, reason, by="pipeline run")
    return verdict


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    try:
        config, local = build_config(settings.resolve(SETTINGS, parse_args(argv), environ))
    except settings.SettingsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    log_file = output_dir(config) / LOG_FILE
    try:
        with exclusive(output_dir(config)):
            try:
                counts = preflight(config)
            except dataset.DatasetError as err:
                log_failure(log_file, err)
                print(f"error: {err}", file=sys.stderr)
                return 2
            span = span_to_ingest(config)
            source = (f"span {span} of {config.landing_root}" if span is not None else
                      f"the train files of {config.data_root}, landed as span 1 of {config.landing_root}")
            unlabelled = (f"{counts[dataset.UNLABELLED]:,} unlabelled images for batch inference; "
                          if dataset.UNLABELLED in counts else "")
            print(f"pipeline {config.pipeline_name}: {counts[dataset.TRAIN]:,} images of {source}; "
                  f"{counts[dataset.TEST]:,} test images in {config.data_root} ({config.input_format}); "
                  f"{unlabelled}log {log_file}", flush=True)
            started = time.perf_counter()
            failure = run_quietly(config, local.verbose,
                                  then=lambda: print_summary(config, time.perf_counter() - started))
            if failure is not None:
                print(f"error: {failure}\n(full log: {log_file})", file=sys.stderr)
                return 1
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.status
    return 0


if __name__ == "__main__":
    tf_env.freeze_heap_at_exit()
    sys.exit(main())
