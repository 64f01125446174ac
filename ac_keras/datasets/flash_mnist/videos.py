"""Flash-MNIST videos: noise backgrounds, rendering, the seeded chunks of a split, record ids.

A video is ``NUM_FRAMES`` frames of 28x28 noise drawn i.i.d. from the MNIST pixel histogram; every digit of
its label's subset is overlaid (pixel-wise max) on 1 or 2 of its frames, the other frames stay pure noise.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from ac_keras.datasets.flash_mnist._streams import STREAM_LABELS, STREAM_VIDEOS, chunk_rng
from ac_keras.datasets.flash_mnist.digits import (
    IMAGE_SIZE,
    NUM_CLASSES,
    NUM_DIGITS,
    SPLITS,
    DigitPool,
    balanced_subset_ids,
)

NUM_FRAMES = 25
# Videos rendered and featurized at a time: bounds memory (512 videos are 10 MB of pixels and 2.6 MB of
# features) while keeping batches large. Part of the dataset's definition: chunks seed their own draws.
VIDEO_CHUNK = 512


class NoiseSampler:
    """Draws noise pixels i.i.d. from a pixel-value histogram, exactly.

    A value is drawn by picking one of the histogram's pixels uniformly: an index into a table that holds
    each value as often as it was counted or, for histograms of more than 2^28 pixels, a search of the
    cumulative counts; both give the same values for the same generator state.

    Args:
        histogram: array of 256 non-negative integer counts (``pixel_histogram``), not all zero.

    Example:

        noise = NoiseSampler(pixel_histogram(images))
        frames = noise.sample(np.random.default_rng(0), (25, 28, 28))
    """

    # Indexing the table is cheaper than the cumulative-count search; the cap bounds the table's memory.
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
    subset_ids = balanced_subset_ids(chunk_rng(seed, STREAM_LABELS[split], 0), videos_per_class)
    for chunk, start in enumerate(range(0, len(subset_ids), chunk_size)):
        frames, labels, digit_indices = make_videos(
            chunk_rng(seed, STREAM_VIDEOS[split], chunk),
            digit_pool,
            subset_ids[start : start + chunk_size],
            noise,
        )
        yield start, frames, labels, digit_indices


def video_id(split: str, index: int) -> str:
    """Returns the record id of the ``index``-th video of a split, e.g. ``"train-0000042"``."""
    return f"{split}-{index:07d}"
