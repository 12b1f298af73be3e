"""Compiles the Fashion-MNIST pipeline for Vertex AI Pipelines (KubeflowV2DagRunner) and, with
`--submit`, runs it: ExampleGen, StatisticsGen, Transform and both Evaluators on Dataflow,
Trainer (and Tuner) on Vertex Training, Pusher to a Vertex endpoint, every component in the
project image.

    python kubeflow_runner.py --project P --region europe-west4 --bucket gs://B \\
        --image europe-west4-docker.pkg.dev/P/fashion-mnist/pipeline:TAG            # compile only
    python kubeflow_runner.py ... --submit --wait                                     # and run it

Settings come from flags, else FMNIST_* environment variables, else `--config FILE` (YAML keys
named like the flags, e.g. `training_replicas: 2`), else their declared defaults; the same
declarations (tfx_pipeline/config.py, modules/config.py) drive local_runner.py. Compiling needs
no network and no GCP.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from fmnist import settings, tf_env
from fmnist.settings import setting
from tfx_pipeline.config import PIPELINE_NAME, PipelineConfig, PipelineSettings, VertexConfig

IMAGE_WORKDIR = "/pipeline"  # the Dockerfile's WORKDIR: where the image holds schema/ and the code


@dataclass(frozen=True)
class VertexRunSettings:
    """Settings of the Vertex runner only (PipelineSettings and VertexConfig hold the rest)."""

    data_root: str | None = setting(None, "official Fashion-MNIST files: the test split "
                                          "(default: BUCKET/data/fashion-mnist)")
    landing_root: str | None = setting(None, "landed spans, span-N/ (default: BUCKET/landing)")
    output: Path = setting(Path(f"{PIPELINE_NAME}-vertex.json"), "where the compiled pipeline JSON goes")
    submit: bool = setting(False, "submit the compiled pipeline to Vertex AI Pipelines")
    wait: bool = setting(False, "with --submit: block until the run ends")


SETTINGS = (PipelineSettings, VertexConfig, VertexRunSettings)


TFX_DAG = "tfx-dag"  # the sub-DAG TFX puts every task in when the pipeline has an exit handler


def build_parser() -> argparse.ArgumentParser:
    """Flags generated from the setting declarations (each also an FMNIST_* variable and YAML key)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_arguments(parser, PipelineSettings, title="pipeline")
    settings.add_arguments(parser, VertexConfig, title="Google Cloud placement")
    settings.add_arguments(parser, VertexRunSettings, title="this runner")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    return build_parser().parse_args(argv)


def build_config(values: settings.Values) -> tuple[PipelineConfig, VertexRunSettings]:
    """The PipelineConfig for Vertex (everything under the bucket) and this runner's settings."""
    vertex: VertexConfig = values.build(VertexConfig)
    run: VertexRunSettings = values.build(VertexRunSettings)
    bucket = vertex.bucket.rstrip("/")
    config = PipelineConfig(
        pipeline_root=f"{bucket}/pipeline_root",
        data_root=run.data_root or f"{bucket}/data/fashion-mnist",
        landing_root=run.landing_root or f"{bucket}/landing",
        serving_model_dir=f"{bucket}/serving_model",
        settings=values.build(PipelineSettings),
        # Pipeline-wide Beam args for anything not placed on Dataflow explicitly.
        beam_pipeline_args=(f"--project={vertex.project}", f"--temp_location={vertex.temp_location}"),
        vertex=vertex,
    )
    return config, run


def config_from_args(argv: list[str] | None = None,
                     environ: Mapping[str, str] | None = None) -> tuple[PipelineConfig, VertexRunSettings]:
    """Flags (then FMNIST_* variables, then the --config file) -> (PipelineConfig, runner settings)."""
    return build_config(settings.resolve(SETTINGS, parse_args(argv), environ))


def compile_pipeline(config: PipelineConfig, output: Path) -> Path:
    """Writes the Vertex pipeline JSON. Offline: code is referenced by module path in the image."""
    tf_env.configure()
    from tfx import v1 as tfx

    from tfx_pipeline.pipeline import create_components, create_pipeline, vertex_exit_handler

    components = create_components(config, schema_dir=f"{IMAGE_WORKDIR}/schema")
    runner = tfx.orchestration.experimental.KubeflowV2DagRunner(
        config=tfx.orchestration.experimental.KubeflowV2DagRunnerConfig(default_image=config.vertex.image),
        output_filename=str(output),
    )
    runner.set_exit_handler(vertex_exit_handler(config))  # records the span's verdict, whatever the run did
    runner.run(create_pipeline(config, components=components), write_out=True)
    pipeline = json.loads(output.read_text())
    output.write_text(json.dumps(forward_parameters_to_tfx_dag(pipeline), indent=2, sort_keys=True))
    return output


def forward_parameters_to_tfx_dag(pipeline: dict) -> dict:
    """Passes the pipeline's runtime parameters (range_config) into the `tfx-dag` sub-DAG.

    With an exit handler, TFX 1.16's Vertex compiler moves every task into a sub-DAG component
    `tfx-dag` but declares the runtime parameters on the root only (kubeflow/v2/pipeline_builder.py,
    build()), so ExampleGen's `componentInputParameter: range_config` would name a parameter its
    DAG does not have. KFP's IR passes it down as an input of the sub-DAG and of the task that runs it."""
    spec = pipeline["pipelineSpec"]
    parameters = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    if TFX_DAG not in spec["components"] or not parameters:
        return pipeline
    spec["components"][TFX_DAG].setdefault("inputDefinitions", {})["parameters"] = dict(parameters)
    task_inputs = spec["root"]["dag"]["tasks"][TFX_DAG].setdefault("inputs", {}).setdefault("parameters", {})
    for name in parameters:
        task_inputs[name] = {"componentInputParameter": name}
    return pipeline


def console_link(resource_name: str) -> str:
    """The Cloud console page of a PipelineJob, from its resource name
    (projects/P/locations/L/pipelineJobs/ID): no private SDK call needed."""
    parts = resource_name.split("/")
    if len(parts) != 6 or parts[0] != "projects" or parts[2] != "locations" or parts[4] != "pipelineJobs":
        raise ValueError(f"not a PipelineJob resource name: {resource_name!r}")
    project, location, job_id = parts[1], parts[3], parts[5]
    return (f"https://console.cloud.google.com/vertex-ai/locations/{quote(location)}/pipelines/runs/"
            f"{quote(job_id)}?project={quote(project)}")


def submit(config: PipelineConfig, template: Path, wait: bool) -> str:
    """Starts a Vertex AI PipelineJob from the compiled template; returns its console link."""
    from google.cloud import aiplatform

    from tfx_pipeline.pipeline import RANGE_CONFIG_PARAMETER, range_config_value

    vertex = config.vertex
    root = json.loads(template.read_text())["pipelineSpec"]["root"]
    declared = root.get("inputDefinitions", {}).get("parameters", {})
    # Explicit: TFX 1.16 writes no default for a runtime parameter into the template. (A BigQuery
    # pipeline has the span compiled into its query and no such parameter.)
    parameter_values = ({RANGE_CONFIG_PARAMETER: range_config_value(config.settings.span)}
                        if RANGE_CONFIG_PARAMETER in declared else {})
    aiplatform.init(project=vertex.project, location=vertex.region, staging_bucket=vertex.bucket)
    job = aiplatform.PipelineJob(
        display_name=config.pipeline_name,
        template_path=str(template),
        pipeline_root=config.pipeline_root,
        parameter_values=parameter_values,
        enable_caching=config.enable_cache,
        project=vertex.project,
        location=vertex.region,
    )
    job.submit(service_account=vertex.service_account)
    link = console_link(job.resource_name)
    print(f"submitted {job.resource_name}\nconsole: {link}", flush=True)
    if wait:
        job.wait()
        print(f"finished: {job.state}")
    return link


def main(argv: list[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    try:
        config, run = config_from_args(argv, environ)
    except settings.SettingsError as err:
        print(f"kubeflow_runner: error: {err}", file=sys.stderr)
        return 2
    template = compile_pipeline(config, run.output)
    print(f"compiled {config.pipeline_name} for Vertex AI Pipelines: {template}")
    if run.submit:
        submit(config, template, run.wait)
    return 0


if __name__ == "__main__":
    sys.exit(main())
