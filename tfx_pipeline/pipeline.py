"""create_pipeline(): the one definition of the Fashion-MNIST TFX pipeline, used by both runners.

ExampleGen (one landed span) -> StatisticsGen -> ExampleValidator -> AnomaliesGate (the schema)
-> DriftGate (vs the last accepted span) -> [rolling window: this span and the accepted ones,
local] -> Transform -> Trainer (warm-started from the latest blessed model) -> Evaluator (the
span's `eval` hold-out, vs the latest blessed model) and GoldenEvaluator (the golden set, vs the
stable model) -> BlessingGate (both) -> ServingValidator (the candidate in a real model server,
writing InfraBlessing and the warmup requests; TFX's InfraValidator where Docker answers) ->
Pusher, plus TestEvaluator: the same metrics on the reported `test` split (TestExampleGen: the
official test split less the golden set, fixed across spans), never gating a push. With
`bulk_inference_input`, also UnlabelledExampleGen
-> BulkInferrer: the candidate, once blessed, labels those images (PredictionLogs).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

from google.protobuf import json_format
from tfx import v1 as tfx
from tfx.dsl.components.base.base_node import BaseNode
from tfx.orchestration import data_types

from fmnist import dataset, features
from tfx_pipeline import eval_config
from tfx_pipeline.components import raw_example_gen as raw_example_gen_lib
from tfx_pipeline.components import vertex_spans
from tfx_pipeline.components.anomalies_gate import AnomaliesGate
from tfx_pipeline.components.blessing_gate import BlessingGate
from tfx_pipeline.components.drift_gate import DriftGate, SpanStatistics
from tfx_pipeline.components.raw_example_gen import span_example_gen
from tfx_pipeline.components.serving_validator import ServingValidator
from tfx_pipeline.config import (
    BLESSING_GATE_ID,
    BLESSING_SPLIT,
    BULK_INFERRER_ID,
    DRIFT_GATE_ID,
    EVALUATOR_ID,
    EXAMPLE_GEN_ID,
    GOLDEN_EVALUATOR_ID,
    GOLDEN_SEED,
    GOLDEN_SPLIT,
    PREPROCESSING_FN,
    PUSHER_ID,
    REPORTED_SPLIT,
    SCHEMA_DIR,
    SCHEMA_FILE,
    SERVING_VALIDATOR_ID,
    TEST_EVALUATOR_ID,
    TEST_EXAMPLE_GEN_ID,
    TRAINER_ID,
    TRAINER_RUN_FN,
    TUNER_FN,
    UNLABELLED_EXAMPLE_GEN_ID,
    PipelineConfig,
)
from tfx_pipeline.span_window import AcceptedSpanWindow, LatestTrainableSpanStatistics, StableModel

# The TF Serving release the TFX InfraValidator pulls: the one deploy/serving/Dockerfile serves with.
TF_SERVING_IMAGE_TAG = "2.16.1"
RANGE_CONFIG_PARAMETER = "range_config"  # Vertex runtime parameter: "" = the newest span


def range_config_value(span: int) -> str:
    """The RANGE_CONFIG_PARAMETER value that makes ExampleGen ingest `span` ("" for 0: the newest)."""
    fixed = raw_example_gen_lib.span_range_config(span)
    return json_format.MessageToJson(fixed, indent=None, preserving_proto_field_name=True) if fixed is not None else ""


def _range_config(config: PipelineConfig):
    """Which span ExampleGen ingests: `config.settings.span` (0: the newest). On Vertex a runtime
    parameter (RangeConfig JSON), so a trigger can name the span that landed."""
    if config.vertex is None:
        return raw_example_gen_lib.span_range_config(config.settings.span)
    return data_types.RuntimeParameter(name=RANGE_CONFIG_PARAMETER, ptype=str,
                                       default=range_config_value(config.settings.span))


def create_components(config: PipelineConfig, schema_dir: str = SCHEMA_DIR) -> list[BaseNode]:
    """The pipeline's nodes in run order, placed by `config.vertex` (local when None).

    `schema_dir` is where the curated schema lives for the runner (the image path on Vertex).
    Every component gets its settings from `config`; code is referenced by module path."""
    example_gen = _example_gen(config).with_id(EXAMPLE_GEN_ID)
    test_example_gen = raw_example_gen_lib.test_example_gen(
        config.data_root, config.input_format, config.settings.golden_share_spec, GOLDEN_SEED,
    ).with_id(TEST_EXAMPLE_GEN_ID)
    schema_gen = tfx.components.ImportSchemaGen(schema_file=os.path.join(schema_dir, SCHEMA_FILE))
    # With the schema, StatisticsGen treats the label as categorical: the drift gate's L-infinity
    # comparator needs its class frequencies.
    statistics_gen = tfx.components.StatisticsGen(examples=example_gen.outputs["examples"],
                                                  schema=schema_gen.outputs["schema"])
    example_validator = tfx.components.ExampleValidator(
        statistics=statistics_gen.outputs["statistics"], schema=schema_gen.outputs["schema"]
    )
    anomalies_gate = AnomaliesGate(anomalies=example_validator.outputs["anomalies"])

    if config.vertex is None:
        previous_span = tfx.dsl.Resolver(strategy_class=LatestTrainableSpanStatistics,
                                         config={"pipeline_name": config.pipeline_name},
                                         previous=tfx.dsl.Channel(type=SpanStatistics)
                                         ).with_id("previous_span_resolver")
        baseline = previous_span.outputs["previous"]
    else:  # tfx_pipeline.vertex_verdicts: Vertex compiles no custom resolver; a step reads the verdicts
        previous_span = vertex_spans.DriftBaseline(**_vertex_store(config)).with_id("previous_span")
        baseline = previous_span.outputs["baseline_statistics"]
    drift_gate = DriftGate(examples=example_gen.outputs["examples"], statistics=statistics_gen.outputs["statistics"],
                           schema=schema_gen.outputs["schema"],
                           previous=baseline).with_id(DRIFT_GATE_ID)
    drift_gate.add_upstream_node(anomalies_gate)

    if config.vertex is None:
        window = tfx.dsl.Resolver(
            strategy_class=AcceptedSpanWindow,
            config={"num_spans": config.settings.window_spans, "pipeline_name": config.pipeline_name},
            examples=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Examples,
                                     producer_component_id=EXAMPLE_GEN_ID, output_key="examples"),
        ).with_id("span_window_resolver")
        training_examples = window.outputs["examples"]
    else:
        window = vertex_spans.SpanWindow(examples=example_gen.outputs["examples"],
                                         num_spans=config.settings.window_spans,
                                         **_vertex_store(config)).with_id("span_window")
        training_examples = window.outputs["window_examples"]
    window.add_upstream_node(drift_gate)  # after this run's span was accepted

    transform = tfx.components.Transform(
        examples=training_examples,
        schema=schema_gen.outputs["schema"],
        preprocessing_fn=PREPROCESSING_FN,
        splits_config=tfx.proto.SplitsConfig(analyze=[dataset.TRAIN], transform=[dataset.TRAIN, dataset.EVAL]),
        # Transform's own pre- and post-transform statistics: nothing reads them (StatisticsGen
        # has the raw data's), and on the DirectRunner they held the data whole: 1.96 GB at 55,000
        # examples, growing 0.9 GB per 60,000 (~10 GB at 10x); without them, 1.1 GB flat.
        disable_statistics=True,
    )
    transform.add_upstream_node(drift_gate)

    # The BlessingGate's blessings only (locally; the Vertex compiler queries every blessed
    # ModelBlessing): an Evaluator's own blessing of a candidate the golden gate refused is not one.
    blessings = tfx.dsl.Channel(type=tfx.types.standard_artifacts.ModelBlessing,
                                producer_component_id=BLESSING_GATE_ID, output_key="blessing")
    models = tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model)
    model_resolver = tfx.dsl.Resolver(
        strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy, model=models, model_blessing=blessings,
    ).with_id("latest_blessed_model_resolver")
    stable_resolver = _stable_model_resolver(config, models, blessings).with_id("stable_model_resolver")

    training_inputs = dict(
        examples=transform.outputs["transformed_examples"],
        transform_graph=transform.outputs["transform_graph"],
        schema=schema_gen.outputs["schema"],
        train_args=tfx.proto.TrainArgs(splits=[dataset.TRAIN]),
        eval_args=tfx.proto.EvalArgs(splits=[dataset.EVAL]),
        custom_config=config.training.to_custom_config(),
    )
    tuner = _tuner(config, **training_inputs) if config.training.tuning.tune else None
    # Warm start: the latest blessed model's weights, when there is one (the Trainer's base_model).
    trainer = _trainer(config, hyperparameters=tuner.outputs["best_hyperparameters"] if tuner else None,
                       base_model=model_resolver.outputs["model"] if config.training.warm_start else None,
                       **training_inputs).with_id(TRAINER_ID)

    evaluator = tfx.components.Evaluator(
        examples=example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=model_resolver.outputs["model"],
        example_splits=[BLESSING_SPLIT],
        eval_config=eval_config.create_eval_config(config.thresholds),
    ).with_id(EVALUATOR_ID)
    golden_evaluator = tfx.components.Evaluator(
        examples=test_example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        baseline_model=stable_resolver.outputs["model"],
        example_splits=[GOLDEN_SPLIT],
        eval_config=eval_config.create_eval_config(config.thresholds, golden=True),
    ).with_id(GOLDEN_EVALUATOR_ID)
    blessing_gate = BlessingGate(model=trainer.outputs["model"], model_blessing=evaluator.outputs["blessing"],
                                 golden_blessing=golden_evaluator.outputs["blessing"],
                                 evaluation=evaluator.outputs["evaluation"],
                                 golden_evaluation=golden_evaluator.outputs["evaluation"],
                                 max_label_disagreement=config.thresholds.max_label_disagreement,
                                 confidence=config.thresholds.golden_confidence).with_id(BLESSING_GATE_ID)
    # One Evaluator per split: the TFX Evaluator flattens all its splits into one evaluation.
    # Without thresholds this one writes a ModelBlessing with no `blessed` property, so the
    # latest-blessed-model resolver (local and on Vertex) never takes it for a blessing.
    test_evaluator = tfx.components.Evaluator(
        examples=test_example_gen.outputs["examples"],
        model=trainer.outputs["model"],
        example_splits=[REPORTED_SPLIT],
        eval_config=eval_config.create_eval_config(thresholds=None),
    ).with_id(TEST_EVALUATOR_ID)

    # The candidate in a real model server before the push; the Pusher ships the validated copy
    # (with its warmup requests) from the InfraBlessing, and only if both blessings say yes.
    serving_validator = _serving_validator(config, model=trainer.outputs["model"],
                                           model_blessing=blessing_gate.outputs["blessing"],
                                           examples=test_example_gen.outputs["examples"]).with_id(SERVING_VALIDATOR_ID)
    pusher = _pusher(config, model_blessing=blessing_gate.outputs["blessing"],
                     infra_blessing=serving_validator.outputs["blessing"]).with_id(PUSHER_ID)
    unlabelled_example_gen, bulk_inferrer = _batch_inference(config, model=trainer.outputs["model"],
                                                             model_blessing=blessing_gate.outputs["blessing"])
    if config.vertex is not None:  # the Beam-heavy components run on Dataflow
        for component in (example_gen, test_example_gen, statistics_gen, transform, evaluator, golden_evaluator,
                          test_evaluator, unlabelled_example_gen, bulk_inferrer):
            if component is not None:
                component.with_beam_pipeline_args(config.vertex.dataflow_args())
    components = [example_gen, test_example_gen, schema_gen, statistics_gen, example_validator, anomalies_gate,
                  previous_span, drift_gate, window, transform, model_resolver, stable_resolver, tuner, trainer,
                  evaluator, golden_evaluator, blessing_gate, test_evaluator, serving_validator, pusher,
                  unlabelled_example_gen, bulk_inferrer]
    return [c for c in components if c is not None]


def components_upto(config: PipelineConfig, node_id: str, schema_dir: str = SCHEMA_DIR) -> list[BaseNode]:
    """The nodes of create_components(config) that `node_id` needs, transitively (the producers of
    its inputs and the nodes it is placed after), and the node itself, in run order: a pipeline
    that stops at that stage (benchmarks/scale.py times one stage at a time, the ones before it
    cached). Raises KeyError naming the nodes when `node_id` is not one of them."""
    components = create_components(config, schema_dir)
    by_id = {component.id: component for component in components}
    if node_id not in by_id:
        raise KeyError(f"no node {node_id!r} in the pipeline; its nodes are {', '.join(by_id)}")
    needed: set[str] = set()
    pending = [node_id]
    while pending:
        current = pending.pop()
        if current in needed:
            continue
        needed.add(current)
        node = by_id[current]
        for channel in node.inputs.values():
            pending.extend(channel.get_data_dependent_node_ids())
        pending.extend(upstream.id for upstream in node.upstream_nodes)  # add_upstream_node: order only
    return [component for component in components if component.id in needed]


def _batch_inference(config: PipelineConfig, model, model_blessing) -> tuple[BaseNode | None, BaseNode | None]:
    """UnlabelledExampleGen and BulkInferrer when `bulk_inference_input` names images to label, else
    (None, None). The BulkInferrer writes nothing for a model the Evaluator did not bless (its own rule)."""
    if not config.settings.bulk_inference_input:
        return None, None
    examples = raw_example_gen_lib.unlabelled_example_gen(config.settings.bulk_inference_input).with_id(
        UNLABELLED_EXAMPLE_GEN_ID)
    return examples, bulk_inferrer(examples.outputs["examples"], model, model_blessing).with_id(BULK_INFERRER_ID)


def bulk_inferrer(examples, model, model_blessing) -> BaseNode:
    """TFX's BulkInferrer on the `unlabelled` split through the Classify signature: PredictionLogs
    that carry the request's example (so its `id`) beside the ten class scores."""
    return tfx.components.BulkInferrer(
        examples=examples, model=model, model_blessing=model_blessing,
        data_spec=tfx.proto.DataSpec(example_splits=[dataset.UNLABELLED]),
        model_spec=tfx.proto.ModelSpec(model_signature_name=[features.CLASSIFY_SIGNATURE]))


def _vertex_store(config: PipelineConfig) -> dict[str, str]:
    """Where the Vertex steps of tfx_pipeline.components.vertex_spans find the span verdicts."""
    return {"project": config.vertex.project, "region": config.vertex.region, "pipeline_name": config.pipeline_name}


def vertex_exit_handler(config: PipelineConfig) -> BaseNode:
    """The step that records each Vertex run's span verdict, failed runs included (the runner's
    exit handler: it runs after the pipeline's last task, whatever the run's state)."""
    from tfx.orchestration.kubeflow.decorators import FinalStatusStr

    return vertex_spans.SpanVerdictRecorder(final_status=FinalStatusStr(), **_vertex_store(config)).with_id(
        "span_verdict")


def _stable_model_resolver(config: PipelineConfig, models, blessings) -> BaseNode:
    """The golden gate's baseline: locally the model the release labels stable (StableModel reads
    the release file beside the push directory); on Vertex, whose compiler takes no custom
    strategy, the latest blessed model."""
    if config.vertex is not None:
        return tfx.dsl.Resolver(strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
                                model=models, model_blessing=blessings)
    release_file = os.path.join(os.path.dirname(config.serving_model_dir), features.RELEASE_CONFIG_FILE)
    pushed = tfx.dsl.Channel(type=tfx.types.standard_artifacts.PushedModel, producer_component_id=PUSHER_ID,
                             output_key="pushed_model")
    return tfx.dsl.Resolver(strategy_class=StableModel, config={"release_file": release_file},
                            model=models, model_blessing=blessings, pushed_model=pushed)


def _example_gen(config: PipelineConfig) -> BaseNode:
    """One span: from the landing directory, or from BigQuery with --bigquery-table."""
    if not config.settings.bigquery_table:
        return span_example_gen(landing_root=config.landing_root, eval_holdout=config.settings.eval_holdout_spec,
                                seed=config.training.seed, range_config=_range_config(config))
    from tfx_pipeline.components.bigquery_example_gen import bigquery_example_gen

    return bigquery_example_gen(
        config.settings.bigquery_table, config.settings.bigquery_eval_percent,
        range_config=raw_example_gen_lib.span_range_config(config.settings.span),
        # Vertex runs no ExampleGen driver for queries, so the span is written into the query now.
        compiled_span=config.settings.span if config.vertex is not None else None)


# -- placement: local by default; Vertex Training and a Vertex endpoint with config.vertex --
def _vertex_job_config(config: PipelineConfig) -> dict[str, Any]:
    from tfx.v1.extensions import google_cloud_ai_platform as vertex

    return {vertex.ENABLE_VERTEX_KEY: True, vertex.VERTEX_REGION_KEY: config.vertex.region}


def _trainer(config: PipelineConfig, custom_config: dict[str, Any], **inputs) -> BaseNode:
    if config.vertex is None:
        return tfx.components.Trainer(run_fn=TRAINER_RUN_FN, custom_config=custom_config, **inputs)
    from tfx.v1.extensions import google_cloud_ai_platform as vertex

    training_args = {"project": config.vertex.project, "worker_pool_specs": config.vertex.worker_pool_specs()}
    if config.vertex.service_account:
        training_args["service_account"] = config.vertex.service_account
    return vertex.Trainer(run_fn=TRAINER_RUN_FN, custom_config={
        **custom_config, **_vertex_job_config(config), vertex.TRAINING_ARGS_KEY: training_args}, **inputs)


def _tuner(config: PipelineConfig, custom_config: dict[str, Any], **inputs) -> BaseNode:
    if config.vertex is None:
        return tfx.components.Tuner(tuner_fn=TUNER_FN, custom_config=custom_config, **inputs)
    from tfx.v1.extensions import google_cloud_ai_platform as vertex

    parallel_trials = 3
    return vertex.Tuner(
        tuner_fn=TUNER_FN, tune_args=tfx.proto.TuneArgs(num_parallel_trials=parallel_trials),
        custom_config={
            **custom_config, **_vertex_job_config(config),
            vertex.experimental.TUNING_ARGS_KEY: {
                "project": config.vertex.project,
                "job_spec": {"worker_pool_specs": config.vertex.worker_pool_specs()},
            },
            vertex.experimental.REMOTE_TRIALS_WORKING_DIR_KEY: f"{config.vertex.bucket}/tuner",
        },
        **inputs)


def docker_daemon_answers() -> bool:
    """Whether a local Docker daemon is reachable (what TFX's InfraValidator needs locally)."""
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def uses_tfx_infra_validator(config: PipelineConfig) -> bool:
    """TFX's InfraValidator needs Docker (or Kubernetes) beside the component, which Vertex Pipelines
    does not give it: there, and without a Docker daemon, the project's ServingValidator runs."""
    choice = config.serving_validation.serving_validator
    return choice == "tfx" or (choice == "auto" and config.vertex is None and docker_daemon_answers())


def _serving_validator(config: PipelineConfig, model, model_blessing, examples) -> BaseNode:
    settings = config.serving_validation
    if uses_tfx_infra_validator(config):
        # TFX's own: TF Serving in local Docker, Classify requests from the test split, warmup written.
        return tfx.components.InfraValidator(
            model=model, examples=examples,
            serving_spec=tfx.proto.ServingSpec(
                tensorflow_serving=tfx.proto.TensorFlowServing(tags=[TF_SERVING_IMAGE_TAG]),
                local_docker=tfx.proto.LocalDockerConfig(), model_name=features.MODEL_NAME),
            validation_spec=tfx.proto.ValidationSpec(
                max_loading_time_seconds=int(settings.validation_load_timeout), num_tries=1),
            request_spec=tfx.proto.RequestSpec(
                tensorflow_serving=tfx.proto.TensorFlowServingRequestSpec(
                    signature_names=[features.CLASSIFY_SIGNATURE]),
                split_name=REPORTED_SPLIT, num_examples=settings.warmup_requests, make_warmup=True))
    return ServingValidator(
        model=model, model_blessing=model_blessing, examples=examples, split=REPORTED_SPLIT,
        num_requests=settings.validation_requests, warmup_requests=settings.warmup_requests,
        p99_budget_ms=settings.validation_p99_ms, load_timeout_s=settings.validation_load_timeout,
        tolerance=settings.validation_tolerance)


def _pusher(config: PipelineConfig, **inputs) -> BaseNode:
    if config.vertex is None:
        return tfx.components.Pusher(push_destination=tfx.proto.PushDestination(
            filesystem=tfx.proto.PushDestination.Filesystem(base_directory=config.serving_model_dir)), **inputs)
    from tfx.v1.extensions import google_cloud_ai_platform as vertex

    return vertex.Pusher(custom_config={
        **_vertex_job_config(config),
        vertex.VERTEX_CONTAINER_IMAGE_URI_KEY: config.vertex.serving_image,
        vertex.SERVING_ARGS_KEY: {
            "project_id": config.vertex.project,
            "endpoint_name": config.vertex.endpoint_name,
            "machine_type": config.vertex.serving_machine_type,
            "min_replica_count": 1,
            "traffic_percentage": config.vertex.traffic_percentage,  # < 100: a canary beside the current model
        },
    }, **inputs)


def create_pipeline(
    config: PipelineConfig,
    metadata_connection_config: Any | None = None,
    components: list[BaseNode] | None = None,
) -> tfx.dsl.Pipeline:
    """The TFX Pipeline both runners run: `components` default to create_components(config);
    `metadata_connection_config` is the local runner's SQLite store (None on Vertex)."""
    return tfx.dsl.Pipeline(
        pipeline_name=config.pipeline_name,
        pipeline_root=config.pipeline_root,
        components=components if components is not None else create_components(config),
        enable_cache=config.enable_cache,
        metadata_connection_config=metadata_connection_config,
        beam_pipeline_args=list(config.beam_pipeline_args),
    )
