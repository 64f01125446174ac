"""The feature schema: modality names, dimensions, storage dtypes and quantization.

This is the one place that defines how features are laid out in the TFRecords; the readers
(`ac_keras.data`) and the writers (`tfrecords/`) both import it.

A feature spec string lists the modalities in order, `name:dim[:dtype]`, comma separated:

    "rgb:1024,audio:128"                        # YouTube-8M: quantized uint8 (the default dtype)
    "rgb:1536:float,flow:1536:float,audio:128"  # float frames mixed with quantized ones

`uint8` modalities store each frame as one byte string of `dim` quantized values (YouTube-8M layout);
`float` modalities store each frame as a FloatList of `dim` values.
"""

import dataclasses
import re
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

# YouTube-8M starter code quantization range.
MAX_QUANTIZED_VALUE = 2.0
MIN_QUANTIZED_VALUE = -2.0

# Context keys of a frame-level SequenceExample (and feature keys of a video-level Example).
ID_KEY = "id"
# The context key of the video id in the 2017 YouTube-8M release (2018 and later use `id`).
LEGACY_ID_KEY = "video_id"
LABELS_KEY = "labels"
# Key of the video ids in the features dict produced by the reader; the model ignores it.
VIDEO_ID_KEY = "video_id"
# Video-level Example records store one vector per modality under `mean_<name>` (YouTube-8M layout).
VIDEO_LEVEL_PREFIX = "mean_"
# Context keys of the YouTube-8M 2019 segment-rated records (`validate`, `test`): four parallel lists, one
# entry per rated (segment, class) pair: the segment's first frame and its end (seconds, which at one frame
# per second are frame indices; the segment is `[start, end)`), the class and the rating (1 = the class is
# in the segment, 0 = it is not). `ac_keras.data.segments` reads them.
SEGMENT_START_TIMES_KEY = "segment_start_times"
SEGMENT_END_TIMES_KEY = "segment_end_times"
SEGMENT_LABELS_KEY = "segment_labels"
SEGMENT_SCORES_KEY = "segment_scores"

DTYPES = ("uint8", "float")
# How labels are encoded: "single" (one label per video, one-hot) or "multi" (multi-hot).
LABEL_MODES = ("single", "multi")
_NAME_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_RESERVED_NAMES = (ID_KEY, LABELS_KEY, VIDEO_ID_KEY)


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One modality of the frame features.

    Args:
        name: str, the feature list key in the records and the key in the features dict, e.g. "rgb".
        dim: int, number of values per frame.
        dtype: str, "uint8" (quantized, one byte string per frame) or "float" (FloatList per frame).
            Defaults to "uint8".
    """

    name: str
    dim: int
    dtype: str = "uint8"

    def __post_init__(self):
        if not isinstance(self.name, str) or not _NAME_PATTERN.match(self.name):
            raise ValueError(f"FeatureSpec name must be an identifier such as 'rgb', got {self.name!r}.")
        if self.name in _RESERVED_NAMES:
            raise ValueError(
                f"FeatureSpec name {self.name!r} is reserved (reserved: {', '.join(_RESERVED_NAMES)})."
            )
        if isinstance(self.dim, bool) or not isinstance(self.dim, int | np.integer) or self.dim < 1:
            raise ValueError(f"FeatureSpec {self.name!r}: dim must be a positive int, got {self.dim!r}.")
        if self.dtype not in DTYPES:
            raise ValueError(f"FeatureSpec {self.name!r}: dtype must be one of {DTYPES}, got {self.dtype!r}.")

    @property
    def quantized(self) -> bool:
        """Whether frames are stored as quantized uint8 byte strings."""
        return self.dtype == "uint8"

    @property
    def video_level_key(self) -> str:
        """Feature key of this modality in a video-level `tf.train.Example`, e.g. "mean_rgb"."""
        return VIDEO_LEVEL_PREFIX + self.name

    def __str__(self) -> str:
        return f"{self.name}:{self.dim}" + (":float" if self.dtype == "float" else "")


def parse_features(spec: str) -> tuple[FeatureSpec, ...]:
    """Parses a feature spec string such as "rgb:1024,audio:128" or "rgb:1536:float,audio:128".

    Args:
        spec: str, comma-separated `name:dim[:dtype]` parts; dtype is "uint8" (default) or "float".

    Returns:
        A tuple of `FeatureSpec`, in the order given.

    Raises:
        ValueError: naming the malformed part, a duplicate name, or an empty spec.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"Feature spec must be a non-empty string like 'rgb:1024,audio:128', got {spec!r}.")
    specs = []
    for raw_part in spec.split(","):
        part = raw_part.strip()
        fields = part.split(":")
        if len(fields) not in (2, 3) or not fields[1].strip().isdigit():
            raise ValueError(
                f"Bad feature spec part {part!r} in {spec!r}: expected 'name:dim' or 'name:dim:dtype' "
                f"with a positive integer dim and dtype in {DTYPES}."
            )
        name, dim = fields[0].strip(), int(fields[1])
        dtype = fields[2].strip() if len(fields) == 3 else "uint8"
        try:
            specs.append(FeatureSpec(name, dim, dtype))
        except ValueError as error:
            raise ValueError(f"Bad feature spec part {part!r} in {spec!r}: {error}") from None
    names = [feature.name for feature in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"Feature spec {spec!r} names modality {duplicates[0]!r} more than once.")
    return tuple(specs)


def to_feature_specs(features) -> tuple[FeatureSpec, ...]:
    """Normalizes a spec string or a sequence of `FeatureSpec` to a tuple of `FeatureSpec`.

    Args:
        features: a spec string (see `parse_features`) or a sequence of `FeatureSpec`.

    Returns:
        A non-empty tuple of `FeatureSpec` with distinct names.
    """
    if isinstance(features, str):
        return parse_features(features)
    if isinstance(features, FeatureSpec):
        return (features,)
    if not isinstance(features, Sequence) or not features:
        raise ValueError(
            f"features must be a spec string like 'rgb:1024,audio:128' or a non-empty sequence of "
            f"FeatureSpec, got {features!r}."
        )
    specs = tuple(features)
    for feature in specs:
        if not isinstance(feature, FeatureSpec):
            raise ValueError(f"features must hold FeatureSpec instances, got {feature!r}.")
    names = [feature.name for feature in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"features name a modality more than once: {names}.")
    return specs


def feature_dims(features) -> dict[str, int]:
    """Returns `{modality name: dim}` for a spec string or a sequence of `FeatureSpec`."""
    return {feature.name: feature.dim for feature in to_feature_specs(features)}


def _quantization_constants(max_quantized_value: float, min_quantized_value: float):
    if not max_quantized_value > min_quantized_value:
        raise ValueError(
            f"max_quantized_value ({max_quantized_value}) must exceed min_quantized_value "
            f"({min_quantized_value})."
        )
    quantized_range = max_quantized_value - min_quantized_value
    scale = quantized_range / 255.0
    bias = quantized_range / 512.0 + min_quantized_value
    return scale, bias


def dequantize(
    values,
    max_quantized_value: float = MAX_QUANTIZED_VALUE,
    min_quantized_value: float = MIN_QUANTIZED_VALUE,
):
    """Maps quantized uint8 values back to floats: `x = q * range / 255 + range / 512 + min`.

    This is the YouTube-8M starter code formula, with `range = max_quantized_value - min_quantized_value`.

    Args:
        values: quantized values, a NumPy array / array-like or a `tf.Tensor` / `tf.RaggedTensor`.
        max_quantized_value: float, upper end of the quantization range. Defaults to 2.0.
        min_quantized_value: float, lower end of the quantization range. Defaults to -2.0.

    Returns:
        float32 values of the same shape: a NumPy array for NumPy input, a tensor for tensor input.
    """
    scale, bias = _quantization_constants(max_quantized_value, min_quantized_value)
    if isinstance(values, tf.RaggedTensor):
        return values.with_flat_values(
            dequantize(values.flat_values, max_quantized_value, min_quantized_value)
        )
    if tf.is_tensor(values):
        if values.dtype == tf.uint8:
            # One fused kernel instead of cast, multiply and add (three passes over the frames);
            # for quint8, MIN_COMBINED computes min_range + q * (max_range - min_range) / 255, which is the
            # formula above with min_range = bias, and is bit-identical to it for the default range.
            return tf.raw_ops.Dequantize(
                input=tf.bitcast(values, tf.quint8),
                min_range=bias,
                max_range=bias + 255.0 * scale,
                mode="MIN_COMBINED",
                dtype=tf.float32,
            )
        return tf.cast(values, tf.float32) * scale + bias
    return np.asarray(values).astype(np.float32) * np.float32(scale) + np.float32(bias)


ROUNDINGS = ("nearest", "truncate")


def quantize(
    values,
    max_quantized_value: float = MAX_QUANTIZED_VALUE,
    min_quantized_value: float = MIN_QUANTIZED_VALUE,
    *,
    rounding: str = "nearest",
) -> np.ndarray:
    """The released YouTube-8M feature extractor's quantization, bit for bit: clip, then round.

    `q = round((clip(x, min, max) - min) * 255 / (max - min))`, computed in float32 as the extractor's
    `quantize()` computes it (its `features` are float32), ties to even (Python 3's `round`). `dequantize`
    then gives `q * range / 255 + range / 512 + min`, the starter's formula: together they move a value by
    up to half a step either way plus `range / 512` (so slightly more up than down), as for the released
    data.

    Args:
        values: float array-like (NumPy or anything `np.asarray` accepts, eager tensors included).
        max_quantized_value: float, upper end of the quantization range. Defaults to 2.0.
        min_quantized_value: float, lower end of the quantization range. Defaults to -2.0.
        rounding: "nearest" (the YouTube-8M frame feature extractor's `int(round(f))`, the default) or
            "truncate" (the AudioSet VGGish postprocessor's `astype(np.uint8)`, which drops the fraction;
            its scaled values are never negative, so this is the floor).

    Returns:
        A uint8 NumPy array of the same shape.

    Raises:
        ValueError: if any value is NaN or infinite (the extractor's `int(round(nan))` fails too), or an
            unknown `rounding`.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}.")
    _quantization_constants(max_quantized_value, min_quantized_value)  # checks the range
    # The frame extractor computes in float32; the VGGish postprocessor in the dtype its PCA gives (float64).
    dtype = np.float64 if rounding == "truncate" and np.asarray(values).dtype == np.float64 else np.float32
    values = np.asarray(values, dtype=dtype)
    if not np.all(np.isfinite(values)):
        raise ValueError("Cannot quantize NaN or infinite values.")
    low, high = dtype(min_quantized_value), dtype(max_quantized_value)
    scaled = (np.clip(values, low, high) - low) * dtype(255.0 / (max_quantized_value - min_quantized_value))
    if rounding == "truncate":
        return np.floor(scaled).astype(np.uint8)
    return np.rint(scaled).astype(np.uint8)


def quantize_tensor(
    values,
    max_quantized_value: float = MAX_QUANTIZED_VALUE,
    min_quantized_value: float = MIN_QUANTIZED_VALUE,
    *,
    rounding: str = "nearest",
):
    """`quantize` in TensorFlow ops (ties to even), for values inside a graph; finite values only.

    Computed in float32, or in float64 for float64 values with "truncate", as `quantize` computes (the VGGish
    postprocessor's PCA gives float64).

    Args:
        values: float tensor.
        max_quantized_value, min_quantized_value, rounding: as in `quantize`.

    Returns:
        A uint8 tensor of the same shape.
    """
    if rounding not in ROUNDINGS:
        raise ValueError(f"rounding must be one of {ROUNDINGS}, got {rounding!r}.")
    _quantization_constants(max_quantized_value, min_quantized_value)
    values = tf.convert_to_tensor(values)
    dtype = np.float64 if rounding == "truncate" and values.dtype == tf.float64 else np.float32
    values = tf.cast(values, dtype)
    scale = dtype(255.0 / (max_quantized_value - min_quantized_value))
    clipped = tf.clip_by_value(values, dtype(min_quantized_value), dtype(max_quantized_value))
    scaled = (clipped - dtype(min_quantized_value)) * scale
    return tf.cast(tf.floor(scaled) if rounding == "truncate" else tf.round(scaled), tf.uint8)
