"""Input pipeline: files -> records -> batches of serialized records -> parsed batches.

Files are listed with `tf.io.gfile` (so `gs://` works) and read in parallel with `interleave`; records are
shuffled (training) and batched while still serialized, and each batch is parsed by one call of
`parser.parse_batch` (vectorized ops, no per-record parsing), then prefetched.

Corrupt or truncated files: each file is read with `ignore_errors()` and the bytes consumed are counted
(a TFRecord costs its length + 16 bytes of framing); at the end of each file the count is compared with the
file size. A shortfall raises an error naming the file, or with `skip_corrupt=True` skips the rest of that
file and counts it. Files are read in chunks of 16 records, so this bookkeeping costs one `scan` step
per chunk instead of a pre-scan of the data or a tf.data function call per record.
"""

import concurrent.futures
import json
import sys
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf
from absl import logging

from ac_keras import schema
from ac_keras.data import decoder, parser

# The "format" value of the statistics JSON written by `python -m tfrecords.stats`.
STATS_FORMAT = "ac_keras.stats.v1"
MISSING_MODALITY_MODES = ("mean", "zeros")
# A TFRecord stores length (8 bytes), CRC of length (4), data, CRC of data (4).
_RECORD_FRAMING_BYTES = 16
_DEFAULT_CYCLE_LENGTH = 8
# Records per chunk read from one file; bookkeeping (byte counts, names) runs once per chunk.
_RECORDS_PER_CHUNK = 16


class SkipCounter:
    """Counts what `skip_corrupt` / `skip_nonfinite` skipped; updated from inside the tf.data graph.

    Example:
        >>> counter = SkipCounter()
        >>> dataset = make_dataset(..., skip_corrupt=True, skip_counter=counter)
        >>> for batch in dataset: ...
        >>> counter.as_dict()
        {'corrupt_files': 1, 'unread_bytes': 5120, 'nonfinite_videos': 0}
    """

    def __init__(self):
        self.corrupt_files = tf.Variable(0, dtype=tf.int64, trainable=False, name="corrupt_files")
        self.unread_bytes = tf.Variable(0, dtype=tf.int64, trainable=False, name="unread_bytes")
        self.nonfinite_videos = tf.Variable(0, dtype=tf.int64, trainable=False, name="nonfinite_videos")

    def as_dict(self) -> dict[str, int]:
        """Returns the counts: corrupt files, bytes left unread in them, videos with NaN/Inf features."""
        return {
            "corrupt_files": int(self.corrupt_files.numpy()),
            "unread_bytes": int(self.unread_bytes.numpy()),
            "nonfinite_videos": int(self.nonfinite_videos.numpy()),
        }

    def log_summary(self) -> None:
        """Logs the counts with absl logging (a warning when anything was skipped)."""
        counts = self.as_dict()
        if counts["corrupt_files"] or counts["nonfinite_videos"]:
            logging.warning(
                "Input pipeline skipped the rest of %d corrupt or truncated file(s) (%d bytes unread) "
                "and %d video(s) with NaN/Inf features.",
                counts["corrupt_files"],
                counts["unread_bytes"],
                counts["nonfinite_videos"],
            )
        else:
            logging.info("Input pipeline skipped nothing.")


def make_dataset(
    file_pattern: str | Sequence[str],
    features,
    *,
    batch_size: int,
    training: bool,
    num_frames: int | None = None,
    num_classes: int | None,
    label_mode: str,
    record_type: str = "auto",
    shuffle_buffer: int = 512,
    seed: int | None = None,
    stats: str | Mapping | None = None,
    missing_modality: str | None = None,
    class_balance: bool = False,
    skip_corrupt: bool = False,
    skip_nonfinite: bool = False,
    skip_counter: SkipCounter | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    num_parallel_reads: int | None = None,
    input_context: tf.distribute.InputContext | None = None,
) -> tf.data.Dataset:
    """Builds the `tf.data` input pipeline over YouTube-8M-style TFRecords.

    Args:
        file_pattern: str glob (comma-separated globs allowed) or a sequence of globs; `gs://` works.
        features: feature spec string (e.g. "rgb:1024,audio:128") or sequence of `schema.FeatureSpec`.
        batch_size: int, the global batch size (per pipeline with `input_context`, see below).
        training: bool. True: shuffled files and records, `num_frames` random frames per video.
            False: deterministic order, `num_frames` frames at equal intervals (all when None).
        num_frames: int or None, frames kept per video; shorter videos keep their true length.
            Defaults to None (all frames).
        num_classes: int, or None to yield features only (no labels).
        label_mode: "single" (one-hot labels) or "multi" (multi-hot labels).
        record_type: "auto" (per record: frame-level feature lists, else video-level `mean_<name>`),
            "frame" or "video". Defaults to "auto".
        shuffle_buffer: int, records in the shuffle buffer when training (YouTube-8M frame-level records
            are ~350 KB, so 512 records hold ~180 MB). Defaults to 512.
        seed: int or None; fixes the file order, record shuffle and frame sampling. Defaults to None.
        stats: path to the statistics JSON of `python -m tfrecords.stats`, or its loaded dict. Needed for
            `missing_modality="mean"` and `class_balance`.
        missing_modality: "mean" (the training-set mean vector from `stats`) or "zeros": what a record
            without a modality gets, as a length-1 set. Defaults to "mean" when `stats` is given, else
            "zeros".
        class_balance: bool, add sample weights: the mean of 1/S over the video's labels, S the training
            count of the class from `stats` (single-label: exactly 1/S). Defaults to False.
        skip_corrupt: bool; False raises an error naming a corrupt or truncated file, True skips the
            rest of that file, prints a warning and counts it. Defaults to False.
        skip_nonfinite: bool; False raises an error naming the video with NaN/Inf float features, True
            drops such videos (batches may then be smaller) and counts them. Defaults to False.
        skip_counter: optional `SkipCounter` receiving the counts of what was skipped.
        repeat: bool, repeat the data indefinitely. Defaults to False.
        drop_remainder: bool, drop the last partial batch (static batch size). Defaults to False.
        num_parallel_reads: int, files read in parallel (interleave cycle length). Defaults to
            min(number of files, 8).
        input_context: optional `tf.distribute.InputContext` (from
            `strategy.distribute_datasets_from_function`): the pipeline reads its share of the files
            when there are at least as many files as input pipelines, else its share of the records, and
            batches `input_context.get_per_replica_batch_size(batch_size)` records.

    Returns:
        A `tf.data.Dataset` of `(features, labels)`, or `(features, labels, sample_weights)` with
        `class_balance`, or `features` alone when num_classes is None. `features` maps each modality to a
        float32 `tf.RaggedTensor` `(batch, None, dim)` and `schema.VIDEO_ID_KEY` to string ids `(batch,)`;
        labels are float32 `(batch, num_classes)`; sample weights float32 `(batch,)`.

    Raises:
        FileNotFoundError: no file matches a pattern (the message names it).
        ValueError: a bad argument (the message names it and the allowed values).
    """
    specs = schema.to_feature_specs(features)
    _validate_arguments(
        batch_size=batch_size,
        shuffle_buffer=shuffle_buffer,
        num_classes=num_classes,
        label_mode=label_mode,
        record_type=record_type,
        missing_modality=missing_modality,
        stats=stats,
        class_balance=class_balance,
        num_parallel_reads=num_parallel_reads,
        num_frames=num_frames,
    )
    stats = load_stats(stats) if stats is not None else None
    if missing_modality is None:
        missing_modality = "mean" if stats is not None else "zeros"
    missing_fill = modality_means(stats, specs) if missing_modality == "mean" else None
    class_weights = empty_weight = None
    if class_balance:
        class_weights, empty_weight = class_weights_from_stats(stats, num_classes)
    if (skip_corrupt or skip_nonfinite) and skip_counter is None:
        skip_counter = SkipCounter()

    files = list_files(file_pattern)
    if input_context is not None:
        batch_size = input_context.get_per_replica_batch_size(batch_size)
    num_pipelines = input_context.num_input_pipelines if input_context is not None else 1
    shard_files = num_pipelines > 1 and len(files) >= num_pipelines
    shard_records = num_pipelines > 1 and not shard_files

    file_dataset = tf.data.Dataset.from_tensor_slices((files, _file_sizes(files)))
    if shard_files:
        file_dataset = file_dataset.shard(num_pipelines, input_context.input_pipeline_id)
    # Record sharding needs the same record order on every worker, hence no file shuffle before it.
    if training and not shard_records:
        file_dataset = file_dataset.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)

    def read_file(filename, file_size):
        return _read_chunks(filename, file_size, skip_corrupt=skip_corrupt, counter=skip_counter)

    deterministic = not training or seed is not None or shard_records
    chunks = file_dataset.interleave(
        read_file,
        cycle_length=min(len(files), num_parallel_reads or _DEFAULT_CYCLE_LENGTH),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=deterministic,
    )
    report_at_end = (skip_corrupt or skip_nonfinite) and not repeat
    if training or shard_records:
        records = chunks.unbatch()
        if shard_records:
            records = records.shard(num_pipelines, input_context.input_pipeline_id)
        if training:
            records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            records = records.repeat()
        batches = records.batch(batch_size, drop_remainder=drop_remainder)
    else:
        # Evaluation keeps the per-file chunks and only re-cuts them into batches (one copy).
        if repeat:
            chunks = chunks.repeat()
        batches = chunks.rebatch(batch_size, drop_remainder=drop_remainder)

    # One stateless seed per batch: reproducible with `seed`, different in every epoch.
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2, drop_remainder=True)
    batches = tf.data.Dataset.zip(batches, seeds)
    if report_at_end:
        # An empty batch marks the end of the data; the filter below prints the counts when it passes.
        end_marker = ((tf.zeros([0], tf.string), tf.zeros([0], tf.string)), tf.zeros([2], tf.int64))
        batches = batches.concatenate(tf.data.Dataset.from_tensors(end_marker))

    def parse(records_and_names, batch_seed):
        serialized, record_names = records_and_names
        parsed = parser.parse_batch(
            serialized,
            specs,
            training=training,
            num_frames=num_frames,
            num_classes=num_classes,
            label_mode=label_mode,
            missing_fill=missing_fill,
            seed=batch_seed,
            record_type=record_type,
            record_names=record_names,
            nonfinite="flag" if skip_nonfinite else "error",
        )
        targets = ()
        if num_classes is not None:
            targets = (parsed.labels,)
            if class_balance:
                weights = parser.class_balanced_weights(parsed.labels, class_weights, empty_weight)
                targets += (weights,)
        features_out = parsed.features
        if skip_nonfinite:
            features_out, targets = _drop_nonfinite(features_out, targets, parsed.nonfinite, skip_counter)
        return (features_out, *targets) if targets else features_out

    dataset = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if report_at_end:
        dataset = dataset.filter(lambda *element: _not_end_marker(element, skip_counter))
        if drop_remainder and skip_nonfinite:
            # Dropped videos leave short batches; re-batching restores the promised batch size.
            dataset = dataset.unbatch().batch(batch_size, drop_remainder=True)
        elif drop_remainder:
            dataset = dataset.map(lambda *element: _with_batch_size(element, batch_size))
    elif drop_remainder and skip_nonfinite:
        dataset = dataset.unbatch().batch(batch_size, drop_remainder=True)
    dataset = dataset.prefetch(tf.data.AUTOTUNE)
    if input_context is not None:
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.OFF
        dataset = dataset.with_options(options)
    return dataset


def read_serialized_batches(
    file_pattern: str | Sequence[str],
    *,
    batch_size: int,
    skip_corrupt: bool = False,
    skip_counter: SkipCounter | None = None,
    num_parallel_reads: int | None = None,
) -> tf.data.Dataset:
    """Batches of serialized records in a deterministic order, for tools that parse them themselves.

    Corrupt or truncated files are handled as in `make_dataset`.

    Args:
        file_pattern: str glob (comma-separated globs allowed) or a sequence of globs.
        batch_size: int, records per batch (the last batch may be smaller).
        skip_corrupt: bool, skip the rest of corrupt files instead of raising. Defaults to False.
        skip_counter: optional `SkipCounter` (needed, and created if None, with skip_corrupt).
        num_parallel_reads: int, files read in parallel. Defaults to min(number of files, 8).

    Returns:
        A `tf.data.Dataset` of `(serialized, record_names)`, two string tensors `(batch,)`; the record
        names are "file:index".
    """
    if skip_corrupt and skip_counter is None:
        skip_counter = SkipCounter()
    files = list_files(file_pattern)
    file_dataset = tf.data.Dataset.from_tensor_slices((files, _file_sizes(files)))
    chunks = file_dataset.interleave(
        lambda filename, file_size: _read_chunks(
            filename, file_size, skip_corrupt=skip_corrupt, counter=skip_counter
        ),
        cycle_length=min(len(files), num_parallel_reads or _DEFAULT_CYCLE_LENGTH),
        block_length=1,
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return chunks.rebatch(batch_size).prefetch(tf.data.AUTOTUNE)


def list_files(file_pattern: str | Sequence[str]) -> list[str]:
    """Lists the files matching one or more glob patterns with `tf.io.gfile` (local or `gs://`).

    Args:
        file_pattern: str (comma-separated globs allowed) or a sequence of globs.

    Returns:
        The sorted, de-duplicated list of matching files.

    Raises:
        FileNotFoundError: a pattern matches nothing; the message names the pattern.
    """
    patterns = [file_pattern] if isinstance(file_pattern, str) else list(file_pattern)
    patterns = [part.strip() for pattern in patterns for part in pattern.split(",") if part.strip()]
    if not patterns:
        raise FileNotFoundError(f"file_pattern is empty: {file_pattern!r}.")
    files = set()
    for pattern in patterns:
        matches = tf.io.gfile.glob(pattern)
        if not matches:
            raise FileNotFoundError(f"No files match file_pattern {pattern!r}.")
        files.update(matches)
    return sorted(files)


def load_stats(stats: str | Mapping) -> dict:
    """Loads the statistics JSON written by `python -m tfrecords.stats` (or checks an already loaded dict).

    Args:
        stats: path (local or `gs://`) or dict.

    Returns:
        The statistics dict.
    """
    source = "stats dict"
    if isinstance(stats, str):
        source = stats
        with tf.io.gfile.GFile(stats, "r") as stats_file:
            stats = json.load(stats_file)
    if not isinstance(stats, Mapping) or stats.get("format") != STATS_FORMAT:
        raise ValueError(
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
    """
    means = {}
    for spec in schema.to_feature_specs(features):
        modality = stats.get("modalities", {}).get(spec.name)
        if modality is None or modality.get("mean") is None:
            raise ValueError(
                f"The statistics hold no mean for modality {spec.name!r} (they cover "
                f"{sorted(stats.get('modalities', {}))}); recompute them with the same --features, or "
                "pass missing_modality='zeros'."
            )
        mean = np.asarray(modality["mean"], np.float32)
        if mean.shape != (spec.dim,):
            raise ValueError(
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
    """
    counts = np.asarray(stats.get("class_counts", []), np.float64)
    if counts.size > num_classes:
        raise ValueError(f"The statistics count {counts.size} classes, more than num_classes={num_classes}.")
    counts = np.pad(counts, (0, num_classes - counts.size))
    class_weights = (1.0 / np.maximum(counts, 1.0)).astype(np.float32)
    empty_weight = float(1.0 / max(counts.max(initial=1.0), 1.0))
    return class_weights, empty_weight


def _validate_arguments(
    *,
    batch_size,
    shuffle_buffer,
    num_classes,
    label_mode,
    record_type,
    missing_modality,
    stats,
    class_balance,
    num_parallel_reads,
    num_frames,
):
    def positive_int(value):
        return isinstance(value, int | np.integer) and not isinstance(value, bool) and value > 0

    if not positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    if not positive_int(shuffle_buffer):
        raise ValueError(f"shuffle_buffer must be a positive int, got {shuffle_buffer!r}.")
    if num_frames is not None and not positive_int(num_frames):
        raise ValueError(f"num_frames must be a positive int or None, got {num_frames!r}.")
    if num_classes is not None and not positive_int(num_classes):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}.")
    if label_mode not in parser.LABEL_MODES:
        raise ValueError(f"label_mode must be one of {parser.LABEL_MODES}, got {label_mode!r}.")
    if record_type not in decoder.RECORD_TYPES:
        raise ValueError(f"record_type must be one of {decoder.RECORD_TYPES}, got {record_type!r}.")
    if missing_modality is not None and missing_modality not in MISSING_MODALITY_MODES:
        raise ValueError(
            f"missing_modality must be one of {MISSING_MODALITY_MODES}, got {missing_modality!r}."
        )
    if missing_modality == "mean" and stats is None:
        raise ValueError("missing_modality='mean' needs stats (the JSON of python -m tfrecords.stats).")
    if class_balance and (stats is None or num_classes is None):
        raise ValueError("class_balance=True needs stats (class counts) and num_classes.")
    if num_parallel_reads is not None and not positive_int(num_parallel_reads):
        raise ValueError(f"num_parallel_reads must be a positive int or None, got {num_parallel_reads!r}.")


def _file_sizes(files: list[str]) -> list[int]:
    """File sizes in bytes, fetched in parallel (one metadata request per file on `gs://`)."""
    if len(files) == 1:
        return [tf.io.gfile.stat(files[0]).length]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(32, len(files))) as pool:
        return [stat.length for stat in pool.map(tf.io.gfile.stat, files)]


def _read_chunks(filename, file_size, *, skip_corrupt: bool, counter: SkipCounter | None):
    """One file as chunks `(records, names)` of up to 16 records; names are "file:index".

    Checks at the end of the file that it was read whole. All the bookkeeping runs per chunk, not per
    record: each per-record tf.data function costs tens of microseconds per record on a small machine.
    """
    chunks = tf.data.TFRecordDataset(filename).ignore_errors().batch(_RECORDS_PER_CHUNK)
    # batch() never yields an empty chunk, so an empty one marks the end of the file.
    end_of_file = tf.data.Dataset.from_tensors(tf.zeros([0], tf.string))
    file_size = tf.cast(file_size, tf.int64)

    def count(state, records):
        num_records, num_bytes = state
        chunk_size = tf.size(records, out_type=tf.int64)
        is_end = tf.equal(chunk_size, 0)
        checks = _check_file_end(filename, file_size, is_end, num_records, num_bytes, skip_corrupt, counter)
        names = tf.strings.join([filename, ":", tf.strings.as_string(num_records + tf.range(chunk_size))])
        chunk_bytes = tf.reduce_sum(tf.cast(tf.strings.length(records), tf.int64))
        chunk_bytes += _RECORD_FRAMING_BYTES * chunk_size
        with tf.control_dependencies(checks):
            is_end = tf.identity(is_end)
        return (num_records + chunk_size, num_bytes + chunk_bytes), (records, names, is_end)

    counted = chunks.concatenate(end_of_file).scan(
        (tf.constant(0, tf.int64), tf.constant(0, tf.int64)), count
    )
    return counted.filter(lambda records, names, is_end: tf.logical_not(is_end)).map(
        lambda records, names, is_end: (records, names)
    )


def _check_file_end(filename, file_size, is_end, num_records, num_bytes, skip_corrupt, counter):
    """At the end of a file (`is_end`), raise if it was not read whole, or with skip_corrupt count it.

    Returns the ops to depend on.
    """
    truncated = is_end & tf.not_equal(num_bytes, file_size)
    description = tf.strings.join(
        [
            "TFRecord file ",
            filename,
            " is corrupt or truncated: only its first ",
            tf.strings.as_string(num_records),
            " records (",
            tf.strings.as_string(num_bytes),
            " of ",
            tf.strings.as_string(file_size),
            " bytes) could be read.",
        ]
    )
    if not skip_corrupt:
        message = tf.strings.join(
            [
                description,
                " Pass skip_corrupt=True to make_dataset to skip the rest of such files.",
            ]
        )
        assertion = tf.debugging.Assert(tf.logical_not(truncated), [message], summarize=1)
        return [] if assertion is None else [assertion]

    def skip():
        updates = [
            counter.corrupt_files.assign_add(1),
            counter.unread_bytes.assign_add(file_size - num_bytes),
        ]
        warning = tf.print(
            "W ac_keras.data:", description, "Skipped the rest of the file.", output_stream=sys.stderr
        )
        with tf.control_dependencies([*updates, warning]):
            return tf.constant(False)

    return [tf.cond(truncated, skip, lambda: tf.constant(True))]


def _drop_nonfinite(features, targets, nonfinite, counter):
    """Drops the videos flagged as holding NaN/Inf, counting them and printing their ids."""

    def drop():
        ids = tf.boolean_mask(features[schema.VIDEO_ID_KEY], nonfinite)
        update = counter.nonfinite_videos.assign_add(tf.size(ids, out_type=tf.int64))
        warning = tf.print(
            "W ac_keras.data: skipped videos with NaN/Inf features:",
            ids,
            summarize=-1,
            output_stream=sys.stderr,
        )
        with tf.control_dependencies([update, warning]):
            return parser.drop_records(features, targets, tf.logical_not(nonfinite))

    return tf.cond(tf.reduce_any(nonfinite), drop, lambda: (features, targets))


def _not_end_marker(element, counter):
    """Filter predicate: False for the empty end-of-data batch, which prints the skip counts."""
    features = element[0]
    num_videos = tf.size(features[schema.VIDEO_ID_KEY])

    def report():
        summary = tf.print(
            "W ac_keras.data: end of data; skipped the rest of",
            counter.corrupt_files,
            "corrupt or truncated file(s) (",
            counter.unread_bytes,
            "bytes unread ) and",
            counter.nonfinite_videos,
            "video(s) with NaN/Inf features.",
            output_stream=sys.stderr,
        )
        with tf.control_dependencies([summary]):
            return tf.constant(False)

    # Counts only matter when something was skipped; stay quiet otherwise.
    anything_skipped = (counter.corrupt_files.read_value() > 0) | (counter.nonfinite_videos.read_value() > 0)
    return tf.cond(
        num_videos > 0,
        lambda: tf.constant(True),
        lambda: tf.cond(anything_skipped, report, lambda: tf.constant(False)),
    )


def _with_batch_size(element, batch_size):
    """Restores the static batch size that concatenating the end marker relaxed."""

    def fix(value):
        if isinstance(value, tf.RaggedTensor):
            row_splits = tf.ensure_shape(value.row_splits, [batch_size + 1])
            return tf.RaggedTensor.from_row_splits(value.values, row_splits, validate=False)
        return tf.ensure_shape(value, [batch_size, *value.shape[1:]])

    fixed = tf.nest.map_structure(fix, element)
    return fixed[0] if len(fixed) == 1 else fixed
