"""Segments: a batch of records -> every `segment_size`-frame segment of each video, with its rated classes.

The segment mode of `make_dataset` (`segment_size=...`), for prediction and evaluation only. A video of L
frames (the most frames of any of its modalities) has the segments `[k * segment_size, (k + 1) *
segment_size)` for `k = 0 .. ceil(L / segment_size) - 1`, the last one cut at the video's end (its real
frames only, never padding): the segments the YouTube-8M starter's `inference.py --segment_labels` scores
(`get_segments`), except that the starter reads at most 300 frames per video (its reader's `max_frames`)
where every frame is read here. Inside a segment, frames are selected as evaluation selects them
(`parser.select_frame_indices`: `num_frames` at equal intervals when the segment is longer, all frames
otherwise) and a modality the segment has no frame of gets the reader's fill (`parser.select_and_fill`); a
segment is to the model a smaller set of the same frame features, so it scores segments as it scores videos.

The rated (segment, class) pairs of the 2019 records (context `segment_start_times`, `segment_end_times`,
`segment_labels`, `segment_scores`, see `schema`) come with their segment. They are checked, each failure a
message naming the video and the record: the four lists of equal length, each rated segment inside the video
(`0 <= start`, `end <= L`), one of the segments scored (`start` a multiple of `segment_size`, `end = start +
segment_size`), its class in `[0, num_classes)`.

Everything runs per batch with vectorized TensorFlow ops (no Python per record or segment), as the parser
does: the frames are parsed once (`parser.parse_batch`, every check of the normal path) and the segments are
row splits over the same frame values, nothing copied but the selected frames.
"""

import sys
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from ac_keras import schema
from ac_keras.data import files, parser
from ac_keras.data.files import SkipCounter

# Keys of the segment mode's features dict, beside the modalities and `schema.VIDEO_ID_KEY` (the video's id).
START_KEY = "segment_start"
END_KEY = "segment_end"
RATED_CLASSES_KEY = "segment_rated_classes"
RATED_SCORES_KEY = "segment_rated_scores"
INFO_KEYS = (schema.VIDEO_ID_KEY, START_KEY, END_KEY, RATED_CLASSES_KEY, RATED_SCORES_KEY)


class SegmentRatings(NamedTuple):
    """The 2019 context lists of a batch of records, each an int64 / float32 `tf.RaggedTensor` `(batch, None)`
    (empty rows for records without them)."""

    starts: tf.RaggedTensor
    ends: tf.RaggedTensor
    labels: tf.RaggedTensor
    scores: tf.RaggedTensor


def decode_ratings(serialized, *, record_names=None) -> SegmentRatings:
    """Parses the segment rating lists of a batch of serialized records (their frames are not parsed).

    Args:
        serialized: 1-D string tensor of serialized `tf.train.SequenceExample` records.
        record_names: optional 1-D string tensor naming each record in TensorFlow's own parse errors.

    Returns:
        A `SegmentRatings`.
    """
    features = {
        schema.SEGMENT_START_TIMES_KEY: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64),
        schema.SEGMENT_END_TIMES_KEY: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64),
        schema.SEGMENT_LABELS_KEY: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64),
        schema.SEGMENT_SCORES_KEY: tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64),
    }
    context, _, _ = tf.io.parse_sequence_example(
        tf.convert_to_tensor(serialized, tf.string), context_features=features, example_names=record_names
    )
    return SegmentRatings(
        starts=context[schema.SEGMENT_START_TIMES_KEY],
        ends=context[schema.SEGMENT_END_TIMES_KEY],
        labels=context[schema.SEGMENT_LABELS_KEY],
        scores=context[schema.SEGMENT_SCORES_KEY],
    )


def parse_segment_batch(
    serialized,
    features,
    *,
    segment_size: int,
    num_frames: int | None,
    num_classes: int | None = None,
    missing_fill: Mapping | None = None,
    record_names=None,
    skip_nonfinite: bool = False,
    skip_counter: SkipCounter | None = None,
    dequantize: bool = True,
) -> dict:
    """The segments of a batch of serialized frame-level records (see the module docstring).

    Args:
        serialized: 1-D string tensor of serialized `tf.train.SequenceExample` records.
        features: feature spec string or sequence of `schema.FeatureSpec`.
        segment_size: int, frames (seconds at YouTube-8M's one frame per second) per segment.
        num_frames: int or None, frames kept per segment at equal intervals (evaluation's `eval_frames`);
            None keeps every frame.
        num_classes: int or None; rated classes must lie in `[0, num_classes)` (None: only `>= 0`).
        missing_fill: optional dict modality name -> float vector `(dim,)` given, as a length-1 set, to a
            segment without frames of that modality; modalities not in it, or None, get zeros.
        record_names: optional string tensor `(batch,)` naming each record (e.g. "file:index") in errors.
        skip_nonfinite: bool; False raises on NaN/Inf float features, True drops those videos (counted in
            `skip_counter.nonfinite_videos`, their ids printed).
        skip_counter: the `SkipCounter` of `skip_nonfinite`; required with it.
        dequantize: bool; False keeps quantized modalities as uint8 (see `parser.parse_serialized`).

    Returns:
        dict: each modality -> `tf.RaggedTensor` `(segments, None, dim)` of the selected frames; per segment
        `schema.VIDEO_ID_KEY` (string), `START_KEY` and `END_KEY` (int64 first frame and end, the end cut at
        the video's last frame), `RATED_CLASSES_KEY` (int64 ragged `(segments, None)`: the rated classes of
        the segment, in record order) and `RATED_SCORES_KEY` (float32 ragged, their ratings). Segments come in
        record order, then in time order.

    Raises:
        tf.errors.InvalidArgumentError: bad frames (as `parser.parse_batch`), or bad rating lists (see the
            module docstring); the message names the video and the record.
    """
    specs = schema.to_feature_specs(features)
    segment_size = _check_segment_size(segment_size)
    if skip_nonfinite and skip_counter is None:
        raise ValueError("skip_nonfinite=True needs a skip_counter.")
    parsed = parser.parse_batch(
        serialized,
        specs,
        training=False,
        num_frames=None,
        fill_missing=False,
        record_type="frame",
        record_names=record_names,
        nonfinite="flag" if skip_nonfinite else "error",
        dequantize=dequantize,
    )
    video_ids = parsed.features[schema.VIDEO_ID_KEY]
    frames = {spec.name: parsed.features[spec.name] for spec in specs}
    ratings = decode_ratings(serialized, record_names=record_names)
    if skip_nonfinite:
        video_ids, frames, ratings, record_names = _drop_nonfinite(
            parsed.nonfinite, video_ids, frames, ratings, record_names, skip_counter
        )
    lengths = tf.zeros_like(video_ids, tf.int64)
    for spec in specs:
        lengths = tf.maximum(lengths, frames[spec.name].row_lengths())
    checked = _rating_checks(ratings, lengths, segment_size, num_classes, video_ids, record_names)

    with tf.control_dependencies(checked):
        num_segments = (lengths + segment_size - 1) // segment_size
        segment_splits = tf.concat([tf.zeros([1], tf.int64), tf.cumsum(num_segments)], axis=0)
        segment_video = parser._row_ids(segment_splits)
        position = tf.range(segment_splits[-1]) - tf.gather(segment_splits, segment_video)
        starts = position * segment_size
        ends = tf.minimum(starts + segment_size, tf.gather(lengths, segment_video))
        # Each video's frames of a modality lie in its segments in order; a modality shorter than the video
        # leaves its last segments empty (then filled). The segments are row lengths over the same values.
        segment_frames = {}
        for spec in specs:
            counts = tf.gather(frames[spec.name].row_lengths(), segment_video)
            segment_lengths = tf.clip_by_value(counts - starts, 0, segment_size)
            segment_frames[spec.name] = tf.RaggedTensor.from_row_lengths(
                frames[spec.name].flat_values, segment_lengths, validate=False
            )
        outputs = parser.select_and_fill(
            segment_frames, specs, num_frames=num_frames, missing_fill=missing_fill
        )
        # The rated pairs, each to its segment (the checks above make the index valid).
        pair_video = parser._row_ids(ratings.starts.row_splits)
        pair_segment = tf.gather(segment_splits, pair_video) + ratings.starts.flat_values // segment_size
        order = tf.argsort(pair_segment, stable=True)
        sorted_segments = tf.gather(pair_segment, order)
        num_total = segment_splits[-1]
        outputs[RATED_CLASSES_KEY] = tf.RaggedTensor.from_value_rowids(
            tf.gather(ratings.labels.flat_values, order), sorted_segments, nrows=num_total, validate=False
        )
        outputs[RATED_SCORES_KEY] = tf.RaggedTensor.from_value_rowids(
            tf.gather(ratings.scores.flat_values, order), sorted_segments, nrows=num_total, validate=False
        )
        outputs[schema.VIDEO_ID_KEY] = tf.gather(video_ids, segment_video)
        outputs[START_KEY] = starts
        outputs[END_KEY] = ends
    return outputs


def model_features(features: Mapping, specs) -> dict:
    """The modalities of a segment-mode features dict (what the model takes), without the segment keys."""
    return {spec.name: features[spec.name] for spec in schema.to_feature_specs(specs)}


def _check_segment_size(segment_size) -> int:
    if isinstance(segment_size, bool) or not isinstance(segment_size, int | np.integer) or segment_size < 1:
        raise ValueError(f"segment_size must be a positive int, got {segment_size!r}.")
    return int(segment_size)


def _rating_checks(ratings, lengths, segment_size, num_classes, video_ids, record_names):
    """The assertions on the rating lists; the later ones run only after the lists are of equal length."""
    describe = parser._RecordDescriber(video_ids, record_names)
    counts = [
        ratings.starts.row_lengths(),
        ratings.ends.row_lengths(),
        ratings.labels.row_lengths(),
        ratings.scores.row_lengths(),
    ]
    unequal = (counts[0] != counts[1]) | (counts[0] != counts[2]) | (counts[0] != counts[3])

    def unequal_data():
        found = tf.strings.join([tf.strings.as_string(parser._boolean_mask(c, unequal)) for c in counts], "/")
        return [
            f"Segment ratings need one entry per rated (segment, class) pair in each of "
            f"{schema.SEGMENT_START_TIMES_KEY}, {schema.SEGMENT_END_TIMES_KEY}, {schema.SEGMENT_LABELS_KEY}, "
            f"{schema.SEGMENT_SCORES_KEY}; found lists of lengths (starts/ends/labels/scores):",
            found,
            *describe(unequal),
        ]

    equal_lengths = parser._assert_all([(tf.logical_not(tf.reduce_any(unequal)), unequal_data)])
    with tf.control_dependencies(equal_lengths):
        splits = ratings.starts.row_splits
        start = tf.identity(ratings.starts.flat_values)
        end = ratings.ends.flat_values
        label = ratings.labels.flat_values
        video_length = tf.gather(lengths, parser._row_ids(splits))

        def segments_text(bad, with_length=False):
            parts = [
                tf.strings.as_string(parser._boolean_mask(start, bad)),
                "-",
                tf.strings.as_string(parser._boolean_mask(end, bad)),
            ]
            if with_length:
                parts += [" of ", tf.strings.as_string(parser._boolean_mask(video_length, bad)), " frames"]
            return tf.strings.join(parts)

        outside = (start < 0) | (end > video_length)
        misaligned = (end - start != segment_size) | (tf.math.floormod(start, segment_size) != 0)
        bad_label = label < 0 if num_classes is None else (label < 0) | (label >= num_classes)
        range_text = (
            "< 0" if num_classes is None else f"outside [0, {num_classes}) (num_classes={num_classes})"
        )
        checks = [
            (
                tf.logical_not(tf.reduce_any(outside)),
                lambda: [
                    "Rated segment past the end of the video: each [start, end) must lie within the frames "
                    "of its video (one per second); found start-end:",
                    segments_text(outside, with_length=True),
                    *describe(parser._sum_by_splits(outside, splits) > 0),
                ],
            ),
            (
                tf.logical_not(tf.reduce_any(misaligned)),
                lambda: [
                    f"Rated segments must be segments the model scores, [k*{segment_size}, "
                    f"k*{segment_size} + {segment_size}) with segment_size={segment_size}; found start-end:",
                    segments_text(misaligned),
                    *describe(parser._sum_by_splits(misaligned, splits) > 0),
                ],
            ),
            (
                tf.logical_not(tf.reduce_any(bad_label)),
                lambda: [
                    f"Rated segment classes {range_text}:",
                    parser._found(label, bad_label),
                    *describe(parser._sum_by_splits(bad_label, splits) > 0),
                ],
            ),
        ]
        return equal_lengths + parser._assert_all(checks)


def _drop_nonfinite(nonfinite, video_ids, frames, ratings, record_names, counter):
    """Drops the videos flagged for NaN/Inf features, counting them and printing their ids."""
    keep = tf.logical_not(nonfinite)
    dropped = parser._boolean_mask(video_ids, nonfinite)
    update = counter.nonfinite_videos.assign_add(tf.size(dropped, out_type=tf.int64))

    def warn():
        printed = tf.print(
            "W ac_keras.data: skipped videos with NaN/Inf features:",
            dropped,
            summarize=-1,
            output_stream=sys.stderr,
        )
        with tf.control_dependencies([printed]):
            return tf.constant(True)

    warned = tf.cond(tf.size(dropped) > 0, warn, lambda: tf.constant(False))
    with tf.control_dependencies([update, warned]):
        video_ids = parser._boolean_mask(video_ids, keep)
    frames = {name: tf.ragged.boolean_mask(values, keep) for name, values in frames.items()}
    ratings = SegmentRatings(*(tf.ragged.boolean_mask(values, keep) for values in ratings))
    if record_names is not None:
        record_names = parser._boolean_mask(record_names, keep)
    return video_ids, frames, ratings, record_names


def segment_batch_parser(
    specs,
    *,
    file_names,
    segment_size,
    num_frames,
    num_classes,
    missing_fill,
    skip_nonfinite,
    skip_counter,
    dequantize,
):
    """`make_dataset`'s `Dataset.map` function in segment mode: `((serialized, record_indices,
    file_indices), seed)` -> the dict of `parse_segment_batch`."""
    file_names = tf.constant(list(file_names), tf.string)

    def parse(batch, _seed):
        serialized, record_indices, file_indices = batch
        return parse_segment_batch(
            serialized,
            specs,
            segment_size=segment_size,
            num_frames=num_frames,
            num_classes=num_classes,
            missing_fill=missing_fill,
            record_names=files.record_names(file_names, record_indices, file_indices),
            skip_nonfinite=skip_nonfinite,
            skip_counter=skip_counter,
            dequantize=dequantize,
        )

    return parse
