r"""Converts per-video .npz / .npy feature files and a labels CSV to sharded frame-level TFRecords.

    python -m tfrecords.convert --csv=/data/labels.csv --npz_dir=/data/features \
        --features=rgb:1024,audio:128 --output_dir=/data/records --prefix=train --num_shards=16

The CSV has one row per video, `video_id,labels`, labels space-separated ints (may be empty; a header row
`video_id,labels` is skipped). Frames come from `{npz_dir}/{video_id}.npz` (one array per modality,
named after it) and/or `{dir}/{video_id}.npy` for each `--npy_dirs=modality=dir` entry; each array is
`(num_frames, dim)`. Float frames of a uint8 modality are quantized; uint8 frames are stored as they are.
Shards are written in parallel (`--num_workers` processes) and never overwrite existing output unless
`--overwrite`.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import concurrent.futures
import csv
import io
import multiprocessing
import queue
import sys
import time
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from ac_keras import schema
from ac_keras.data.writer import ShardedWriter, make_sequence_example, shard_path
from tfrecords import run_command

# Videos between two progress reports of a worker process.
_PROGRESS_EVERY = 20


def read_labels_csv(path: str) -> list[tuple[str, list[int]]]:
    """Reads `video_id,labels` rows (labels space-separated ints; header row optional).

    Args:
        path: CSV path (local or `gs://`).

    Returns:
        A list of `(video_id, labels)`.

    Raises:
        ValueError: a malformed row or a duplicate id, naming the line.
    """
    with tf.io.gfile.GFile(path, "r") as csv_file:
        rows = list(csv.reader(csv_file))
    videos = []
    seen = set()
    for line_number, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        if line_number == 1 and [cell.strip().lower() for cell in row] == ["video_id", "labels"]:
            continue
        if len(row) != 2 or not row[0].strip():
            raise ValueError(f"{path}:{line_number}: expected 'video_id,labels', got {row!r}.")
        video_id, label_text = row[0].strip(), row[1].strip()
        try:
            labels = [int(label) for label in label_text.split()]
        except ValueError:
            raise ValueError(
                f"{path}:{line_number}: labels must be space-separated ints, got {label_text!r}."
            ) from None
        if any(label < 0 for label in labels):
            raise ValueError(f"{path}:{line_number}: negative label in {label_text!r}.")
        if video_id in seen:
            raise ValueError(f"{path}:{line_number}: video id {video_id!r} appears twice.")
        seen.add(video_id)
        videos.append((video_id, labels))
    if not videos:
        raise ValueError(f"{path} lists no videos.")
    return videos


def load_frames(
    video_id: str,
    features,
    *,
    npz_dir: str | None = None,
    npy_dirs: Mapping[str, str] | None = None,
) -> dict[str, np.ndarray]:
    """Loads the frames of one video: `{npz_dir}/{id}.npz` arrays, then `{npy_dirs[m]}/{id}.npy`.

    Args:
        video_id: str.
        features: feature spec string or sequence of `schema.FeatureSpec`.
        npz_dir: directory of `.npz` files, one array per modality named after it, or None.
        npy_dirs: modality name -> directory of `.npy` files of that modality, or None.

    Returns:
        dict modality name -> array, for the modalities found (missing ones are left out).
    """
    names = {spec.name for spec in schema.to_feature_specs(features)}
    frames = {}
    if npz_dir is not None:
        path = f"{npz_dir.rstrip('/')}/{video_id}.npz"
        if not tf.io.gfile.exists(path) and not npy_dirs:
            raise FileNotFoundError(f"No feature file {path} for video {video_id!r}.")
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path, "rb") as npz_file, np.load(io.BytesIO(npz_file.read())) as arrays:
                frames.update({key: arrays[key] for key in arrays.files if key in names})
    for name, directory in (npy_dirs or {}).items():
        path = f"{directory.rstrip('/')}/{video_id}.npy"
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path, "rb") as npy_file:
                frames[name] = np.load(io.BytesIO(npy_file.read()))
    return frames


def convert(
    *,
    csv_path: str,
    features,
    output_dir: str,
    npz_dir: str | None = None,
    npy_dirs: Mapping[str, str] | None = None,
    prefix: str = "train",
    num_shards: int = 1,
    num_workers: int = 1,
    overwrite: bool = False,
    allow_missing: bool = False,
    show_progress: bool = True,
) -> list[str]:
    """Converts the videos listed in a CSV to sharded TFRecords (video i goes to shard i % num_shards).

    Args:
        csv_path: labels CSV (see `read_labels_csv`).
        features: feature spec string, e.g. "rgb:1024,audio:128" or "rgb:2048:float".
        output_dir: directory of the shards.
        npz_dir: directory of `{video_id}.npz` files, or None.
        npy_dirs: modality name -> directory of `{video_id}.npy` files, or None.
        prefix: shard name prefix. Defaults to "train".
        num_shards: int, number of shards. Defaults to 1.
        num_workers: int, processes writing shards in parallel (1: in this process). Defaults to 1.
        overwrite: bool, replace existing shards of this prefix (stale shards of an earlier run with a
            different shard count are deleted). Defaults to False: refuse, naming the existing file.
        allow_missing: bool, write videos that lack a modality with an empty feature list for it (the
            reader fills it). Defaults to False: raise.
        show_progress: bool, print a progress line (counts and rate) to stderr. Defaults to True.

    Returns:
        The shard paths.
    """
    specs = schema.to_feature_specs(features)
    if npz_dir is None and not npy_dirs:
        raise ValueError("Give --npz_dir and/or --npy_dirs: there is nowhere to read frames from.")
    unknown = sorted(set(npy_dirs or {}) - {spec.name for spec in specs})
    if unknown:
        raise ValueError(f"--npy_dirs names modality {unknown[0]!r}, which --features does not declare.")
    if not isinstance(num_workers, int) or num_workers < 1:
        raise ValueError(f"num_workers must be a positive int, got {num_workers!r}.")
    videos = read_labels_csv(csv_path)
    paths = [shard_path(output_dir, prefix, shard, num_shards) for shard in range(num_shards)]
    _check_output(output_dir, prefix, paths, overwrite)

    feature_spec = ",".join(str(spec) for spec in specs)
    tasks = [
        {
            "shard": shard,
            "videos": videos[shard::num_shards],
            "features": feature_spec,
            "output_dir": output_dir,
            "prefix": prefix,
            "num_shards": num_shards,
            "overwrite": overwrite,
            "npz_dir": npz_dir,
            "npy_dirs": dict(npy_dirs or {}),
            "allow_missing": allow_missing,
        }
        for shard in range(num_shards)
    ]
    progress = _Progress(len(videos), enabled=show_progress)
    if num_workers == 1:
        for task in tasks:
            _convert_shard(task, progress.add)
    else:
        # Spawned (not forked) workers: forking a process that has started TensorFlow is unsafe.
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager:
            updates = manager.Queue()
            with concurrent.futures.ProcessPoolExecutor(
                max_workers=min(num_workers, num_shards), mp_context=context
            ) as pool:
                futures = [pool.submit(_convert_shard_in_worker, task, updates) for task in tasks]
                pending = set(futures)
                while pending:
                    done, pending = concurrent.futures.wait(pending, timeout=0.5)
                    _drain(updates, progress)
                    for future in done:
                        future.result()  # re-raises a worker's error
                _drain(updates, progress)
    progress.finish()
    return paths


def _check_output(output_dir, prefix, paths, overwrite):
    """Refuses to overwrite existing shards; with overwrite, removes stale shards of the same prefix."""
    existing = sorted(tf.io.gfile.glob(f"{output_dir.rstrip('/')}/{prefix}-*-of-*.tfrecord"))
    if existing and not overwrite:
        raise FileExistsError(
            f"Output {existing[0]} already exists ({len(existing)} '{prefix}' shard(s) in "
            f"{output_dir}); pass --overwrite to replace them."
        )
    for path in existing:
        if path not in paths:
            logging.warning("Removing stale shard %s (overwrite).", path)
            tf.io.gfile.remove(path)


def _convert_shard(task, report) -> None:
    specs = schema.parse_features(task["features"])
    with ShardedWriter(
        task["output_dir"],
        specs,
        prefix=task["prefix"],
        num_shards=task["num_shards"],
        overwrite=task["overwrite"],
        shard_indices=[task["shard"]],
    ) as writer:
        unreported = 0
        for video_id, labels in task["videos"]:
            frames = load_frames(video_id, specs, npz_dir=task["npz_dir"], npy_dirs=task["npy_dirs"])
            missing = [spec.name for spec in specs if spec.name not in frames]
            if missing and not task["allow_missing"]:
                raise ValueError(
                    f"Video {video_id!r} has no frames for modality {missing[0]!r} (looked in "
                    f"--npz_dir / --npy_dirs); pass --allow_missing to write it without."
                )
            example = make_sequence_example(
                video_id, labels, frames, specs, allow_missing=task["allow_missing"]
            )
            writer.write_serialized(example.SerializeToString())
            unreported += 1
            if unreported == _PROGRESS_EVERY:
                report(unreported)
                unreported = 0
        if unreported:
            report(unreported)


def _convert_shard_in_worker(task, updates) -> int:
    _convert_shard(task, updates.put)
    return task["shard"]


def _drain(updates, progress) -> None:
    while True:
        try:
            progress.add(updates.get_nowait())
        except queue.Empty:
            return


class _Progress:
    """A one-line progress report on stderr: counts and rate."""

    def __init__(self, total: int, enabled: bool):
        self._total = total
        self._done = 0
        self._enabled = enabled
        self._start = time.monotonic()

    def add(self, count: int) -> None:
        self._done += count
        if self._enabled:
            elapsed = max(time.monotonic() - self._start, 1e-9)
            sys.stderr.write(
                f"\rconverted {self._done}/{self._total} videos ({self._done / elapsed:.1f} videos/s)"
            )
            sys.stderr.flush()

    def finish(self) -> None:
        if self._enabled:
            sys.stderr.write("\n")
        logging.info("Converted %d videos in %.1f s.", self._done, time.monotonic() - self._start)


def _parse_npy_dirs(entries: Sequence[str]) -> dict[str, str]:
    npy_dirs = {}
    for entry in entries or []:
        name, separator, directory = entry.partition("=")
        if not separator or not name or not directory:
            raise app.UsageError(f"--npy_dirs entries look like modality=directory, got {entry!r}.")
        npy_dirs[name] = directory
    return npy_dirs


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so importing defines none)."""
    flags.DEFINE_string("csv", None, "CSV of video_id,labels (labels space-separated ints).")
    flags.DEFINE_string("features", None, "Feature spec, e.g. rgb:1024,audio:128 or rgb:2048:float.")
    flags.DEFINE_string("output_dir", None, "Directory for the TFRecord shards.")
    flags.DEFINE_string("npz_dir", None, "Directory of {video_id}.npz files, one array per modality.")
    flags.DEFINE_list("npy_dirs", [], "modality=directory of {video_id}.npy files, comma separated.")
    flags.DEFINE_string("prefix", "train", "Shard name prefix.")
    flags.DEFINE_integer("num_shards", 1, "Number of shards.")
    flags.DEFINE_integer("num_workers", 1, "Processes writing shards in parallel.")
    flags.DEFINE_bool("overwrite", False, "Replace existing shards of this prefix.")
    flags.DEFINE_bool(
        "allow_missing", False, "Write videos lacking a modality, with an empty feature list for it."
    )
    flags.mark_flags_as_required(["csv", "features", "output_dir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = flags.FLAGS
    paths = convert(
        csv_path=config.csv,
        features=config.features,
        output_dir=config.output_dir,
        npz_dir=config.npz_dir,
        npy_dirs=_parse_npy_dirs(config.npy_dirs),
        prefix=config.prefix,
        num_shards=config.num_shards,
        num_workers=config.num_workers,
        overwrite=config.overwrite,
        allow_missing=config.allow_missing,
    )
    logging.info("Wrote %d shard(s): %s ...", len(paths), paths[0])


if __name__ == "__main__":
    run_command(main, define_flags)
