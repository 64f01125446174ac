"""A YouTube-8M frame-level record built by hand, parsed by `ac_keras.data.parse_serialized`.

The record is written with the `tf.train.SequenceExample` protos directly (not with the project's writer or
schema), at the dataset's real sizes: per frame one byte string of 1024 uint8 values under `rgb` and one of
128 under `audio`; the context holds `id` (bytes) and `labels` (int64). The expected floats are the YouTube-8M
starter code's `Dequantize` (google/youtube-8m utils.py) written out as literals, so a change of the
project's dequantization or of its parsing shows up here:

    quantized_range = max - min = 2 - (-2) = 4
    value = byte * quantized_range / 255 + (quantized_range / 512 + min)
          = byte * 4 / 255 - 1.9921875

The `range / 512` term centres each byte's value in its bin: byte 0 -> -1.9921875, byte 255 -> 2.0078125.
"""

import numpy as np
import pytest
import tensorflow as tf

from ac_keras.data import parse_serialized

RGB_DIM = 1024
AUDIO_DIM = 128
NUM_FRAMES = 4
NUM_CLASSES = 3862  # the YouTube-8M 2018 vocabulary
VIDEO_ID = b"Xy9z"
LABELS = [3, 17, 3861]
FEATURES = "rgb:1024,audio:128"

SCALE = 4.0 / 255.0
BIAS = 4.0 / 512.0 - 2.0  # -1.9921875
# A few bytes and their starter-code values, written out.
GOLDEN = {
    0: -1.9921875,
    1: -1.9765012254901961,
    128: 0.015655637254901933,
    254: 1.9921262254901961,
    255: 2.0078125,
}


def _frame_bytes(dim, frame):
    """Every byte value 0..255 occurs; frame 0 starts with the bytes of GOLDEN."""
    values = (np.arange(dim) * 7 + 31 * frame) % 256
    if frame == 0:
        values[: len(GOLDEN)] = list(GOLDEN)
    return values.astype(np.uint8)


RGB = np.stack([_frame_bytes(RGB_DIM, frame) for frame in range(NUM_FRAMES)])
AUDIO = np.stack([_frame_bytes(AUDIO_DIM, frame + 100) for frame in range(NUM_FRAMES)])


def _serialized_record():
    example = tf.train.SequenceExample()
    context = example.context.feature
    context["id"].bytes_list.value.append(VIDEO_ID)
    context["labels"].int64_list.value.extend(LABELS)
    for name, frames in (("rgb", RGB), ("audio", AUDIO)):
        feature_list = example.feature_lists.feature_list[name]
        for frame in frames:
            feature_list.feature.add().bytes_list.value.append(frame.tobytes())
    return example.SerializeToString()


def _parse_eagerly(serialized, **kwargs):
    return parse_serialized(tf.constant([serialized]), FEATURES, training=False, **kwargs)


def _parse_in_dataset_map(serialized, **kwargs):
    dataset = tf.data.Dataset.from_tensors([serialized]).map(
        lambda batch: parse_serialized(batch, FEATURES, training=False, **kwargs)
    )
    return next(iter(dataset))


@pytest.mark.parametrize("parse", [_parse_eagerly, _parse_in_dataset_map], ids=["eager", "dataset_map"])
def test_frames_are_dequantized_as_the_starter_code_does(parse):
    features, labels = parse(_serialized_record(), num_frames=None, num_classes=NUM_CLASSES)

    rgb = features["rgb"]
    audio = features["audio"]
    assert rgb.dtype == audio.dtype == tf.float32
    assert rgb.row_lengths().numpy().tolist() == audio.row_lengths().numpy().tolist() == [NUM_FRAMES]
    rgb = rgb.to_tensor().numpy()[0]
    audio = audio.to_tensor().numpy()[0]
    assert rgb.shape == (NUM_FRAMES, RGB_DIM) and audio.shape == (NUM_FRAMES, AUDIO_DIM)

    for position, (byte, value) in enumerate(GOLDEN.items()):
        assert rgb[0, position] == pytest.approx(value, abs=1e-6), byte
    np.testing.assert_allclose(rgb, RGB * SCALE + BIAS, rtol=0, atol=1e-6)
    np.testing.assert_allclose(audio, AUDIO * SCALE + BIAS, rtol=0, atol=1e-6)
    assert rgb.min() == pytest.approx(-1.9921875) and rgb.max() == pytest.approx(2.0078125)

    assert features["video_id"].numpy().tolist() == [VIDEO_ID]
    labels = labels.numpy()
    assert labels.shape == (1, NUM_CLASSES) and labels.dtype == np.float32
    assert np.flatnonzero(labels[0]).tolist() == LABELS
    assert labels[0, LABELS].tolist() == [1.0, 1.0, 1.0]


def test_evaluation_frames_are_the_centres_of_equal_segments():
    # 4 frames, 2 kept: frames floor((2 i + 1) * 4 / 4) = 1 and 3, in order.
    features, labels = _parse_eagerly(_serialized_record(), num_frames=2)
    assert labels is None
    np.testing.assert_allclose(features["rgb"].to_tensor().numpy()[0], RGB[[1, 3]] * SCALE + BIAS, atol=1e-6)
    np.testing.assert_allclose(
        features["audio"].to_tensor().numpy()[0], AUDIO[[1, 3]] * SCALE + BIAS, atol=1e-6
    )
    assert features["video_id"].numpy().tolist() == [VIDEO_ID]
