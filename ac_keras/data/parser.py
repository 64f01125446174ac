"""Parser: a batch of serialized records -> model-ready features and labels, with pure TF ops.

Per batch, per modality: validate the frames, select frames (random in training, equal intervals in
evaluation), decode and dequantize only the selected frames, merge video-level records, and fill missing
modalities; then validate and encode the labels. When frames are selected (`num_frames`) and every modality
is quantized, a batch whose records are all in the layout protobuf serializers write is read by `locator`
instead of being parsed: only the selected frames are copied out of the records, the same frames for the same
seed; any other batch is parsed. Everything runs on whole batches with vectorized ops and
works eagerly, inside `Dataset.map` and inside a `tf.function` / SavedModel signature: no `py_function`,
no Python work per record.

Errors in the data raise `tf.errors.InvalidArgumentError` whose message names the modality, the declared
dim, what was found and the video id (plus the record's file and index when the pipeline knows them).
"""

import functools
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import tensorflow as tf

from ac_keras import schema
from ac_keras.data import decoder, locator

NONFINITE_MODES = ("error", "flag")
# Offending values / ids listed in an error message.
_SUMMARIZE = 5


class ParsedBatch(NamedTuple):
    """What `parse_batch` returns.

    Attributes:
        features: dict modality name -> float32 `tf.RaggedTensor` `(batch, None, dim)`, plus the video ids
            (string `(batch,)`) under `schema.VIDEO_ID_KEY`.
        labels: float32 `(batch, num_classes)` one-hot / multi-hot labels, or None without num_classes.
        label_ids: int64 `tf.RaggedTensor` `(batch, None)`, the labels as stored.
        nonfinite: bool `(batch,)`, True for records holding NaN/Inf in a float modality (only set with
            `nonfinite="flag"`; with "error" such records raise and this is all False).
    """

    features: dict
    labels: tf.Tensor | None
    label_ids: tf.RaggedTensor
    nonfinite: tf.Tensor


def parse_serialized(
    serialized,
    features,
    *,
    training: bool,
    num_frames: int | None,
    num_classes: int | None = None,
    label_mode: str = "multi",
    missing_fill: Mapping | None = None,
    seed=None,
    record_type: str = "auto",
    dequantize: bool = True,
):
    """Parses a batch of serialized records into model inputs; pure TF ops, SavedModel-safe.

    Args:
        serialized: 1-D string tensor of serialized `tf.train.SequenceExample` (frame-level) or
            `tf.train.Example` (video-level) records.
        features: feature spec string (e.g. "rgb:1024,audio:128") or sequence of `schema.FeatureSpec`.
        training: bool; True samples `num_frames` frames at random per video, False takes `num_frames`
            frames at equal intervals (or all frames when `num_frames` is None).
        num_frames: int or None; frames kept per video. Shorter videos keep all their frames.
        num_classes: int or None. None skips labels (serving), and records without `labels` parse.
        label_mode: "single" (one-hot; every record must hold exactly one label) or "multi" (multi-hot).
            Defaults to "multi".
        missing_fill: optional dict modality name -> float vector `(dim,)` used as a length-1 frame set for
            records that lack the modality. Modalities not in the dict, or None, get zeros.
        seed: None (stateful random frame sampling), a Python int, or an int tensor of shape (2,) for
            stateless sampling (the same seed gives the same frames). Only used when training.
        record_type: "auto", "frame" or "video"; see `decoder.decode_batch`. Defaults to "auto".
        dequantize: bool; False hands quantized (uint8) modalities over as their uint8 bytes, for a model
            that dequantizes them itself (`ac_keras.layers.Dequantize`); their video-level vectors and fill
            vectors are then quantized (`schema.quantize_tensor`). Defaults to True.

    Returns:
        `(features_dict, labels)`: features_dict maps each modality to a float32 `tf.RaggedTensor`
        `(batch, None, dim)` (uint8 for quantized modalities with `dequantize=False`) and
        `schema.VIDEO_ID_KEY` to the string ids `(batch,)`; labels is float32
        `(batch, num_classes)`, or None when num_classes is None.

    Raises:
        tf.errors.InvalidArgumentError: bad frame sizes, labels outside [0, num_classes), NaN/Inf in
            float features; the message names the video id and, where relevant, the modality and dims.
    """
    parsed = parse_batch(
        serialized,
        features,
        training=training,
        num_frames=num_frames,
        num_classes=num_classes,
        label_mode=label_mode,
        missing_fill=missing_fill,
        seed=seed,
        record_type=record_type,
        dequantize=dequantize,
    )
    return parsed.features, parsed.labels


def parse_batch(
    serialized,
    features,
    *,
    training: bool,
    num_frames: int | None,
    num_classes: int | None = None,
    label_mode: str = "multi",
    missing_fill: Mapping | None = None,
    fill_missing: bool = True,
    seed=None,
    record_type: str = "auto",
    record_names=None,
    nonfinite: str = "error",
    dequantize: bool = True,
) -> ParsedBatch:
    """`parse_serialized` with the options the input pipeline and the tools need.

    Args:
        serialized, features, training, num_frames, num_classes, label_mode, missing_fill, seed,
            record_type, dequantize: as in `parse_serialized`.
        fill_missing: bool; False leaves a record without the modality as an empty (length 0) set, which
            the statistics tool needs. Defaults to True.
        record_names: optional string tensor `(batch,)` naming each record (e.g. "file:index") in errors.
        nonfinite: "error" raises on NaN/Inf in float features; "flag" reports such records in
            `ParsedBatch.nonfinite` so the caller can drop and count them. Defaults to "error".

    Returns:
        A `ParsedBatch`.
    """
    specs = schema.to_feature_specs(features)
    _validate_options(specs, num_frames, num_classes, label_mode, missing_fill, nonfinite)
    decoder.check_record_type(record_type)
    serialized = tf.convert_to_tensor(serialized, dtype=tf.string)
    seed = _as_stateless_seed(seed) if training else None
    seeds = [
        None if seed is None else tf.random.experimental.stateless_fold_in(seed, index)
        for index in range(len(specs))
    ]
    options = dict(specs=specs, training=training, num_frames=num_frames, seeds=seeds, dequantize=dequantize)
    parse = functools.partial(
        _parsed_selection,
        serialized,
        record_type=record_type,
        record_names=record_names,
        nonfinite=nonfinite,
        **options,
    )
    if _locatable(specs, num_frames, record_type):
        # Frames cut straight out of the records when the whole batch is in the usual layout; any other
        # batch is parsed (and its bad data named by the parse's checks).
        located = locator.locate(serialized, specs)
        selection = tf.cond(
            located.ok,
            lambda: _located_selection(
                serialized,
                located,
                record_names=record_names,
                video_level=record_type == "auto",
                nonfinite=nonfinite,
                **options,
            ),
            parse,
        )
    else:
        selection = parse()
    video_ids, label_ids, frames_by_name, video_levels, nonfinite_records = selection
    batch_size = tf.shape(video_ids, out_type=tf.int64)[0]
    describe = _RecordDescriber(video_ids, record_names)

    checks = []
    if num_classes is not None:
        checks += _label_checks(label_ids, num_classes, label_mode, describe)
    checked = _assert_all(checks)

    # Encoding depends on the checks, so a bad label raises our message, not scatter_nd's.
    with tf.control_dependencies(checked):
        extras_by_name = {}
        for spec in specs:
            fill = None
            if fill_missing:
                fill = missing_fill.get(spec.name) if missing_fill is not None else None
                fill = _fill_vector(spec, fill)
            extras_by_name[spec.name] = _single_vector_sets(
                spec,
                frames_by_name.get(spec.name),
                video_levels.get(spec.name),
                fill,
                batch_size,
                as_uint8=spec.quantized and not dequantize,
            )
        outputs = _add_single_vector_sets(
            {spec.name: frames_by_name.get(spec.name) for spec in specs}, extras_by_name
        )
        outputs[schema.VIDEO_ID_KEY] = tf.identity(video_ids)
        labels = None
        if num_classes is not None:
            labels = encode_labels(label_ids, num_classes)
        nonfinite_records = tf.identity(nonfinite_records)
    return ParsedBatch(outputs, labels, label_ids, nonfinite_records)


def _locatable(specs, num_frames, record_type) -> bool:
    """Whether a batch may be read by `locator`: frame-level records whose modalities are all quantized, and
    a selection of frames (cutting every frame out of the records gains nothing over parsing them)."""
    return record_type != "video" and num_frames is not None and all(spec.quantized for spec in specs)


def _parsed_selection(
    serialized, *, specs, training, num_frames, seeds, dequantize, record_type, record_names, nonfinite
):
    """Parses the records (`decoder`), checks their frames and selects them.

    Returns:
        `(video_ids, label_ids, frames_by_name, video_levels, nonfinite_records)`: frames_by_name maps the
        modalities with frame-level data to their selected frames, video_levels those with video-level data
        to their `mean_<name>` vectors (ragged, empty rows where absent).
    """
    decoded = decoder.decode_batch(serialized, specs, record_type=record_type, record_names=record_names)
    describe = _RecordDescriber(decoded.video_ids, decoded.record_names)
    # Validation first: cheap vectorized predicates, one assertion each.
    batch_size = tf.shape(decoded.video_ids, out_type=tf.int64)[0]
    checked, nonfinite_records = _modality_checks(specs, decoded.modalities, describe, nonfinite, batch_size)

    # Decoding depends on the checks, so a bad frame raises our message, not decode_raw's.
    with tf.control_dependencies(checked):
        frames_by_name = {}
        video_levels = {}
        for spec, seed in zip(specs, seeds, strict=True):
            modality = decoded.modalities[spec.name]
            if modality.frames is not None:
                frames_by_name[spec.name] = _frame_level(
                    spec,
                    modality.frames,
                    training=training,
                    num_frames=num_frames,
                    seed=seed,
                    as_uint8=spec.quantized and not dequantize,
                )
            if modality.video_level is not None:
                video_levels[spec.name] = modality.video_level
        video_ids = tf.identity(decoded.video_ids)
    return video_ids, decoded.label_ids, frames_by_name, video_levels, nonfinite_records


def _modality_checks(specs, modalities, describe, nonfinite, batch_size):
    """The assertions on the frames and video-level vectors of every modality (`_assert_all`), and the bool
    `(batch,)` records flagged for NaN/Inf (all False unless `nonfinite` is "flag")."""
    checks = []
    nonfinite_records = tf.zeros([batch_size], tf.bool)
    for spec in specs:
        modality = modalities[spec.name]
        checks += _frame_checks(spec, modality, describe)
        flags = _nonfinite_records(spec, modality)
        if flags is not None:
            if nonfinite == "error":
                checks.append(_nonfinite_check(spec, flags, describe))
            else:
                nonfinite_records |= flags
    return _assert_all(checks), nonfinite_records


def _located_selection(
    serialized,
    located,
    *,
    specs,
    training,
    num_frames,
    seeds,
    dequantize,
    record_names,
    video_level,
    nonfinite,
):
    """`_parsed_selection` for a located batch: the context parsed, the selected frames cut out of the
    records (`locator.selected_frames`); the same frames for the same seed. `video_level`: the `mean_<name>`
    vectors of the records without frames of some modality, as a parse of record_type "auto" gives them."""
    video_ids, label_ids = decoder.decode_context(serialized, record_names=record_names)
    describe = _RecordDescriber(video_ids, record_names)
    batch_size = tf.shape(video_ids, out_type=tf.int64)[0]
    video_levels = {}
    checked, nonfinite_records = [], tf.zeros([batch_size], tf.bool)
    if video_level:
        lacking = tf.zeros([batch_size], tf.bool)
        for spec in specs:
            lacking |= tf.equal(located.counts[spec.name], 0)
        vectors = decoder.video_level_where_needed(serialized, specs, lacking, record_names=record_names)
        video_levels = {spec.name: vectors[spec.video_level_key] for spec in specs}
        modalities = {name: decoder.ModalityFrames(None, vectors) for name, vectors in video_levels.items()}
        checked, nonfinite_records = _modality_checks(specs, modalities, describe, nonfinite, batch_size)
    with tf.control_dependencies(checked):
        frames_by_name = {}
        for spec, seed in zip(specs, seeds, strict=True):
            counts = located.counts[spec.name]
            row_splits = tf.concat([tf.zeros([1], tf.int64), tf.cumsum(counts)], axis=0)
            indices, new_row_splits = select_frame_indices(
                row_splits, training=training, num_frames=num_frames, seed=seed
            )
            values = locator.selected_frames(
                serialized,
                located.starts[spec.name],
                row_splits,
                spec.dim,
                indices,
                new_row_splits,
                num_frames,
            )
            if dequantize:
                values = schema.dequantize(values)
            frames_by_name[spec.name] = tf.RaggedTensor.from_row_splits(
                values, new_row_splits, validate=False
            )
        video_ids = tf.identity(video_ids)
    return video_ids, label_ids, frames_by_name, video_levels, nonfinite_records


def select_and_fill(
    frames: Mapping, features, *, num_frames: int | None, missing_fill: Mapping | None = None
):
    """Evaluation's frame selection and missing-modality fill, for frames that come from no record.

    What `parse_serialized(training=False)` does to a record's frames after decoding, for features a program
    computed itself (`ac_keras.classify` from video files, the exported `classify_frames` signature): the same
    `num_frames` frames at equal intervals (`select_frame_indices`), and for a video without frames of a
    modality the length-1 set of its fill vector (quantized for uint8 frames, as the reader quantizes it).

    Args:
        frames: dict modality name -> `tf.RaggedTensor` `(batch, None, dim)`, uint8 (a quantized modality's
            bytes) or float32, a row of length 0 for a video without that modality.
        features: feature spec string or sequence of `schema.FeatureSpec`; every modality must be in `frames`.
        num_frames: int K, or None to keep every frame.
        missing_fill: optional dict modality name -> float vector `(dim,)`; modalities not in it get zeros.

    Returns:
        dict modality name -> `tf.RaggedTensor` `(batch, None, dim)` of the dtype given; pure TF ops.
    """
    specs = schema.to_feature_specs(features)
    _validate_options(specs, num_frames, None, "multi", missing_fill, "error")
    outputs = {}
    extras = {}
    for spec in specs:
        given = frames[spec.name]
        indices, row_splits = select_frame_indices(given.row_splits, training=False, num_frames=num_frames)
        values = given.flat_values
        if indices is not None:
            values = tf.gather(values, indices)
        outputs[spec.name] = tf.RaggedTensor.from_row_splits(values, row_splits, validate=False)
        fill = _fill_vector(spec, missing_fill.get(spec.name) if missing_fill is not None else None)
        batch_size = given.nrows(out_type=tf.int64)
        extras[spec.name] = _single_vector_sets(
            spec, outputs[spec.name], None, fill, batch_size, as_uint8=given.dtype == tf.uint8
        )
    return _add_single_vector_sets(outputs, extras)


def encode_labels(label_ids: tf.RaggedTensor, num_classes: int) -> tf.Tensor:
    """One-hot / multi-hot encodes ragged label ids (duplicates count once).

    Args:
        label_ids: int64 `tf.RaggedTensor` `(batch, None)` with values in [0, num_classes).
        num_classes: int.

    Returns:
        float32 `(batch, num_classes)` with 1.0 at each video's labels.
    """
    batch_size = label_ids.nrows(out_type=tf.int64)
    rows = _row_ids(label_ids.row_splits)
    indices = tf.stack([rows, tf.cast(label_ids.flat_values, tf.int64)], axis=1)
    counts = tf.scatter_nd(
        indices, tf.ones_like(label_ids.flat_values, tf.float32), [batch_size, num_classes]
    )
    return tf.minimum(counts, 1.0)


def class_balanced_weights(labels: tf.Tensor, class_weights, empty_weight: float) -> tf.Tensor:
    """Per-video sample weights: the mean of `class_weights` over the video's labels.

    Args:
        labels: float32 `(batch, num_classes)` one-hot / multi-hot labels.
        class_weights: float vector `(num_classes,)`, e.g. 1/S for a class with S training videos.
        empty_weight: float, the weight of a video without labels.

    Returns:
        float32 `(batch,)` weights; for single-label data exactly the class weight of the label.
    """
    class_weights = tf.constant(np.asarray(class_weights, np.float32))
    weighted = tf.linalg.matvec(labels, class_weights)
    num_labels = tf.reduce_sum(labels, axis=1)
    return tf.where(num_labels > 0, weighted / tf.maximum(num_labels, 1.0), empty_weight)


def drop_records(features: dict, labels, keep: tf.Tensor):
    """Removes the records where `keep` is False from a parsed batch.

    Args:
        features: dict as returned by `parse_serialized` (ragged modalities and the ids).
        labels: `(batch, num_classes)` tensor or None (or a tuple of per-record tensors, e.g. with weights).
        keep: bool `(batch,)`.

    Returns:
        `(features, labels)` holding only the kept records.
    """
    kept_features = {
        name: tf.ragged.boolean_mask(value, keep)
        if isinstance(value, tf.RaggedTensor)
        else tf.boolean_mask(value, keep)
        for name, value in features.items()
    }
    kept_labels = tf.nest.map_structure(lambda tensor: tf.boolean_mask(tensor, keep), labels)
    return kept_features, kept_labels


def select_frame_indices(row_splits, *, training: bool, num_frames: int | None, seed=None):
    """Chooses which frames of each video to keep.

    Evaluation takes `num_frames` frames at equal intervals: frame `floor((2 i + 1) * L / (2 K))` for
    i = 0..K-1 of a video with L > K frames (the centres of K equal segments); training takes a uniformly
    random subset of K frames without replacement, kept in temporal order. A video with L <= K keeps all
    its frames (never duplicated or padded).

    Args:
        row_splits: int64 `(batch + 1,)` row splits of the frames of a batch of videos.
        training: bool, random (True) or equal-interval (False) selection.
        num_frames: int K, or None to keep every frame.
        seed: None (stateful random op) or an int tensor of shape (2,) (stateless).

    Returns:
        `(indices, new_row_splits)`: int64 indices into the flat frames (None when every frame is kept)
        and the row splits of the selected frames.
    """
    row_splits = tf.cast(row_splits, tf.int64)
    if num_frames is None:
        return None, row_splits
    lengths = row_splits[1:] - row_splits[:-1]
    new_lengths = tf.minimum(lengths, num_frames)
    new_row_splits = tf.concat([tf.zeros([1], tf.int64), tf.cumsum(new_lengths)], axis=0)
    if training:
        # Per video, the K frames with the largest of i.i.d. uniform keys: a uniformly random K-subset.
        # One top_k over a (batch, longest video) key matrix; padding gets key -1 and is never chosen
        # before a real frame.
        max_length = tf.reduce_max(tf.concat([lengths, tf.zeros([1], tf.int64)], axis=0))
        key_shape = tf.stack([tf.size(lengths, out_type=tf.int64), max_length])
        if seed is None:
            keys = tf.random.uniform(key_shape, dtype=tf.float32)
        else:
            keys = tf.random.stateless_uniform(key_shape, seed=seed, dtype=tf.float32)
        positions = tf.range(max_length)[tf.newaxis, :]
        keys = tf.where(positions < lengths[:, tf.newaxis], keys, -1.0)
        _, chosen = tf.math.top_k(keys, k=tf.cast(tf.minimum(max_length, num_frames), tf.int32), sorted=False)
        # Sorted positions: temporal order, and the padding a short video got comes last in its row.
        chosen = tf.sort(tf.cast(chosen, tf.int64), axis=1)
        is_frame = chosen < lengths[:, tf.newaxis]
        indices = _boolean_mask(
            tf.reshape(chosen + row_splits[:-1, tf.newaxis], [-1]), tf.reshape(is_frame, [-1])
        )
        return indices, new_row_splits
    selected_rows = _row_ids(new_row_splits)
    position = tf.range(new_row_splits[-1]) - tf.gather(new_row_splits, selected_rows)
    length = tf.gather(lengths, selected_rows)
    spaced = ((2 * position + 1) * length) // (2 * num_frames)
    offsets = tf.where(length > num_frames, spaced, position)
    return tf.gather(row_splits, selected_rows) + offsets, new_row_splits


class _RecordDescriber:
    """Assertion data naming the records where a check failed: their video ids (and "file:index")."""

    def __init__(self, video_ids, record_names):
        self._video_ids = video_ids
        self._record_names = record_names

    def __call__(self, bad_records) -> list:
        data = ["in video(s)", _printable(_boolean_mask(self._video_ids, bad_records))]
        if self._record_names is not None:
            data += ["records", _printable(_boolean_mask(self._record_names, bad_records))]
        return data


def _printable(text):
    # Ids are arbitrary bytes; invalid UTF-8 in an error message breaks TensorFlow's error reporting.
    return tf.strings.unicode_transcode(text, "UTF-8", "UTF-8", errors="replace")


def _assert_all(checks):
    """One assertion per `(ok, make_data)` check; returns the ops to depend on (none when eager).

    The assertion data are the offending values and video ids, gathered with a few vectorized ops (empty
    for valid data) and formatted by `tf.debugging.Assert` only on failure. No `tf.cond` here or in the
    data: in a `Dataset.map` function each cond costs about a fifth of the whole pipeline's throughput
    (docs/benchmarks.md). Only string data keeps `tf.debugging.Assert` free of its own internal cond.
    TensorFlow C-escapes the data in the message, so the texts use no quotes.
    """
    assertions = [tf.debugging.Assert(ok, make_data(), summarize=_SUMMARIZE) for ok, make_data in checks]
    return [assertion for assertion in assertions if assertion is not None]


def _found(values, bad):
    """The offending values as strings (string assertion data avoids Assert's internal cond)."""
    return tf.strings.as_string(_boolean_mask(values, bad))


def _as_stateless_seed(seed):
    if seed is None:
        return None
    if isinstance(seed, int | np.integer):
        return tf.constant([int(seed), 0], tf.int64)
    seed = tf.convert_to_tensor(seed)
    seed.shape.assert_is_compatible_with([2])
    return seed


def _validate_options(specs, num_frames, num_classes, label_mode, missing_fill, nonfinite):
    if num_frames is not None and (
        isinstance(num_frames, bool) or not isinstance(num_frames, int | np.integer) or num_frames < 1
    ):
        raise ValueError(f"num_frames must be a positive int or None, got {num_frames!r}.")
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer) or num_classes < 1
    ):
        raise ValueError(f"num_classes must be a positive int or None, got {num_classes!r}.")
    if label_mode not in schema.LABEL_MODES:
        raise ValueError(f"label_mode must be one of {schema.LABEL_MODES}, got {label_mode!r}.")
    if nonfinite not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}.")
    if missing_fill is not None:
        dims = {spec.name: spec.dim for spec in specs}
        for name, fill in missing_fill.items():
            if name not in dims:
                raise ValueError(f"missing_fill names modality {name!r}, not in features {list(dims)}.")
            shape = tuple(fill.shape) if hasattr(fill, "shape") else np.shape(fill)
            if tuple(shape) != (dims[name],):
                raise ValueError(
                    f"missing_fill[{name!r}] must have shape ({dims[name]},) (the declared dim), "
                    f"got {tuple(shape)}."
                )


def _frame_checks(spec, modality, describe):
    """`(ok, make_data)` checks of the frame sizes of one modality (frame- and video-level)."""
    checks = []
    raw_frames = modality.frames
    if raw_frames is not None:
        per_frame = raw_frames.values  # (total_frames, None): byte strings or floats of each frame
        values_per_frame = per_frame.row_lengths()
        if spec.quantized:
            byte_lengths = tf.strings.length(per_frame.flat_values, unit="BYTE")
            bytes_per_frame = _sum_by_splits(byte_lengths, per_frame.row_splits)
            bad_frames = (values_per_frame != 1) | (bytes_per_frame != spec.dim)

            def frame_data():
                return [
                    f"Modality {spec.name} declares dim {spec.dim} (uint8: each frame one byte "
                    f"string of {spec.dim} bytes), found frames of (bytes):",
                    _found(bytes_per_frame, bad_frames),
                    "in byte strings:",
                    _found(values_per_frame, bad_frames),
                    *describe(_sum_by_splits(bad_frames, raw_frames.row_splits) > 0),
                ]

        else:
            bad_frames = values_per_frame != spec.dim

            def frame_data():
                return [
                    f"Modality {spec.name} declares dim {spec.dim} (float: each frame a FloatList "
                    f"of {spec.dim} floats), found frames of (floats):",
                    _found(values_per_frame, bad_frames),
                    *describe(_sum_by_splits(bad_frames, raw_frames.row_splits) > 0),
                ]

        checks.append((tf.logical_not(tf.reduce_any(bad_frames)), frame_data))
    if modality.video_level is not None:
        lengths = modality.video_level.row_lengths()
        bad_records = (lengths != 0) & (lengths != spec.dim)

        def video_level_data():
            return [
                f"Modality {spec.name} declares dim {spec.dim}, found video-level "
                f"{spec.video_level_key} vectors of (floats):",
                _found(lengths, bad_records),
                *describe(bad_records),
            ]

        checks.append((tf.logical_not(tf.reduce_any(bad_records)), video_level_data))
    return checks


def _nonfinite_records(spec, modality):
    """bool `(batch,)`: records holding NaN/Inf in this modality; None when it cannot hold any (uint8)."""
    flags = None
    if modality.frames is not None and not spec.quantized:
        raw_frames = modality.frames
        # Row splits of each record into the flat float values (through the frame level).
        value_splits = tf.gather(raw_frames.values.row_splits, raw_frames.row_splits)
        flags = _rows_with_any(tf.logical_not(tf.math.is_finite(raw_frames.flat_values)), value_splits)
    if modality.video_level is not None:
        video_flags = _rows_with_any(
            tf.logical_not(tf.math.is_finite(modality.video_level.flat_values)),
            modality.video_level.row_splits,
        )
        flags = video_flags if flags is None else flags | video_flags
    return flags


def _rows_with_any(flat_mask, row_splits):
    """bool `(rows,)`: whether any of a row's flat elements is True (a few ops, unlike ragged reduce).

    The per-row sums (a cumulative sum over every flat element) run only when some element is True: for
    float features that is one pass over the values instead of four (docs/benchmarks.md).
    """
    num_rows = tf.shape(row_splits, out_type=tf.int64)[0] - 1
    return tf.cond(
        tf.reduce_any(flat_mask),
        lambda: _sum_by_splits(flat_mask, row_splits) > 0,
        lambda: tf.zeros([num_rows], tf.bool),
    )


def _sum_by_splits(values, row_splits):
    """int64 `(rows,)` sums of the flat `values` (ints or bools) of each row."""
    running = tf.concat([tf.zeros([1], tf.int64), tf.cumsum(tf.cast(values, tf.int64))], axis=0)
    return tf.gather(running, row_splits[1:]) - tf.gather(running, row_splits[:-1])


def _row_ids(row_splits):
    """int64 row index of every flat element (tf.repeat and value_rowids build dozens of ops)."""
    row_splits = tf.cast(row_splits, tf.int64)
    return _row_of(row_splits, tf.range(row_splits[-1]))


def _boolean_mask(values, mask):
    # tf.boolean_mask builds ~25 ops; in a tf.data function every op costs time per batch.
    return tf.gather(values, tf.reshape(tf.where(mask), [-1]))


def _nonfinite_check(spec, record_nonfinite, describe):
    def data():
        return [
            f"Modality {spec.name} holds NaN or Inf values (--skip_nonfinite, or skip_nonfinite=True of "
            "make_dataset, skips such videos)",
            *describe(record_nonfinite),
        ]

    return tf.logical_not(tf.reduce_any(record_nonfinite)), data


def _frame_level(spec, raw_frames, *, training, num_frames, seed, as_uint8=False):
    """Selected, decoded, dequantized frame-level frames `(batch, None, dim)`, or None (video-level data).

    With `as_uint8` a quantized modality's frames stay uint8.
    """
    if raw_frames is None:
        return None
    indices, row_splits = select_frame_indices(
        raw_frames.row_splits, training=training, num_frames=num_frames, seed=seed
    )
    if spec.quantized:
        frame_bytes = raw_frames.flat_values
        if indices is not None:
            frame_bytes = tf.gather(frame_bytes, indices)
        # Only the selected frames are decoded: in training 30 of 300 frames cost 30 frames.
        quantized = tf.reshape(tf.io.decode_raw(frame_bytes, tf.uint8), [-1, spec.dim])
        values = quantized if as_uint8 else schema.dequantize(quantized)
    else:
        values = tf.reshape(raw_frames.flat_values, [-1, spec.dim])
        if indices is not None:
            values = tf.gather(values, indices)
    return tf.RaggedTensor.from_row_splits(values, row_splits, validate=False)


def _fill_vector(spec, fill):
    if fill is None:
        return tf.zeros([spec.dim], tf.float32)
    if tf.is_tensor(fill):
        return tf.cast(fill, tf.float32)
    return tf.constant(np.asarray(fill, np.float32))


def _single_vector_sets(spec, frames, video_level, fill, batch_size, as_uint8=False):
    """Length-1 sets for the records without frame-level frames: their video-level vector, else `fill`.

    Returns a `(batch, None, dim)` ragged tensor with one row per record (length 0 or 1), or None when
    no record can need one (frame-level data without filling). With `as_uint8` the vectors are quantized.
    """
    if video_level is None and fill is None:
        return None
    no_frames = tf.ones([batch_size], tf.bool) if frames is None else tf.equal(frames.row_lengths(), 0)
    # Table of candidate vectors: the video-level vectors of the records that have one, in record
    # order, then the fill vector.
    table = tf.zeros([0, spec.dim], tf.float32)
    has_video_level = tf.zeros([batch_size], tf.bool)
    if video_level is not None:
        table = tf.reshape(video_level.flat_values, [-1, spec.dim])
        has_video_level = video_level.row_lengths() > 0
    video_level_row = tf.cumsum(tf.cast(has_video_level, tf.int64)) - 1
    if fill is not None:
        fill_row = tf.shape(table, out_type=tf.int64)[0]
        table = tf.concat([table, fill[tf.newaxis]], axis=0)
        needs_vector = no_frames
    else:
        fill_row = tf.constant(0, tf.int64)
        needs_vector = no_frames & has_video_level
    rows = tf.where(has_video_level, video_level_row, fill_row)
    vectors = tf.gather(table, _boolean_mask(rows, needs_vector))
    if as_uint8:
        vectors = schema.quantize_tensor(vectors)
    return tf.RaggedTensor.from_row_lengths(vectors, tf.cast(needs_vector, tf.int64), validate=False)


def _add_single_vector_sets(frames_by_name, extras_by_name):
    """Gives the records without frames their length-1 set, in place of their empty frame set."""
    outputs = {}
    for name, frames in frames_by_name.items():
        extras = extras_by_name[name]
        if frames is None or extras is None:
            outputs[name] = extras if frames is None else frames
        else:
            outputs[name] = _insert_single_vectors(frames, extras)
    return outputs


def _insert_single_vectors(frames, extras):
    """`frames` with each record's row of `extras` (length 0 or 1) appended to its row; no `tf.cond`.

    Records that receive a vector have no frames, so the vector starts their row. Rows after the first such
    record move down: the frame values are padded by the number of vectors and the moved frames and the
    vectors are written into the padded copy. Without any vector (the common case) nothing is copied:
    `tf.pad` by zero rows returns its input, and `InplaceUpdate` with no rows leaves it as it is. Branching
    with `tf.cond` instead costs about a fifth of the input pipeline's throughput when the frame values
    flow through it (docs/benchmarks.md); the two ops here keep the common case free.
    """
    values = frames.flat_values
    row_splits = frames.row_splits
    vectors = extras.flat_values
    gets_vector = extras.row_lengths() > 0
    added = tf.cast(gets_vector, tf.int64)
    added_before = tf.cumsum(added, exclusive=True)
    new_row_splits = row_splits + tf.concat([tf.zeros([1], tf.int64), tf.cumsum(added)], axis=0)
    # The first record that gets a vector; without any, the appended 1 points past the last record.
    first = tf.argmax(tf.concat([added, tf.ones([1], tf.int64)], axis=0), output_type=tf.int64)
    # The frames from the first record that gets a vector on move down by the vectors before them.
    moved = tf.range(row_splits[first], row_splits[-1])
    moved_to = moved + tf.gather(added_before, _row_of(row_splits, moved))
    vector_at = _boolean_mask(row_splits[:-1] + added_before, gets_vector)
    padded = tf.pad(values, [[0, tf.size(vector_at)], [0, 0]])
    merged = tf.raw_ops.InplaceUpdate(
        x=padded,
        i=tf.cast(tf.concat([moved_to, vector_at], axis=0), tf.int32),
        v=tf.concat([tf.gather(values, moved), tf.cast(vectors, values.dtype)], axis=0),
    )
    return tf.RaggedTensor.from_row_splits(merged, new_row_splits, validate=False)


def _row_of(row_splits, flat_indices):
    """int64 row of each of the flat `flat_indices`."""
    return tf.searchsorted(row_splits, flat_indices, side="right", out_type=tf.int64) - 1


def _label_checks(label_ids, num_classes, label_mode, describe):
    flat = label_ids.flat_values
    out_of_range = (flat < 0) | (flat >= num_classes)

    def range_data():
        return [
            f"Labels outside [0, {num_classes}) (num_classes={num_classes}):",
            _found(flat, out_of_range),
            *describe(_sum_by_splits(out_of_range, label_ids.row_splits) > 0),
        ]

    checks = [(tf.logical_not(tf.reduce_any(out_of_range)), range_data)]
    if label_mode == "single":
        counts = label_ids.row_lengths()

        def count_data():
            return [
                "label_mode=single needs exactly one label per video (use label_mode=multi for "
                "multi-label data), found label counts:",
                _found(counts, counts != 1),
                *describe(counts != 1),
            ]

        checks.append((tf.reduce_all(counts == 1), count_data))
    return checks
