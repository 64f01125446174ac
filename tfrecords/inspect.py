"""Prints one record of a TFRecord file: id, labels, modalities, frame counts, value ranges, segment ratings.

    python -m tfrecords.inspect /data/train-00000-of-00100.tfrecord --index=3

Byte-string frames are shown as quantized uint8 (raw range) and dequantized (min/max/mean); float frames
as they are. Pass --features to check the record against a feature spec.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import numpy as np
import tensorflow as tf
from absl import app, flags

from ac_keras import schema
from tfrecords import run_command


def read_record(path: str, index: int = 0) -> bytes:
    """Returns the serialized record number `index` (0-based) of a TFRecord file."""
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}.")
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(f"No such file: {path}")
    try:
        for record in tf.data.TFRecordDataset(path).skip(index).take(1):
            return record.numpy()
        num_records = int(tf.data.TFRecordDataset(path).reduce(0, lambda total, _: total + 1))
    except tf.errors.DataLossError as error:
        raise ValueError(f"{path} is corrupt or truncated before record {index}: {error.message}") from None
    raise IndexError(f"{path} holds {num_records} records; there is no record {index}.")


def describe_record(path: str, index: int = 0, features=None) -> str:
    """A human-readable summary of one record.

    Args:
        path: TFRecord file (local or `gs://`).
        index: int, 0-based record number. Defaults to 0.
        features: optional feature spec string or sequence of `schema.FeatureSpec` to check against.

    Returns:
        The summary text, one item per line.
    """
    serialized = read_record(path, index)
    # A video-level tf.train.Example parses as a SequenceExample whose context holds its features.
    example = tf.train.SequenceExample.FromString(serialized)
    context = example.context.feature
    feature_lists = example.feature_lists.feature_list
    kind = "frame-level SequenceExample" if feature_lists else "video-level Example (no feature lists)"
    labels = context[schema.LABELS_KEY].int64_list.value if schema.LABELS_KEY in context else None
    lines = [
        f"file: {path}",
        f"record: {index} ({len(serialized)} bytes, {kind})",
        f"id: {_id_text(context)}",
        f"labels: {list(labels) if labels is not None else 'none'}",
    ]
    specs = {spec.name: spec for spec in schema.to_feature_specs(features)} if features else {}
    for name in sorted(feature_lists):
        lines.append(_describe_frames(name, feature_lists[name].feature, specs.get(name)))
    for key in sorted(context):
        if key.startswith(schema.VIDEO_LEVEL_PREFIX) and context[key].WhichOneof("kind") == "float_list":
            values = np.asarray(context[key].float_list.value, np.float32)
            name = key[len(schema.VIDEO_LEVEL_PREFIX) :]
            lines.append(
                f"modality {name} (video-level '{key}'): 1 vector of {values.size} floats, "
                f"{_value_range(values)}"
                + _spec_note(specs.get(name), values.size, "float", video_level=True)
            )
    for name in sorted(set(specs) - set(feature_lists)):
        if specs[name].video_level_key not in context:
            lines.append(f"modality {name}: missing (the reader fills it)")
    lines += _describe_ratings(context)
    return "\n".join(lines)


# Rated pairs listed by `describe_record`; the rest are counted.
MAX_LISTED_RATINGS = 20


def _describe_ratings(context) -> list[str]:
    """The YouTube-8M 2019 segment ratings of a record's context, if it has any."""
    keys = (
        schema.SEGMENT_START_TIMES_KEY,
        schema.SEGMENT_END_TIMES_KEY,
        schema.SEGMENT_LABELS_KEY,
        schema.SEGMENT_SCORES_KEY,
    )
    if not any(key in context for key in keys):
        return []
    starts, ends, labels = (list(context[key].int64_list.value) for key in keys[:3])
    scores = list(context[keys[3]].float_list.value)
    if not len(starts) == len(ends) == len(labels) == len(scores):
        return [
            f"segment ratings: lists of unequal length ({len(starts)} starts, {len(ends)} ends, "
            f"{len(labels)} labels, {len(scores)} scores): the reader refuses this record"
        ]
    positives = sum(score > 0 for score in scores)
    segments = len(set(zip(starts, ends, strict=True)))
    pairs = [
        f"[{start}, {end}) class {label}: {score:g}"
        for start, end, label, score in sorted(zip(starts, ends, labels, scores, strict=True))
    ]
    more = len(pairs) - MAX_LISTED_RATINGS
    return [
        f"segment ratings: {len(pairs)} (segment, class) pairs over {segments} segments, "
        f"{positives} positive",
        *(f"  {pair}" for pair in pairs[:MAX_LISTED_RATINGS]),
        *([f"  ... and {more} more"] if more > 0 else []),
    ]


def _id_text(context) -> str:
    if schema.ID_KEY not in context or not context[schema.ID_KEY].bytes_list.value:
        return "(none)"
    return context[schema.ID_KEY].bytes_list.value[0].decode("utf-8", errors="replace")


def _describe_frames(name, frames, spec) -> str:
    kinds = {frame.WhichOneof("kind") for frame in frames}
    if kinds == {"bytes_list"}:
        rows = [b"".join(frame.bytes_list.value) for frame in frames]
        lengths = sorted({len(row) for row in rows})
        text = f"modality {name}: {len(rows)} frames of {_lengths_text(lengths)} bytes (uint8)"
        if len(lengths) == 1 and rows:
            quantized = np.frombuffer(b"".join(rows), np.uint8)
            text += (
                f", quantized min {quantized.min()} max {quantized.max()}; dequantized "
                f"{_value_range(schema.dequantize(quantized))}"
            )
        return text + _spec_note(spec, lengths[0] if len(lengths) == 1 else None, "uint8")
    if kinds == {"float_list"}:
        rows = [np.asarray(frame.float_list.value, np.float32) for frame in frames]
        lengths = sorted({row.size for row in rows})
        text = f"modality {name}: {len(rows)} frames of {_lengths_text(lengths)} floats (float)"
        if len(lengths) == 1 and rows:
            text += f", {_value_range(np.concatenate(rows))}"
        return text + _spec_note(spec, lengths[0] if len(lengths) == 1 else None, "float")
    if not kinds:
        return f"modality {name}: 0 frames" + _spec_note(spec, None, None)
    return f"modality {name}: {len(frames)} frames of mixed kinds {sorted(str(k) for k in kinds)}"


def _lengths_text(lengths) -> str:
    if len(lengths) == 1:
        return str(lengths[0])
    return "varying lengths " + ", ".join(str(length) for length in lengths)


def _value_range(values: np.ndarray) -> str:
    if values.size == 0:
        return "no values"
    finite = np.isfinite(values)
    text = f"min {values[finite].min():.4f} max {values[finite].max():.4f} " if finite.any() else ""
    text += f"mean {values[finite].mean():.4f}" if finite.any() else "no finite values"
    if not finite.all():
        text += f"; {int((~finite).sum())} NaN/Inf values"
    return text


def _spec_note(spec, found_dim, found_dtype, video_level=False) -> str:
    if spec is None:
        return ""
    problems = []
    if found_dim is not None and found_dim != spec.dim:
        problems.append(f"dim {found_dim} != declared {spec.dim}")
    if found_dtype is not None and not video_level and found_dtype != spec.dtype:
        problems.append(f"stored as {found_dtype}, declared {spec.dtype}")
    return f" [MISMATCH with spec {spec}: {'; '.join(problems)}]" if problems else f" [matches spec {spec}]"


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so importing defines none)."""
    flags.DEFINE_integer("index", 0, "0-based number of the record to print.")
    flags.DEFINE_string("features", None, "Optional feature spec to check the record against.")


def main(argv) -> None:
    if len(argv) != 2:
        raise app.UsageError("Usage: python -m tfrecords.inspect FILE [--index=N] [--features=SPEC]")
    print(describe_record(argv[1], flags.FLAGS.index, flags.FLAGS.features))


if __name__ == "__main__":
    run_command(main, define_flags)
