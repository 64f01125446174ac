"""Tests of `make_dataset`: files -> batches, bad files, skipping, stats-derived options, sharding."""

import json
import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from ac_keras import schema
from ac_keras.data import (
    ClassWeights,
    SkipCounter,
    decode_batch,
    make_dataset,
    parse_batch,
    resolve_stats,
    shard_for_workers,
)
from ac_keras.data import stats as data_stats
from ac_keras.data.writer import ShardedWriter
from ac_keras.testing import records
from tests.ac_keras.data.test_schema import numpy_dequantize

FEATURES = "rgb:8,audio:4:float"


def read_all(dataset):
    """All elements of a dataset, as NumPy: features dict of lists of per-video arrays, then the rest."""
    features = {}
    rest = []
    for element in dataset:
        batch = element[0] if isinstance(element, tuple) else element
        for name, value in batch.items():
            rows = list(value.numpy()) if isinstance(value, tf.RaggedTensor) else list(value.numpy())
            features.setdefault(name, []).extend(rows)
        if isinstance(element, tuple):
            rest.append([part.numpy() for part in element[1:]])
    return features, rest


def ids_of(features):
    return [video_id.decode() for video_id in features[schema.VIDEO_ID_KEY]]


@pytest.fixture
def dataset_dir(tmp_path):
    """Three shards of 7 videos written by our writer (floats quantized for rgb)."""
    videos = records.random_videos(FEATURES, 7, num_classes=5, min_frames=1, max_frames=9, seed=3)
    for video in videos:  # the writer quantizes float frames of a uint8 modality
        video["frames"]["rgb"] = schema.dequantize(video["frames"]["rgb"])
    with ShardedWriter(str(tmp_path), FEATURES, num_shards=3) as writer:
        for video in videos:
            writer.write(video["video_id"], video["labels"], video["frames"])
    return tmp_path, {video["video_id"]: video for video in videos}


def test_round_trip_through_our_writer_equals_the_formula(dataset_dir):
    directory, videos = dataset_dir
    dataset = make_dataset(
        str(directory / "train-*"),
        FEATURES,
        batch_size=3,
        training=False,
        num_classes=5,
        label_mode="single",
    )
    features, rest = read_all(dataset)
    assert sorted(ids_of(features)) == sorted(videos)
    labels = np.concatenate([batch[0] for batch in rest])
    for index, video_id in enumerate(ids_of(features)):
        video = videos[video_id]
        stored_bytes = schema.quantize(video["frames"]["rgb"])
        np.testing.assert_allclose(features["rgb"][index], numpy_dequantize(stored_bytes), rtol=0, atol=1e-6)
        np.testing.assert_array_equal(features["audio"][index], video["frames"]["audio"])
        assert np.argmax(labels[index]) == video["labels"][0]


def test_evaluation_order_is_deterministic_and_batches_are_ragged(dataset_dir):
    directory, _ = dataset_dir

    def ids_once():
        dataset = make_dataset(
            str(directory / "train-*"),
            FEATURES,
            batch_size=4,
            training=False,
            num_classes=5,
            label_mode="multi",
        )
        element = next(iter(dataset))
        assert element[0]["rgb"].shape.as_list() == [4, None, 8]
        assert element[1].shape.as_list() == [4, 5]
        return ids_of(read_all(dataset)[0])

    assert ids_once() == ids_once()


def test_training_shuffles_and_resamples_every_epoch(dataset_dir):
    directory, videos = dataset_dir
    dataset = make_dataset(
        str(directory / "train-*"),
        FEATURES,
        batch_size=7,
        training=True,
        num_frames=2,
        num_classes=5,
        label_mode="single",
        seed=11,
    )
    epochs = [read_all(dataset)[0] for _ in range(3)]
    for features in epochs:
        assert sorted(ids_of(features)) == sorted(videos)
        for video_id, frames in zip(ids_of(features), features["audio"], strict=True):
            assert len(frames) == min(2, len(videos[video_id]["frames"]["audio"]))
    orders = {tuple(ids_of(features)) for features in epochs}
    assert len(orders) > 1  # a new shuffle every epoch
    samples = [
        {video_id: frames.tobytes() for video_id, frames in zip(ids_of(f), f["audio"], strict=True)}
        for f in epochs
    ]
    assert any(samples[0][video_id] != samples[1][video_id] for video_id in videos)  # new frames
    same_seed = make_dataset(
        str(directory / "train-*"),
        FEATURES,
        batch_size=7,
        training=True,
        num_frames=2,
        num_classes=5,
        label_mode="single",
        seed=11,
    )
    first = read_all(same_seed)[0]
    assert ids_of(first) == ids_of(epochs[0])
    np.testing.assert_array_equal(np.concatenate(first["audio"]), np.concatenate(epochs[0]["audio"]))


def test_repeat_and_drop_remainder_give_full_static_batches(dataset_dir):
    directory, _ = dataset_dir
    dataset = make_dataset(
        str(directory / "train-*"),
        FEATURES,
        batch_size=5,
        training=True,
        num_classes=5,
        label_mode="multi",
        repeat=True,
        drop_remainder=True,
        seed=0,
    )
    assert dataset.element_spec[1].shape.as_list() == [5, 5]
    assert len(list(dataset.take(4))) == 4


def test_no_matching_file_names_the_pattern(tmp_path):
    pattern = str(tmp_path / "nothing-*.tfrecord")
    with pytest.raises(FileNotFoundError, match="nothing-"):
        make_dataset(pattern, FEATURES, batch_size=2, training=False, num_classes=5, label_mode="multi")


def write_truncated(directory, name="broken.tfrecord", cut=30):
    videos = records.random_videos(FEATURES, 4, num_classes=5, seed=5, id_prefix="broken")
    path = records.write_videos(directory, videos, prefix="tmp")[0]
    data = pathlib.Path(path).read_bytes()
    os.remove(path)
    broken = os.path.join(directory, name)
    pathlib.Path(broken).write_bytes(data[:-cut])
    return broken


@pytest.mark.parametrize("split_files", [False, True])
def test_truncated_file_raises_an_error_naming_it(dataset_dir, split_files):
    directory, _ = dataset_dir
    broken = write_truncated(str(directory), "train-broken.tfrecord")
    dataset = make_dataset(
        str(directory / "train-*"),
        FEATURES,
        batch_size=4,
        training=False,
        num_classes=5,
        label_mode="single",
        split_files=split_files,
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match="train-broken.tfrecord.*corrupt or truncated"):
        read_all(dataset)
    assert os.path.exists(broken)


def test_corrupt_record_raises_an_error_naming_the_file(tmp_path):
    videos = records.random_videos(FEATURES, 3, num_classes=5, seed=6)
    path = records.write_videos(tmp_path, videos)[0]
    data = bytearray(pathlib.Path(path).read_bytes())
    data[len(data) // 2] ^= 0xFF  # flips a byte inside a record: its CRC fails
    pathlib.Path(path).write_bytes(bytes(data))
    dataset = make_dataset(path, FEATURES, batch_size=4, training=False, num_classes=5, label_mode="single")
    with pytest.raises(tf.errors.InvalidArgumentError, match=os.path.basename(path)):
        read_all(dataset)


@pytest.mark.parametrize("split_files", [False, True])
def test_skip_corrupt_skips_the_rest_of_the_file_and_counts_it(dataset_dir, capfd, split_files):
    directory, videos = dataset_dir
    write_truncated(str(directory), "train-broken.tfrecord")
    counter = SkipCounter()
    dataset = make_dataset(
        str(directory / "train-*"),
        FEATURES,
        batch_size=4,
        training=False,
        num_classes=5,
        label_mode="single",
        skip_corrupt=True,
        skip_counter=counter,
        split_files=split_files,
    )
    features, _ = read_all(dataset)
    good = [video_id for video_id in ids_of(features) if not video_id.startswith("broken")]
    assert sorted(good) == sorted(videos)
    assert len(ids_of(features)) == len(videos) + 3  # the 3 whole records before the cut
    counts = counter.as_dict()
    assert counts["corrupt_files"] == 1 and counts["unread_bytes"] > 0
    assert counts["nonfinite_videos"] == 0
    stderr = capfd.readouterr().err
    assert "train-broken.tfrecord is corrupt or truncated" in stderr
    assert "end of a pass over the data; skipped the rest of 1 corrupt" in stderr


def test_every_broken_file_is_named_and_each_pass_is_checked(dataset_dir, capfd):
    """The default reader checks the files at the end of each pass: all broken files are named, in
    training (shuffled records, repeated passes) as in evaluation, and the counts add up pass after pass."""
    directory, videos = dataset_dir
    write_truncated(str(directory), "train-broken1.tfrecord", cut=30)
    write_truncated(str(directory), "train-broken2.tfrecord", cut=200)
    options = dict(batch_size=3, num_classes=5, label_mode="single")
    with pytest.raises(
        tf.errors.InvalidArgumentError, match=r"(?s)train-broken1.tfrecord is corrupt.*train-broken2.tfrecord"
    ):
        read_all(make_dataset(str(directory / "train-*"), FEATURES, training=False, **options))
    counter = SkipCounter()
    dataset = make_dataset(
        str(directory / "train-*"),
        FEATURES,
        training=True,
        num_frames=2,
        seed=3,
        repeat=True,
        skip_corrupt=True,
        skip_counter=counter,
        **options,
    )
    records_per_pass = len(videos) + 3 + 3  # the whole records before each cut
    passes = 3
    seen = []
    for features, _ in dataset:
        seen += [video_id.decode() for video_id in features[schema.VIDEO_ID_KEY].numpy()]
        if len(seen) >= passes * records_per_pass:
            break
    assert len(seen) == passes * records_per_pass
    first, second = seen[:records_per_pass], seen[records_per_pass : 2 * records_per_pass]
    assert sorted(first) == sorted(second) and first != second  # every record once per pass, reshuffled
    counts = counter.as_dict()["corrupt_files"]
    assert counts >= 2 * (passes - 1) and counts % 2 == 0  # both files at the end of every pass read
    stderr = capfd.readouterr().err
    assert "train-broken1.tfrecord is corrupt or truncated" in stderr
    assert "train-broken2.tfrecord is corrupt or truncated" in stderr


def test_nonfinite_videos_raise_or_are_skipped_and_counted(tmp_path):
    videos = records.random_videos(FEATURES, 6, num_classes=5, seed=7)
    videos[2]["frames"]["audio"][0, 1] = np.inf
    videos[4]["frames"]["audio"][-1, 0] = np.nan
    records.write_videos(tmp_path, videos)
    pattern = str(tmp_path / "train-*")
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"(?s)NaN or Inf.*video00002"):
        read_all(
            make_dataset(pattern, FEATURES, batch_size=6, training=False, num_classes=5, label_mode="single")
        )
    counter = SkipCounter()
    features, _ = read_all(
        make_dataset(
            pattern,
            FEATURES,
            batch_size=4,
            training=False,
            num_classes=5,
            label_mode="single",
            skip_nonfinite=True,
            skip_counter=counter,
        )
    )
    assert sorted(ids_of(features)) == [f"video{i:05d}" for i in (0, 1, 3, 5)]
    assert counter.as_dict()["nonfinite_videos"] == 2
    dropped = make_dataset(
        pattern,
        FEATURES,
        batch_size=2,
        training=False,
        num_classes=5,
        label_mode="single",
        skip_nonfinite=True,
        drop_remainder=True,
    )
    assert [int(batch[1].shape[0]) for batch in dropped] == [2, 2]


def stats_for(num_classes, class_counts, audio_mean):
    return {
        "format": data_stats.STATS_FORMAT,
        "num_classes": num_classes,
        "class_counts": class_counts,
        "modalities": {
            "rgb": {"dim": 8, "mean": [0.0] * 8},
            "audio": {"dim": 4, "mean": audio_mean},
        },
    }


def test_missing_modality_gets_the_stats_mean_or_zeros(tmp_path):
    videos = records.random_videos(FEATURES, 3, num_classes=5, seed=8)
    del videos[1]["frames"]["audio"]
    records.write_videos(tmp_path, videos)
    stats_path = tmp_path / "stats.json"
    audio_mean = [0.25, -1.0, 3.0, 0.5]
    stats_path.write_text(json.dumps(stats_for(5, [1] * 5, audio_mean)))
    options = dict(batch_size=3, training=False, num_classes=5, label_mode="single")
    resolved = resolve_stats(str(stats_path), FEATURES, num_classes=5)
    with_mean, _ = read_all(
        make_dataset(str(tmp_path / "train-*"), FEATURES, missing_fill=resolved.missing_fill, **options)
    )
    np.testing.assert_allclose(with_mean["audio"][1], [audio_mean])
    default, _ = read_all(make_dataset(str(tmp_path / "train-*"), FEATURES, **options))
    np.testing.assert_array_equal(default["audio"][1], np.zeros((1, 4)))


def test_class_weights_give_one_over_the_class_count(tmp_path):
    videos = records.random_videos(FEATURES, 6, num_classes=3, labels_per_video=1, seed=9)
    multi = records.random_videos(FEATURES, 4, num_classes=3, labels_per_video=2, seed=10, id_prefix="multi")
    records.write_videos(tmp_path, videos + multi)
    counts = [10, 2, 5]
    resolved = resolve_stats(stats_for(3, counts, [0.0] * 4), FEATURES, num_classes=3, class_balance=True)
    dataset = make_dataset(
        str(tmp_path / "train-*"),
        FEATURES,
        batch_size=4,
        training=False,
        num_classes=3,
        label_mode="multi",
        class_weights=resolved.class_weights,
    )
    features, rest = read_all(dataset)
    labels = np.concatenate([batch[0] for batch in rest])
    weights = np.concatenate([batch[1] for batch in rest])
    by_id = {video["video_id"]: video["labels"] for video in videos + multi}
    for video_id, weight in zip(ids_of(features), weights, strict=True):
        expected = np.mean([1.0 / counts[label] for label in by_id[video_id]])
        assert weight == pytest.approx(expected, rel=1e-6)
    assert labels.shape == (10, 3)


def test_stages_compose_to_decoding_and_parsing_the_batch_by_hand(tmp_path):
    videos = records.random_videos(FEATURES, 5, num_classes=5, min_frames=1, max_frames=9, seed=13)
    del videos[3]["frames"]["audio"]
    path = records.write_videos(tmp_path, videos)[0]
    fill = {"audio": np.array([0.5, -0.5, 1.0, 2.0], np.float32)}
    class_weights = np.array([1.0, 0.5, 0.25, 0.2, 0.1], np.float32)
    dataset = make_dataset(
        path,
        FEATURES,
        batch_size=5,
        training=False,
        num_frames=3,
        num_classes=5,
        label_mode="single",
        missing_fill=fill,
        class_weights=ClassWeights(weights=class_weights, empty_weight=0.1),
    )
    [(features, labels, weights)] = list(dataset)
    serialized = tf.constant([record.numpy() for record in tf.data.TFRecordDataset(path)])
    decoded = decode_batch(serialized, FEATURES)
    by_hand = parse_batch(
        serialized,
        FEATURES,
        training=False,
        num_frames=3,
        num_classes=5,
        label_mode="single",
        missing_fill=fill,
    )
    np.testing.assert_array_equal(features[schema.VIDEO_ID_KEY].numpy(), decoded.video_ids.numpy())
    for name in ("rgb", "audio"):
        np.testing.assert_array_equal(features[name].row_splits, by_hand.features[name].row_splits)
        np.testing.assert_array_equal(features[name].flat_values, by_hand.features[name].flat_values)
    np.testing.assert_array_equal(labels.numpy(), by_hand.labels.numpy())
    np.testing.assert_array_equal(weights.numpy(), class_weights[decoded.label_ids.flat_values.numpy()])


def test_shard_for_workers_sets_element_sharding_only_for_several_workers(dataset_dir):
    directory, _ = dataset_dir
    dataset = make_dataset(str(directory / "train-*"), FEATURES, batch_size=4, training=False)
    assert shard_for_workers(dataset, 1) is dataset
    sharded = shard_for_workers(dataset, 2)
    policy = sharded.options().experimental_distribute.auto_shard_policy
    assert policy == tf.data.experimental.AutoShardPolicy.DATA
    assert ids_of(read_all(sharded)[0]) == ids_of(read_all(dataset)[0])


def test_bad_arguments_name_the_argument(dataset_dir):
    directory, _ = dataset_dir
    pattern = str(directory / "train-*")
    base = dict(batch_size=2, training=False, num_classes=5, label_mode="multi")
    weights = ClassWeights(weights=np.ones(5, np.float32), empty_weight=1.0)
    for override, name in (
        ({"batch_size": 0}, "batch_size"),
        ({"shuffle_buffer": 0}, "shuffle_buffer"),
        ({"num_frames": 0}, "num_frames"),
        ({"label_mode": "multiple"}, "label_mode"),
        ({"record_type": "clips"}, "record_type"),
        ({"num_parallel_reads": 0}, "num_parallel_reads"),
        ({"num_classes": None, "class_weights": weights}, "class_weights needs num_classes"),
        ({"num_classes": 4, "class_weights": weights}, r"class_weights.weights must have shape \(4,\)"),
        ({"missing_fill": {"audio": np.zeros(3)}}, r"missing_fill\['audio'\]"),
    ):
        with pytest.raises(ValueError, match=name):
            make_dataset(pattern, FEATURES, **{**base, **override})
