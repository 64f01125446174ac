"""Dequantize: the model's first layer for uint8 (quantized) modalities."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras import schema
from ac_keras.layers import Dequantize


def test_equals_the_starter_formula_on_dense_and_ragged_inputs():
    quantized = np.arange(256, dtype=np.uint8).reshape(16, 16)
    expected = schema.dequantize(quantized)
    np.testing.assert_array_equal(Dequantize()(tf.constant(quantized)).numpy(), expected)
    ragged = tf.RaggedTensor.from_row_lengths(tf.constant(quantized), [10, 0, 6])
    output = Dequantize()(ragged)
    assert isinstance(output, tf.RaggedTensor)
    np.testing.assert_array_equal(output.row_lengths().numpy(), [10, 0, 6])
    np.testing.assert_array_equal(output.flat_values.numpy(), expected)
    # Another range is the starter's formula with that range.
    other = Dequantize(max_quantized_value=1.0, min_quantized_value=-1.0)(tf.constant(quantized))
    np.testing.assert_array_equal(other.numpy(), schema.dequantize(quantized, 1.0, -1.0))


def test_config_round_trip_and_saved_model_file(tmp_path):
    layer = Dequantize(max_quantized_value=3.0, min_quantized_value=-1.0, name="rgb_dequantize")
    again = Dequantize.from_config(json.loads(json.dumps(layer.get_config())))
    assert (again.max_quantized_value, again.min_quantized_value, again.name) == (3.0, -1.0, "rgb_dequantize")
    inputs = keras.Input(shape=(None, 4), ragged=True, dtype="uint8")
    model = keras.Model(inputs, Dequantize()(inputs))
    path = str(tmp_path / "model.keras")
    model.save(path)
    frames = tf.ragged.constant(
        [[[0, 1, 2, 255]], [[7, 7, 7, 7], [9, 9, 9, 9]]], dtype=tf.uint8, ragged_rank=1
    )
    np.testing.assert_array_equal(
        keras.models.load_model(path)(frames).flat_values.numpy(), model(frames).flat_values.numpy()
    )
    assert not model.weights


def test_mixed_precision_outputs_the_compute_dtype():
    output = Dequantize(dtype="mixed_bfloat16")(tf.constant([[0, 128, 255]], tf.uint8))
    assert output.dtype == tf.bfloat16
    np.testing.assert_allclose(
        tf.cast(output, tf.float32).numpy(), schema.dequantize(np.array([[0, 128, 255]], np.uint8)), rtol=1e-2
    )


def test_a_bad_range_is_refused():
    with pytest.raises(ValueError, match="max_quantized_value"):
        Dequantize(max_quantized_value=-1.0, min_quantized_value=1.0)
