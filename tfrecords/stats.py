r"""Dataset statistics for the reader: per-modality mean vectors, class counts, frame-count histograms.

    python -m tfrecords.stats --data='/data/train-*.tfrecord' --features=rgb:1024,audio:128 \
        --output=/data/stats.json

The JSON feeds `ac_keras.data.make_dataset(stats=...)`: `missing_modality="mean"` fills a record without
a modality with that modality's mean vector, `class_balance=True` weights videos by 1/S with S the class
counts. Means are over all frames of all videos, dequantized; a video-level record counts as one frame.
"""

import json
import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

from ac_keras import schema
from ac_keras.data import parser, pipeline
from tfrecords import run_command


def compute_stats(
    file_pattern: str,
    features,
    *,
    record_type: str = "auto",
    num_classes: int | None = None,
    batch_size: int = 64,
    skip_corrupt: bool = False,
) -> dict:
    """Computes the statistics of a dataset.

    Args:
        file_pattern: glob of the TFRecord files (comma-separated globs allowed; `gs://` works).
        features: feature spec string or sequence of `schema.FeatureSpec`.
        record_type: "auto", "frame" or "video" (see `ac_keras.data.decode_batch`). Defaults to "auto".
        num_classes: int or None; the length of `class_counts` (labels must lie below it). Defaults to
            the largest label + 1.
        batch_size: int, records parsed per batch. Defaults to 64.
        skip_corrupt: bool, skip the rest of corrupt files instead of raising. Defaults to False.

    Returns:
        The statistics dict (format `ac_keras.data.STATS_FORMAT`, described in docs/input_pipeline.md).
    """
    specs = schema.to_feature_specs(features)

    @tf.function
    def summarize(serialized, record_names):
        parsed = parser.parse_batch(
            serialized,
            specs,
            training=False,
            num_frames=None,
            fill_missing=False,
            record_type=record_type,
            record_names=record_names,
        )
        sums = {
            spec.name: tf.reduce_sum(tf.cast(parsed.features[spec.name].flat_values, tf.float64), axis=0)
            for spec in specs
        }
        lengths = {spec.name: parsed.features[spec.name].row_lengths() for spec in specs}
        return sums, lengths, parsed.label_ids.flat_values, parsed.label_ids.row_lengths()

    sums = {spec.name: np.zeros(spec.dim, np.float64) for spec in specs}
    histograms = {spec.name: {} for spec in specs}
    label_values = []
    num_videos = 0
    num_without_labels = 0
    start = time.monotonic()
    batches = pipeline.read_serialized_batches(file_pattern, batch_size=batch_size, skip_corrupt=skip_corrupt)
    for step, (serialized, record_names) in enumerate(batches):
        batch_sums, batch_lengths, flat_labels, label_counts = summarize(serialized, record_names)
        for spec in specs:
            sums[spec.name] += batch_sums[spec.name].numpy()
            lengths, counts = np.unique(batch_lengths[spec.name].numpy(), return_counts=True)
            histogram = histograms[spec.name]
            for length, count in zip(lengths.tolist(), counts.tolist(), strict=True):
                histogram[length] = histogram.get(length, 0) + count
        label_counts = label_counts.numpy()
        rows = np.repeat(np.arange(label_counts.size), label_counts)
        # A video counts once per distinct label.
        pairs = np.unique(np.stack([rows, flat_labels.numpy()], axis=1), axis=0)
        label_values.append(pairs[:, 1])
        num_without_labels += int(np.sum(label_counts == 0))
        num_videos += int(label_counts.size)
        if (step + 1) % 50 == 0:
            elapsed = time.monotonic() - start
            logging.info("%d videos read (%.1f videos/s)", num_videos, num_videos / elapsed)

    labels = np.concatenate(label_values) if label_values else np.zeros([0], np.int64)
    if labels.size and labels.min() < 0:
        raise ValueError(f"{file_pattern}: negative label {int(labels.min())}.")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise ValueError(f"{file_pattern}: label {int(labels.max())} is not below num_classes={num_classes}.")
    length = num_classes if num_classes is not None else int(labels.max()) + 1 if labels.size else 0
    class_counts = np.bincount(labels, minlength=length) if labels.size else np.zeros(length, int)

    modalities = {}
    for spec in specs:
        histogram = histograms[spec.name]
        num_frames = sum(length * count for length, count in histogram.items())
        mean = (sums[spec.name] / num_frames).tolist() if num_frames else None
        modalities[spec.name] = {
            "dim": spec.dim,
            "dtype": spec.dtype,
            "num_frames": int(num_frames),
            "num_videos_missing": int(histogram.get(0, 0)),
            "mean": mean,
            "frame_count_histogram": {str(k): int(v) for k, v in sorted(histogram.items())},
        }
    return {
        "format": pipeline.STATS_FORMAT,
        "data": file_pattern,
        "features": ",".join(str(spec) for spec in specs),
        "record_type": record_type,
        "num_videos": num_videos,
        "num_videos_without_labels": num_without_labels,
        "num_classes": int(length),
        "class_counts": [int(count) for count in class_counts],
        "modalities": modalities,
    }


def write_stats(stats: dict, path: str) -> None:
    """Writes the statistics as JSON (local or `gs://` path)."""
    with tf.io.gfile.GFile(path, "w") as stats_file:
        json.dump(stats, stats_file, indent=1)
        stats_file.write("\n")


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so importing defines none)."""
    flags.DEFINE_string("data", None, "Glob of the TFRecord files, e.g. /data/train-*.tfrecord.")
    flags.DEFINE_string("features", None, "Feature spec, e.g. rgb:1024,audio:128.")
    flags.DEFINE_string("output", None, "Where to write the statistics JSON.")
    flags.DEFINE_enum("record_type", "auto", ["auto", "frame", "video"], "Record kind.")
    flags.DEFINE_integer("num_classes", None, "Length of class_counts; default: largest label + 1.")
    flags.DEFINE_integer("batch_size", 64, "Records parsed per batch.")
    flags.DEFINE_bool("skip_corrupt", False, "Skip the rest of corrupt files instead of failing.")
    flags.mark_flags_as_required(["data", "features", "output"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = flags.FLAGS
    stats = compute_stats(
        config.data,
        config.features,
        record_type=config.record_type,
        num_classes=config.num_classes,
        batch_size=config.batch_size,
        skip_corrupt=config.skip_corrupt,
    )
    write_stats(stats, config.output)
    logging.info("Wrote statistics of %d videos to %s", stats["num_videos"], config.output)


if __name__ == "__main__":
    run_command(main, define_flags)
