"""Pipeline: files -> serialized records -> batches -> parsed batches, and worker sharding.

`make_dataset` composes the stages: `files` lists the files and reads them in parallel record by record
(nothing runs per record: a function per record costs about as much as reading it); records are shuffled
(training) and batched while still serialized; the corrupt-file accounting runs per batch
(`files.check_pass`); each batch is parsed by one call of `parser.parse_batch` (vectorized ops, no
per-record parsing), then prefetched. `shard_for_workers` splits a finished dataset between the workers of a
multi-worker strategy.
"""

import sys
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from ac_keras import schema
from ac_keras.data import decoder, files, parser, segments
from ac_keras.data.files import SkipCounter
from ac_keras.data.stats import ClassWeights


def make_dataset(
    file_pattern: str | Sequence[str],
    features,
    *,
    batch_size: int,
    training: bool,
    num_frames: int | None = None,
    num_classes: int | None = None,
    label_mode: str = "single",
    record_type: str = "auto",
    shuffle_buffer: int = 512,
    seed: int | None = None,
    missing_fill: Mapping | None = None,
    class_weights: ClassWeights | None = None,
    skip_corrupt: bool = False,
    skip_nonfinite: bool = False,
    skip_counter: SkipCounter | None = None,
    repeat: bool = False,
    drop_remainder: bool = False,
    num_parallel_reads: int | None = None,
    dequantize: bool = True,
    split_files: bool = False,
    segment_size: int | None = None,
) -> tf.data.Dataset:
    """Builds the `tf.data` input pipeline over YouTube-8M-style TFRecords.

    Args:
        file_pattern: str glob (comma-separated globs allowed) or a sequence of globs; `gs://` works.
        features: feature spec string (e.g. "rgb:1024,audio:128") or sequence of `schema.FeatureSpec`.
        batch_size: int, records per batch.
        training: bool. True: shuffled files and records, `num_frames` random frames per video.
            False: deterministic order, `num_frames` frames at equal intervals (all when None).
        num_frames: int or None, frames kept per video; shorter videos keep their true length.
            Defaults to None (all frames).
        num_classes: int, or None to yield features only (no labels). Defaults to None.
        label_mode: "single" (one-hot labels) or "multi" (multi-hot labels). Defaults to "single".
        record_type: "auto" (per record: frame-level feature lists, else video-level `mean_<name>`),
            "frame" or "video". Defaults to "auto".
        shuffle_buffer: int, records in the shuffle buffer when training (YouTube-8M frame-level records
            are ~350 KB, so 512 records hold ~180 MB). Defaults to 512.
        seed: int or None; fixes the file order, record shuffle and frame sampling. Defaults to None.
        missing_fill: dict modality name -> float vector `(dim,)` given, as a length-1 set, to a record
            without that modality (e.g. `ResolvedStats.missing_fill`); modalities not in it, or None, get
            zeros. Defaults to None.
        class_weights: `ClassWeights` (e.g. `ResolvedStats.class_weights`) to yield sample weights: the
            mean of the class weights over the video's labels; needs num_classes. None yields no weights.
            Defaults to None.
        skip_corrupt: bool; False raises an error naming a corrupt or truncated file, True skips the
            rest of that file, prints a warning and counts it. Files are checked at the end of each pass
            over them (with `split_files`, as each file ends). Defaults to False.
        skip_nonfinite: bool; False raises an error naming the video with NaN/Inf float features, True
            drops such videos (batches may then be smaller) and counts them. Defaults to False.
        skip_counter: optional `SkipCounter` receiving the counts of what was skipped.
        repeat: bool, repeat the data indefinitely, pass after pass (each pass ends with its own partial
            batch unless drop_remainder). Defaults to False.
        drop_remainder: bool, drop the last partial batch of each pass (static batch size). Defaults to
            False.
        num_parallel_reads: int, files read in parallel (interleave cycle length). Defaults to
            min(number of files, 8).
        dequantize: bool; False yields quantized modalities as uint8 (the record's bytes) for a model that
            dequantizes them itself (see `parser.parse_serialized`). Defaults to True.
        split_files: bool; True when the files of a pass are split between several readers (the tf.data
            service's `distributed_epoch` mode): each file is then checked as it ends (`files.read_chunks`,
            slower per record) instead of all files at the end of the pass, which no single reader sees.
            Defaults to False.
        segment_size: int or None; an int reads each video as its segments of `segment_size` frames, for
            prediction and evaluation (`ac_keras.data.segments`): every element is then the dict of
            `segments.parse_segment_batch` for the segments of `batch_size` videos (their number varies),
            `num_frames` frames selected per segment, `num_classes` (optional) only checking the rated
            classes of the 2019 records. Needs training=False, no class_weights, no drop_remainder,
            record_type "auto" or "frame" (frame-level records; one without frames has no segment).
            Defaults to None (whole videos).

    Returns:
        A `tf.data.Dataset` of `(features, labels)`, or `(features, labels, sample_weights)` with
        `class_weights`, or `features` alone when num_classes is None. `features` maps each modality to a
        float32 `tf.RaggedTensor` `(batch, None, dim)` (uint8 for quantized modalities with
        `dequantize=False`) and `schema.VIDEO_ID_KEY` to string ids `(batch,)`;
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
        class_weights=class_weights,
        num_parallel_reads=num_parallel_reads,
        num_frames=num_frames,
    )
    if segment_size is not None:
        _validate_segment_arguments(segment_size, training, class_weights, drop_remainder, record_type)
    if (skip_corrupt or skip_nonfinite) and skip_counter is None:
        skip_counter = SkipCounter()

    file_list = files.list_files(file_pattern)
    sizes = files.file_sizes(file_list)
    file_triples = files.file_dataset(file_list, sizes)
    if training:
        file_triples = file_triples.shuffle(len(file_list), seed=seed, reshuffle_each_iteration=True)
    deterministic = not training or seed is not None
    if split_files:
        chunks = files.read_chunks(
            file_triples,
            num_files=len(file_list),
            skip_corrupt=skip_corrupt,
            skip_counter=skip_counter,
            num_parallel_reads=num_parallel_reads,
            deterministic=deterministic,
        )
        batches = batch_records(
            chunks,
            batch_size=batch_size,
            training=training,
            shuffle_buffer=shuffle_buffer,
            seed=seed,
            repeat=repeat,
            drop_remainder=drop_remainder,
        )
        report_at_end = (skip_corrupt or skip_nonfinite) and not repeat
        if report_at_end:
            # An empty batch marks the end of the data; the filter after parsing prints the counts.
            batches = batches.concatenate(tf.data.Dataset.from_tensors(_empty_batch()))
    else:
        # Record by record, nothing run per record; the byte accounting runs per batch and checks every
        # file at the end of the pass, where it leaves an empty batch (the end marker).
        records = files.read_records(
            file_triples,
            num_files=len(file_list),
            num_parallel_reads=num_parallel_reads,
            deterministic=deterministic,
        )
        if training:
            records = records.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        batches = files.check_pass(
            records.batch(batch_size),
            file_list,
            sizes,
            skip_corrupt=skip_corrupt,
            skip_counter=skip_counter,
        )
        report_at_end = skip_corrupt or skip_nonfinite
        if drop_remainder or not report_at_end:
            # Drops the partial batch (its bytes are counted above) and, unless it reports, the end marker.
            batches = batches.filter(
                lambda records, *_: _keep_batch(records, batch_size, drop_remainder, report_at_end)
            )
        if repeat:
            batches = batches.repeat()
    if training:
        # One stateless seed per batch: reproducible with `seed`, different in every epoch.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(
            2, drop_remainder=True
        )
        batches = tf.data.Dataset.zip(batches, seeds)

    if segment_size is not None:
        parse = segments.segment_batch_parser(
            specs,
            file_names=file_list,
            segment_size=segment_size,
            num_frames=num_frames,
            num_classes=num_classes,
            missing_fill=missing_fill,
            skip_nonfinite=skip_nonfinite,
            skip_counter=skip_counter,
            dequantize=dequantize,
        )
    else:
        parse = _batch_parser(
            specs,
            file_names=file_list,
            training=training,
            num_frames=num_frames,
            num_classes=num_classes,
            label_mode=label_mode,
            record_type=record_type,
            missing_fill=missing_fill,
            class_weights=class_weights,
            skip_nonfinite=skip_nonfinite,
            skip_counter=skip_counter,
            dequantize=dequantize,
        )
    if training:
        dataset = batches.map(parse, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:  # evaluation draws nothing at random: no seeds
        dataset = batches.map(
            lambda *batch: parse(batch, None), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    if report_at_end:
        dataset = dataset.filter(lambda *element: _not_end_marker(element, skip_counter))
    if drop_remainder and skip_nonfinite:
        # Dropped videos leave short batches; re-batching restores the promised batch size.
        dataset = dataset.unbatch().batch(batch_size, drop_remainder=True)
    elif drop_remainder:
        # Appending the end marker relaxed the static batch size.
        dataset = dataset.map(lambda *element: _with_batch_size(element, batch_size))
    return dataset.prefetch(tf.data.AUTOTUNE)


def _keep_batch(records, batch_size, drop_remainder, keep_end_marker):
    """Filter predicate: full batches, the partial one unless drop_remainder, the end marker if asked."""
    size = tf.size(records)
    keep = tf.equal(size, batch_size) if drop_remainder else size > 0
    return keep | tf.equal(size, 0) if keep_end_marker else keep


def _empty_batch():
    """The end marker: a batch of no records."""
    return tf.zeros([0], tf.string), tf.zeros([0], tf.int64), tf.zeros([0], tf.int64)


def batch_records(
    chunks: tf.data.Dataset,
    *,
    batch_size: int,
    training: bool,
    shuffle_buffer: int,
    seed: int | None,
    repeat: bool,
    drop_remainder: bool,
) -> tf.data.Dataset:
    """Cuts chunks of serialized records into batches, shuffling the records when training.

    Args:
        chunks: dataset of `(records, record_indices, file_indices)` chunks (see `files.read_chunks`).
        batch_size: int, records per batch.
        training: bool; True shuffles the records in a buffer of `shuffle_buffer`, False keeps their order.
        shuffle_buffer: int, records in the shuffle buffer (training only).
        seed: int or None, seed of the record shuffle.
        repeat: bool, repeat the records indefinitely.
        drop_remainder: bool, drop the last partial batch.

    Returns:
        A dataset of `(serialized, record_indices, file_indices)`, tensors `(batch,)`.
    """
    if training:
        records = chunks.unbatch().shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        if repeat:
            records = records.repeat()
        return records.batch(batch_size, drop_remainder=drop_remainder)
    # Evaluation keeps the per-file chunks and only re-cuts them into batches (one copy).
    if repeat:
        chunks = chunks.repeat()
    return chunks.rebatch(batch_size, drop_remainder=drop_remainder)


def shard_for_workers(dataset: tf.data.Dataset, num_workers: int) -> tf.data.Dataset:
    """Under several workers, each reads every file and keeps its share of the elements.

    Sets `AutoShardPolicy.DATA` for the multi-worker strategy's auto-sharding. File-based auto-sharding
    cannot see through the pipeline's batched parsing (records are batched while still serialized and
    parsed per batch, so tf.data reports "did not find a shardable source"), hence element sharding; it
    costs each worker a full read of the files.

    Args:
        dataset: the dataset of `make_dataset` (or derived from it).
        num_workers: int, the number of workers reading it.

    Returns:
        `dataset` with element sharding options when num_workers > 1, else `dataset` unchanged.
    """
    if num_workers <= 1:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _batch_parser(
    specs,
    *,
    file_names,
    training,
    num_frames,
    num_classes,
    label_mode,
    record_type,
    missing_fill,
    class_weights,
    skip_nonfinite,
    skip_counter,
    dequantize=True,
):
    """The `Dataset.map` function: `((serialized, record_indices, file_indices), seed)` -> an element of
    `make_dataset`."""
    file_names = tf.constant(list(file_names), tf.string)

    def parse(batch, batch_seed):
        serialized, record_indices, file_indices = batch
        record_names = files.record_names(file_names, record_indices, file_indices)
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
            dequantize=dequantize,
        )
        targets = ()
        if num_classes is not None:
            targets = (parsed.labels,)
            if class_weights is not None:
                weights = parser.class_balanced_weights(
                    parsed.labels, class_weights.weights, class_weights.empty_weight
                )
                targets += (weights,)
        features = parsed.features
        if skip_nonfinite:
            features, targets = _drop_nonfinite(features, targets, parsed.nonfinite, skip_counter)
        return (features, *targets) if targets else features

    return parse


def _validate_arguments(
    *,
    batch_size,
    shuffle_buffer,
    num_classes,
    label_mode,
    record_type,
    class_weights,
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
    if label_mode not in schema.LABEL_MODES:
        raise ValueError(f"label_mode must be one of {schema.LABEL_MODES}, got {label_mode!r}.")
    if record_type not in decoder.RECORD_TYPES:
        raise ValueError(f"record_type must be one of {decoder.RECORD_TYPES}, got {record_type!r}.")
    if class_weights is not None:
        if num_classes is None:
            raise ValueError("class_weights needs num_classes (sample weights come with labels).")
        if not isinstance(class_weights, ClassWeights):
            raise ValueError(f"class_weights must be a ClassWeights or None, got {type(class_weights)}.")
        if np.shape(class_weights.weights) != (num_classes,):
            raise ValueError(
                f"class_weights.weights must have shape ({num_classes},) (num_classes), "
                f"got {np.shape(class_weights.weights)}."
            )
    if num_parallel_reads is not None and not positive_int(num_parallel_reads):
        raise ValueError(f"num_parallel_reads must be a positive int or None, got {num_parallel_reads!r}.")


def _validate_segment_arguments(segment_size, training, class_weights, drop_remainder, record_type):
    if isinstance(segment_size, bool) or not isinstance(segment_size, int | np.integer) or segment_size < 1:
        raise ValueError(f"segment_size must be a positive int or None, got {segment_size!r}.")
    if training or class_weights is not None or drop_remainder:
        raise ValueError(
            "segment_size reads segments for prediction and evaluation: it needs training=False, "
            "class_weights=None and drop_remainder=False."
        )
    if record_type == "video":
        raise ValueError(
            "segment_size needs frame-level records (record_type 'auto' or 'frame'), not 'video'."
        )


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
            "W ac_keras.data: end of a pass over the data; skipped the rest of",
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
