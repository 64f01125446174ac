"""The segment mode of the reader (`ac_keras.data.segments`): segments, frame selection, fill, the 2019
ratings, their checks, and the segment classes file."""

import numpy as np
import pytest
import tensorflow as tf

from ac_keras import errors, schema
from ac_keras.data import SkipCounter, make_dataset, segments
from ac_keras.data.classes import read_segment_classes
from ac_keras.errors import DataError, MissingDataError
from ac_keras.testing import records
from tests.ac_keras.data.test_schema import numpy_dequantize

FEATURES = "rgb:4,audio:3:float"
SIZE = 5
FILL = {"rgb": np.full(4, 0.25, np.float32), "audio": np.full(3, -0.5, np.float32)}


def _videos():
    """Videos of 12 (audio 7), 10 (no audio), 3 and 0 frames, with ratings of full segments."""
    rng = np.random.default_rng(5)

    def rgb(count):
        return rng.integers(0, 256, (count, 4), dtype=np.uint8)

    def audio(count):
        return rng.normal(size=(count, 3)).astype(np.float32)

    return [
        ("a", {"rgb": rgb(12), "audio": audio(7)}, [(5, 10, 3, 1.0), (0, 5, 1, 0.0), (5, 10, 2, 1.0)]),
        ("b", {"rgb": rgb(10)}, [(5, 10, 0, 0.0)]),
        ("c", {"rgb": rgb(3), "audio": audio(3)}, []),
        ("d", {"rgb": rgb(0), "audio": audio(0)}, []),
        ("e", {"audio": audio(6)}, [(0, 5, 4, 1.0)]),
    ]


def _record(video_id, frames, ratings):
    example = records.sequence_example(video_id, None, frames)
    starts, ends, labels, scores = zip(*ratings, strict=True) if ratings else ((),) * 4
    return records.add_segment_ratings(example, starts=starts, ends=ends, labels=labels, scores=scores)


def _selected(count, num_frames):
    """Evaluation's equal-interval frame indices of a set of `count` frames (the paper's protocol)."""
    if num_frames is None or count <= num_frames:
        return list(range(count))
    return [((2 * i + 1) * count) // (2 * num_frames) for i in range(num_frames)]


def _reference(videos, num_frames):
    """Every segment of every video, as NumPy: (id, start, end, {modality: frames}, [(class, rating)])."""
    expected = []
    for video_id, frames, ratings in videos:
        length = max(len(values) for values in frames.values())
        for start in range(0, length, SIZE):
            end = min(start + SIZE, length)
            segment = {}
            for name in ("rgb", "audio"):
                values = frames.get(name, np.zeros([0, 1]))[start:end]
                values = values[_selected(len(values), num_frames)]
                if name == "rgb" and len(values):
                    values = numpy_dequantize(values)
                segment[name] = values if len(values) else FILL[name][None]
            rated = [(label, score) for (s, _, label, score) in ratings if s == start]
            expected.append((video_id, start, end, segment, rated))
    return expected


def _as_lists(outputs):
    """The segments of parsed outputs, in the reference's layout."""
    found = []
    for index, video_id in enumerate(outputs[schema.VIDEO_ID_KEY].numpy()):
        found.append(
            (
                video_id.decode(),
                int(outputs[segments.START_KEY][index]),
                int(outputs[segments.END_KEY][index]),
                {name: outputs[name][index].numpy() for name in ("rgb", "audio")},
                list(
                    zip(
                        outputs[segments.RATED_CLASSES_KEY][index].numpy().tolist(),
                        outputs[segments.RATED_SCORES_KEY][index].numpy().tolist(),
                        strict=True,
                    )
                ),
            )
        )
    return found


def _assert_same(found, expected):
    assert [item[:3] for item in found] == [item[:3] for item in expected]
    for got, want in zip(found, expected, strict=True):
        for name in ("rgb", "audio"):
            np.testing.assert_allclose(
                got[3][name], want[3][name], rtol=0, atol=1e-6, err_msg=f"{got[:3]} {name}"
            )
        assert got[4] == want[4], got[:3]


@pytest.mark.parametrize("num_frames", [None, 2])
def test_segments_equal_a_numpy_reference_eagerly_and_in_the_pipeline(tmp_path, num_frames):
    videos = _videos()
    serialized = [_record(*video).SerializeToString() for video in videos]
    expected = _reference(videos, num_frames)
    eager = segments.parse_segment_batch(
        serialized, FEATURES, segment_size=SIZE, num_frames=num_frames, num_classes=5, missing_fill=FILL
    )
    _assert_same(_as_lists(eager), expected)

    path = records.write_records(tmp_path / "validate.tfrecord", serialized)
    dataset = make_dataset(
        path,
        FEATURES,
        batch_size=2,
        training=False,
        num_frames=num_frames,
        num_classes=5,
        missing_fill=FILL,
        segment_size=SIZE,
    )
    found = []
    for batch in dataset:
        assert set(batch) == {"rgb", "audio", *segments.INFO_KEYS}
        found += _as_lists(batch)
    _assert_same(found, expected)


def test_quantized_frames_stay_bytes_without_dequantize():
    videos = _videos()[:2]
    outputs = segments.parse_segment_batch(
        [_record(*video).SerializeToString() for video in videos],
        FEATURES,
        segment_size=SIZE,
        num_frames=None,
        dequantize=False,
    )
    assert outputs["rgb"].dtype == tf.uint8
    np.testing.assert_array_equal(outputs["rgb"][2].numpy(), videos[0][1]["rgb"][10:12])


def _error_text(tmp_path, ratings, *, pipeline=False):
    """The message of the error a record with `ratings` (after a good record) raises: parsed in a
    `tf.function`, or through `make_dataset` (a `Dataset.map` function)."""
    good = _record(*_videos()[0])
    bad = records.sequence_example("bad", None, {"rgb": np.zeros((12, 4), np.uint8)})
    records.add_segment_ratings(bad, **ratings)
    path = str(tmp_path / "bad.tfrecord")
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        if pipeline:
            records.write_records(path, [good, bad])
            dataset = make_dataset(
                path, FEATURES, batch_size=2, training=False, num_frames=5, num_classes=5, segment_size=SIZE
            )
            for _ in dataset:
                pass
        else:  # in a graph, as the pipeline runs it (eager assertions word their messages otherwise)
            parse = tf.function(
                lambda serialized, names: segments.parse_segment_batch(
                    serialized, FEATURES, segment_size=SIZE, num_frames=5, num_classes=5, record_names=names
                )
            )
            parse(
                tf.constant([good.SerializeToString(), bad.SerializeToString()]),
                tf.constant([f"{path}:0", f"{path}:1"]),
            )
    message = errors.assertion_message(str(raised.value))
    assert message is not None, str(raised.value)
    assert "in video(s) bad" in message and f"records {path}:1" in message, message
    return message


@pytest.mark.slow  # trains or runs a command in-process for seconds (the fast tier skips it)
def test_bad_ratings_are_named(tmp_path):
    unequal = _error_text(tmp_path, dict(starts=[0, 5], ends=[5], labels=[1, 2], scores=[1, 0]))
    assert "found lists of lengths (starts/ends/labels/scores): 2/1/2/2" in unequal
    past_end = _error_text(tmp_path, dict(starts=[10], ends=[15], labels=[1], scores=[1]), pipeline=True)
    assert "Rated segment past the end of the video" in past_end and "10-15 of 12 frames" in past_end
    misaligned = _error_text(tmp_path, dict(starts=[0, 3], ends=[5, 8], labels=[1, 1], scores=[1, 0]))
    assert "segment_size=5; found start-end: 3-8" in misaligned
    short = _error_text(tmp_path, dict(starts=[5], ends=[9], labels=[1], scores=[1]))
    assert "found start-end: 5-9" in short
    out_of_range = _error_text(tmp_path, dict(starts=[0], ends=[5], labels=[7], scores=[1]))
    assert "Rated segment classes outside [0, 5) (num_classes=5): 7" in out_of_range


def test_segment_mode_arguments_are_checked(tmp_path):
    path = records.write_records(tmp_path / "v.tfrecord", [_record(*_videos()[0])])
    common = dict(batch_size=2, num_frames=2)
    for bad, message in [
        (dict(training=True), "training=False"),
        (dict(training=False, drop_remainder=True), "drop_remainder=False"),
        (dict(training=False, record_type="video"), "frame-level records"),
        (dict(training=False, segment_size=0), "positive int"),
    ]:
        with pytest.raises(ValueError, match=message):
            make_dataset(path, FEATURES, **common, **{"segment_size": SIZE, **bad})


@pytest.mark.slow  # trains or runs a command in-process for seconds (the fast tier skips it)
def test_videos_with_nonfinite_features_are_dropped_and_counted(tmp_path):
    videos = _videos()[:3]
    nan_audio = videos[1][1] | {"audio": np.full((4, 3), np.nan, np.float32)}
    serialized = [_record(*videos[0]), _record("b", nan_audio, videos[1][2]), _record(*videos[2])]
    path = records.write_records(tmp_path / "nan.tfrecord", serialized)
    counter = SkipCounter()
    dataset = make_dataset(
        path,
        FEATURES,
        batch_size=3,
        training=False,
        num_frames=None,
        missing_fill=FILL,
        segment_size=SIZE,
        skip_nonfinite=True,
        skip_counter=counter,
    )
    found = [item for batch in dataset for item in _as_lists(batch)]
    _assert_same(found, _reference([videos[0], videos[2]], None))
    assert int(counter.nonfinite_videos.numpy()) == 1


def test_segment_classes_file_is_read_and_checked(tmp_path):
    path = tmp_path / "segment_label_ids.csv"
    path.write_text("Index\n3\n7\n\n1\n3\n")
    assert read_segment_classes(str(path), 8) == (1, 3, 7)
    path.write_text("5\n2\n")
    assert read_segment_classes(str(path), 8) == (2, 5)
    for text, message in [
        ("Index\n3\nseven\n", r"segment_label_ids.csv:3: expected one class id a line"),
        ("Index\n3\n8\n", r"segment_label_ids.csv:3: class 8 is not a class of the model \(0..7"),
        ("Index\n-1\n", r":2: class -1 is not a class of the model"),
        ("Index\n\n", "lists no class"),
        ("1,2\n", ":1: expected one class id a line"),
    ]:
        path.write_text(text)
        with pytest.raises(DataError, match=message):
            read_segment_classes(str(path), 8)
    with pytest.raises(MissingDataError, match="--segment_classes: .*missing.csv does not exist"):
        read_segment_classes(str(tmp_path / "missing.csv"), 8)
