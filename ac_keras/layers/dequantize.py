"""Dequantize: the model's first layer for a quantized (uint8) modality."""

import keras
import tensorflow as tf

from ac_keras import schema


@keras.saving.register_keras_serializable(package="ac_keras")
class Dequantize(keras.layers.Layer):
    """Maps uint8 frames to floats with the YouTube-8M starter formula (`ac_keras.schema.dequantize`).

    The input pipeline hands quantized modalities to the model as the bytes of the records (a quarter of the
    float32 size); this layer dequantizes them inside the model, so on an accelerator it runs on the device
    and the exported model does it too. It holds no weights.

    Args:
        max_quantized_value: float, upper end of the quantization range. Defaults to 2.0.
        min_quantized_value: float, lower end of the quantization range. Defaults to -2.0.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: uint8 `tf.RaggedTensor` `(batch, None, dim)` or dense uint8 tensor.

    Returns:
        The dequantized values in the layer's compute dtype, with the input's shape (ragged stays ragged).

    Example:
    >>> Dequantize()(tf.constant([[0, 255]], tf.uint8)).numpy()
    array([[-1.9921875,  2.0078125]], dtype=float32)
    """

    def __init__(
        self,
        max_quantized_value=schema.MAX_QUANTIZED_VALUE,
        min_quantized_value=schema.MIN_QUANTIZED_VALUE,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not max_quantized_value > min_quantized_value:
            raise ValueError(
                f"`max_quantized_value` ({max_quantized_value}) must exceed `min_quantized_value` "
                f"({min_quantized_value})."
            )
        self.max_quantized_value = float(max_quantized_value)
        self.min_quantized_value = float(min_quantized_value)
        self.supports_masking = True

    def call(self, inputs):
        values = schema.dequantize(inputs, self.max_quantized_value, self.min_quantized_value)
        if values.dtype != self.compute_dtype:
            values = tf.cast(values, self.compute_dtype)
        return values

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(
            inputs.shape, dtype=self.compute_dtype, ragged=getattr(inputs, "ragged", False)
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "max_quantized_value": self.max_quantized_value,
                "min_quantized_value": self.min_quantized_value,
            }
        )
        return config
