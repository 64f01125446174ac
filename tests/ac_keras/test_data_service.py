"""--data_service: training reads its batches from tf.data service workers (here in this process)."""

import pytest
import tensorflow as tf

from ac_keras import config as ac_config
from ac_keras.task import Task
from ac_keras.testing.learnable import learnable_videos
from ac_keras.testing.records import write_videos
from ac_keras.trainer import Callback, Trainer

# Both modalities quantized: with train_frames the workers read the batches with the locator.
FEATURES = "rgb:8,audio:4"


class _CountSamples(Callback):
    def __init__(self):
        self.samples_per_epoch = {}

    def on_step_end(self, trainer, logs):
        epoch = int(trainer.epoch.numpy()) + 1
        self.samples_per_epoch[epoch] = self.samples_per_epoch.get(epoch, 0) + int(logs["samples"])


@pytest.mark.slow
def test_training_through_a_dispatcher_and_two_workers(tmp_path):
    write_videos(tmp_path, learnable_videos(FEATURES, 512, seed=0), num_shards=4, prefix="train")
    write_videos(tmp_path, learnable_videos(FEATURES, 96, seed=1), num_shards=1, prefix="eval")
    dispatcher = tf.data.experimental.service.DispatchServer()
    address = dispatcher.target.split("://")[1]
    workers = [
        tf.data.experimental.service.WorkerServer(
            tf.data.experimental.service.WorkerConfig(dispatcher_address=address)
        )
        for _ in range(2)
    ]
    config = ac_config.from_values(
        train_data=str(tmp_path / "train-*"),
        eval_data=str(tmp_path / "eval-*"),
        features=FEATURES,
        num_classes=4,
        cluster_sizes="rgb:4,audio:2",
        dropout=0.1,
        optimizer="adam",
        learning_rate=0.01,
        batch_size=32,
        epochs=2,
        train_frames=6,
        eval_frames=0,
        model_dir=str(tmp_path / "model"),
        strategy="default",
        data_service=dispatcher.target,
    )
    counter = _CountSamples()
    trainer = Trainer(Task(config), progress=False, callbacks=[counter])
    results = trainer.train()
    # Each epoch is one job over the whole data: every training video exactly once.
    assert counter.samples_per_epoch == {1: 512, 2: 512}
    assert results["top1"] > 0.6, results  # chance is 0.25
    del workers  # the in-process workers served until here


def test_the_dispatcher_address_is_validated():
    with pytest.raises(ac_config.ConfigError, match="--data_service: expected the dispatcher's address"):
        ac_config.from_values(train_data="t", num_classes=2, cluster_sizes="4", data_service="nonsense")
    config = ac_config.from_values(
        train_data="t", num_classes=2, cluster_sizes="4", data_service="grpc://h:5050"
    )
    assert config.runtime.data_service == "grpc://h:5050"
