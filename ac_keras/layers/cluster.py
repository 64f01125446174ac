"""AttentionCluster: N attention units, the shifting operation and concatenation (paper Eq. 6)."""

import keras
import tensorflow as tf

from ac_keras.layers.attention import AttentionUnit
from ac_keras.layers.shift import ShiftNormalize


@keras.saving.register_keras_serializable(package="ac_keras")
class AttentionCluster(keras.layers.Layer):
    """An attention cluster: `cluster_size` attention units, optional shifting, concatenated.

    The cluster output is `g = [v_1', ..., v_N']` (Eq. 6), unit-major (all `dim` values of unit 1 first),
    where `v_k'` is the shifted and normalized output of unit `k` (Eq. 7) when `shift=True`, else the raw
    weighted average `v_k = a_k X` (Eq. 2). With shifting the output has L2 norm 1.

    A video with no real frames gives a finite output: its units pool to zero, so with shifting each unit
    becomes `beta_k / (sqrt(N) |beta_k| sqrt(dim))`, without shifting the output is zero. The input pipeline
    fills a missing modality with the training-set mean so this case stays rare.

    Args:
        cluster_size: int, number of attention units `N`.
        weighting: str, `"average"`, `"fc1"` or `"fc2"` (see `AttentionUnit`). Defaults to `"fc1"`.
        shift: bool, whether to apply the shifting operation. Defaults to True.
        fc2_units: int, hidden size of the fc2 weighting. Defaults to 10.
        return_attention: bool, whether `call` also returns the attention weights
            `(batch, cluster_size, frames)`. Defaults to False.
        kernel_initializer: initializer of the attention kernels. Defaults to `"glorot_uniform"`.
        bias_initializer: initializer of the attention biases. Defaults to `"zeros"`.
        kernel_regularizer: optional regularizer of the attention kernels. Defaults to None.
        alpha_initializer: initializer of the shift scales, None for the authors' Normal initialization
            (see `ShiftNormalize`). Defaults to None.
        beta_initializer: initializer of the shift offsets, None for the authors' Normal initialization.
            Defaults to None.
        epsilon: float, norm guard of the shifting operation. Defaults to 1e-12.
        fused_shift: bool, whether the shifting operation runs as one XLA kernel in training (see
            `ShiftNormalize(fused_training)`). Defaults to True.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `tf.RaggedTensor` `(batch, None, dim)` or dense `(batch, frames, dim)`.
        mask: optional boolean `(batch, frames)` for dense inputs; `True` marks real frames.
        training: unused; present for the Keras call convention.

    Returns:
        Tensor `(batch, cluster_size * dim)`; with `return_attention=True` a tuple `(output, weights)`.

    Example:
    >>> frames = tf.ragged.constant([[[1., 0.], [0., 1.]], [[2., 2.]]], ragged_rank=1)
    >>> AttentionCluster(cluster_size=4)(frames).shape
    TensorShape([2, 8])

    References:
        Long et al., "Attention Clusters", CVPR 2018, Eqs. 2-7 and Fig. 2.
    """

    def __init__(
        self,
        cluster_size,
        weighting="fc1",
        shift=True,
        fc2_units=10,
        return_attention=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        alpha_initializer=None,
        beta_initializer=None,
        epsilon=1e-12,
        fused_shift=True,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(cluster_size, int) or cluster_size < 1:
            raise ValueError(f"`cluster_size` must be a positive int, got {cluster_size!r}.")
        self.cluster_size = cluster_size
        self.weighting = weighting
        self.shift = bool(shift)
        self.fc2_units = fc2_units
        self.return_attention = return_attention
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.alpha_initializer = keras.initializers.get(alpha_initializer)
        self.beta_initializer = keras.initializers.get(beta_initializer)
        self.epsilon = epsilon
        self.fused_shift = bool(fused_shift)
        self.supports_masking = True
        # Sublayers are created here (validating their arguments early) and built in build().
        self.attention = AttentionUnit(
            num_units=cluster_size,
            weighting=weighting,
            fc2_units=fc2_units,
            return_attention=True,
            kernel_initializer=self.kernel_initializer,
            bias_initializer=self.bias_initializer,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name="attention",
        )
        self.shift_normalize = (
            ShiftNormalize(
                alpha_initializer=self.alpha_initializer,
                beta_initializer=self.beta_initializer,
                epsilon=epsilon,
                fused_training=self.fused_shift,
                dtype=self.dtype_policy,
                name="shift",
            )
            if self.shift
            else None
        )

    def build(self, input_shape):
        self.attention.build(input_shape)
        if self.shift_normalize is not None:
            self.shift_normalize.build((input_shape[0], self.cluster_size, input_shape[-1]))
        self.built = True

    def call(self, inputs, mask=None, training=None):
        pooled, weights = self.attention(inputs, mask=mask)
        if self.shift_normalize is not None:
            pooled = self.shift_normalize(pooled, training=training)
        batch = tf.shape(pooled)[0]
        output = tf.reshape(pooled, [batch, self.cluster_size * pooled.shape[-1]])
        if self.return_attention:
            return output, weights
        return output

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        output_shape = (input_shape[0], self.cluster_size * input_shape[-1])
        if self.return_attention:
            return output_shape, (input_shape[0], self.cluster_size, input_shape[1])
        return output_shape

    def compute_output_spec(self, inputs, mask=None, training=None):
        shape = tuple(inputs.shape)
        output = keras.KerasTensor((shape[0], self.cluster_size * shape[-1]), dtype=self.compute_dtype)
        if self.return_attention:
            return output, keras.KerasTensor((shape[0], self.cluster_size, shape[1]), dtype="float32")
        return output

    def get_config(self):
        config = super().get_config()

        def maybe_serialize(initializer):
            return keras.initializers.serialize(initializer) if initializer else None

        config.update(
            {
                "cluster_size": self.cluster_size,
                "weighting": self.weighting,
                "shift": self.shift,
                "fc2_units": self.fc2_units,
                "return_attention": self.return_attention,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
                "alpha_initializer": maybe_serialize(self.alpha_initializer),
                "beta_initializer": maybe_serialize(self.beta_initializer),
                "epsilon": self.epsilon,
                "fused_shift": self.fused_shift,
            }
        )
        return config
