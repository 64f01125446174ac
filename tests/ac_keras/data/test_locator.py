"""Tests of the locator (frames cut out of serialized records) and of the parser's use of it.

The parser reads a batch with the locator when every record is in the layout protobuf serializers write, and
parses it otherwise; both must give the same frames for the same seed. The reference here is the parser with
every frame kept (`num_frames=None`, never located) followed by `select_frame_indices` with the same seeds.
Records in other layouts are written byte by byte below, and checked to be the same protobuf message.
"""

import numpy as np
import pytest
import tensorflow as tf

from ac_keras import schema
from ac_keras.data import locator, make_dataset, parse_batch, parse_serialized, select_frame_indices
from ac_keras.data.writer import ShardedWriter
from ac_keras.testing import records

FEATURES = "rgb:6,audio:130"  # audio frames need 2-byte varint lengths
SPECS = schema.parse_features(FEATURES)


def varint(value, extra=0):
    """Protobuf varint; `extra` > 0 adds that many redundant bytes (valid, but not minimal)."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value or extra else 0))
        if not value:
            break
    for index in range(extra):
        out.append(0x80 if index < extra - 1 else 0x00)
    return bytes(out)


def field(tag, payload, extra=0):
    return bytes([tag]) + varint(len(payload), extra) + payload


def feature_list(frames, extra=0):
    return b"".join(field(0x0A, field(0x0A, field(0x0A, frame, extra))) for frame in frames)


def sequence_example_bytes(
    context, lists, *, context_last=False, extra=0, value_first=False, trailing=b"", entry_order=None
):
    """A SequenceExample written by hand: `context` a `tf.train.Features`, `lists` (name, frame bytes)."""
    entries = []
    for name, frames in lists:
        key, value = field(0x0A, name.encode()), field(0x12, feature_list(frames, extra), extra)
        entries.append(field(0x0A, value + key if value_first else key + value, extra))
    if entry_order is not None:
        entries = [entries[index] for index in entry_order]
    parts = [field(0x0A, context.SerializeToString(), extra), field(0x12, b"".join(entries), extra)]
    return b"".join(parts[::-1] if context_last else parts) + trailing


def video(video_id, lengths, seed, labels=(1,)):
    """A canonical record (`records.sequence_example`) with random frames, and its parts."""
    rng = np.random.default_rng(seed)
    frames = {
        spec.name: rng.integers(0, 256, (length, spec.dim), dtype=np.uint8)
        for spec, length in zip(SPECS, lengths, strict=True)
    }
    return records.sequence_example(video_id, list(labels), frames), frames


def as_lists(frames):
    return [(name, [frame.tobytes() for frame in values]) for name, values in frames.items()]


def reference(serialized, *, training, num_frames, seed, **kwargs):
    """The parser's features with every frame kept, then the frames `select_frame_indices` picks."""
    parsed = parse_batch(serialized, SPECS, training=training, num_frames=None, **kwargs)
    expected = dict(parsed.features)
    for index, spec in enumerate(SPECS):
        frames = parsed.features[spec.name]
        modality_seed = None
        if training:
            modality_seed = tf.random.experimental.stateless_fold_in(tf.constant([seed, 0], tf.int64), index)
        indices, row_splits = select_frame_indices(
            frames.row_splits, training=training, num_frames=num_frames, seed=modality_seed
        )
        expected[spec.name] = tf.RaggedTensor.from_row_splits(
            tf.gather(frames.flat_values, indices), row_splits
        )
    return expected, parsed.labels


def assert_same(features, expected):
    assert set(features) == set(expected)
    for name, value in expected.items():
        if isinstance(value, tf.RaggedTensor):
            assert features[name].dtype == value.dtype
            np.testing.assert_array_equal(features[name].row_splits.numpy(), value.row_splits.numpy())
            np.testing.assert_array_equal(features[name].flat_values.numpy(), value.flat_values.numpy())
        else:
            np.testing.assert_array_equal(features[name].numpy(), value.numpy())


def check_against_reference(serialized, in_map=False, **kwargs):
    if in_map:
        dataset = tf.data.Dataset.from_tensors(serialized).map(
            lambda batch: parse_serialized(batch, FEATURES, num_classes=4, **kwargs)
        )
        features, labels = next(iter(dataset))
    else:
        features, labels = parse_serialized(serialized, FEATURES, num_classes=4, **kwargs)
    expected, expected_labels = reference(serialized, num_classes=4, **kwargs)
    assert_same(features, expected)
    np.testing.assert_array_equal(labels.numpy(), expected_labels.numpy())


@pytest.mark.parametrize("dim", [1, 6, 127, 128, 1024, 16383, 16384])
def test_frame_layout_is_the_protobuf_serialization(dim):
    frames = [bytes([index]) * dim for index in (1, 2)]
    serialized = tf.train.FeatureList(
        feature=[tf.train.Feature(bytes_list=tf.train.BytesList(value=[frame])) for frame in frames]
    ).SerializeToString()
    header, stride = locator.frame_layout(dim)
    assert serialized == b"".join(header + frame for frame in frames)
    assert stride == len(header) + dim


def test_locates_every_frame_of_protobuf_and_writer_records(tmp_path):
    lengths = [(3, 1), (1, 7), (20, 20)]
    examples = [video(f"v{index}", pair, seed=index) for index, pair in enumerate(lengths)]
    with ShardedWriter(str(tmp_path), FEATURES, num_shards=1) as writer:
        for index, (_, frames) in enumerate(examples):
            writer.write(f"v{index}", [1], frames)
        paths = writer.paths
    written = next(iter(tf.data.TFRecordDataset(paths).batch(10)))
    by_protobuf = tf.constant([example.SerializeToString() for example, _ in examples])
    for serialized in (by_protobuf, written):
        located = locator.locate(serialized, SPECS)
        assert bool(located.ok)
        for spec in SPECS:
            header, stride = locator.frame_layout(spec.dim)
            counts = located.counts[spec.name].numpy().tolist()
            assert counts == [pair[SPECS.index(spec)] for pair in lengths]
            for row, (_, frames) in enumerate(examples):
                start = int(located.starts[spec.name][row]) + len(header)
                for frame_index, frame in enumerate(frames[spec.name]):
                    at = start + frame_index * stride
                    assert serialized[row].numpy()[at : at + spec.dim] == frame.tobytes()


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("dequantize", [True, False])
@pytest.mark.parametrize("in_map", [False, True])
def test_located_frames_are_the_parsed_frames(training, dequantize, in_map):
    rng = np.random.default_rng(3)
    lengths = [tuple(int(x) for x in rng.integers(1, 30, 2)) for _ in range(12)]
    serialized = tf.constant(
        [
            video(f"v{i}", pair, seed=i, labels=[i % 4])[0].SerializeToString()
            for i, pair in enumerate(lengths)
        ]
    )
    assert bool(locator.locate(serialized, SPECS).ok)
    check_against_reference(
        serialized, in_map=in_map, training=training, num_frames=5, seed=11, dequantize=dequantize
    )


def test_stateful_sampling_of_located_frames_keeps_distinct_frames_in_order():
    frames = {spec.name: np.repeat(np.arange(40, dtype=np.uint8)[:, None], spec.dim, 1) for spec in SPECS}
    serialized = tf.constant([records.sequence_example("v", [0], frames).SerializeToString()] * 8)
    assert bool(locator.locate(serialized, SPECS).ok)
    features, _ = parse_serialized(serialized, FEATURES, training=True, num_frames=6, dequantize=False)
    for spec in SPECS:
        for row in features[spec.name].numpy():
            indices = row[:, 0].astype(int)
            assert len(indices) == 6 and np.all(np.diff(indices) > 0)
            assert np.all(row == indices[:, None])  # whole frames, not bytes across frames


def _layouts():
    """(name, record bytes, located?) of records equal, as messages, to the canonical `video("odd", ...)`."""
    example, frames = video("odd", (4, 2), seed=9)
    lists = as_lists(frames)
    context = example.context
    return example, [
        ("canonical by hand", sequence_example_bytes(context, lists), True),
        (
            "feature lists in the other order",
            sequence_example_bytes(context, lists, entry_order=[1, 0]),
            True,
        ),
        ("another modality too", sequence_example_bytes(context, [*lists, ("flow", [b"xy"] * 3)]), True),
        ("context last", sequence_example_bytes(context, lists, context_last=True), False),
        ("non-minimal varints", sequence_example_bytes(context, lists, extra=2), False),
        (
            "many other modalities",
            sequence_example_bytes(context, [(f"x{i}", [b"z"]) for i in range(5)] + lists),
            False,
        ),
    ]


@pytest.mark.parametrize("index", range(6))
def test_other_layouts_of_the_same_message_read_the_same(index):
    example, layouts = _layouts()
    name, data, located = layouts[index]
    message = tf.train.SequenceExample.FromString(data)
    for key in ("flow", *(f"x{i}" for i in range(5))):
        if key in message.feature_lists.feature_list:
            del message.feature_lists.feature_list[key]
    assert message == example, name
    companion = video("plain", (9, 3), seed=1)[0].SerializeToString()
    serialized = tf.constant([companion, data])
    assert bool(locator.locate(serialized, SPECS).ok) == located, name
    for training in (True, False):
        check_against_reference(serialized, training=training, num_frames=3, seed=5)
        # The located batch of the canonical bytes gives the same frames as this one.
        canonical = tf.constant([companion, example.SerializeToString()])
        features, _ = parse_serialized(canonical, FEATURES, training=training, num_frames=3, seed=5)
        assert_same(
            features, parse_serialized(serialized, FEATURES, training=training, num_frames=3, seed=5)[0]
        )


def test_records_outside_the_layout_are_not_located():
    example, frames = video("x", (3, 3), seed=2)
    context = example.context
    cases = {
        # As many bytes in all as two frames of 6: only the frames' headers tell.
        "frames of 5 and 7 bytes": records.sequence_example(
            "c", [0], {"rgb": [np.zeros(5, np.uint8), np.zeros(7, np.uint8)], "audio": frames["audio"]}
        ),
        "float frames": records.sequence_example(
            "f", [0], {"rgb": frames["rgb"].astype(np.float32), "audio": frames["audio"]}
        ),
        "a key twice": sequence_example_bytes(context, [*as_lists(frames), ("rgb", as_lists(frames)[0][1])]),
        "bytes after the record": sequence_example_bytes(context, as_lists(frames), trailing=b"\x18\x01"),
        # Valid protobuf, which TensorFlow's own parser rejects too.
        "a map value before its key": sequence_example_bytes(context, as_lists(frames), value_first=True),
    }
    for name, record in cases.items():
        data = record if isinstance(record, bytes) else record.SerializeToString()
        located = locator.locate(tf.constant([example.SerializeToString(), data]), SPECS)
        assert not bool(located.ok), name


def _without_frames_batch(means_rgb=None):
    """A batch mixing records with and without frames of a modality, all of them locatable."""
    example, frames = video("x", (3, 3), seed=2)
    rgb_mean = np.linspace(-1, 1, 6) if means_rgb is None else means_rgb
    return [
        example.SerializeToString(),
        records.sequence_example("no audio", [1], {"rgb": frames["rgb"]}).SerializeToString(),
        sequence_example_bytes(example.context, [("rgb", []), ("audio", as_lists(frames)[1][1])]),
        records.video_level_example("video level", [2], {"rgb": rgb_mean}).SerializeToString(),
        tf.train.SequenceExample(context=example.context).SerializeToString(),
        video("y", (7, 2), seed=3)[0].SerializeToString(),
    ]


@pytest.mark.parametrize("record_type", ["auto", "frame"])
@pytest.mark.parametrize("training", [True, False])
def test_records_without_frames_of_a_modality_are_located_and_filled(record_type, training):
    serialized = tf.constant(_without_frames_batch())
    located = locator.locate(serialized, SPECS)
    assert bool(located.ok)
    assert located.counts["rgb"].numpy().tolist() == [3, 3, 0, 0, 0, 7]
    assert located.counts["audio"].numpy().tolist() == [3, 0, 3, 0, 0, 2]
    fill = {"audio": np.full(130, 0.5, np.float32)}
    check_against_reference(
        serialized, training=training, num_frames=2, seed=3, record_type=record_type, missing_fill=fill
    )
    features, _ = parse_serialized(
        serialized, FEATURES, training=training, num_frames=2, record_type=record_type, missing_fill=fill
    )
    # The video-level record's mean with "auto", the zero fill with "frame"; the fill where audio is missing.
    expected_rgb = np.linspace(-1, 1, 6) if record_type == "auto" else np.zeros(6)
    np.testing.assert_allclose(features["rgb"][3].numpy(), [expected_rgb], atol=1e-6)
    np.testing.assert_allclose(features["audio"][1].numpy(), fill["audio"][None], atol=1e-6)


def test_bad_video_level_vectors_of_located_records_keep_their_messages():
    short = tf.constant(_without_frames_batch(means_rgb=np.zeros(4)))
    assert bool(locator.locate(short, SPECS).ok)
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"(?s)Modality rgb declares dim 6, found video-level mean_rgb.*4.*video level",
    ):
        parse_serialized(short, FEATURES, training=True, num_frames=2)
    nan = tf.constant(_without_frames_batch(means_rgb=np.array([np.nan] * 6)))
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"(?s)Modality rgb holds NaN or Inf.*video level"
    ):
        parse_serialized(nan, FEATURES, training=True, num_frames=2)
    parsed = parse_batch(nan, SPECS, training=True, num_frames=2, nonfinite="flag")
    assert parsed.nonfinite.numpy().tolist() == [False, False, False, True, False, False]


def test_bad_data_keeps_its_error_messages_with_a_frame_selection():
    bad = records.sequence_example(
        "clip_42",
        [0],
        {"rgb": [np.zeros(6, np.uint8), np.zeros(5, np.uint8)], "audio": np.zeros((2, 130), np.uint8)},
    )
    serialized = tf.constant([video("fine", (2, 2), seed=0)[0].SerializeToString(), bad.SerializeToString()])
    with pytest.raises(
        tf.errors.InvalidArgumentError,
        match=r"(?s)Modality rgb declares dim 6 .*found frames of \(bytes\):.*5.*clip_42",
    ):
        parse_serialized(serialized, FEATURES, training=True, num_frames=1)
    out_of_range = tf.constant([video("late", (2, 2), seed=0, labels=[9])[0].SerializeToString()])
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)Labels outside \[0, 4\).*9.*late"):
        parse_serialized(out_of_range, FEATURES, training=True, num_frames=1, num_classes=4)


def test_truncated_and_corrupted_records_never_break_the_walk():
    example, _ = video("trunc", (2, 1), seed=4)
    data = example.SerializeToString()
    truncated = [data[:cut] for cut in range(0, len(data), 7)]
    located = locator.locate(tf.constant(truncated), SPECS)
    assert not bool(located.ok)
    rng = np.random.default_rng(0)
    for position in rng.choice(len(data), 40, replace=False):
        flipped = bytearray(data)
        flipped[position] ^= 1 << int(rng.integers(8))
        serialized = tf.constant([bytes(flipped)])
        locator.locate(serialized, SPECS)  # never raises
        try:
            expected = reference(serialized, training=False, num_frames=1, seed=0)[0]
        except tf.errors.InvalidArgumentError:
            with pytest.raises(tf.errors.InvalidArgumentError):
                parse_serialized(serialized, FEATURES, training=False, num_frames=1)
        else:
            assert_same(parse_serialized(serialized, FEATURES, training=False, num_frames=1)[0], expected)


def test_2017_records_with_video_id_are_located_with_their_ids():
    _, frames = video("unused", (2, 2), seed=6)
    context = tf.train.Features(
        feature={schema.LEGACY_ID_KEY: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"yt2017"]))}
    )
    serialized = tf.constant([sequence_example_bytes(context, as_lists(frames))])
    assert bool(locator.locate(serialized, SPECS).ok)
    features, _ = parse_serialized(serialized, FEATURES, training=False, num_frames=1)
    assert features[schema.VIDEO_ID_KEY].numpy().tolist() == [b"yt2017"]


def test_located_reading_in_a_saved_model(tmp_path):
    class Parser(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
        def __call__(self, serialized):
            features, _ = parse_serialized(
                serialized, FEATURES, training=False, num_frames=2, dequantize=False
            )
            return {
                name: value.flat_values for name, value in features.items() if name != schema.VIDEO_ID_KEY
            }

    module = Parser()
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.__call__})
    loaded = tf.saved_model.load(str(tmp_path))
    records = [video(f"v{i}", (5, 3), seed=i)[0].SerializeToString() for i in range(3)]
    records.append(records[0][:-1])  # a truncated record: not located, the parse's error
    serialized = tf.constant(records[:3])
    outputs = loaded(serialized)
    expected = reference(serialized, training=False, num_frames=2, seed=0, dequantize=False)[0]
    for spec in SPECS:
        np.testing.assert_array_equal(outputs[spec.name].numpy(), expected[spec.name].flat_values.numpy())
    # The TF1 session loader is how TF Serving and `saved_model_cli run` load models.
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], str(tmp_path))
        signature = meta.signature_def["serving_default"]
        fetches = {name: info.name for name, info in signature.outputs.items()}
        feed = {signature.inputs["serialized"].name: records[:3]}
        served = session.run(fetches, feed_dict=feed)
        for spec in SPECS:
            np.testing.assert_array_equal(served[spec.name], expected[spec.name].flat_values.numpy())
        with pytest.raises(tf.errors.InvalidArgumentError):
            session.run(fetches, feed_dict={signature.inputs["serialized"].name: records})


def test_make_dataset_reads_located_batches_as_it_parses_them(tmp_path):
    with ShardedWriter(str(tmp_path), FEATURES, num_shards=2) as writer:
        for index in range(20):
            _, frames = video(f"v{index}", (1 + index % 9, 1 + index % 4), seed=index)
            writer.write(f"v{index}", [index % 4], frames)
    common = dict(batch_size=8, training=False, num_classes=4, label_mode="multi", dequantize=False)
    located = list(make_dataset(str(tmp_path / "*"), FEATURES, num_frames=3, **common))
    parsed = list(make_dataset(str(tmp_path / "*"), FEATURES, num_frames=None, **common))
    assert len(located) == len(parsed) == 3
    for (features, labels), (all_features, all_labels) in zip(located, parsed, strict=True):
        np.testing.assert_array_equal(labels.numpy(), all_labels.numpy())
        for spec in SPECS:
            frames = all_features[spec.name]
            indices, row_splits = select_frame_indices(frames.row_splits, training=False, num_frames=3)
            np.testing.assert_array_equal(features[spec.name].row_splits.numpy(), row_splits.numpy())
            np.testing.assert_array_equal(
                features[spec.name].flat_values.numpy(), tf.gather(frames.flat_values, indices).numpy()
            )
