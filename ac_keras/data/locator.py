"""Locator: where the frames of quantized modalities lie in serialized SequenceExamples, without parsing.

A protobuf serializer (YouTube-8M's, `tf.train.SequenceExample.SerializeToString`, ours) writes a frame-level
record as its `context` (field 1) then its `feature_lists` (field 2), a map of `FeatureList`s. A quantized
modality's `FeatureList` holds one `Feature` per frame, each one `BytesList` of one value of `dim` bytes, with
minimal varint lengths: every frame is the same few header bytes (9 for dim 1024) then its `dim` bytes, at a
fixed stride. `locate` walks the few top-level fields of every record of a batch with vectorized ops, finds
each modality's feature list and verifies the header of every one of its frames; `selected_frames` then cuts
the frames a selection keeps out of the records with one `tf.strings.substr`. A record's other frames are
never copied, where a parse copies each of them into a string of its own: when training takes 20 frames of
300, most of the parse's work (docs/input_pipeline.md).

A batch is located only when every record is in exactly that layout; a modality may be missing or empty (0
frames, which the caller fills), and a record without feature lists (a video-level Example) has 0 frames of
every modality. Anything else (frames of another size, float lists, fields in another order, non-minimal
varints, unknown fields, a key twice, truncated bytes) leaves the batch not located, and the caller parses it
(`decoder.decode_batch`), whose checks give bad data its error messages. Located frames are byte for byte the
frames a parse returns. Pure TF ops: no `py_function`.
"""

from collections.abc import Sequence
from typing import NamedTuple

import tensorflow as tf

from ac_keras import schema

# The longest varint read: 5 bytes hold lengths up to 2^35, beyond any TFRecord a reader accepts.
_VARINT_BYTES = 5
# Feature lists walked per record beyond the modalities asked for (other modalities of the record); a
# record with more is parsed instead.
_EXTRA_ENTRIES = 2
_CONTEXT_TAG = 0x0A  # SequenceExample.context, field 1, length-delimited
_FEATURE_LISTS_TAG = 0x12  # SequenceExample.feature_lists, field 2
_ENTRY_TAG = 0x0A  # FeatureLists.feature_list map entry, field 1; also the entry's key, field 1
_VALUE_TAG = 0x12  # the map entry's value (a FeatureList), field 2


class Located(NamedTuple):
    """What `locate` returns.

    Attributes:
        ok: scalar bool, True when every record of the batch was located.
        starts: dict modality name -> int64 `(batch,)`, the offset in each record of its first frame's
            header (meaningful only when `ok`).
        counts: dict modality name -> int64 `(batch,)`, frames per record, 0 for a record without the
            modality (meaningful only when `ok`).
    """

    ok: tf.Tensor
    starts: dict
    counts: dict


def frame_layout(dim: int) -> tuple[bytes, int]:
    """`(header, stride)` of one frame of `dim` bytes in a FeatureList: the header bytes before the frame's
    bytes (`Feature` tag and length, `BytesList` tag and length, value tag and length) and the bytes from one
    frame's header to the next."""
    value = bytes([0x0A]) + _varint(dim)
    bytes_list = bytes([0x0A]) + _varint(len(value) + dim)
    feature = bytes([0x0A]) + _varint(len(bytes_list) + len(value) + dim)
    header = feature + bytes_list + value
    return header, len(header) + dim


def locate(serialized, features: Sequence[schema.FeatureSpec]) -> Located:
    """Finds the frames of each (quantized) modality in a batch of serialized SequenceExamples.

    Args:
        serialized: 1-D string tensor of serialized records.
        features: sequence of `schema.FeatureSpec`, all quantized.

    Returns:
        A `Located`; never raises on bad bytes (such a batch is not located).
    """
    if not all(spec.quantized for spec in features):
        raise ValueError("locate reads quantized (uint8) modalities only.")
    serialized = tf.convert_to_tensor(serialized, tf.string)
    length = tf.cast(tf.strings.length(serialized), tf.int64)
    zeros = tf.zeros_like(length)

    has_context = tf.equal(_byte_at(serialized, zeros, length), _CONTEXT_TAG)
    context_length, context_varint = _varint_at(serialized, zeros + 1, length)
    position = tf.where(has_context, 1 + context_varint + context_length, zeros)
    ok = tf.logical_or(tf.logical_not(has_context), context_varint > 0)
    # Feature lists, or nothing more (a record without frames, e.g. a video-level Example).
    has_lists = tf.equal(_byte_at(serialized, position, length), _FEATURE_LISTS_TAG)
    ok &= has_lists | tf.equal(position, length)
    lists_length, lists_varint = _varint_at(serialized, position + 1, length)
    position = tf.where(has_lists, position + 1 + lists_varint, position)
    end = tf.where(has_lists, position + lists_length, position)
    ok &= tf.logical_not(has_lists) | (lists_varint > 0)
    ok &= tf.equal(end, length)

    names = [spec.name for spec in features]
    starts = {name: zeros for name in names}
    found = {name: tf.zeros_like(ok) for name in names}
    lengths = {name: zeros for name in names}
    for _ in range(len(names) + _EXTRA_ENTRIES):
        active = ok & (position < end)
        entry_length, entry_varint = _varint_at(serialized, position + 1, length)
        entry_start = position + 1 + entry_varint
        entry_end = entry_start + entry_length
        key_length, key_varint = _varint_at(serialized, entry_start + 1, length)
        key_start = entry_start + 1 + key_varint
        key = _substr(serialized, key_start, key_length, length)
        value_at = key_start + key_length
        value_length, value_varint = _varint_at(serialized, value_at + 1, length)
        value_start = value_at + 1 + value_varint
        good = (
            tf.equal(_byte_at(serialized, position, length), _ENTRY_TAG)
            & (entry_varint > 0)
            & tf.equal(_byte_at(serialized, entry_start, length), _ENTRY_TAG)
            & (key_varint > 0)
            & tf.equal(_byte_at(serialized, value_at, length), _VALUE_TAG)
            & (value_varint > 0)
            & tf.equal(value_start + value_length, entry_end)
            & (entry_end <= end)
        )
        ok = tf.where(active, ok & good, ok)
        for name in names:
            hit = active & good & tf.equal(key, name)
            ok &= tf.logical_not(hit & found[name])  # a key twice: the parse decides
            starts[name] = tf.where(hit, value_start, starts[name])
            lengths[name] = tf.where(hit, value_length, lengths[name])
            found[name] |= hit
        position = tf.where(active, entry_end, position)
    ok &= position >= end  # no feature lists left unwalked

    counts = {}
    for spec in features:
        _, stride = frame_layout(spec.dim)
        counts[spec.name] = lengths[spec.name] // stride
        ok &= tf.equal(counts[spec.name] * stride, lengths[spec.name])  # 0 frames where missing or empty
    # Where the layout does not hold, 0 frames: the header check reads nothing there.
    counts = {name: tf.where(ok, count, zeros) for name, count in counts.items()}
    all_ok = tf.reduce_all(ok)
    for spec in features:
        all_ok &= _frame_headers_ok(serialized, starts[spec.name], counts[spec.name], spec.dim)
    return Located(ok=all_ok, starts=starts, counts=counts)


def selected_frames(serialized, start, row_splits, dim: int, indices, new_row_splits, num_frames: int):
    """The bytes of the selected frames of one located modality, as `parser.select_frame_indices` chose them.

    Args:
        serialized: 1-D string tensor of the located records.
        start: int64 `(batch,)`, the modality's `Located.starts`.
        row_splits: int64 `(batch + 1,)` row splits of the records' frames (from `Located.counts`).
        dim: int, bytes per frame.
        indices: int64 flat indices of the selected frames into the records' frames, as
            `select_frame_indices` returns them.
        new_row_splits: int64 `(batch + 1,)` row splits of the selected frames.
        num_frames: int, the most frames selected per record.

    Returns:
        uint8 `(selected frames, dim)`, in the order of `indices`.
    """
    header, stride = frame_layout(dim)
    rows = tf.searchsorted(new_row_splits, tf.range(new_row_splits[-1]), side="right", out_type=tf.int64) - 1
    slots = tf.range(new_row_splits[-1]) - tf.gather(new_row_splits, rows)
    offsets = tf.gather(start, rows) + (indices - tf.gather(row_splits, rows)) * stride + len(header)
    # One (batch, num_frames) substr against the records broadcast along the frames: no record is copied.
    batch_size = tf.shape(start, out_type=tf.int64)[0]
    cells = tf.stack([rows, slots], axis=1)
    shape = tf.stack([batch_size, tf.constant(num_frames, tf.int64)])
    frame_bytes = tf.strings.substr(
        serialized[:, tf.newaxis],
        tf.scatter_nd(cells, offsets, shape),
        tf.scatter_nd(cells, tf.fill(tf.shape(offsets), tf.constant(dim, tf.int64)), shape),
    )
    dense = tf.reshape(tf.io.decode_raw(frame_bytes, tf.uint8, fixed_length=dim), [-1, dim])
    return tf.gather(dense, rows * num_frames + slots)


def _frame_headers_ok(serialized, start, count, dim: int):
    """Scalar bool: the header of every frame is the header of a frame of `dim` bytes (one substr of a
    (batch, most frames) matrix of header-sized pieces, compared as strings)."""
    header, stride = frame_layout(dim)
    frame = tf.range(tf.reduce_max(tf.concat([count, tf.zeros([1], tf.int64)], axis=0)))[tf.newaxis, :]
    is_frame = frame < count[:, tf.newaxis]
    headers = tf.strings.substr(
        serialized[:, tf.newaxis],
        tf.where(is_frame, start[:, tf.newaxis] + frame * stride, 0),
        tf.where(is_frame, tf.constant(len(header), tf.int64), 0),
    )
    return tf.reduce_all(tf.equal(headers, header) | tf.logical_not(is_frame))


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _substr(serialized, position, size, length):
    """Bytes `[position, position + size)` of each record, cut at its end (never an out-of-range error)."""
    position = tf.clip_by_value(position, 0, length)
    return tf.strings.substr(serialized, position, tf.clip_by_value(size, 0, length - position))


def _byte_at(serialized, position, length):
    """int64 `(batch,)` byte at `position` of each record; -1 past its end."""
    byte = tf.io.decode_raw(
        _substr(serialized, position, tf.ones_like(position), length), tf.uint8, fixed_length=1
    )
    return tf.where(position < length, tf.cast(byte[:, 0], tf.int64), -1)


def _varint_at(serialized, position, length):
    """`(value, size)`: the varint at `position` of each record and its bytes (minimal encoding only; size
    0 when there is none: truncated, longer than 5 bytes, or non-minimal)."""
    raw = _substr(
        serialized, position, tf.fill(tf.shape(position), tf.constant(_VARINT_BYTES, tf.int64)), length
    )
    data = tf.cast(tf.io.decode_raw(raw, tf.uint8, fixed_length=_VARINT_BYTES), tf.int64)  # 0 past the end
    more = data >= 0x80
    size = tf.argmin(tf.cast(more, tf.int32), axis=1, output_type=tf.int64) + 1
    index = tf.range(_VARINT_BYTES, dtype=tf.int64)[tf.newaxis, :]
    in_varint = index < size[:, tf.newaxis]
    value = tf.reduce_sum(
        tf.where(in_varint, tf.bitwise.left_shift(data & 0x7F, 7 * index), tf.constant(0, tf.int64)), axis=1
    )
    last = tf.gather(data, size - 1, batch_dims=1)
    valid = (
        tf.logical_not(tf.reduce_all(more, axis=1))
        & (position + size <= length)
        & ((size == 1) | (last != 0))  # minimal: a longer varint never ends in a zero byte
    )
    return value, tf.where(valid, size, 0)
