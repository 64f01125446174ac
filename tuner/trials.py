"""Trials trained by `ac_keras.trainer.Trainer`: the tuner, early stopping, resumable trial state.

`TrainerTuner` is a `keras_tuner.Tuner` whose `run_trial` trains each hyperparameter set with the same
training loop, input pipeline and strategy as `python -m ac_keras.train`, in its own model_dir under the
trial's directory; so a search killed mid-trial resumes that trial from its last checkpoint.
"""

import json
import logging
import math
import os
import time

import keras
import keras_tuner
import tensorflow as tf
from keras_tuner.src.distribute import utils as distribute_utils

from ac_keras import artifacts
from ac_keras import config as ac_config
from ac_keras import strategy as strategy_lib
from ac_keras.errors import UserError
from ac_keras.task import Task
from ac_keras.trainer import Callback, Trainer, TrainingDivergedError
from tuner import chief

HISTORY_FILE = "tuner_history.json"
EXTRA_METRICS = ("best_epoch", "epochs", "seconds")
# Config fields that may change when a search resumes: where things go, how often they are saved, and the
# training step's fast paths.
RUNTIME_FIELDS = ac_config.RUNTIME_FIELDS

log = logging.getLogger("tuner")


class _EarlyStop(Exception):
    """Raised inside the training loop when the validation metric stopped improving."""


def _read_json(path):
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as handle:
        return json.loads(handle.read())


def _write_json(path, value, **dumps_options):
    """Writes JSON under a temporary name, then renames it into place: a kill never leaves half a file."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with tf.io.gfile.GFile(temporary, "w") as handle:
        handle.write(json.dumps(value, **dumps_options))
    tf.io.gfile.rename(temporary, path, overwrite=True)


class _AtomicSaves:
    """Oracle mixin: KerasTuner 1.4.8 writes oracle.json and trial.json in place, so a search killed while
    writing them could not be resumed; these overrides write the same JSON atomically, and a reload does not
    take a trial that had ended for one still running."""

    def save(self):
        _write_json(self._get_oracle_fname(), self.get_state())

    def _save_trial(self, trial):
        _write_json(os.path.join(self._get_trial_dir(trial.trial_id), "trial.json"), trial.get_state())

    def set_state(self, state):
        # `Oracle.end_trial` saves oracle.json with the trial in `end_order` but still in `ongoing_trials`
        # (it pops it only after saving); a search killed in between would run the ended trial again on
        # reload. An ended trial is never ongoing, so it is dropped from there.
        super().set_state(state)
        ended = set(self.end_order)
        self.ongoing_trials = {
            tuner_id: trial for tuner_id, trial in self.ongoing_trials.items() if trial.trial_id not in ended
        }


def atomic_oracle(oracle_class):
    """`oracle_class` (a `keras_tuner.Oracle` subclass) with its state files written atomically."""
    return type(oracle_class.__name__, (_AtomicSaves, oracle_class), {})


class TrialHistory:
    """Per-epoch validation metrics and training time of one trial execution, kept in its model_dir.

    It survives a killed search, so a resumed trial keeps its early-stopping count, its best epoch and its
    time; `runs` records each process that trained it (tuner id and start time).
    """

    def __init__(self, model_dir, metric):
        self.path = os.path.join(model_dir, HISTORY_FILE)
        self.metric = metric
        state = _read_json(self.path) or {}
        self.epochs = {int(epoch): values for epoch, values in state.get("epochs", {}).items()}
        self.runs = list(state.get("runs", []))
        self.stopped_early = bool(state.get("stopped_early", False))

    @property
    def seconds(self):
        return max((entry["seconds"] for entry in self.epochs.values()), default=0.0)

    def best_epoch(self):
        scored = [(entry["metrics"][self.metric], -epoch, epoch) for epoch, entry in self.epochs.items()]
        return max(scored)[2] if scored else None

    def should_stop(self, patience):
        if self.stopped_early:
            return True
        best = self.best_epoch()
        return bool(patience) and best is not None and max(self.epochs) - best >= patience

    def record(self, epoch, metrics, seconds):
        self.epochs[epoch] = {"metrics": {k: float(v) for k, v in metrics.items()}, "seconds": seconds}
        self.save()

    def save(self):
        state = {"epochs": self.epochs, "runs": self.runs, "stopped_early": self.stopped_early}
        _write_json(self.path, state, indent=2, sort_keys=True)

    def result(self):
        """The trial's metrics at its best epoch, plus best_epoch, epochs and seconds."""
        best = self.best_epoch()
        if best is None:
            raise keras_tuner.errors.FailedTrialError("The trial ended without any evaluation.")
        return {
            **self.epochs[best]["metrics"],
            "best_epoch": float(best),
            "epochs": float(max(self.epochs)),
            "seconds": float(self.seconds),
        }


class _EarlyStopping(Callback):
    """Records each evaluation in the trial's `TrialHistory` and stops the trial when it stops improving."""

    def __init__(self, history, patience, clock):
        self.history = history
        self.patience = patience
        self.clock = clock

    def on_evaluation(self, trainer, epoch, results):
        self.history.record(epoch, results, self.clock())
        if epoch < trainer.config.training.epochs and self.history.should_stop(self.patience):
            self.history.stopped_early = True
            self.history.save()
            raise _EarlyStop()


class TrialTrainer(Trainer):
    """A `Trainer` that records each evaluation in a `TrialHistory` and stops early on it.

    Args:
        config: the trial's validated `Config` (its own model_dir).
        patience: int, evaluations without a new best before stopping; 0 = never.
        tuner_id: str, recorded in the history for each process that trains the trial.
        **kwargs: passed to `Trainer` (strategy, progress).
    """

    def __init__(self, config, *, patience, tuner_id="tuner0", **kwargs):
        self.history = TrialHistory(config.runtime.model_dir, config.best_metric)
        self.patience = patience
        self.tuner_id = tuner_id
        self._clock = None
        self._seconds_before = 0.0
        stopping = _EarlyStopping(self.history, patience, self._seconds)
        super().__init__(Task(config), callbacks=[stopping], **kwargs)

    def _seconds(self):
        return self._seconds_before + (time.perf_counter() - self._clock)

    def warm_start(self, parent_model_dir):
        """Starts from the latest checkpoint of Hyperband's earlier round unless this run has its own."""
        checkpoints = os.path.join(self.config.runtime.model_dir, artifacts.CHECKPOINT_SUBDIR)
        if tf.train.latest_checkpoint(checkpoints):
            return False
        parent = tf.train.latest_checkpoint(os.path.join(parent_model_dir, artifacts.CHECKPOINT_SUBDIR))
        if parent is None:
            log.warning(
                "No checkpoint in %s to continue from; the trial trains from scratch.", parent_model_dir
            )
            return False
        self.checkpoint.restore(parent).assert_existing_objects_matched()
        # This trial's best model and early stopping count its own evaluations only.
        self.best_value.assign(-math.inf)
        return True

    def run(self):
        """Trains (or resumes) to the configured epochs or until early stopping; returns the result dict."""
        if not self.history.should_stop(self.patience):
            self.history.runs.append({"tuner_id": self.tuner_id, "started": time.time()})
            self.history.save()
            self._seconds_before = self.history.seconds
            self._clock = time.perf_counter()
            try:
                self.train()
            except _EarlyStop:
                best = self.history.best_epoch()
                self._say(
                    f"Early stop after epoch {max(self.history.epochs)}: no better "
                    f"{self.config.best_metric} than epoch {best}'s for {self.patience} evaluations."
                )
            finally:
                self.train_writer.flush()
                self.eval_writer.flush()
        return self.history.result()


class TrainerTuner(keras_tuner.Tuner):
    """A KerasTuner tuner whose trials train with `ac_keras.trainer.Trainer` instead of `model.fit`.

    Each execution of a trial trains in `<trial dir>/execution_<k>/` (checkpoints, TensorBoard logs,
    `best/`, `config.json`, `tuner_history.json`) with seed `--seed + k`. The objective is the validation
    metric of the config (`Config.best_metric`: top1 or gap), its best value over the trial's evaluations;
    several executions are averaged (and their training times added). Hyperband trials train to
    `tuner/epochs` and continue from the checkpoint of the earlier round's trial.

    Args:
        oracle: a `keras_tuner.Oracle`.
        hypermodel: a `tuner.hypermodel.AttentionClusterHyperModel`.
        patience: int, early stopping patience in evaluations; 0 = off.
        on_trials: optional callable, called with every trial of the search (`keras_tuner` `Trial`s) after
            each trial ends and when the search is over (reports are written from it).
        num_tuner_workers: int, distributed chief only: workers to tell the search is over before the oracle
            server stops (`tuner.chief.serve`).
        progress: bool, whether trials show progress bars. Defaults to True.
        **kwargs: passed to `keras_tuner.Tuner` (directory, project_name, executions_per_trial, ...).
    """

    def __init__(
        self, oracle, hypermodel, *, patience=0, on_trials=None, num_tuner_workers=0, progress=True, **kwargs
    ):
        super().__init__(oracle=oracle, hypermodel=hypermodel, **kwargs)
        self.patience = patience
        self.on_trials = on_trials
        self.num_tuner_workers = num_tuner_workers
        self.progress = progress
        self._strategy = None
        self.trial_runs = []  # trial ids this process ran, in order

    @property
    def strategy(self):
        # One strategy for the whole search: building a MirroredStrategy per trial would re-probe devices.
        if self._strategy is None:
            runtime = self.hypermodel.base_config.runtime
            self._strategy = strategy_lib.make_strategy(runtime.strategy, runtime.devices)
        return self._strategy

    def execution_dir(self, trial_id, execution):
        return os.path.join(self.get_trial_dir(trial_id), f"execution_{execution}")

    def trial_config(self, trial, execution):
        values = trial.hyperparameters.values
        base = self.hypermodel.base_config
        return self.hypermodel.config_for(
            values,
            model_dir=self.execution_dir(trial.trial_id, execution),
            export_dir=None,
            export=False,
            epochs=int(values.get("tuner/epochs", base.training.epochs)),
            seed=base.training.seed + execution,
        )

    def search(self, *args, **kwargs):
        """Runs trials until the oracle stops; a distributed chief serves the oracle instead."""
        if self.is_chief():
            self.save()
            chief.serve(self.oracle, self.num_tuner_workers, on_progress=self.on_trials)
            return
        super().search(*args, **kwargs)
        # A worker's chief may be gone once the search is over; the chief writes the final reports.
        if self.on_trials is not None and not self.is_worker():
            self.on_trials(self.all_trials())

    def save(self):
        # As `BaseTuner.save`, with the tuner's file written atomically too (see `_AtomicSaves`).
        if not self._is_worker():
            self.oracle.save()
        _write_json(self._get_tuner_fname(), self.get_state())

    def on_search_begin(self):
        # Saved before the first trial, so a search killed during it reloads instead of starting over.
        self.save()
        super().on_search_begin()

    def run_trial(self, trial, *args, **kwargs):
        self.trial_runs.append(trial.trial_id)
        values = trial.hyperparameters.values
        results = []
        for execution in range(self.executions_per_trial):
            keras.backend.clear_session()
            config = self.trial_config(trial, execution)
            _discard_foreign_run(config)
            trainer = TrialTrainer(
                config,
                patience=self.patience,
                tuner_id=self.tuner_id,
                strategy=self.strategy,
                progress=self.progress,
            )
            if "tuner/trial_id" in values:
                trainer.warm_start(self.execution_dir(values["tuner/trial_id"], execution))
            try:
                results.append(trainer.run())
            except TrainingDivergedError as error:
                # Diverging is a property of the hyperparameters: no retry.
                raise keras_tuner.errors.FailedTrialError(str(error)) from error
            except UserError as error:
                # Bad data or settings fail every trial alike: the search stops with the user's message.
                raise keras_tuner.errors.FatalError(str(error)) from error
        return combine_executions(results)

    def on_trial_end(self, trial):
        if trial.status != keras_tuner.engine.trial.TrialStatus.COMPLETED and trial.message:
            print(f"Trial {trial.trial_id} {trial.status}:\n{trial.message}", flush=True)
        super().on_trial_end(trial)
        if self.on_trials is not None:
            self.on_trials(self.all_trials())

    def load_model(self, trial):
        """The best model (by the validation metric) of the trial's first execution."""
        return artifacts.load_best_model(self.execution_dir(trial.trial_id, 0))

    def all_trials(self):
        """Every trial the oracle knows (local or, on a worker, the chief's), finished ones first."""
        return self.oracle.get_best_trials(num_trials=2**31 - 1)

    def is_chief(self):
        return distribute_utils.has_chief_oracle() and distribute_utils.is_chief_oracle()

    def is_worker(self):
        return distribute_utils.has_chief_oracle() and not distribute_utils.is_chief_oracle()


def combine_executions(results):
    """One result for a trial of several executions: metrics averaged, training time summed."""
    names = set.intersection(*(set(result) for result in results))
    combined = {name: sum(result[name] for result in results) / len(results) for name in names}
    combined["seconds"] = sum(result["seconds"] for result in results)
    return combined


def _discard_foreign_run(config):
    """Removes a model_dir left by a different configuration (a trial id reused by a fresh oracle)."""
    model_dir = config.runtime.model_dir
    try:
        saved = _read_json(os.path.join(model_dir, artifacts.CONFIG_FILE))
    except json.JSONDecodeError:
        # A kill while the Trainer wrote it: the run is this trial's own, and the Trainer rewrites it.
        return
    if saved is None:
        return
    saved = ac_config.flat_config_dict(saved)
    wanted = json.loads(json.dumps(config.flat()))
    if any(saved.get(name) != value for name, value in wanted.items() if name not in RUNTIME_FIELDS):
        log.warning("%s holds a run of another configuration; it is replaced.", model_dir)
        tf.io.gfile.rmtree(model_dir)
