"""Tests of the feature schema: spec parsing and (de)quantization."""

import numpy as np
import pytest
import tensorflow as tf

from ac_keras import schema


def numpy_dequantize(quantized):
    """The YouTube-8M starter code formula in float32: q * range / 255 + range / 512 + min."""
    quantized_range = schema.MAX_QUANTIZED_VALUE - schema.MIN_QUANTIZED_VALUE
    scale = np.float32(quantized_range / 255.0)
    bias = np.float32(quantized_range / 512.0 + schema.MIN_QUANTIZED_VALUE)
    return np.asarray(quantized).astype(np.float32) * scale + bias


def test_parse_features_defaults_to_uint8_and_keeps_order():
    specs = schema.parse_features("rgb:1536:float, flow:1536:float,audio:128")
    assert [str(spec) for spec in specs] == ["rgb:1536:float", "flow:1536:float", "audio:128"]
    assert [spec.quantized for spec in specs] == [False, False, True]
    assert schema.feature_dims("rgb:1024,audio:128") == {"rgb": 1024, "audio": 128}
    assert schema.feature_dims(specs) == {"rgb": 1536, "flow": 1536, "audio": 128}
    assert specs[0].video_level_key == "mean_rgb"


@pytest.mark.parametrize(
    ("spec", "named_part"),
    [
        ("rgb:1024,audio", "audio"),
        ("rgb:abc", "rgb:abc"),
        ("rgb:0", "rgb:0"),
        ("rgb:1024:int8", "rgb:1024:int8"),
        ("rgb:1024,rgb:128", "rgb"),
        ("video_id:3", "video_id:3"),
    ],
)
def test_parse_features_names_the_bad_part(spec, named_part):
    with pytest.raises(ValueError, match=named_part):
        schema.parse_features(spec)


def test_dequantize_matches_the_starter_formula_bit_for_bit():
    quantized = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = numpy_dequantize(quantized)
    np.testing.assert_array_equal(schema.dequantize(quantized), expected)
    np.testing.assert_array_equal(schema.dequantize(tf.constant(quantized)).numpy(), expected)
    ragged = tf.RaggedTensor.from_row_lengths(tf.constant(quantized), [10, 6])
    np.testing.assert_array_equal(schema.dequantize(ragged).flat_values.numpy(), expected)
    assert schema.dequantize(quantized).dtype == np.float32


def _released_quantize(features, min_quantized_value=-2.0, max_quantized_value=2.0):
    """The YouTube-8M feature extractor's `quantize()` (extract_tfrecords_main.py), written out."""
    assert features.dtype == "float32" and features.ndim == 1
    features = np.clip(features, min_quantized_value, max_quantized_value)
    quantize_range = max_quantized_value - min_quantized_value
    features = (features - min_quantized_value) * (255.0 / quantize_range)
    return bytes(int(round(f)) for f in features)


def test_quantize_is_the_released_extractors_bit_for_bit():
    rng = np.random.default_rng(0)
    values = np.concatenate(
        [
            rng.uniform(-2.5, 2.5, 20_000),
            rng.normal(0, 1, 20_000),
            # Values whose scaled form is (close to) a tie k + 0.5, and the range's ends.
            (np.arange(255) + 0.5) / 63.75 - 2.0,
            [-2.0, 2.0, -7.0, 7.0, 0.0],
        ]
    ).astype(np.float32)
    assert schema.quantize(values).tobytes() == _released_quantize(values)


def test_quantize_round_trip_and_clipping():
    quantized = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(schema.quantize(schema.dequantize(quantized)), quantized)
    np.testing.assert_array_equal(schema.quantize([-5.0, 5.0]), [0, 255])
    values = np.random.default_rng(0).uniform(-2, 2, 1000).astype(np.float32)
    step = (schema.MAX_QUANTIZED_VALUE - schema.MIN_QUANTIZED_VALUE) / 255
    # The extractor rounds to the nearest step, the starter's dequantization adds range / 512 (just under
    # half a step): a value comes back at most one step higher and at most step / 2 - range / 512 lower.
    half_step_offset = (schema.MAX_QUANTIZED_VALUE - schema.MIN_QUANTIZED_VALUE) / 512
    error = schema.dequantize(schema.quantize(values)) - values
    assert error.min() >= half_step_offset - step / 2 - 1e-6
    assert error.max() <= half_step_offset + step / 2 + 1e-6
    with pytest.raises(ValueError, match="NaN"):
        schema.quantize([np.nan])
