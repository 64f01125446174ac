"""Dataset statistics: computing, writing and loading the statistics JSON, and resolving what it feeds.

`python -m tfrecords.stats` writes the JSON (`compute_stats` + `write_stats`): per-modality mean vectors,
class counts and frame-count histograms, format `STATS_FORMAT` (described in docs/input_pipeline.md).
`resolve_stats` reads it once and returns the values the rest of the program uses: the fill vector of a
missing modality, the feature means for centering, and the class-balance weights.
"""

import dataclasses
import json
import time
from collections.abc import Mapping

import numpy as np
import tensorflow as tf
from absl import logging

from ac_keras import schema
from ac_keras.data import files, parser, segments
from ac_keras.errors import DataError

# The "format" value of the statistics JSON written by `python -m tfrecords.stats`.
STATS_FORMAT = "ac_keras.stats.v1"
# What a record without a modality gets: "mean" (the training mean vector from the statistics), "zeros",
# or "auto" (mean when statistics are given, else zeros).
MISSING_MODALITY = ("auto", "mean", "zeros")


@dataclasses.dataclass(frozen=True)
class ClassWeights:
    """Class-balance sample weights.

    Attributes:
        weights: float32 `(num_classes,)`, 1/S for a class with S training videos (1 when S is 0).
        empty_weight: float, the weight of a video with no label (1 / the largest S).
    """

    weights: np.ndarray
    empty_weight: float


@dataclasses.dataclass(frozen=True)
class ResolvedStats:
    """The values derived from the statistics that the model and the input pipeline use.

    Attributes:
        feature_means: dict modality -> float32 mean frame `(dim,)` when centering is asked for, else None.
        missing_fill: dict modality -> float32 fill vector `(dim,)` of a missing modality; None = zeros.
        class_weights: `ClassWeights` when class balancing is asked for, else None.
    """

    feature_means: dict[str, np.ndarray] | None
    missing_fill: dict[str, np.ndarray] | None
    class_weights: ClassWeights | None


def resolve_stats(
    stats: str | Mapping | None,
    features,
    *,
    num_classes: int | None,
    missing_modality: str = "auto",
    class_balance: bool = False,
    center_features: bool = False,
) -> ResolvedStats:
    """Reads the statistics once and resolves the values the options ask for.

    Args:
        stats: path (local or `gs://`) of the JSON of `python -m tfrecords.stats`, its loaded dict, or None.
        features: feature spec string or sequence of `schema.FeatureSpec`.
        num_classes: int, or None when there are no labels (then `class_balance` must be False).
        missing_modality: one of `MISSING_MODALITY`: "mean" fills a missing modality with its training mean,
            "zeros" with zeros, "auto" means "mean" when `stats` is given, else "zeros". Defaults to "auto".
        class_balance: bool, resolve the class-balance weights (needs `stats` and `num_classes`).
            Defaults to False.
        center_features: bool, resolve the per-modality mean frames (needs `stats`). Defaults to False.

    Returns:
        A `ResolvedStats`; fields that were not asked for are None.

    Raises:
        DataError (a ValueError): a bad option, an option that needs `stats` without it, or statistics that
            do not match `features` / `num_classes`; the message names the statistics file and what is amiss.
    """
    specs = schema.to_feature_specs(features)
    if missing_modality not in MISSING_MODALITY:
        raise DataError(f"missing_modality must be one of {MISSING_MODALITY}, got {missing_modality!r}.")
    if stats is None:
        if missing_modality == "mean":
            raise DataError("missing_modality='mean' needs stats (the JSON of python -m tfrecords.stats).")
        if class_balance:
            raise DataError("class_balance=True needs stats (class counts) and num_classes.")
        if center_features:
            raise DataError("center_features=True needs stats (the JSON of python -m tfrecords.stats).")
        return ResolvedStats(feature_means=None, missing_fill=None, class_weights=None)
    if class_balance and num_classes is None:
        raise DataError("class_balance=True needs stats (class counts) and num_classes.")

    source = stats if isinstance(stats, str) else "stats dict"
    loaded = load_stats(stats)
    means = None
    if missing_modality != "zeros" or center_features:
        try:
            means = modality_means(loaded, specs)
        except ValueError as error:
            raise DataError(f"Statistics {source}: {error}") from None
    class_weights = None
    if class_balance:
        if "class_counts" not in loaded:
            raise DataError(
                f"Statistics {source}: holds no class_counts, needed by class_balance=True; recompute "
                "them with `python -m tfrecords.stats`."
            )
        try:
            weights, empty_weight = class_weights_from_stats(loaded, num_classes)
        except ValueError as error:
            raise DataError(f"Statistics {source}: {error}") from None
        class_weights = ClassWeights(weights=weights, empty_weight=empty_weight)
    return ResolvedStats(
        feature_means=means if center_features else None,
        missing_fill=means if missing_modality != "zeros" else None,
        class_weights=class_weights,
    )


def load_stats(stats: str | Mapping) -> dict:
    """Loads the statistics JSON written by `python -m tfrecords.stats` (or checks an already loaded dict).

    Args:
        stats: path (local or `gs://`) or dict.

    Returns:
        The statistics dict.

    Raises:
        DataError (a ValueError): not a statistics file of format `STATS_FORMAT` (the message names the file).
    """
    source = "stats dict"
    if isinstance(stats, str):
        source = stats
        with tf.io.gfile.GFile(stats, "r") as stats_file:
            stats = json.load(stats_file)
    if not isinstance(stats, Mapping) or stats.get("format") != STATS_FORMAT:
        raise DataError(
            f'{source} is not an ac_keras statistics file (expected "format": "{STATS_FORMAT}"); '
            "write it with `python -m tfrecords.stats`."
        )
    return dict(stats)


def modality_means(stats: Mapping, features) -> dict[str, np.ndarray]:
    """Per-modality training-set mean vectors from the statistics.

    Args:
        stats: statistics dict (see `load_stats`).
        features: feature spec string or sequence of `schema.FeatureSpec`.

    Returns:
        dict modality name -> float32 vector `(dim,)`.

    Raises:
        DataError (a ValueError): a modality has no mean in the statistics, or a mean of another dim.
    """
    means = {}
    for spec in schema.to_feature_specs(features):
        modality = stats.get("modalities", {}).get(spec.name)
        if modality is None or modality.get("mean") is None:
            raise DataError(
                f"The statistics hold no mean for modality {spec.name!r} (they cover "
                f"{sorted(stats.get('modalities', {}))}); recompute them with the same --features, or "
                "pass missing_modality='zeros'."
            )
        mean = np.asarray(modality["mean"], np.float32)
        if mean.shape != (spec.dim,):
            raise DataError(
                f"The statistics mean of modality {spec.name!r} has {mean.size} values, the feature spec "
                f"declares dim {spec.dim}."
            )
        means[spec.name] = mean
    return means


def class_weights_from_stats(stats: Mapping, num_classes: int) -> tuple[np.ndarray, float]:
    """Class-balance weights 1/S from the training class counts S.

    A class with no training video gets weight 1 (as if S were 1); a video without labels gets the
    smallest class weight, 1 / max S.

    Args:
        stats: statistics dict (see `load_stats`).
        num_classes: int.

    Returns:
        `(class_weights, empty_weight)`: float32 `(num_classes,)` and a float.

    Raises:
        DataError (a ValueError): the statistics count more classes than `num_classes`.
    """
    counts = np.asarray(stats.get("class_counts", []), np.float64)
    if counts.size > num_classes:
        raise DataError(f"The statistics count {counts.size} classes, more than num_classes={num_classes}.")
    counts = np.pad(counts, (0, num_classes - counts.size))
    class_weights = (1.0 / np.maximum(counts, 1.0)).astype(np.float32)
    empty_weight = float(1.0 / max(counts.max(initial=1.0), 1.0))
    return class_weights, empty_weight


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

    Means are over all frames of all videos, dequantized; a video-level record counts as one frame.

    Args:
        file_pattern: glob of the TFRecord files (comma-separated globs allowed; `gs://` works).
        features: feature spec string or sequence of `schema.FeatureSpec`.
        record_type: "auto", "frame" or "video" (see `ac_keras.data.decode_batch`). Defaults to "auto".
        num_classes: int or None; the length of `class_counts` (labels must lie below it). Defaults to
            the largest label + 1.
        batch_size: int, records parsed per batch. Defaults to 64.
        skip_corrupt: bool, skip the rest of corrupt files instead of raising. Defaults to False.

    Returns:
        The statistics dict (format `STATS_FORMAT`, described in docs/input_pipeline.md).

    Raises:
        DataError (a ValueError): a negative label, or a label not below `num_classes`.
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
        ratings = segments.decode_ratings(serialized, record_names=record_names)
        rated = (ratings.labels, ratings.scores)
        return sums, lengths, parsed.label_ids.flat_values, parsed.label_ids.row_lengths(), rated

    sums = {spec.name: np.zeros(spec.dim, np.float64) for spec in specs}
    histograms = {spec.name: {} for spec in specs}
    label_values = []
    num_videos = 0
    num_without_labels = 0
    rated_pairs, rated_positives, rated_videos = {}, {}, 0
    start = time.monotonic()
    batches = files.read_serialized_batches(file_pattern, batch_size=batch_size, skip_corrupt=skip_corrupt)
    for step, (serialized, record_names) in enumerate(batches):
        batch_sums, batch_lengths, flat_labels, label_counts, rated = summarize(serialized, record_names)
        rated_videos += _count_ratings(rated, record_names, rated_pairs, rated_positives)
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
        raise DataError(f"{file_pattern}: negative label {int(labels.min())}.")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise DataError(f"{file_pattern}: label {int(labels.max())} is not below num_classes={num_classes}.")
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
    result = {
        "format": STATS_FORMAT,
        "data": file_pattern,
        "features": ",".join(str(spec) for spec in specs),
        "record_type": record_type,
        "num_videos": num_videos,
        "num_videos_without_labels": num_without_labels,
        "num_classes": int(length),
        "class_counts": [int(count) for count in class_counts],
        "modalities": modalities,
    }
    if rated_pairs:
        result["segment_ratings"] = {
            "num_videos": rated_videos,
            "num_pairs": sum(rated_pairs.values()),
            "num_positives": sum(rated_positives.values()),
            "classes": {
                str(label): {"pairs": rated_pairs[label], "positives": rated_positives.get(label, 0)}
                for label in sorted(rated_pairs)
            },
        }
    return result


def _count_ratings(rated, record_names, pairs, positives) -> int:
    """Adds a batch's 2019 segment ratings to the per-class counts; returns the videos with ratings.

    Raises:
        DataError: a record whose segment_labels and segment_scores differ in length (naming it).
    """
    labels, scores = rated
    label_counts, score_counts = labels.row_lengths().numpy(), scores.row_lengths().numpy()
    unequal = np.flatnonzero(label_counts != score_counts)
    if unequal.size:
        name = record_names.numpy()[unequal[0]].decode("utf-8", "replace")
        raise DataError(
            f"{name}: {schema.SEGMENT_LABELS_KEY} holds {label_counts[unequal[0]]} entries, "
            f"{schema.SEGMENT_SCORES_KEY} {score_counts[unequal[0]]}; expected one per rated pair each."
        )
    for label, score in zip(
        labels.flat_values.numpy().tolist(), scores.flat_values.numpy().tolist(), strict=True
    ):
        pairs[label] = pairs.get(label, 0) + 1
        if score > 0:
            positives[label] = positives.get(label, 0) + 1
    return int(np.sum(label_counts > 0))


def write_stats(stats: dict, path: str) -> None:
    """Writes the statistics as JSON (local or `gs://` path)."""
    with tf.io.gfile.GFile(path, "w") as stats_file:
        json.dump(stats, stats_file, indent=1)
        stats_file.write("\n")
