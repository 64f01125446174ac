"""ShiftNormalize: the shifting operation of attention clusters (paper Eq. 7)."""

import math

import keras
import tensorflow as tf

from ac_keras.layers._utils import fresh_initializer


def reference_shift_stddev(num_units):
    """Stddev `sqrt(1 / sqrt(N))` of the authors' Normal initialization of alpha and beta."""
    return math.sqrt(1.0 / math.sqrt(num_units))


@keras.saving.register_keras_serializable(package="ac_keras")
class ShiftNormalize(keras.layers.Layer):
    """Per-unit learnable scale and shift, then L2 normalization scaled by `1 / sqrt(N)`.

    For the `N` unit outputs `v_k` of an attention cluster (Eq. 7):

        v_k' = (alpha_k * v_k + beta_k) / (sqrt(N) * ||alpha_k * v_k + beta_k||_2)

    so each unit has L2 norm `1 / sqrt(N)` and the concatenated cluster output has norm 1. `alpha_k` and
    `beta_k` are scalars. The norm is computed in float32 and guarded by `epsilon` (an all-zero unit stays
    finite). By default alpha and beta are drawn from `Normal(0, sqrt(1 / sqrt(N)))`, as in the authors'
    reference code (PyTorch, Flash-MNIST); pass `alpha_initializer="ones", beta_initializer="zeros"` to start
    from the identity shift.

    Args:
        alpha_initializer: initializer of `alpha` (shape `(N,)`), or None for the reference Normal
            initialization. Defaults to None.
        beta_initializer: initializer of `beta` (shape `(N,)`), or None for the reference Normal
            initialization. Defaults to None.
        epsilon: float, lower bound of the norm. Defaults to 1e-12.
        fused_training: bool; True runs training calls on float32 inputs as one XLA-compiled kernel forward
            and one backward (the same function); inference always uses plain TensorFlow ops, so exported
            models need no XLA. Defaults to True.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: tensor `(batch, N, dim)` of unit outputs.

    Returns:
        Tensor `(batch, N, dim)`, each unit normalized to L2 norm `1 / sqrt(N)`.

    Example:
    >>> units = tf.random.normal([2, 8, 16])
    >>> out = ShiftNormalize()(units)
    >>> float(tf.norm(out[0]))  # doctest: +ELLIPSIS
    1.0...

    References:
        Long et al., "Attention Clusters", CVPR 2018, Eq. 7.
    """

    def __init__(
        self, alpha_initializer=None, beta_initializer=None, epsilon=1e-12, fused_training=True, **kwargs
    ):
        super().__init__(**kwargs)
        if not epsilon > 0:
            raise ValueError(f"`epsilon` must be positive, got {epsilon!r}.")
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.epsilon = float(epsilon)
        self.fused_training = bool(fused_training)

    def build(self, input_shape):
        if len(input_shape) != 3 or input_shape[1] is None:
            raise ValueError(
                f"ShiftNormalize expects inputs of shape (batch, num_units, dim) with a known num_units, "
                f"got {input_shape}."
            )
        num_units = input_shape[1]
        stddev = reference_shift_stddev(num_units)
        # A fresh initializer per weight: one unseeded Keras initializer instance repeats its draws, and
        # alpha and beta must be independent.
        self.alpha = self.add_weight(
            name="alpha",
            shape=(num_units,),
            initializer=fresh_initializer(self.alpha_initializer)
            or keras.initializers.RandomNormal(stddev=stddev),
        )
        self.beta = self.add_weight(
            name="beta",
            shape=(num_units,),
            initializer=fresh_initializer(self.beta_initializer)
            or keras.initializers.RandomNormal(stddev=stddev),
        )
        self.built = True

    def call(self, inputs, training=None):
        alpha = tf.cast(self.alpha, "float32")
        beta = tf.cast(self.beta, "float32")
        if training and self.fused_training and inputs.dtype == tf.float32:
            # One pass over the (batch, units, dim) values instead of a dozen ops (docs/benchmarks.md).
            return _shift_normalize_xla(inputs, alpha, beta, self.epsilon)
        return tf.cast(shift_normalize(inputs, alpha, beta, self.epsilon), self.compute_dtype)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "alpha_initializer": keras.initializers.serialize(self.alpha_initializer)
                if self.alpha_initializer
                else None,
                "beta_initializer": keras.initializers.serialize(self.beta_initializer)
                if self.beta_initializer
                else None,
                "epsilon": self.epsilon,
                "fused_training": self.fused_training,
            }
        )
        return config


def shift_normalize(inputs, alpha, beta, epsilon):
    """`(alpha_k x_k + beta_k) / (sqrt(N) max(||alpha_k x_k + beta_k||, epsilon))` for each unit k.

    Args:
        inputs: (batch, N, dim) pooled features.
        alpha, beta: float32 (N,).
        epsilon: float, lower bound of the norm.

    Returns:
        float32 (batch, N, dim).
    """
    shifted = tf.cast(inputs, "float32") * alpha[:, None] + beta[:, None]
    squared_norm = tf.reduce_sum(tf.square(shifted), axis=-1, keepdims=True)
    # rsqrt(max(|x|^2, eps^2)) has a finite gradient at zero, unlike x / max(norm(x), eps).
    inverse_norm = tf.math.rsqrt(tf.maximum(squared_norm, epsilon**2))
    num_units = tf.cast(tf.shape(alpha)[0], "float32")
    return shifted * (inverse_norm / tf.sqrt(num_units))


_shift_normalize_xla = tf.function(shift_normalize, jit_compile=True, autograph=False, reduce_retracing=True)
