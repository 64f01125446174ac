"""Tests of Flash-MNIST noise and video rendering (ac_keras/datasets/flash_mnist/videos.py)."""

import numpy as np

from ac_keras.datasets import flash_mnist as fm


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


def test_video_chunks_cover_the_split_in_order(pools, noise):
    train_pool, _ = pools
    chunks = list(fm.video_chunks(0, "train", 1, train_pool, noise, chunk_size=300))
    assert [start for start, *_ in chunks] == [0, 300, 600, 900]
    labels = np.concatenate([subset_ids for _, _, subset_ids, _ in chunks])
    assert sorted(labels.tolist()) == list(range(1024))
    # A chunk has its own random stream: rebuilding it alone gives the same videos.
    again = list(fm.video_chunks(0, "train", 1, train_pool, noise, chunk_size=300))
    assert again[2][1].tobytes() == chunks[2][1].tobytes()
    assert fm.video_id("test", 42) == "test-0000042"
