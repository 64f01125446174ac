"""Decoder: serialized records -> raw ragged tensors, one parse op per batch.

The decoder only parses; it does not dequantize, sample frames or validate values (see `parser.py`).
Both record kinds are parsed by one `tf.io.parse_sequence_example` call: a `tf.train.Example` and the
context of a `tf.train.SequenceExample` are the same protobuf field (number 1, a `Features` message), so a
video-level Example parses as a SequenceExample whose context holds `id`, `labels` and `mean_<name>`.
"""

from typing import NamedTuple

import tensorflow as tf

from ac_keras import schema

RECORD_TYPES = ("auto", "frame", "video")


class ModalityFrames(NamedTuple):
    """The raw frames of one modality for a batch of records.

    Attributes:
        frames: frame-level values or None (record_type "video"). For a uint8 modality a `tf.RaggedTensor`
            `(batch, None frames, None)` of byte strings, one string per frame; for a float modality a
            `tf.RaggedTensor` `(batch, None frames, None values)` of float32.
        video_level: video-level values or None (record_type "frame"): a float32 `tf.RaggedTensor`
            `(batch, None values)` holding `mean_<name>` (empty for records without it).
    """

    frames: tf.RaggedTensor | None
    video_level: tf.RaggedTensor | None


class DecodedBatch(NamedTuple):
    """What `decode_batch` returns.

    Attributes:
        video_ids: string tensor `(batch,)`: the context `id`, else `video_id` (2017 YouTube-8M records);
            "" for records without either.
        label_ids: int64 `tf.RaggedTensor` `(batch, None)`; empty rows for records without labels.
        modalities: dict modality name -> `ModalityFrames`.
        record_names: string tensor `(batch,)` naming each record for error messages (e.g. "file:index"),
            or None.
    """

    video_ids: tf.Tensor
    label_ids: tf.RaggedTensor
    modalities: dict[str, ModalityFrames]
    record_names: tf.Tensor | None


def decode_batch(serialized, features, *, record_type: str = "auto", record_names=None) -> DecodedBatch:
    """Parses a batch of serialized SequenceExample / Example records with vectorized ops.

    Args:
        serialized: 1-D string tensor of serialized records.
        features: feature spec string or sequence of `schema.FeatureSpec`.
        record_type: str, "frame" (SequenceExample feature lists), "video" (`mean_<name>` float lists of
            video-level Examples) or "auto" (both; the parser picks per record). Defaults to "auto".
        record_names: optional 1-D string tensor naming each record; TensorFlow's own parse errors
            (e.g. a float list where bytes are declared) then name the record.

    Returns:
        A `DecodedBatch`.
    """
    specs = schema.to_feature_specs(features)
    check_record_type(record_type)
    serialized = tf.convert_to_tensor(serialized, dtype=tf.string)
    context_features = _context_features()
    video_level_features = _video_level_features(specs)
    sequence_features = {}
    if record_type in ("auto", "frame"):
        sequence_features = {
            spec.name: tf.io.RaggedFeature(
                tf.string if spec.quantized else tf.float32, row_splits_dtype=tf.int64
            )
            for spec in specs
        }
    if record_type == "video":
        context_features.update(video_level_features)
    context, sequences, _ = tf.io.parse_sequence_example(
        serialized,
        context_features=context_features,
        sequence_features=sequence_features or None,
        example_names=record_names,
    )
    video_level = {spec.video_level_key: context.get(spec.video_level_key) for spec in specs}
    if record_type == "auto":
        lacking = tf.zeros(tf.shape(serialized, out_type=tf.int64), tf.bool)
        for spec in specs:
            splits = sequences[spec.name].row_splits
            lacking |= tf.equal(splits[1:] - splits[:-1], 0)
        video_level = video_level_where_needed(serialized, specs, lacking, record_names=record_names)
    modalities = {
        spec.name: ModalityFrames(
            frames=sequences.get(spec.name), video_level=video_level[spec.video_level_key]
        )
        for spec in specs
    }
    return DecodedBatch(
        video_ids=_video_ids(context),
        label_ids=context[schema.LABELS_KEY],
        modalities=modalities,
        record_names=record_names,
    )


def check_record_type(record_type: str) -> None:
    """Raises ValueError unless `record_type` is one of `RECORD_TYPES`."""
    if record_type not in RECORD_TYPES:
        raise ValueError(f"record_type must be one of {RECORD_TYPES}, got {record_type!r}.")


def decode_context(serialized, *, record_names=None) -> tuple[tf.Tensor, tf.RaggedTensor]:
    """`(video_ids, label_ids)` of a batch of records, as `decode_batch` returns them; their frames are not
    parsed (the parse skips the feature lists)."""
    context, _, _ = tf.io.parse_sequence_example(
        serialized, context_features=_context_features(), example_names=record_names
    )
    return _video_ids(context), context[schema.LABELS_KEY]


def _video_level_features(specs):
    return {
        spec.video_level_key: tf.io.RaggedFeature(tf.float32, row_splits_dtype=tf.int64) for spec in specs
    }


def _context_features():
    return {
        schema.ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        schema.LEGACY_ID_KEY: tf.io.FixedLenFeature([], tf.string, default_value=""),
        schema.LABELS_KEY: tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64),
    }


def _video_ids(context):
    """The context `id`, else `video_id` (2017 YouTube-8M records)."""
    ids = context[schema.ID_KEY]
    return tf.where(tf.strings.length(ids) > 0, ids, context[schema.LEGACY_ID_KEY])


def video_level_where_needed(serialized, specs, lacking, *, record_names=None) -> dict:
    """The `mean_<name>` vectors of the records lacking frames of some modality; empty rows elsewhere.

    Parsing them for every record costs about a fifth of the input pipeline on frame-level data, where
    no record needs them; so only the records without frames of some modality are parsed again (usually
    none: a parse of an empty batch), with no `tf.cond` (which costs as much in a `Dataset.map` function).

    Args:
        serialized: 1-D string tensor of serialized records.
        specs: sequence of `schema.FeatureSpec`.
        lacking: bool `(batch,)`, the records without frames of some modality.
        record_names: optional 1-D string tensor naming each record in parse errors.

    Returns:
        dict `mean_<name>` key -> float32 `tf.RaggedTensor` `(batch, None)`.
    """
    batch_size = tf.shape(serialized, out_type=tf.int64)[0]
    video_level_features = _video_level_features(specs)
    rows = tf.where(lacking)
    names = None if record_names is None else tf.gather(record_names, rows[:, 0])
    context, _, _ = tf.io.parse_sequence_example(
        tf.gather(serialized, rows[:, 0]), context_features=video_level_features, example_names=names
    )
    video_level = {}
    for key, values in context.items():
        lengths = tf.scatter_nd(rows, values.row_lengths(), [batch_size])
        video_level[key] = tf.RaggedTensor.from_row_lengths(values.flat_values, lengths, validate=False)
    return video_level
