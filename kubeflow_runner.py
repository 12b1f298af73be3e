"""Compiles the Fashion-MNIST pipeline for Vertex AI Pipelines (KubeflowV2DagRunner) and, with
`--submit`, runs it: ExampleGen, StatisticsGen, Transform and both Evaluators on Dataflow,
Trainer (and Tuner) on Vertex Training, Pusher to a Vertex endpoint, every component in the
project image.

    python kubeflow_runner.py --project P --region europe-west4 --bucket gs://B \\
        --image europe-west4-docker.pkg.dev/P/fashion-mnist/pipeline:TAG            # compile only
    python kubeflow_runner.py ... --submit --wait                                     # and run it

Settings come from flags, else FMNIST_* environment variables, else `--config FILE` (YAML keys
named like the flags, e.g. `training_replicas: 2`). Compiling needs no network and no GCP.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from tfx_pipeline.config import PIPELINE_NAME, PipelineConfig, TuningConfig, VertexConfig

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGE_WORKDIR = "/pipeline"  # the Dockerfile's WORKDIR: where the image holds schema/ and the code
REQUIRED = ("project", "region", "bucket", "image")
ENV_PREFIX = "FMNIST_"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=None, help="YAML file with any of the settings below")
    gcp = parser.add_argument_group("Google Cloud")
    gcp.add_argument("--project", help=f"GCP project ({ENV_PREFIX}PROJECT)")
    gcp.add_argument("--region", help=f"region for Vertex, Dataflow and the endpoint ({ENV_PREFIX}REGION)")
    gcp.add_argument("--bucket", help=f"gs://BUCKET for the pipeline root, temp files, data ({ENV_PREFIX}BUCKET)")
    gcp.add_argument("--image", help=f"project image in Artifact Registry ({ENV_PREFIX}IMAGE)")
    gcp.add_argument("--service-account",
                     help=f"pipeline, Dataflow and training service account ({ENV_PREFIX}SERVICE_ACCOUNT)")
    gcp.add_argument("--data-root", help="raw Fashion-MNIST files (default: BUCKET/data/fashion-mnist)")
    gcp.add_argument("--pipeline-name", default=PIPELINE_NAME)
    placement = parser.add_argument_group("placement")
    placement.add_argument("--dataflow-machine-type")
    placement.add_argument("--dataflow-max-workers", type=int)
    placement.add_argument("--training-machine-type")
    placement.add_argument("--training-replicas", type=int, help=">1: multi-worker training")
    placement.add_argument("--accelerator-type", help="e.g. NVIDIA_TESLA_T4")
    placement.add_argument("--accelerator-count", type=int)
    placement.add_argument("--endpoint-name")
    placement.add_argument("--serving-image", help="Vertex pre-built TF2 serving container")
    placement.add_argument("--traffic-percentage", type=int, help="endpoint traffic for the new model (<100: canary)")
    run = parser.add_argument_group("run")
    run.add_argument("--epochs", type=int)
    run.add_argument("--tune", action="store_true")
    run.add_argument("--no-cache", action="store_true")
    run.add_argument("--output", type=Path, default=Path(f"{PIPELINE_NAME}-vertex.json"), help="compiled JSON")
    run.add_argument("--submit", action="store_true", help="submit the compiled pipeline to Vertex AI")
    run.add_argument("--wait", action="store_true", help="with --submit: block until the run ends")
    return parser.parse_args(argv)


def settings(args: argparse.Namespace, environ: dict[str, str] | None = None) -> dict[str, Any]:
    """Flags over FMNIST_* environment variables over the --config file."""
    import yaml

    environ = os.environ if environ is None else environ
    merged: dict[str, Any] = {}
    if args.config is not None:
        merged.update(yaml.safe_load(args.config.read_text()) or {})
    for name in vars(args):
        if f"{ENV_PREFIX}{name.upper()}" in environ:
            merged[name] = environ[f"{ENV_PREFIX}{name.upper()}"]
    merged.update({k: v for k, v in vars(args).items() if v is not None and v is not False})
    missing = [f"--{name.replace('_', '-')}" for name in REQUIRED if not merged.get(name)]
    if missing:
        raise SystemExit(f"kubeflow_runner: missing {', '.join(missing)} (flag, {ENV_PREFIX}* variable or --config)")
    if not str(merged["bucket"]).startswith("gs://"):
        raise SystemExit(f"kubeflow_runner: --bucket must be a gs:// URI, got {merged['bucket']!r}")
    return merged


def build_config(values: dict[str, Any]) -> PipelineConfig:
    # Environment variables arrive as strings: convert where the field's default is a number.
    vertex = VertexConfig(**{
        f.name: int(values[f.name]) if isinstance(f.default, int) else values[f.name]
        for f in dataclasses.fields(VertexConfig) if f.name in values
    })
    bucket = vertex.bucket.rstrip("/")
    hparams = {"epochs": int(values["epochs"])} if values.get("epochs") else {}
    return PipelineConfig(
        pipeline_name=values.get("pipeline_name", PIPELINE_NAME),
        pipeline_root=f"{bucket}/pipeline_root",
        data_root=values.get("data_root") or f"{bucket}/data/fashion-mnist",
        serving_model_dir=f"{bucket}/serving_model",
        hparams=hparams,
        tuning=TuningConfig(enabled=bool(values.get("tune"))),
        # Pipeline-wide Beam args for anything not placed on Dataflow explicitly.
        beam_pipeline_args=(f"--project={vertex.project}", f"--temp_location={vertex.temp_location}"),
        enable_cache=not values.get("no_cache"),
        vertex=vertex,
    )


def compile_pipeline(config: PipelineConfig, output: Path) -> Path:
    """Writes the Vertex pipeline JSON. Offline: code is referenced by module path in the image."""
    from tfx import v1 as tfx

    from tfx_pipeline.pipeline import create_components, create_pipeline

    components = create_components(config, schema_dir=f"{IMAGE_WORKDIR}/schema")
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=config.vertex.image),
        output_filename=str(output),
    )
    runner.run(create_pipeline(config, components=components), write_out=True)
    return output


def submit(config: PipelineConfig, template: Path, wait: bool) -> str:
    """Starts a Vertex AI PipelineJob from the compiled template; returns its console link."""
    from google.cloud import aiplatform

    vertex = config.vertex
    aiplatform.init(project=vertex.project, location=vertex.region, staging_bucket=vertex.bucket)
    job = aiplatform.PipelineJob(
        display_name=config.pipeline_name,
        template_path=str(template),
        pipeline_root=config.pipeline_root,
        enable_caching=config.enable_cache,
        project=vertex.project,
        location=vertex.region,
    )
    job.submit(service_account=vertex.service_account)
    link = job._dashboard_uri()
    print(f"submitted {job.resource_name}\nconsole: {link}", flush=True)
    if wait:
        job.wait()
        print(f"finished: {job.state}")
    return link


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config = build_config(settings(args))
    template = compile_pipeline(config, args.output)
    print(f"compiled {config.pipeline_name} for Vertex AI Pipelines: {template}")
    if args.submit:
        submit(config, template, args.wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
