"""The unattended loop on the full data, and the span-to-serving latency of a clean span.

Spans from the official train split (stratified draws, seed 0, no image in two spans):

    1-3  12,000 images each: normal
    4    6,000 with the labels of Pullover and Coat swapped (an upstream labelling error: neither
         the pixel nor the label distribution moves)
    5    6,000 without class 3 (label drift)
    6    1,673 images: small
    7    10,000: clean, the span whose path to users is timed

Each span is landed (`fmnist.landing`, as `fmnist land`) and run as `fmnist watch --once
--auto-release` runs it (cli.watch.run_span, then cli.watch.release_step), against a `fmnist
serve` on the release file in its own process (shadowing --shadow-traffic percent of stable's
requests to the canary, sending it --canary-traffic percent) while a load process sends
unlabelled requests over REST and gRPC. Prints one row per span (examples, verdict and reason,
window, golden accuracy vs stable, blessed, pushed, the canary decision and its checks, the
version answering unlabelled requests afterwards), then span 7's path to users step by step.

    .venv/bin/python benchmarks/unattended_loop.py [--data-dir ../shared/data/fashion-mnist]
        [--output-dir /tmp/fmnist-unattended] [--bake-seconds 120] [--bake-requests 200]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from fmnist import tf_env

tf_env.configure()
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import cpu_model, free_port, markdown_table  # noqa: E402

import local_runner  # noqa: E402
from fmnist import dataset, features, landing  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
PULLOVER, COAT, DRESS = 2, 4, 3
PLAN = [("1", 12_000, "normal"), ("2", 12_000, "normal"), ("3", 12_000, "normal"),
        ("4 (labels of 2 classes swapped)", 6_000, "swap"), ("5 (class 3 missing)", 6_000, "drop"),
        ("6 (small)", 1_673, "normal"), ("7 (clean, timed)", 10_000, "normal")]


def span_sources(data_dir: Path, work: Path) -> list[Path]:
    """The plan's spans as official-layout train pairs, stratified draws without overlap."""
    train = dataset.read_split(data_dir, dataset.TRAIN)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(train))
    order = order[np.argsort(train.labels[order], kind="stable")]  # by class, shuffled within
    position = np.empty(len(order), dtype=int)
    for cls in range(features.NUM_CLASSES):  # interleave the classes: any prefix is stratified
        members = order[train.labels[order] == cls]
        position[members] = np.arange(len(members)) * features.NUM_CLASSES + cls
    order = np.argsort(position, kind="stable")
    sources, start = [], 0
    for number, (_, size, kind) in enumerate(PLAN, start=1):
        rows = order[start:start + size]
        start += size
        labels = train.labels[rows].copy()
        if kind == "swap":
            labels[train.labels[rows] == PULLOVER], labels[train.labels[rows] == COAT] = COAT, PULLOVER
        if kind == "drop":
            rows, labels = rows[labels != DRESS], labels[labels != DRESS]
        directory = work / f"source-{number}"
        dataset.write_idx_split(directory, dataset.TRAIN, train.images[rows], labels)
        sources.append(directory)
    return sources


def load(rest: str, grpc: str, data_dir: str, rate: float, stop_file: str, out: str) -> None:
    """The load process: unlabelled Predict requests, one image each, alternating REST and gRPC,
    `rate` a second, until `stop_file` exists; writes {requests, failures, versions} to `out`."""
    from serving.client.clients import GrpcClient, RestClient

    images = dataset.read_split(data_dir, dataset.TEST).images.reshape(-1, *features.IMAGE_SHAPE)
    images = images.astype(np.float32)
    clients = (RestClient(rest, features.MODEL_NAME), GrpcClient(grpc, features.MODEL_NAME))
    sent, failures, versions = 0, [], {}
    while not Path(stop_file).exists():
        started = time.monotonic()
        try:
            version = clients[sent % 2].predict(images[sent % len(images)][None]).version
            versions[str(version)] = versions.get(str(version), 0) + 1
        except Exception as err:  # a failed request is the finding
            failures.append(repr(err)[:200])
        sent += 1
        time.sleep(max(0.0, 1 / rate - (time.monotonic() - started)))
    Path(out).write_text(json.dumps({"requests": sent, "failures": failures, "versions": versions}))


def answering(rest: str, label: str | None = None) -> int | None:
    """The version the server answers unlabelled requests (or `label`) with; None if none."""
    from serving.client.clients import ClientError, RestClient

    client = RestClient(rest, features.MODEL_NAME, label=label, timeout=10)
    try:
        return int(client.status()["model_version_status"][0]["version"])
    except (ClientError, KeyError, IndexError):
        return None
    finally:
        client.close()


def wait_for(predicate, timeout: float = 120.0) -> float:
    """Seconds until `predicate()` holds (polled every 0.1 s); raises after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError("the server did not get there in time")
        time.sleep(0.1)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "fashion-mnist")
    parser.add_argument("--output-dir", type=Path, default=Path("/tmp/fmnist-unattended"))
    parser.add_argument("--bake-seconds", type=float, default=120.0)
    parser.add_argument("--bake-requests", type=int, default=200)
    parser.add_argument("--shadow-traffic", type=float, default=20.0)
    parser.add_argument("--canary-traffic", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=20.0, help="load: requests a second")
    parser.add_argument("--load-only", nargs=6, metavar=("REST", "GRPC", "DATA", "RATE", "STOP", "OUT"),
                        help=argparse.SUPPRESS)
    args, runner_flags = parser.parse_known_args(argv)
    if args.load_only:
        rest, grpc, data, rate, stop, out = args.load_only
        load(rest, grpc, data, float(rate), stop, out)
        return 0

    from cli import watch
    from reports.spans import SpanRun, span_run
    from serving.release.labels import FileRelease
    from tfx_pipeline import metadata

    work = args.output_dir.resolve()
    config = local_runner.config_from_args(["--data-dir", str(args.data_dir), "--output-dir", str(work),
                                            "--landing-dir", str(work / "landing"), *runner_flags], environ={})
    options = watch.AutoReleaseSettings(auto_release=True, bake_seconds=args.bake_seconds,
                                        bake_requests=args.bake_requests)
    print(f"CPU: {cpu_model()}\nspans of {args.data_dir} under {work}", flush=True)
    sources = span_sources(args.data_dir, work / "sources")
    rest_port, grpc_port = free_port(), free_port()
    rest = f"127.0.0.1:{rest_port}"
    options = watch.AutoReleaseSettings(**{**options.__dict__, "server": rest})
    server = load_process = None
    stop_file, load_file = work / "stop-load", work / "load.json"
    stop_file.unlink(missing_ok=True)
    rows, timing = [], {}
    try:
        for number, source in enumerate(sources, start=1):
            label = PLAN[number - 1][0]
            landed_at = time.monotonic()
            landing.land(source, Path(config.landing_root))
            land_s = time.monotonic() - landed_at
            run_started = time.monotonic()
            line = watch.run_span(config.replace(span=number), verbose=False)
            run_s = time.monotonic() - run_started
            print(line, flush=True)
            summary = span_run(config.metadata_path, config.pipeline_name)
            if summary.span != number:  # refused before a run: the latest run is an earlier span's
                summary = SpanRun(run_id="", span=number, examples=None)
            steps = {run.component: run.seconds for run in metadata.component_runs(config.metadata_path,
                                                                                    config.pipeline_name)}
            if server is None and Path(local_runner.release_config_file(config)).exists():
                server = subprocess.Popen(
                    [sys.executable, "-m", "cli.main", "serve", "--model-config-file",
                     str(local_runner.release_config_file(config)), "--rest-port", str(rest_port), "--grpc-port",
                     str(grpc_port), "--poll-seconds", "0.5", "--shadow-traffic", str(args.shadow_traffic),
                     "--canary-traffic", str(args.canary_traffic)],
                    cwd=REPO, stdout=subprocess.DEVNULL, stderr=open(work / "serve.log", "w"))
                wait_for(lambda: answering(rest) is not None)
                load_process = subprocess.Popen(
                    [sys.executable, __file__, "--load-only", rest, f"127.0.0.1:{grpc_port}", str(args.data_dir),
                     str(args.rate), str(stop_file), str(load_file)], cwd=REPO)
            canary_s = None
            release = FileRelease(str(local_runner.release_config_file(config)))
            if summary.pushed_version and server is not None and (
                    str(release.status().canary) == summary.pushed_version):  # the first push is stable directly
                pushed = int(summary.pushed_version)
                canary_s = wait_for(lambda v=pushed: answering(rest, "canary") == v)
            decided_at = time.monotonic()
            decision = watch.release_step(config, options) if server is not None else None
            decide_s = time.monotonic() - decided_at
            if decision:
                print(decision, flush=True)
            promoted_s = None
            if decision and " promoted " in decision:
                pushed = int(summary.pushed_version)
                promoted_s = wait_for(lambda v=pushed: answering(rest, "stable") == v)
            if number == len(sources):
                timing = {"land": land_s, "run": run_s, "steps": steps, "canary answering": canary_s,
                          "bake + decision": decide_s, "promoted answering": promoted_s}
            rows.append([label, summary, decision, answering(rest, "stable") if server else None])
    finally:
        stop_file.touch()
        if load_process is not None:
            load_process.wait(timeout=60)
        if server is not None:
            server.terminate()
            server.wait(timeout=60)
    print()
    print(table(config, rows))
    print()
    print(timing_table(timing))
    if load_file.exists():
        found = json.loads(load_file.read_text())
        print(f"\nload: {found['requests']:,} unlabelled requests (REST and gRPC alternating, {args.rate:g}/s), "
              f"{len(found['failures'])} failed; answered by version: {found['versions']}")
        for failure in found["failures"][:5]:
            print(f"  {failure}")
    return 0


def table(config, rows: list) -> str:
    from tfx_pipeline import span_verdicts

    verdicts = span_verdicts.span_verdicts(config.metadata_path, config.pipeline_name)
    body = []
    for number, (label, s, decision, answered) in enumerate(rows, start=1):
        verdict = verdicts.get(number)
        golden = s.golden_line().removeprefix("golden ") if s.golden_accuracy is not None else "-"
        checks = decision.split("): ", 1)[-1] if decision else "-"
        action = (decision.split(" (stable")[0].removeprefix("release: ") if decision else "-")
        body.append([label, f"{s.examples:,}" if s.examples else "-",
                     f"{verdict.verdict}: {verdict.reason}" if verdict else "refused before the run",
                     "+".join(map(str, s.trained_spans or [])) or "-", golden,
                     {True: "yes", False: "no", None: "-"}[s.blessed], s.pushed_version or "-",
                     f"{action}: {checks}" if decision else "-",
                     str(answered or "-")])
    return markdown_table(["span", "examples", "verdict and reason", "window", "golden vs stable", "blessed",
                           "pushed", "canary analysis and decision", "answering after"], body)


def timing_table(timing: dict) -> str:
    if not timing:
        return "span 7 did not finish"
    rows = [["land (`fmnist land`)", f"{timing['land']:.1f}"]]
    rows += [[f"pipeline: {component}", f"{seconds:.1f}"] for component, seconds in timing["steps"].items()
             if seconds >= 0.5]
    rows += [["pipeline run, wall", f"{timing['run']:.1f}"]]
    total = timing["land"] + timing["run"]
    if timing["canary answering"] is not None:
        rows.append(["server answers the canary label", f"{timing['canary answering']:.1f}"])
        total += timing["canary answering"]
        rows.append(["**landed -> canary answering a share of traffic**", f"**{total:.1f}**"])
    rows.append(["bake + analysis + decision", f"{timing['bake + decision']:.1f}"])
    total += timing["bake + decision"]
    if timing["promoted answering"] is not None:
        rows.append(["server answers unlabelled requests with it", f"{timing['promoted answering']:.1f}"])
        total += timing["promoted answering"]
        rows.append(["**landed -> promoted, answering everyone**", f"**{total:.1f}**"])
    return markdown_table(["span 7 (10,000 images): step", "seconds"], rows)


if __name__ == "__main__":
    sys.exit(main())
