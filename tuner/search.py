"""KerasTuner search over N per modality: `python -m tuner.search --flagfile=F --tuner_dir=D`.

Every training flag is accepted (a training flagfile works as is), plus the tuner's flags (`tuner.settings`,
`--helpfull` lists them). Each trial trains with `ac_keras.trainer.Trainer`, the loop, input pipeline and
strategy of `python -m ac_keras.train`. Run the same command again after an interruption and the search
resumes: finished trials are kept, an interrupted one continues from its last checkpoint. Results go to
`D/results.csv`, `D/results.md`, `D/metric_vs_cluster_size.png` and `D/best.flags`; docs/tuner.md explains
them and the distributed (chief/worker) mode.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import json
import os

import keras_tuner
import tensorflow as tf
from absl import app, flags

from ac_keras import config as ac_config
from ac_keras import data as ac_data
from ac_keras.errors import UserError
from ac_keras.task import Task
from tuner import report
from tuner import settings as tuner_settings
from tuner.hypermodel import AttentionClusterHyperModel
from tuner.trials import RUNTIME_FIELDS, TrainerTuner, atomic_oracle

PROJECT = "keras_tuner"  # KerasTuner's state: <tuner_dir>/keras_tuner/{oracle.json, trial_<id>/, ...}
SEARCH_FILE = "search.json"
# Config fields the search sets from hyperparameters (the search space stands for them).
SEARCHED_FIELDS = ("cluster_sizes", "weighting", "shift", "learning_rate", "dropout")
_SPACE_FLAGS = {
    "cluster_sizes": "search_cluster_sizes",
    "weightings": "search_weighting",
    "shifts": "search_shift",
    "learning_rate": "search_learning_rate",
    "dropout": "search_dropout",
}


def _identity(config, settings):
    values = json.loads(json.dumps(config.flat()))
    flat = {name: value for name, value in values.items() if name not in RUNTIME_FIELDS + SEARCHED_FIELDS}
    identity = settings.identity()
    for name, value in identity.pop("space").items():
        flat[_SPACE_FLAGS[name]] = value
    flat.update(identity)
    return json.loads(json.dumps(flat))


def check_same_search(config, settings):
    """Records the search's settings in `<tuner_dir>/search.json`, or checks a resumed search against them.

    KerasTuner reloads its search space from its state and would silently ignore changed flags.
    """
    path = os.path.join(settings.tuner_dir, SEARCH_FILE)
    identity = _identity(config, settings)
    if tf.io.gfile.exists(path):
        with tf.io.gfile.GFile(path) as handle:
            saved = json.loads(handle.read())
        changed = sorted(name for name in set(saved) | set(identity) if saved.get(name) != identity.get(name))
        if changed:
            raise ac_config.ConfigError(
                f"--tuner_dir: {settings.tuner_dir} holds a search with other settings of "
                f"{', '.join('--' + name for name in changed)} (saved in {path}). Rerun it with the same "
                "flags (only --max_trials, --num_tuner_workers and runtime flags such as --strategy may "
                "change), or start another search in a new --tuner_dir."
            )
        return
    tf.io.gfile.makedirs(settings.tuner_dir)
    temporary = f"{path}.tmp.{os.getpid()}"
    with tf.io.gfile.GFile(temporary, "w") as handle:
        handle.write(json.dumps(identity, indent=2, sort_keys=True))
    tf.io.gfile.rename(temporary, path, overwrite=True)


def make_oracle(config, settings):
    """The KerasTuner oracle of `--tuner`, maximizing `Config.best_metric` (top1 or gap)."""
    common = {
        "objective": keras_tuner.Objective(config.best_metric, direction="max"),
        # KerasTuner takes seed 0 as "no seed".
        "seed": config.training.seed + 1,
        "max_retries_per_trial": 0,
    }
    if settings.tuner == "random":
        return atomic_oracle(keras_tuner.oracles.RandomSearchOracle)(max_trials=settings.max_trials, **common)
    if settings.tuner == "grid":
        # Every combination of the discrete dimensions (a range without a step is cut into 10 values).
        return atomic_oracle(keras_tuner.oracles.GridSearchOracle)(max_trials=settings.max_trials, **common)
    if settings.tuner == "bayesian":
        return atomic_oracle(keras_tuner.oracles.BayesianOptimizationOracle)(
            max_trials=settings.max_trials,
            num_initial_points=settings.bayesian_initial_points or None,
            **common,
        )
    oracle = atomic_oracle(keras_tuner.oracles.HyperbandOracle)(
        max_epochs=config.training.epochs, factor=settings.hyperband_factor, **common
    )
    # Hyperband alone knows no trial budget; the base oracle stops creating trials at max_trials.
    oracle.max_trials = settings.max_trials
    return oracle


def make_tuner(config, settings, *, progress=True):
    """The `TrainerTuner` of a search; it reloads the state under `tuner_dir` when there is one."""
    check_same_search(config, settings)
    hypermodel = AttentionClusterHyperModel(config, settings.space)

    def write_reports(trials):
        report.write_reports(trials, hypermodel, settings.tuner_dir, config.best_metric)

    return TrainerTuner(
        make_oracle(config, settings),
        hypermodel,
        patience=settings.patience,
        on_trials=write_reports,
        num_tuner_workers=settings.num_tuner_workers,
        progress=progress,
        directory=settings.tuner_dir,
        project_name=PROJECT,
        executions_per_trial=settings.executions_per_trial,
    )


def run_search(config, settings, *, progress=True):
    """Runs (or resumes) the search; returns the tuner. A distributed chief returns once workers are done.

    Raises:
        ac_keras.errors.UserError: bad data or settings (a missing file, a statistics file that does not fit,
            a bad record), found before the first trial or in one.
    """
    # The data and the statistics are checked before any trial, so their errors are the user's messages.
    Task(config)
    ac_data.list_files(config.data.train_data)
    ac_data.list_files(config.data.eval_data)
    tuner = make_tuner(config, settings, progress=progress)
    try:
        tuner.search()
    except keras_tuner.errors.FatalError as error:
        if isinstance(error.__cause__, UserError):
            raise error.__cause__ from None
        raise
    if not tuner.is_worker():
        best = report.best_trial(tuner.all_trials())
        metric = config.best_metric
        if best is None:
            print(
                f"No trial completed; see {os.path.join(settings.tuner_dir, report.RESULTS_MD)}.", flush=True
            )
        else:
            print(
                f"Best trial {best.trial_id}: {metric} {best.score:.4f} with "
                + ", ".join(
                    f"{k}={v}" for k, v in best.hyperparameters.values.items() if not k.startswith("tuner/")
                )
                + f".\nResults: {os.path.join(settings.tuner_dir, report.RESULTS_MD)}. Retrain it: "
                f"python -m ac_keras.train --flagfile={os.path.join(settings.tuner_dir, report.BEST_FLAGS)}",
                flush=True,
            )
    return tuner


def main(argv):
    config, options = cli.command_from_argv(argv, need_train_data=True)
    try:
        settings = tuner_settings.from_flags(config)
    except ac_config.ConfigError as error:
        raise app.UsageError(str(error)) from None
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        # Distributed workers would race to generate it; docs/tuner.md says to generate it first.
        from ac_keras.train import maybe_generate_flash_mnist

        maybe_generate_flash_mnist(config, options.flash_mnist)
    run_search(config, settings)


if __name__ == "__main__":
    flags.mark_flags_as_required(["train_data", "eval_data", "num_classes", "tuner_dir"])
    cli.run(main)
