"""What the Trainer and the Tuner are told: a typed config that travels through the components'
`custom_config` (a JSON dict) and is read back here, so no default is stated twice.

The fields are user settings (see fmnist.settings): `--epochs`, `FMNIST_EPOCHS`, `epochs:` in YAML.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fmnist.settings import setting
from modules.precision import CHOICES as PRECISIONS

DEFAULT_SEED = 42
DEFAULT_EXPLAIN_STEPS = 32  # modules.signatures states it for exports that are not given a config


@dataclass(frozen=True)
class TuningConfig:
    """The Tuner component (off by default: the default run uses the checked-in tuned values)."""

    tune: bool = setting(False, "add the Tuner; its best values feed the Trainer")
    tuning_trials: int = setting(10, "Tuner: trials of the random search")
    tuning_epochs: int = setting(5, "Tuner: epochs per trial (the winner then trains the full schedule)")
    tuning_train_examples: int = setting(20000, "Tuner: stratified subset of train searched on (0: all)")


@dataclass(frozen=True)
class TrainingConfig:
    """Seeds, schedule overrides and tuning budget for modules.trainer.run_fn / tuner.tuner_fn."""

    seed: int = setting(DEFAULT_SEED, "seed of the eval hold-out selection and of training")
    epochs: int | None = setting(None, "training epochs (default: the tuned value)")
    batch_size: int | None = setting(None, "training batch size (default: the tuned value)")
    max_train_steps: int | None = setting(None, "cap on training steps (smoke runs)")
    warm_start: bool = setting(True, "start from the latest blessed model's weights when there is one")
    warm_start_epochs: int = setting(7, "epochs of a warm-start retrain (the shorter schedule)")
    warm_start_lr_scale: float = setting(1.0, "warm start: peak learning rate as a fraction of the cold one")
    warm_start_augment: bool = setting(False, "warm start: augment the training images like a cold run")
    explain_steps: int = setting(DEFAULT_EXPLAIN_STEPS, "explain signature: trapezoid intervals of the "
                                 "integrated-gradients path (steps + 1 model passes per image)")
    precision: str = setting("auto", "training precision: auto (bfloat16 where the CPU has amx_bf16 or "
                             "avx512_bf16, else float32), float32 or bfloat16; exports are float32",
                             choices=PRECISIONS)
    memory_budget_mb: int = setting(1024, "Trainer: the largest train split read into memory (MiB); larger ones "
                                    "stream from Transform's files every epoch (0: always stream)")
    tuning: TuningConfig = field(default_factory=TuningConfig)
    # Not a user setting: hyperparameter overrides a profile applies (e.g. the sample's no-augment).
    hparams: dict[str, Any] = field(default_factory=dict)

    def hparam_overrides(self) -> dict[str, Any]:
        """Explicit values over modules.model.HParams' tuned ones (explicit flags win)."""
        explicit = {"epochs": self.epochs, "batch_size": self.batch_size}
        return {**self.hparams, **{k: v for k, v in explicit.items() if v is not None}}

    def to_custom_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_custom_config(cls, custom_config: dict[str, Any] | None) -> TrainingConfig:
        """Reads back to_custom_config()'s dict; keys a component adds (e.g. Vertex job args) are ignored."""
        values = dict(custom_config or {})
        known = {f.name for f in dataclasses.fields(cls)}
        tuning = TuningConfig(**values.get("tuning", {}))
        return cls(**{k: v for k, v in values.items() if k in known and k != "tuning"}, tuning=tuning)
