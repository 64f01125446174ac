"""The decoder reads the video id under both of YouTube-8M's context keys."""

import numpy as np
import tensorflow as tf

from ac_keras.data import decode_batch, make_dataset
from ac_keras.testing import records


def _record(context_key, video_id):
    example = records.sequence_example("", [1], {"rgb": np.zeros((2, 4), "uint8")})
    del example.context.feature["id"]
    if context_key is not None:
        example.context.feature[context_key].bytes_list.value.append(video_id.encode())
    return example.SerializeToString()


def test_2017_records_name_the_video_id_video_id():
    serialized = tf.constant([_record("id", "new"), _record("video_id", "old2017"), _record(None, "")])
    decoded = decode_batch(serialized, "rgb:4")
    assert [value.decode() for value in decoded.video_ids.numpy()] == ["new", "old2017", ""]


def test_predict_style_reading_keeps_2017_ids(tmp_path):
    path = tmp_path / "yt8m2017.tfrecord"
    with tf.io.TFRecordWriter(str(path)) as writer:
        for index in range(3):
            writer.write(_record("video_id", f"vid{index}"))
    dataset = make_dataset(str(path), "rgb:4", batch_size=3, training=False)
    features = next(iter(dataset))
    assert [value.decode() for value in features["video_id"].numpy()] == ["vid0", "vid1", "vid2"]
