"""Tests of the TFRecord writer API (`ac_keras.data.writer`)."""

import os

import numpy as np
import pytest
import tensorflow as tf

from ac_keras import schema
from ac_keras.data import parse_serialized
from ac_keras.data.writer import ShardedWriter, make_sequence_example

FEATURES = "rgb:4,flow:3:float"


def frames(num_frames=2):
    return {
        "rgb": np.linspace(-1.5, 1.5, num_frames * 4).reshape(num_frames, 4),
        "flow": np.arange(num_frames * 3, dtype=np.float32).reshape(num_frames, 3),
    }


def test_make_sequence_example_uses_the_starter_code_layout():
    example = make_sequence_example("vid", [3, 1], frames(), FEATURES)
    assert example.context.feature["id"].bytes_list.value == [b"vid"]
    assert example.context.feature["labels"].int64_list.value == [3, 1]
    rgb = example.feature_lists.feature_list["rgb"].feature
    assert len(rgb) == 2 and all(len(frame.bytes_list.value) == 1 for frame in rgb)
    np.testing.assert_array_equal(
        np.frombuffer(rgb[1].bytes_list.value[0], np.uint8), schema.quantize(frames()["rgb"][1])
    )
    flow = example.feature_lists.feature_list["flow"].feature
    assert list(flow[1].float_list.value) == [3.0, 4.0, 5.0]
    stored = np.full((1, 4), 200, np.uint8)  # uint8 frames are stored as they are
    example = make_sequence_example("u", [], {**frames(1), "rgb": stored}, FEATURES)
    assert example.feature_lists.feature_list["rgb"].feature[0].bytes_list.value[0] == bytes([200] * 4)


@pytest.mark.parametrize(
    ("bad_frames", "message"),
    [
        ({"rgb": np.zeros((2, 5))}, r"'rgb'.*\(num_frames, 4\).*declared dim 4.*\(2, 5\)"),
        ({"rgb": np.zeros(4)}, r"'rgb'.*shape"),
        ({"flow": np.full((1, 3), np.nan, np.float32)}, r"'flow'.*NaN"),
        ({"extra": np.zeros((1, 2))}, r"'extra'.*does not declare"),
        ({"rgb": np.zeros((1, 4), np.int32)}, r"float or uint8"),
    ],
)
def test_make_sequence_example_rejects_bad_frames(bad_frames, message):
    with pytest.raises(ValueError, match=message):
        make_sequence_example("vid", [0], {**frames(), **bad_frames}, FEATURES)


def test_missing_modality_raises_unless_allowed():
    only_rgb = {"rgb": frames()["rgb"]}
    with pytest.raises(ValueError, match=r"'vid'.*no frames for modality 'flow'"):
        make_sequence_example("vid", [0], only_rgb, FEATURES)
    example = make_sequence_example("vid", [0], only_rgb, FEATURES, allow_missing=True)
    # An empty list (zero frames), not an absent key: the YouTube-8M starter's reader requires every list.
    assert "flow" in example.feature_lists.feature_list
    assert len(example.feature_lists.feature_list["flow"].feature) == 0
    parsed = parse_serialized(
        tf.constant([example.SerializeToString()]), FEATURES, training=False, num_frames=None
    )
    assert parsed[0]["flow"].row_lengths().numpy().tolist() == [1]  # read as missing: one fill vector
    with pytest.raises(ValueError, match="non-negative ints"):
        make_sequence_example("vid", [-1], frames(), FEATURES)


def test_sharded_writer_writes_round_robin_and_renames_on_close(tmp_path):
    with ShardedWriter(str(tmp_path), FEATURES, prefix="validate", num_shards=3) as writer:
        for index in range(7):
            writer.write(f"v{index}", [index], frames())
        writer.write_serialized(make_sequence_example("raw", [], frames(), FEATURES).SerializeToString())
        assert not any(os.path.exists(path) for path in writer.paths)  # temporary names until close
    assert [os.path.basename(path) for path in writer.paths] == [
        f"validate-{shard:05d}-of-00003.tfrecord" for shard in range(3)
    ]
    ids = [
        [
            tf.train.SequenceExample.FromString(record.numpy()).context.feature["id"].bytes_list.value[0]
            for record in tf.data.TFRecordDataset(path)
        ]
        for path in writer.paths
    ]
    assert ids == [[b"v0", b"v3", b"v6"], [b"v1", b"v4", b"raw"], [b"v2", b"v5"]]
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(path) for path in writer.paths)


def test_sharded_writer_refuses_to_overwrite_and_leaves_nothing_after_a_crash(tmp_path):
    with ShardedWriter(str(tmp_path), FEATURES, num_shards=2) as writer:
        writer.write("v", [0], frames())
    with pytest.raises(FileExistsError, match="train-00000-of-00002.tfrecord"):
        ShardedWriter(str(tmp_path), FEATURES, num_shards=2)
    before = {path: os.path.getsize(path) for path in writer.paths}
    with (
        pytest.raises(RuntimeError, match="crash"),
        ShardedWriter(str(tmp_path), FEATURES, num_shards=2, overwrite=True) as replacement,
    ):
        replacement.write("w", [1], frames())
        raise RuntimeError("crash")
    assert {path: os.path.getsize(path) for path in writer.paths} == before  # old shards intact
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(path) for path in writer.paths)
    with ShardedWriter(str(tmp_path), FEATURES, num_shards=2, overwrite=True) as replacement:
        replacement.write("w", [1], frames(3))
    assert os.path.getsize(writer.paths[0]) > before[writer.paths[0]]
