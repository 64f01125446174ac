"""A run trained without --eval_data keeps no best model: later commands use its latest checkpoint."""

import numpy as np
import pytest

from ac_keras import artifacts, evaluation
from ac_keras import config as ac_config
from ac_keras.errors import MissingDataError
from ac_keras.task import Task
from ac_keras.testing.learnable import learnable_videos
from ac_keras.testing.records import write_videos
from ac_keras.trainer import Trainer

FEATURES = "rgb:8,audio:4:float"

pytestmark = pytest.mark.slow  # trains


def test_a_run_without_eval_data_is_used_through_its_latest_checkpoint(tmp_path):
    write_videos(tmp_path, learnable_videos(FEATURES, 64, seed=0), num_shards=1, prefix="train")
    model_dir = str(tmp_path / "model")
    config = ac_config.from_values(
        train_data=str(tmp_path / "train-*"),
        features=FEATURES,
        num_classes=4,
        cluster_sizes="rgb:2,audio:2",
        batch_size=16,
        epochs=2,
        train_frames=4,
        model_dir=model_dir,
        strategy="default",
    )
    lines = []
    with pytest.raises(MissingDataError, match=r"holds no trained model: no best model .*and no checkpoint"):
        artifacts.load_trained_model(model_dir, say=lines.append)

    trainer = Trainer(Task(config), progress=False)
    trainer.train()
    assert not (tmp_path / "model" / "best").exists()
    model = artifacts.load_trained_model(model_dir, say=lines.append)
    assert len(lines) == 1 and "trained without --eval_data" in lines[0] and "ckpt-8" in lines[0]
    for got, want in zip(model.get_weights(), trainer.model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)

    # Evaluation's predictor (predict, evaluate and classify use it) scores the final weights.
    task = Task(config.replace(eval_data=config.data.train_data))
    metrics = task.make_metrics()
    direct = evaluation.evaluate(task.eval_dataset(), evaluation.predictor_step(trainer.model), metrics)
    via_dir = evaluation.evaluate(
        task.eval_dataset(),
        evaluation.predictor_step(artifacts.load_predictor(model_dir)),
        task.make_metrics(),
    )
    assert via_dir == pytest.approx(direct)
