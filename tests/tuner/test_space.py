"""The search space (flags -> settings -> hyperparameters -> Config), the hypermodel, and early stopping."""

import copy
import json

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from absl import flags

from ac_keras import config as ac_config
from ac_keras.task import Task
from tests.tuner.common import SPACE, base_config
from tuner import settings as tuner_settings
from tuner.hypermodel import AttentionClusterHyperModel
from tuner.trials import TrialTrainer, atomic_oracle


def _settings(config, *args):
    flag_values = copy.deepcopy(flags.FLAGS)
    flag_values.unparse_flags()
    flag_values(["prog", "--tuner_dir=unused", *args])
    return tuner_settings.from_flags(config, flag_values)


def test_default_space_is_powers_of_two_per_modality(data_dir):
    settings = _settings(base_config(data_dir))
    assert settings.space.cluster_sizes == (
        ("rgb", (1, 2, 4, 8, 16, 32, 64, 128)),
        ("audio", (1, 2, 4, 8, 16, 32, 64, 128)),
    )
    assert settings.space.weightings == ("fc1", "fc2")
    assert settings.space.shifts == (True, False)
    assert settings.space.learning_rate == (1e-4, 1e-2)
    assert settings.tuner == "random" and settings.max_trials == 20 and settings.patience == 3


def test_each_dimension_can_be_fixed(data_dir):
    config = base_config(data_dir, learning_rate=0.005, dropout=0.25, weighting="fc2", shift=False)
    settings = _settings(
        config,
        "--search_cluster_sizes=rgb:16|64,audio:8",
        "--search_shift=off",
        "--fixed=learning_rate,dropout,weighting",
    )
    space = settings.space
    assert space.cluster_sizes == (("rgb", (16, 64)), ("audio", (8,)))
    assert space.shifts == (False,) and space.weightings == ("fc2",)
    assert space.learning_rate == (0.005, 0.005) and space.dropout == (0.25, 0.25)

    hp = keras_tuner.HyperParameters()
    hypermodel = AttentionClusterHyperModel(config, space)
    hypermodel.declare_hyperparameters(hp)
    fixed = {p.name for p in hp.space if isinstance(p, keras_tuner.engine.hyperparameters.Fixed)}
    assert fixed == {"cluster_size_audio", "shift", "weighting", "learning_rate", "dropout"}
    assert hp.values["cluster_size_rgb"] == 16

    settings = _settings(config, "--fixed=cluster_sizes")
    assert settings.space.cluster_sizes == (("rgb", (2,)), ("audio", (1,)))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--search_cluster_sizes=rgb:4|8"], r"--search_cluster_sizes: .*missing \['audio'\]"),
        (["--search_cluster_sizes=0,2"], r"--search_cluster_sizes: every N must be >= 1"),
        (["--search_weighting=fc3"], r"--search_weighting: values must be among"),
        (["--search_shift=maybe"], r"--search_shift: expected true/false"),
        (["--search_learning_rate=0.1,0.01"], r"--search_learning_rate: expected min,max with min <= max"),
        (["--search_dropout=0.2,1.0"], r"--search_dropout: needs 0 <= min <= max < 1"),
        (["--fixed=batch_size"], r"--fixed: unknown dimensions \['batch_size'\]"),
        (["--max_trials=0"], r"--max_trials: must be >= 1"),
    ],
)
def test_bad_search_flags_are_named(data_dir, args, message):
    with pytest.raises(ac_config.ConfigError, match=message):
        _settings(base_config(data_dir), *args)


def test_search_needs_eval_data_and_refuses_multi_worker(data_dir):
    with pytest.raises(ac_config.ConfigError, match="--eval_data: is required"):
        _settings(base_config(data_dir, eval_data=None))
    with pytest.raises(ac_config.ConfigError, match="--strategy: multi_worker is not supported"):
        _settings(base_config(data_dir, strategy="multi_worker"))


def test_build_uses_the_training_model_builder(data_dir):
    config = base_config(data_dir)
    hypermodel = AttentionClusterHyperModel(config, SPACE)
    hp = keras_tuner.HyperParameters()
    hypermodel.declare_hyperparameters(hp)
    hp.values.update(
        {"cluster_size_rgb": 4, "cluster_size_audio": 2, "weighting": "fc2", "shift": False, "dropout": 0.3}
    )
    model = hypermodel.build(hp)
    trial_config = hypermodel.config_for(hp)
    model_config = trial_config.model
    assert dict(model_config.cluster_sizes) == {"rgb": 4, "audio": 2}
    assert (model_config.weighting, model_config.shift, model_config.dropout) == ("fc2", False, 0.3)
    assert trial_config.training.learning_rate == hp.values["learning_rate"]
    reference = Task(trial_config).build_model()
    assert [w.shape for w in model.weights] == [w.shape for w in reference.weights]
    assert [layer.name for layer in model.layers] == [layer.name for layer in reference.layers]
    assert model.get_layer("dropout").rate == pytest.approx(0.3)


@pytest.mark.slow  # trains a trial for two epochs, twice
def test_trial_stops_early_and_a_rerun_does_not_train_again(data_dir, tmp_path):
    # A zero-ish learning rate keeps the validation metric flat, so patience 1 stops after epoch 2 of 5.
    config = base_config(data_dir, learning_rate=1e-12, epochs=5, model_dir=str(tmp_path / "trial"))
    trainer = TrialTrainer(config, patience=1, progress=False)
    result = trainer.run()
    history = json.loads((tmp_path / "trial" / "tuner_history.json").read_text())
    assert sorted(history["epochs"]) == ["1", "2"] and history["stopped_early"]
    assert result["best_epoch"] == 1 and result["epochs"] == 2
    assert result["top1"] == history["epochs"]["1"]["metrics"]["top1"]
    steps = int(trainer.step.numpy())

    again = TrialTrainer(config, patience=1, progress=False)
    assert again.run() == result
    assert len(again.history.runs) == 1
    reader = tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path / "trial" / "checkpoints")))
    assert int(np.asarray(reader.get_tensor("step/.ATTRIBUTES/VARIABLE_VALUE"))) == steps


class _Killed(Exception):
    """Stands for a SIGKILL at one point of KerasTuner's code."""


@pytest.mark.parametrize(
    "oracle_class", [keras_tuner.oracles.RandomSearchOracle, keras_tuner.oracles.HyperbandOracle]
)
def test_a_search_killed_as_its_trial_ends_does_not_run_that_trial_again(oracle_class, tmp_path):
    def make():
        hyperband = oracle_class is keras_tuner.oracles.HyperbandOracle
        options = {"max_epochs": 2, "factor": 2} if hyperband else {"max_trials": 3}
        oracle = atomic_oracle(oracle_class)(
            objective=keras_tuner.Objective("top1", direction="max"), seed=1, **options
        )
        oracle.max_trials = 3
        oracle._set_project_dir(str(tmp_path), "search")
        return oracle

    oracle = make()
    oracle.hyperparameters.Choice("cluster_size", [1, 2, 4, 8])
    trial = oracle.create_trial("tuner0")
    oracle.update_trial(trial.trial_id, {"top1": 0.5})
    trial.status = keras_tuner.engine.trial.TrialStatus.COMPLETED

    # Oracle.end_trial saves oracle.json, reports, then drops the trial from its ongoing ones: killed between.
    def kill(_trial):
        raise _Killed()

    oracle._display.on_trial_end = kill
    with pytest.raises(_Killed):
        oracle.end_trial(trial)
    on_disk = json.loads((tmp_path / "search" / "oracle.json").read_text())
    assert on_disk["end_order"] == [trial.trial_id]
    assert on_disk["ongoing_trials"] == {"tuner0": trial.trial_id}

    resumed = make()
    resumed.reload()
    assert resumed.ongoing_trials == {}
    following = resumed.create_trial("tuner0")
    assert following.trial_id != trial.trial_id
    assert resumed.start_order == [trial.trial_id, following.trial_id]
