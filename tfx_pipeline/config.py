"""The one typed configuration object both runners build and create_pipeline() consumes."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

PIPELINE_NAME = "fashion-mnist"

# Module paths, not files: the code is installed (locally with `pip install -e .`, on Vertex
# baked into the image), so nothing is packaged into the pipeline root at compile time.
PREPROCESSING_FN = "modules.preprocessing.preprocessing_fn"
TRAINER_RUN_FN = "modules.trainer.run_fn"
TUNER_FN = "modules.tuner.tuner_fn"

BLESSING_SPLIT = "eval"  # thresholds are judged here (early stopping also watches it)
REPORTED_SPLIT = "test"  # the official test set: measured for people, never used to decide
EVALUATOR_ID = "Evaluator"
TEST_EVALUATOR_ID = "TestEvaluator"


@dataclass(frozen=True)
class EvaluationThresholds:
    """Blessing rules. Scoped deliberately: TFMA applies an unscoped threshold to every slice."""

    min_accuracy: float = 0.90  # overall slice
    min_class_recall: float = 0.70  # each class's slice (label == c)
    max_accuracy_drop: float = 0.005  # vs the last blessed model, overall slice


@dataclass(frozen=True)
class TuningConfig:
    """The Tuner component (off by default: the default run uses the checked-in tuned values)."""

    enabled: bool = False
    trials: int = 10
    epochs: int = 5  # per trial; the winner is then trained for the full schedule
    train_examples: int = 20000  # stratified subset of `train` searched on (0 = all)


@dataclass(frozen=True)
class VertexConfig:
    """Where the work runs on Google Cloud (kubeflow_runner.py). Absent: everything runs locally."""

    project: str
    region: str
    bucket: str  # gs://BUCKET: pipeline root, Dataflow temp/staging, pushed models
    image: str  # the project image (Dockerfile): every component and the Dataflow SDK container
    service_account: str | None = None  # runs the pipeline, Dataflow workers and training jobs
    dataflow_machine_type: str = "n1-standard-4"
    dataflow_max_workers: int = 10
    training_machine_type: str = "n1-standard-8"
    training_replicas: int = 1  # >1: multi-worker (MultiWorkerMirroredStrategy in modules/trainer.py)
    accelerator_type: str | None = None  # e.g. NVIDIA_TESLA_T4 (MirroredStrategy over the GPUs)
    accelerator_count: int = 0
    endpoint_name: str = "fashion-mnist"
    # The newest pre-built TF serving image the aiplatform SDK lists; a 2.16 SavedModel of standard
    # ops loads in it. deploy/serving/Dockerfile (TF Serving 2.16) is the exact-match alternative.
    serving_image: str = "us-docker.pkg.dev/vertex-ai/prediction/tf2-cpu.2-15:latest"
    serving_machine_type: str = "n1-standard-2"
    traffic_percentage: int = 100  # share of the endpoint's traffic the new model gets (canary < 100)

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
    pipeline_root: str
    data_root: str
    serving_model_dir: str
    pipeline_name: str = PIPELINE_NAME
    metadata_path: str | None = None  # SQLite ML Metadata (local runner only)
    input_format: str = "idx"  # "idx" (official files) or "csv" (Kaggle layout)
    eval_holdout_size: int = 5000  # stratified hold-out carved out of the official train split
    seed: int = 42
    hparams: dict[str, Any] = field(default_factory=dict)  # overrides of modules.model.HParams
    max_train_steps: int | None = None  # cap for smoke/weak-model runs
    thresholds: EvaluationThresholds = EvaluationThresholds()
    tuning: TuningConfig = TuningConfig()
    beam_pipeline_args: tuple[str, ...] = ()
    enable_cache: bool = True
    vertex: VertexConfig | None = None  # set by kubeflow_runner.py: Dataflow, Vertex Training, endpoint

    def replace(self, **changes: Any) -> PipelineConfig:
        return dataclasses.replace(self, **changes)

    def trainer_custom_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "seed": self.seed,
            "hparams": dict(self.hparams),
            "tuning": dataclasses.asdict(self.tuning),
        }
        if self.max_train_steps:
            config["max_steps"] = self.max_train_steps
        return config
