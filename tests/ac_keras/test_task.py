"""ac_keras.task.Task: the training shuffle buffer is sized by a memory budget, not a record count."""

import os

from ac_keras import config as ac_config
from ac_keras.task import SHUFFLE_RECORD_OVERHEAD_BYTES, Task
from ac_keras.testing.records import random_videos, write_videos


def test_the_shuffle_buffer_holds_what_its_memory_budget_holds(tmp_path):
    # 40 records of 100 uint8 frames of 1,024 bytes: about 103 KB each, 4 MB in all.
    write_videos(tmp_path, random_videos("rgb:1024", 40, min_frames=100, max_frames=100), prefix="train")
    (path,) = tmp_path.glob("train-*")
    record_bytes = (os.path.getsize(path) - 16 * 40) / 40  # a TFRecord frames each record with 16 bytes

    def records(**values):
        config = ac_config.from_values(
            train_data=str(tmp_path / "train-*"),
            features="rgb:1024",
            num_classes=10,
            cluster_sizes="4",
            **values,
        )
        return Task(config).shuffle_buffer_records()

    one_megabyte = records(shuffle_buffer_mb=1)
    assert one_megabyte == 2**20 // (record_bytes + SHUFFLE_RECORD_OVERHEAD_BYTES) == 10
    assert records(shuffle_buffer_mb=2) == 20
    # Never more than the data holds, nor than --shuffle_buffer when given.
    assert records(shuffle_buffer_mb=256) == 40
    assert records(shuffle_buffer_mb=256, shuffle_buffer=7) == 7
    assert records(shuffle_buffer_mb=1, shuffle_buffer=30) == 10
