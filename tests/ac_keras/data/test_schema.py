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


def test_quantize_is_the_nearest_inverse_and_clips():
    quantized = np.arange(256, dtype=np.uint8)
    np.testing.assert_array_equal(schema.quantize(schema.dequantize(quantized)), quantized)
    np.testing.assert_array_equal(schema.quantize([-5.0, 5.0]), [0, 255])
    values = np.random.default_rng(0).uniform(-2, 2, 1000)
    step = (schema.MAX_QUANTIZED_VALUE - schema.MIN_QUANTIZED_VALUE) / 255
    assert np.max(np.abs(schema.dequantize(schema.quantize(values)) - values)) <= step / 2 + 1e-6
    with pytest.raises(ValueError, match="NaN"):
        schema.quantize([np.nan])
