"""TFX Tuner entry point, referenced by the pipeline as `modules.tuner.tuner_fn`.

A KerasTuner random search over HParams. KerasTuner 1.4 builds Keras 3 models, while this
stack trains tf_keras (Keras 2) models, so the search drives the project's own `fit` through
`run_trial` and uses KerasTuner only for the search space, the oracle and the bookkeeping. The
Tuner's best values flow to the Trainer as `fn_args.hyperparameters`.
"""

from __future__ import annotations

import logging
from typing import Any

import keras_tuner as kt
import tensorflow_transform as tft
from tfx.components.trainer.fn_args_utils import FnArgs
from tfx.components.tuner.component import TunerFnResult

from fmnist.dataset import stratified_holdout
from modules import model as model_lib
from modules.config import TrainingConfig
from modules.data import Split, load_transformed
from modules.trainer import fit

log = logging.getLogger(__name__)

OBJECTIVE = "val_accuracy"


def search_space() -> kt.HyperParameters:
    """The searched HParams fields and their values (architecture, regularisation, schedule, augmentation)."""
    hp = kt.HyperParameters()
    # Architecture: a third block (128 filters at 7x7) adds 59 % to the convolution multiply-adds
    # of the tuned 2 x 2 (1.39x the epoch time on the EPYC); one convolution per block cuts them
    # to a quarter (benchmarks/model_search.py).
    hp.Choice("num_blocks", [2, 3])
    hp.Choice("convs_per_block", [1, 2])
    hp.Choice("base_filters", [24, 32, 48])
    hp.Choice("dense_units", [128, 256])
    hp.Choice("conv_dropout", [0.0, 0.1, 0.2])
    hp.Choice("dense_dropout", [0.2, 0.3, 0.5])
    hp.Choice("weight_decay", [0.0, 1e-4, 5e-4])
    hp.Choice("learning_rate", [1e-3, 2e-3, 4e-3])
    hp.Choice("max_shift", [0, 1, 2])
    hp.Boolean("flip")
    return hp


class HParamsSearch(kt.Tuner):
    """Each trial trains the project's CNN with the trial's values over `base`."""

    def __init__(self, base: model_lib.HParams, train: Split, evaluation: Split,
                 seed: int, precision: str = "float32", **kwargs: Any):
        super().__init__(**kwargs)
        self.base, self.train, self.evaluation, self.seed = base, train, evaluation, seed
        self.precision = precision  # what the Trainer will train in (--precision), so trials compare like with like

    def run_trial(self, trial, *args, **kwargs) -> dict[str, float]:
        hparams = model_lib.HParams.from_dict({**self.base.to_dict(), **trial.hyperparameters.values})
        history = fit(hparams, self.train, self.evaluation, self.seed, precision=self.precision).history
        return {OBJECTIVE: float(max(history.history[OBJECTIVE]))}


def stratified_subset(split: Split, size: int, seed: int) -> Split:
    if not size or size >= len(split.labels):
        return split
    rows = stratified_holdout(split.labels, size, seed)
    return Split(split.images[rows], split.labels[rows])


def tuner_fn(fn_args: FnArgs) -> TunerFnResult:
    """TFX Tuner entry point.

    Takes FnArgs whose custom_config is a TrainingConfig.to_custom_config() dict (other keys are
    ignored). Searches on a stratified subset of fn_args.train_files
    (tuning.tuning_train_examples; 0: all of it) and validates on fn_args.eval_files, each trial
    training tuning.tuning_epochs epochs over the resolved hyperparameters, in the Trainer's
    precision (training_config.precision, resolved on this machine). Returns the tuner
    (tuning.tuning_trials trials, state under fn_args.working_dir) for the Tuner component to run;
    its best values become the Trainer's fn_args.hyperparameters."""
    training_config = TrainingConfig.from_custom_config(fn_args.custom_config)
    seed, tuning = training_config.seed, training_config.tuning
    tf_transform_output = tft.TFTransformOutput(fn_args.transform_graph_path)
    train = stratified_subset(load_transformed(fn_args.train_files, tf_transform_output),
                              tuning.tuning_train_examples, seed)
    evaluation = load_transformed(fn_args.eval_files, tf_transform_output)
    # Trials are short (tuning_epochs); the chosen values are then trained for the full schedule.
    base = model_lib.resolve_hparams(training_config).replace(epochs=tuning.tuning_epochs)
    log.info("tuning: %d trials of %d epochs on %d images", tuning.tuning_trials, base.epochs,
             len(train.labels))
    tuner = HParamsSearch(
        base, train, evaluation, seed,
        precision=training_config.precision,
        oracle=kt.oracles.RandomSearchOracle(
            objective=kt.Objective(OBJECTIVE, "max"),
            max_trials=tuning.tuning_trials,
            hyperparameters=search_space(),
            allow_new_entries=False,
            seed=seed,
        ),
        directory=fn_args.working_dir,
        project_name="fmnist_tuning",
        overwrite=True,
    )
    return TunerFnResult(tuner=tuner, fit_kwargs={})
