"""FeatureCentering: subtracts a modality's training-set mean frame before the aggregator."""

import keras
import numpy as np
import tensorflow as tf


@keras.saving.register_keras_serializable(package="ac_keras")
class FeatureCentering(keras.layers.Layer):
    """Subtracts a fixed mean vector from every frame: `x - mean`.

    The mean is a non-trainable weight, saved with the model and applied by the exported SavedModel, so
    clients keep sending the features as stored. Frame features taken after a ReLU (the Flash-MNIST frame
    CNN's, and most CNN features) are non-negative, so every attention unit's weighted average points close
    to the common mean direction; the shifting operation's L2 normalization then leaves little of what tells
    the videos apart. Centering removes that shared component (docs/flash_mnist.md has the measurements).

    Padded positions of dense inputs become `-mean`; the aggregators give them zero weight, as before.

    Args:
        mean: 1-D array-like, the mean frame (length `dim`); None when the layer is rebuilt from its config
            and its weight is loaded afterwards.
        dim: int, the feature dim; taken from `mean` when None. Defaults to None.
        **kwargs: base `keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
        inputs: `tf.RaggedTensor` `(batch, None, dim)` or dense `(batch, frames, dim)`.

    Returns:
        The inputs minus `mean`, of the same kind and shape.

    Example:
    >>> frames = tf.ragged.constant([[[1., 2.], [3., 4.]], [[5., 6.]]], ragged_rank=1)
    >>> FeatureCentering([1., 2.])(frames).flat_values.numpy().tolist()
    [[0.0, 0.0], [2.0, 2.0], [4.0, 4.0]]
    """

    def __init__(self, mean=None, dim=None, **kwargs):
        super().__init__(**kwargs)
        self._initial_mean = None
        if mean is not None:
            mean = np.asarray(mean, dtype=np.float32)
            if mean.ndim != 1 or not np.all(np.isfinite(mean)):
                raise ValueError(f"`mean` must be a finite 1-D vector, got shape {mean.shape}.")
            if dim is not None and dim != mean.shape[0]:
                raise ValueError(f"`mean` has {mean.shape[0]} values but `dim` is {dim}.")
            dim = mean.shape[0]
            self._initial_mean = mean
        if dim is None:
            raise ValueError("FeatureCentering needs `mean` or `dim`.")
        self.dim = int(dim)
        self.supports_masking = True

    def build(self, input_shape):
        if input_shape[-1] is not None and input_shape[-1] != self.dim:
            raise ValueError(
                f"FeatureCentering {self.name!r} has a mean of {self.dim} values, "
                f"inputs have dim {input_shape[-1]}."
            )
        initial = self._initial_mean
        self.mean = self.add_weight(
            name="mean",
            shape=(self.dim,),
            initializer=keras.initializers.Constant(initial) if initial is not None else "zeros",
            trainable=False,
            dtype="float32",
        )
        self.built = True

    def call(self, inputs):
        mean = tf.cast(self.mean, inputs.dtype)
        if isinstance(inputs, tf.RaggedTensor):
            return tf.ragged.map_flat_values(tf.subtract, inputs, mean)
        return inputs - mean

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, inputs):
        return keras.KerasTensor(
            tuple(inputs.shape), dtype=inputs.dtype, ragged=getattr(inputs, "ragged", False)
        )

    def get_config(self):
        config = super().get_config()
        config.update({"dim": self.dim})
        return config
