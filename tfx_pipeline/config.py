"""The one typed configuration object both runners build and create_pipeline() consumes."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fmnist import bigquery, dataset, paths
from fmnist.features import MAX_WARMUP_RECORDS
from fmnist.settings import SettingsError, setting
from modules.config import TrainingConfig

PIPELINE_NAME = paths.PIPELINE_NAME
# The curated schema in a checkout (or the image's workdir); light to import for its users, such
# as `fmnist monitor`, which need the file but not the pipeline.
SCHEMA_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "schema")
SCHEMA_FILE = "schema.pbtxt"
METADATA_FILE = paths.METADATA_FILE  # the local runner's ML Metadata store, beside pipeline_root

# Module paths, not files: the code is installed (locally with `pip install -e .`, on Vertex
# baked into the image), so nothing is packaged into the pipeline root at compile time.
PREPROCESSING_FN = "modules.preprocessing.preprocessing_fn"
TRAINER_RUN_FN = "modules.trainer.run_fn"
TUNER_FN = "modules.tuner.tuner_fn"

BLESSING_SPLIT = dataset.EVAL  # thresholds are judged here (early stopping also watches it)
GOLDEN_SPLIT = dataset.GOLDEN  # part of the official test split: candidate vs stable, decides too
REPORTED_SPLIT = dataset.TEST  # the rest of the official test split: measured for people, never decides
# The golden set's draw is fixed for the project's life (not the training seed): a changed seed
# would judge candidates on another set and report accuracy on images the gate has seen.
GOLDEN_SEED = 20261205
# The eval hold-out, as a fraction of a span: at least EVAL_HOLDOUT_FLOOR examples (20 a class on
# average, so a class recall moves in steps of 5 points at worst), at most EVAL_HOLDOUT_CAP (the
# hold-out of the full 60,000-image train split before spans, which keeps Evaluator time flat).
EVAL_HOLDOUT_FLOOR = 200
EVAL_HOLDOUT_CAP = 5000
EVALUATOR_ID = "Evaluator"
GOLDEN_EVALUATOR_ID = "GoldenEvaluator"
BLESSING_GATE_ID = "BlessingGate"  # the blessing the Pusher and the next runs read: eval AND golden
TEST_EVALUATOR_ID = "TestEvaluator"
EXAMPLE_GEN_ID = "ExampleGen"  # one landed span: train + eval
TEST_EXAMPLE_GEN_ID = "TestExampleGen"  # the official test split, the same for every span
DRIFT_GATE_ID = "DriftGate"
TRAINER_ID = "Trainer"
SERVING_VALIDATOR_ID = "ServingValidator"
PUSHER_ID = "Pusher"
UNLABELLED_EXAMPLE_GEN_ID = "UnlabelledExampleGen"  # with bulk_inference_input: the images to label
BULK_INFERRER_ID = "BulkInferrer"  # labels them with the blessed candidate (PredictionLogs)


@dataclass(frozen=True)
class EvaluationThresholds:
    """Blessing rules. Scoped deliberately: TFMA applies an unscoped threshold to every slice."""

    min_accuracy: float = setting(0.90, "blessing floor: accuracy on the whole eval split")
    min_class_recall: float = setting(0.70, "blessing floor: each class's recall on eval")
    max_accuracy_drop: float = setting(0.005, "blessing: largest accuracy drop vs the latest blessed model")
    max_golden_drop: float = setting(0.003, "golden gate: largest drop in golden-set accuracy vs the stable model")
    max_golden_class_drop: float = setting(0.03, "golden gate: largest drop in any class's golden-set recall vs "
                                                 "the stable model")
    golden_confidence: float = setting(0.95, "golden gate: refuse only when a drop exceeds its margin at this "
                                             "one-sided confidence (paired, same golden images)")
    max_label_disagreement: float = setting(0.15, "label check: largest fall of a class's recall by the latest "
                                                  "blessed model on a span's hold-out below the stable model's "
                                                  "golden recall (its upper bound at golden_confidence)")

    def __post_init__(self) -> None:
        if not 0.5 <= self.golden_confidence < 1:
            raise SettingsError(f"golden_confidence is a one-sided confidence in [0.5, 1), "
                                f"got {self.golden_confidence:g}")
        if not 0 <= self.max_label_disagreement <= 1:
            raise SettingsError(f"max_label_disagreement is a fall in recall in [0, 1], "
                                f"got {self.max_label_disagreement:g}")


SERVING_VALIDATORS = ("auto", "project", "tfx")


@dataclass(frozen=True)
class ServingValidationConfig:
    """The serving check between Evaluator and Pusher (components/serving_validator.py)."""

    serving_validator: str = setting(
        "auto", "who serves the candidate before the push: tfx (TFX InfraValidator in local Docker), project "
                "(this project's step: tensorflow_model_server if on PATH, else `fmnist serve`); auto: tfx when "
                "a Docker daemon answers and the run is local, else project", choices=SERVING_VALIDATORS)
    validation_requests: int = setting(24, "requests sent to the candidate over each of gRPC and REST")
    validation_p99_ms: float = setting(1000.0, "serving validation: p99 latency budget per request, ms")
    validation_load_timeout: float = setting(300.0, "serving validation: seconds the candidate has to load")
    validation_tolerance: float = setting(1e-5, "serving validation: largest difference from the in-process model")
    warmup_requests: int = setting(64, "warmup requests shipped in the pushed model (assets.extra, 1-1000)")

    def __post_init__(self) -> None:
        if not 1 <= self.warmup_requests <= MAX_WARMUP_RECORDS:
            raise SettingsError(f"warmup_requests must be within 1..{MAX_WARMUP_RECORDS} (TF Serving's limit), "
                                f"got {self.warmup_requests}")
        if self.validation_requests < 1:
            raise SettingsError(f"validation_requests must be at least 1, got {self.validation_requests}")


@dataclass(frozen=True)
class PipelineSettings:
    """The settings both runners take (declared once; see fmnist.settings for flags, FMNIST_*
    variables and the YAML file)."""

    config: Path | None = setting(None, "YAML file with any of these settings, keys named like the flags")
    pipeline_name: str = setting(PIPELINE_NAME, "pipeline name: ML Metadata context and output folder")
    format: str = setting(dataset.IDX, "raw file format: idx (official files) or csv (Kaggle layout)",
                          choices=dataset.INPUT_FORMATS)
    eval_holdout: float = setting(0.1, f"stratified eval hold-out of each span: a fraction (< 1; at least "
                                       f"{EVAL_HOLDOUT_FLOOR}, at most {EVAL_HOLDOUT_CAP} examples) or a count")
    golden_share: float = setting(0.5, "share of the official test split held out as the golden set (stratified, "
                                       "fixed seed; no span trains on it); the rest is the reported test split")
    span: int = setting(0, "span to ingest from the landing directory (0: the newest landed span)")
    window_spans: int = setting(3, "rolling window: train on the newest N spans that passed the drift gate")
    bigquery_table: str | None = setting(None, "read the span from this BigQuery table (PROJECT.DATASET.TABLE, "
                                               "see `fmnist bq-load`) instead of the landing directory")
    bigquery_eval_percent: int = setting(10, "with --bigquery-table: the hash-bucket share of a span held out as eval")
    bulk_inference_input: str | None = setting(
        None, "batch inference: a directory of IDX images files without labels (*-images-idx3-ubyte.gz); the "
              "blessed model labels them (BulkInferrer), see `fmnist predictions export`")
    no_cache: bool = setting(False, "re-run every component (default: unchanged inputs come from the cache)")
    training: TrainingConfig = field(default_factory=TrainingConfig)
    thresholds: EvaluationThresholds = field(default_factory=EvaluationThresholds)
    serving_validation: ServingValidationConfig = field(default_factory=ServingValidationConfig)

    def __post_init__(self) -> None:
        for name in ("eval_holdout", "golden_share"):
            try:
                getattr(self, f"{name}_spec")
            except dataset.DatasetError as err:
                raise SettingsError(f"{name}: {err}") from None
        if not 0 < self.golden_share < 1:
            raise SettingsError(f"golden_share is a fraction of the test split in (0, 1), got {self.golden_share:g}")
        if self.bigquery_table:
            try:
                bigquery.check_table_id(self.bigquery_table)
            except dataset.DatasetError as err:
                raise SettingsError(f"bigquery_table: {err}") from None
            if self.span < 1:  # ExampleGen's query driver reads span 0 without one
                raise SettingsError("bigquery_table needs span N >= 1: a query's newest span is not looked up")


    @property
    def eval_holdout_spec(self) -> dataset.HoldoutSpec:
        return dataset.HoldoutSpec(self.eval_holdout, EVAL_HOLDOUT_FLOOR, EVAL_HOLDOUT_CAP)

    @property
    def golden_share_spec(self) -> dataset.HoldoutSpec:
        return dataset.HoldoutSpec(self.golden_share)


@dataclass(frozen=True)
class VertexConfig:
    """Where the work runs on Google Cloud (kubeflow_runner.py). Absent: everything runs locally."""

    project: str = setting(None, "GCP project", required=True)
    region: str = setting(None, "region of Vertex AI, Dataflow and the endpoint", required=True)
    bucket: str = setting(None, "gs://BUCKET: pipeline root, Dataflow temp files, pushed models", required=True)
    image: str = setting(None, "the project image (Dockerfile) in Artifact Registry", required=True)
    service_account: str | None = setting(None, "runs the pipeline, Dataflow workers and training jobs")
    dataflow_machine_type: str = setting("n1-standard-4", "Dataflow worker machine type")
    dataflow_max_workers: int = setting(10, "Dataflow autoscaling limit")
    training_machine_type: str = setting("n1-standard-8", "Vertex Training machine type")
    training_replicas: int = setting(1, "Vertex Training replicas (>1: MultiWorkerMirroredStrategy)")
    accelerator_type: str | None = setting(None, "training GPU, e.g. NVIDIA_TESLA_T4 (MirroredStrategy)")
    accelerator_count: int = setting(0, "training GPUs per replica")
    endpoint_name: str = setting("fashion-mnist", "Vertex endpoint the Pusher deploys to")
    # The newest pre-built TF serving image the aiplatform SDK lists; a 2.16 SavedModel of standard
    # ops loads in it. deploy/serving/Dockerfile (TF Serving 2.16) is the exact-match alternative.
    serving_image: str = setting("us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest",
                                 "Vertex pre-built TF2 serving container")
    serving_machine_type: str = setting("n1-standard-2", "endpoint machine type")
    traffic_percentage: int = setting(100, "endpoint traffic for the new model (<100: a canary)")

    def __post_init__(self) -> None:
        if not str(self.bucket).startswith("gs://"):
            raise SettingsError(f"bucket must be a gs:// URI, got {self.bucket!r}")

    @property
    def temp_location(self) -> str:
        return f"{self.bucket}/tmp"

    def dataflow_args(self) -> list[str]:
        args = [
            "--runner=DataflowRunner",
            f"--project={self.project}",
            f"--region={self.region}",
            f"--temp_location={self.temp_location}",
            f"--staging_location={self.bucket}/staging",
            f"--sdk_container_image={self.image}",
            f"--machine_type={self.dataflow_machine_type}",
            f"--max_num_workers={self.dataflow_max_workers}",
            "--experiments=use_runner_v2",
        ]
        if self.service_account:
            args.append(f"--service_account_email={self.service_account}")
        return args

    def worker_pool_specs(self) -> list[dict[str, Any]]:
        machine: dict[str, Any] = {"machine_type": self.training_machine_type}
        if self.accelerator_type and self.accelerator_count:
            machine |= {"accelerator_type": self.accelerator_type, "accelerator_count": self.accelerator_count}
        pool = {"machine_spec": machine, "replica_count": 1, "container_spec": {"image_uri": self.image}}
        pools = [pool]
        if self.training_replicas > 1:  # chief + workers, same machines
            pools.append({**pool, "replica_count": self.training_replicas - 1})
        return pools


@dataclass(frozen=True)
class PipelineConfig:
    """What create_pipeline() builds from: the user settings plus where this runner puts things.

    Both runners make one (local_runner.build_config, kubeflow_runner.build_config); nothing
    downstream re-states a default."""

    pipeline_root: str
    data_root: str  # the official files: the test split (and span 1's source)
    serving_model_dir: str
    landing_root: str = ""  # the spans, `span-N/` (fmnist.landing)
    settings: PipelineSettings = field(default_factory=PipelineSettings)
    metadata_path: str | None = None  # SQLite ML Metadata (local runner only)
    beam_pipeline_args: tuple[str, ...] = ()
    vertex: VertexConfig | None = None  # set by kubeflow_runner.py: Dataflow, Vertex Training, endpoint

    def __post_init__(self) -> None:
        if self.vertex is not None and self.serving_validation.serving_validator == "tfx":
            raise SettingsError("serving_validator=tfx cannot run on Vertex Pipelines (TFX's InfraValidator needs "
                                "Docker or Kubernetes beside the component); use project or auto")

    @property
    def pipeline_name(self) -> str:
        return self.settings.pipeline_name

    @property
    def input_format(self) -> str:
        return self.settings.format

    @property
    def training(self) -> TrainingConfig:
        return self.settings.training

    @property
    def thresholds(self) -> EvaluationThresholds:
        return self.settings.thresholds

    @property
    def serving_validation(self) -> ServingValidationConfig:
        return self.settings.serving_validation

    @property
    def enable_cache(self) -> bool:
        return not self.settings.no_cache

    def replace(self, **changes: Any) -> PipelineConfig:
        """A copy with top-level fields and/or settings (by field name) changed."""
        setting_names = {f.name for f in dataclasses.fields(PipelineSettings)}
        settings = dataclasses.replace(self.settings, **{k: v for k, v in changes.items() if k in setting_names})
        return dataclasses.replace(self, settings=settings,
                                   **{k: v for k, v in changes.items() if k not in setting_names})
