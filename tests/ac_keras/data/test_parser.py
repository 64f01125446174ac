"""Tests of the batch parser (`parse_serialized`), eagerly, inside `Dataset.map` and in a SavedModel.

Records are built directly with `tf.train.SequenceExample` / `tf.train.Example` in the YouTube-8M starter
code layout (`ac_keras.testing.records`), not through our writer.
"""

import collections
import itertools

import numpy as np
import pytest
import tensorflow as tf

from ac_keras import schema
from ac_keras.data import parse_serialized, select_frame_indices
from ac_keras.testing import records
from tests.ac_keras.data.test_schema import numpy_dequantize

FEATURES = "rgb:6,audio:3:float"


def serialize(examples):
    return tf.constant([example.SerializeToString() for example in examples])


def index_video(video_id, num_frames):
    """Frames that carry their own index: rgb bytes = index, audio floats = index."""
    return records.sequence_example(
        video_id,
        [0],
        {
            "rgb": np.repeat(np.arange(num_frames, dtype=np.uint8)[:, None], 6, axis=1),
            "audio": np.repeat(np.arange(num_frames, dtype=np.float32)[:, None], 3, axis=1),
        },
    )


def frame_indices(features, name="audio"):
    """Per video, the indices of the frames kept (from `index_video` frames)."""
    rows = features[name].numpy()
    if name == "rgb":  # quantized: recover the stored byte
        rows = [schema.quantize(row) for row in rows]
    return [row[:, 0].astype(int).tolist() for row in rows]


def parse_in_map(serialized, **kwargs):
    """Runs parse_serialized inside Dataset.map and returns the one parsed batch."""
    dataset = tf.data.Dataset.from_tensors(serialized).map(lambda batch: parse_serialized(batch, **kwargs))
    return next(iter(dataset))


@pytest.fixture(params=["eager", "dataset_map"])
def parse(request):
    """parse_serialized run eagerly or inside Dataset.map."""
    if request.param == "eager":
        return parse_serialized
    return parse_in_map


def test_starter_code_records_decode_to_the_dequantization_formula(parse):
    videos = records.random_videos(FEATURES, 5, min_frames=1, max_frames=7, num_classes=4, seed=1)
    serialized = serialize(records.sequence_example(v["video_id"], v["labels"], v["frames"]) for v in videos)
    features, labels = parse(
        serialized,
        features=FEATURES,
        training=False,
        num_frames=None,
        num_classes=4,
        label_mode="single",
    )
    assert isinstance(features["rgb"], tf.RaggedTensor)
    assert features["rgb"].dtype == tf.float32 and features["audio"].dtype == tf.float32
    assert features["rgb"].shape.as_list() == [5, None, 6]
    for index, video in enumerate(videos):
        np.testing.assert_allclose(
            features["rgb"][index].numpy(), numpy_dequantize(video["frames"]["rgb"]), rtol=0, atol=1e-6
        )
        np.testing.assert_array_equal(features["audio"][index].numpy(), video["frames"]["audio"])
    assert [x.decode() for x in features[schema.VIDEO_ID_KEY].numpy()] == [v["video_id"] for v in videos]
    np.testing.assert_array_equal(
        labels.numpy(), np.eye(4, dtype=np.float32)[[v["labels"][0] for v in videos]]
    )


def test_multi_hot_labels_and_records_without_labels(parse):
    serialized = serialize(
        [
            records.sequence_example("a", [0, 3, 3], {"rgb": np.zeros((2, 6), np.uint8)}),
            records.sequence_example("b", None, {"rgb": np.zeros((2, 6), np.uint8)}),
        ]
    )
    _, labels = parse(serialized, features="rgb:6", training=False, num_frames=None, num_classes=5)
    np.testing.assert_array_equal(labels.numpy(), [[1, 0, 0, 1, 0], [0, 0, 0, 0, 0]])
    features, labels = parse(serialized, features="rgb:6", training=False, num_frames=None)
    assert labels is None
    assert features["rgb"].row_lengths().numpy().tolist() == [2, 2]


def test_video_level_examples_read_as_length_one_sets(parse):
    rgb_mean = np.linspace(-1, 1, 6).astype(np.float32)
    serialized = serialize(
        [
            records.video_level_example("v1", [2], {"rgb": rgb_mean, "audio": [1.0, 2.0, 3.0]}),
            records.video_level_example("v2", [1], {"rgb": rgb_mean}),  # no audio: filled
            index_video("f1", 4),  # a frame-level record in the same batch ("auto")
        ]
    )
    for record_type in ("auto", "video"):
        features, labels = parse(
            serialized,
            features=FEATURES,
            training=False,
            num_frames=None,
            num_classes=3,
            record_type=record_type,
        )
        lengths = features["rgb"].row_lengths().numpy().tolist()
        assert lengths[:2] == [1, 1]
        np.testing.assert_array_equal(features["rgb"][0].numpy(), rgb_mean[None])
        np.testing.assert_array_equal(features["audio"][0].numpy(), [[1.0, 2.0, 3.0]])
        np.testing.assert_array_equal(features["audio"][1].numpy(), [[0.0, 0.0, 0.0]])
        np.testing.assert_array_equal(labels.numpy()[:2], [[0, 0, 1], [0, 1, 0]])
        # The frame-level record: all 4 frames with "auto", a zero fill with "video".
        assert lengths[2] == (4 if record_type == "auto" else 1)


@pytest.mark.parametrize("dequantize", [True, False])
def test_length_one_sets_land_in_their_own_rows_among_frame_level_records(parse, dequantize):
    """Records without frames of a modality anywhere in the batch (first, consecutive, last, between
    records of different lengths, video-level ones too) get their vector in their own row; every other
    row keeps its frames. Checked against a row-by-row reference, for float32 and for uint8 hand-over."""
    rng = np.random.default_rng(4)
    rgb_mean = schema.dequantize(rng.integers(0, 256, 6).astype(np.uint8))
    fill = {"rgb": schema.dequantize(np.full(6, 200, np.uint8)), "audio": np.array([9, 8, 7], np.float32)}
    layout = [("none", 0), ("frames", 3), ("rgb_only", 2), ("none", 0), ("video", 0), ("frames", 5)]
    layout += [("audio_only", 4), ("rgb_only", 1), ("none", 0)]
    examples, expected = [], {"rgb": [], "audio": []}
    for index, (kind, length) in enumerate(layout):
        rgb = rng.integers(0, 256, (length, 6)).astype(np.uint8)
        audio = rng.normal(size=(length, 3)).astype(np.float32)
        frames = {}
        if kind in ("frames", "rgb_only"):
            frames["rgb"] = rgb
        if kind in ("frames", "audio_only"):
            frames["audio"] = audio
        if kind == "video":
            examples.append(records.video_level_example(f"v{index}", [0], {"rgb": rgb_mean}))
        else:
            examples.append(records.sequence_example(f"v{index}", [0], frames))
        expected["rgb"].append(
            schema.dequantize(frames["rgb"])
            if "rgb" in frames
            else (rgb_mean if kind == "video" else fill["rgb"])[None]
        )
        expected["audio"].append(frames["audio"] if "audio" in frames else fill["audio"][None])
    features, _ = parse(
        serialize(examples),
        features=FEATURES,
        training=False,
        num_frames=None,
        missing_fill=fill,
        dequantize=dequantize,
    )
    for index in range(len(layout)):
        rgb = features["rgb"][index].numpy()
        if not dequantize:
            assert rgb.dtype == np.uint8
            rgb = schema.dequantize(rgb)
        np.testing.assert_allclose(rgb, expected["rgb"][index], atol=1e-6, err_msg=f"record {index}")
        np.testing.assert_array_equal(features["audio"][index].numpy(), expected["audio"][index])


def test_evaluation_takes_equal_intervals(parse):
    lengths = [10, 25, 4, 7]
    serialized = serialize(index_video(f"v{n}", n) for n in lengths)
    features, _ = parse(serialized, features=FEATURES, training=False, num_frames=4)
    expected = []
    for length in lengths:
        if length <= 4:
            expected.append(list(range(length)))
        else:  # centres of 4 equal segments
            expected.append([(2 * i + 1) * length // 8 for i in range(4)])
    assert frame_indices(features) == expected
    assert frame_indices(features, "rgb") == expected
    assert expected[0] == [1, 3, 6, 8]


def test_all_frames_when_num_frames_is_none(parse):
    serialized = serialize(index_video(f"v{n}", n) for n in (3, 12))
    for training in (False, True):
        features, _ = parse(serialized, features=FEATURES, training=training, num_frames=None)
        assert frame_indices(features) == [list(range(3)), list(range(12))]


def test_training_samples_distinct_frames_at_random(parse):
    lengths = [30, 8, 3, 12]
    serialized = serialize(index_video(f"v{n}", n) for n in lengths)
    samples = []
    for seed in range(4):
        features, _ = parse(serialized, features=FEATURES, training=True, num_frames=8, seed=seed)
        kept = frame_indices(features)
        for indices, length in zip(kept, lengths, strict=True):
            assert len(indices) == min(length, 8)  # short videos keep their true length
            assert len(set(indices)) == len(indices)  # no duplicates
            assert indices == sorted(indices)  # temporal order
            assert set(indices) <= set(range(length))
        samples.append(kept[0])
    assert len({tuple(sample) for sample in samples}) > 1  # different seeds, different frames
    again, _ = parse(serialized, features=FEATURES, training=True, num_frames=8, seed=2)
    assert frame_indices(again)[0] == samples[2]  # same seed, same frames


def test_select_frame_indices_training_covers_all_frames_over_seeds():
    row_splits = tf.constant([0, 5, 6], tf.int64)
    seen = set()
    for seed in range(30):
        indices, new_splits = select_frame_indices(
            row_splits, training=True, num_frames=2, seed=tf.constant([seed, 7], tf.int64)
        )
        assert new_splits.numpy().tolist() == [0, 2, 3]
        assert indices.numpy()[-1] == 5
        seen.update(indices.numpy()[:2].tolist())
    assert seen == {0, 1, 2, 3, 4}


def test_select_frame_indices_training_draws_uniform_subsets():
    """Every 2-subset of a 5-frame video is equally likely (600 seeds: 60 expected each, sd 7.3); the
    other video (3 frames, K=2) too; the rows keep their own frames."""
    row_splits = tf.constant([0, 5, 8], tf.int64)
    pairs = collections.Counter()
    others = collections.Counter()
    for seed in range(600):
        indices, _ = select_frame_indices(
            row_splits, training=True, num_frames=2, seed=tf.constant([seed, 11], tf.int64)
        )
        chosen = indices.numpy().tolist()
        pairs[tuple(chosen[:2])] += 1
        others[tuple(chosen[2:])] += 1
    assert set(pairs) == set(itertools.combinations(range(5), 2))
    assert all(25 <= count <= 95 for count in pairs.values()), pairs
    assert set(others) == set(itertools.combinations(range(5, 8), 2))
    assert all(150 <= count <= 250 for count in others.values()), others


def test_missing_modality_is_filled_with_the_given_vector_or_zeros(parse):
    serialized = serialize(
        [
            records.sequence_example("no_audio", [1], {"rgb": np.zeros((3, 6), np.uint8)}),
            index_video("full", 2),
        ]
    )
    fill = np.array([0.5, -0.5, 2.0], np.float32)
    features, _ = parse(
        serialized, features=FEATURES, training=True, num_frames=2, missing_fill={"audio": fill}
    )
    assert features["audio"].row_lengths().numpy().tolist() == [1, 2]
    np.testing.assert_array_equal(features["audio"][0].numpy(), fill[None])
    features, _ = parse(serialized, features=FEATURES, training=False, num_frames=None)
    np.testing.assert_array_equal(features["audio"][0].numpy(), np.zeros((1, 3)))
    assert np.all(np.isfinite(features["audio"].flat_values.numpy()))


def test_frame_of_the_wrong_size_names_modality_dims_and_video(parse):
    bad = records.sequence_example("clip_42", [0], {"rgb": [np.zeros(6, np.uint8), np.zeros(5, np.uint8)]})
    serialized = serialize([index_video("fine", 2), bad])
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"(?s)Modality rgb declares dim 6 .*found frames of \(bytes\):.*5.*clip_42",
    ):
        parse(serialized, features=FEATURES, training=False, num_frames=None)


def test_float_frame_of_the_wrong_size_names_modality_dims_and_video(parse):
    bad = records.sequence_example(
        "floaty", [0], {"rgb": np.zeros((1, 6), np.uint8), "audio": [np.zeros(2, np.float32)]}
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"(?s)Modality audio declares dim 3 .*floats\):.*2.*floaty"
    ):
        parse(serialize([bad]), features=FEATURES, training=False, num_frames=None)


def test_label_outside_the_classes_names_the_video(parse):
    serialized = serialize(
        [
            records.sequence_example("ok", [1], {"rgb": np.zeros((1, 6), np.uint8)}),
            records.sequence_example("label_9", [9], {"rgb": np.zeros((1, 6), np.uint8)}),
        ]
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)outside \[0, 4\).*9.*label_9"):
        parse(serialized, features="rgb:6", training=False, num_frames=None, num_classes=4)


def test_single_label_mode_needs_one_label(parse):
    serialized = serialize([records.sequence_example("two", [1, 2], {"rgb": np.zeros((1, 6), np.uint8)})])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)exactly one label.*two"):
        parse(
            serialized, features="rgb:6", training=False, num_frames=None, num_classes=4, label_mode="single"
        )


def test_nonfinite_float_features_name_video_and_modality(parse):
    audio = np.zeros((2, 3), np.float32)
    audio[1, 2] = np.nan
    serialized = serialize(
        [records.sequence_example("nan_clip", [0], {"rgb": np.zeros((2, 6), np.uint8), "audio": audio})]
    )
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"(?s)Modality audio holds NaN or Inf.*nan_clip"
    ):
        parse(serialized, features=FEATURES, training=False, num_frames=None)


def test_parse_serialized_in_a_saved_model(tmp_path):
    """The serving SavedModel calls the parser on its input strings; records carry no labels."""

    class Parser(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, serialized):
            features, _ = parse_serialized(
                serialized,
                FEATURES,
                training=False,
                num_frames=3,
                missing_fill={"audio": np.ones(3, np.float32)},
            )
            return {
                "rgb": features["rgb"].flat_values,
                "rgb_lengths": features["rgb"].row_lengths(),
                "audio": features["audio"].flat_values,
                "ids": features[schema.VIDEO_ID_KEY],
            }

    tf.saved_model.save(Parser(), str(tmp_path / "parser"))
    loaded = tf.saved_model.load(str(tmp_path / "parser"))
    serialized = serialize(
        [
            records.sequence_example("s1", None, {"rgb": np.full((5, 6), 7, np.uint8)}),
            index_video("s2", 2),
        ]
    )
    outputs = loaded(serialized)
    assert outputs["rgb_lengths"].numpy().tolist() == [3, 2]
    np.testing.assert_allclose(outputs["rgb"].numpy()[:3], numpy_dequantize(np.full((3, 6), 7)))
    np.testing.assert_array_equal(outputs["audio"].numpy()[0], np.ones(3))
    assert outputs["ids"].numpy().tolist() == [b"s1", b"s2"]


def test_bad_arguments_raise_value_errors():
    serialized = serialize([index_video("v", 2)])
    with pytest.raises(ValueError, match="label_mode"):
        parse_serialized(serialized, FEATURES, training=False, num_frames=None, label_mode="one")
    with pytest.raises(ValueError, match="num_frames"):
        parse_serialized(serialized, FEATURES, training=False, num_frames=0)
    with pytest.raises(ValueError, match=r"missing_fill\['audio'\]"):
        parse_serialized(
            serialized, FEATURES, training=False, num_frames=None, missing_fill={"audio": np.zeros(4)}
        )
    with pytest.raises(ValueError, match="record_type"):
        parse_serialized(serialized, FEATURES, training=False, num_frames=None, record_type="clip")
