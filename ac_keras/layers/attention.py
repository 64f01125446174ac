"""AttentionUnit: N independent attention units over a set of local features (paper Eqs. 2-5)."""

import keras
import tensorflow as tf

from ac_keras.layers._utils import dense_frames_and_mask, fresh_initializer

WEIGHTINGS = ("average", "fc1", "fc2")


@keras.saving.register_keras_serializable(package="ac_keras")
class AttentionUnit(keras.layers.Layer):
    """`num_units` independent attention units that pool a set of frame features into vectors.

    For a video with `L` real frames `X` (`L x M`), unit `k` computes weights `a_k` (length `L`, summing to 1
    over the real frames) and outputs the weighted average `v_k = a_k X` (Eq. 2). The weighting functions:

    - `"average"` (Eq. 3): `a = 1 / L`. No weights; all `num_units` outputs are the same mean vector (the
      paper's Average baseline repeats it N times so the classifier's parameter count matches).
    - `"fc1"` (Eq. 4): `a_k = softmax(X w_k + b_k)` with `w_k` in R^M. The paper writes `b` with dimension
      `L`; a per-position bias would break permutation invariance and cannot exist for variable `L`, so `b_k`
      is one scalar per unit. Under the softmax a scalar is a no-op; it is kept, as in the authors' reference
      code, so checkpoints map one to one.
    - `"fc2"` (Eq. 5): `a_k = softmax(w2_k tanh(X W1_k^T + b1_k) + b2_k)` with hidden size `fc2_units`, every
      unit with its own `W1_k, b1_k, w2_k, b2_k`.

    All units are computed together: one `(M, N)` matmul gives the fc1 logits of every unit (fc2: one
    `(M, N * H)` matmul), and one batched matmul pools the frames for every unit. Padded frames (from a ragged
    batch or a `False` mask entry) get exactly zero weight; a video with no real frame gets all-zero
    weights and a zero output vector instead of NaN. Logits and the softmax run in float32 under mixed
    precision.

    Args:
        num_units: int, number of independent units `N`. Defaults to 1.
        weighting: str, one of `"average"`, `"fc1"`, `"fc2"`. Defaults to `"fc1"`.
        fc2_units: int, hidden size `H` of the fc2 weighting. Ignored for other weightings. Defaults to 10
            (the paper's Flash-MNIST setting).
        return_attention: bool, whether `call` also returns the weights. Defaults to False.
        kernel_initializer: initializer of the fc1 kernel and both fc2 kernels. Defaults to
            `"glorot_uniform"`.
        bias_initializer: initializer of the biases. Defaults to `"zeros"`.
        kernel_regularizer: optional regularizer of the kernels. Defaults to None.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `tf.RaggedTensor` `(batch, None, dim)`, or a dense tensor `(batch, frames, dim)`.
        mask: optional boolean `(batch, frames)` for dense inputs; `True` marks real frames.

    Returns:
        Pooled vectors `(batch, num_units, dim)`; with `return_attention=True` a tuple
        `(pooled, weights)` where `weights` is float32 `(batch, num_units, frames)`.

    Example:
    >>> frames = tf.ragged.constant([[[1., 0.], [0., 1.]], [[2., 2.]]], ragged_rank=1)
    >>> AttentionUnit(num_units=4)(frames).shape
    TensorShape([2, 4, 2])

    References:
        Long et al., "Attention Clusters", CVPR 2018, Eqs. 2-5.
    """

    def __init__(
        self,
        num_units=1,
        weighting="fc1",
        fc2_units=10,
        return_attention=False,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(num_units, int) or num_units < 1:
            raise ValueError(f"`num_units` must be a positive int, got {num_units!r}.")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"`weighting` must be one of {WEIGHTINGS}, got {weighting!r}.")
        if not isinstance(fc2_units, int) or fc2_units < 1:
            raise ValueError(f"`fc2_units` must be a positive int, got {fc2_units!r}.")
        self.num_units = num_units
        self.weighting = weighting
        self.fc2_units = fc2_units
        self.return_attention = return_attention
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(f"The last (feature) dimension of the input must be known, got {input_shape}.")
        if self.weighting == "fc1":
            self.kernel = self.add_weight(
                name="kernel",
                shape=(dim, self.num_units),
                initializer=fresh_initializer(self.kernel_initializer),
                regularizer=self.kernel_regularizer,
            )
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_units,),
                initializer=fresh_initializer(self.bias_initializer),
            )
        elif self.weighting == "fc2":
            self.hidden_kernel = self.add_weight(
                name="hidden_kernel",
                shape=(dim, self.num_units * self.fc2_units),
                initializer=fresh_initializer(self.kernel_initializer),
                regularizer=self.kernel_regularizer,
            )
            self.hidden_bias = self.add_weight(
                name="hidden_bias",
                shape=(self.num_units * self.fc2_units,),
                initializer=fresh_initializer(self.bias_initializer),
            )
            self.kernel = self.add_weight(
                name="kernel",
                shape=(self.num_units, self.fc2_units),
                initializer=fresh_initializer(self.kernel_initializer),
                regularizer=self.kernel_regularizer,
            )
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_units,),
                initializer=fresh_initializer(self.bias_initializer),
            )
        self.built = True

    def _logits(self, frames):
        """Attention logits `(batch, frames, num_units)` in float32."""
        if self.weighting == "fc1":
            # One 2-D product (batch * frames, dim) x (dim, units): its kernel gradient is one matmul, where
            # a broadcast batched matmul would need a batched product and a sum over the batch.
            shape = tf.shape(frames)
            flat = tf.reshape(frames, [-1, frames.shape[-1]])
            logits = tf.matmul(flat, tf.cast(self.kernel, frames.dtype)) + tf.cast(self.bias, frames.dtype)
            logits = tf.reshape(logits, tf.concat([shape[:2], [self.num_units]], axis=0))
            return tf.cast(logits, "float32")
        hidden = tf.tanh(
            tf.matmul(frames, tf.cast(self.hidden_kernel, frames.dtype))
            + tf.cast(self.hidden_bias, frames.dtype)
        )
        shape = tf.shape(hidden)
        hidden = tf.reshape(hidden, [shape[0], shape[1], self.num_units, self.fc2_units])
        hidden = tf.cast(hidden, "float32")
        return tf.einsum("blnh,nh->bln", hidden, tf.cast(self.kernel, "float32")) + tf.cast(
            self.bias, "float32"
        )

    def call(self, inputs, mask=None, training=None):
        frames, mask = dense_frames_and_mask(inputs, mask)
        frames = tf.cast(frames, self.compute_dtype)
        if mask is None:
            mask = tf.ones(tf.shape(frames)[:2], dtype="bool")
        valid = tf.cast(mask, "float32")  # (batch, frames)

        if self.weighting == "average":
            count = tf.reduce_sum(valid, axis=1, keepdims=True)
            weights = valid / tf.maximum(count, 1.0)  # (batch, frames)
            pooled = tf.matmul(tf.cast(weights, frames.dtype)[:, None, :], frames)  # (batch, 1, dim)
            pooled = tf.tile(pooled, [1, self.num_units, 1])
            weights = tf.tile(weights[:, None, :], [1, self.num_units, 1])
        else:
            logits = self._logits(frames)  # (batch, frames, units), float32
            # Masked softmax over frames: padded logits are pushed to the float32 minimum before the max
            # subtraction (so exp cannot overflow) and their exp is multiplied by 0, giving exactly zero
            # weight. A video without real frames gets all-zero weights rather than 0/0 = NaN.
            logits = tf.where(mask[:, :, None], logits, tf.float32.min)
            logits -= tf.stop_gradient(tf.reduce_max(logits, axis=1, keepdims=True))
            exp = tf.exp(logits) * valid[:, :, None]
            total = tf.reduce_sum(exp, axis=1, keepdims=True)
            weights = tf.math.divide_no_nan(exp, total)
            weights = tf.transpose(weights, [0, 2, 1])  # (batch, units, frames)
            pooled = tf.matmul(tf.cast(weights, frames.dtype), frames)  # (batch, units, dim)
        if self.return_attention:
            return pooled, weights
        return pooled

    def compute_mask(self, inputs, mask=None):
        # The frame axis is pooled away, so no mask propagates.
        return None

    def compute_output_shape(self, input_shape):
        pooled_shape = (input_shape[0], self.num_units, input_shape[-1])
        if self.return_attention:
            return pooled_shape, (input_shape[0], self.num_units, input_shape[1])
        return pooled_shape

    def compute_output_spec(self, inputs, mask=None, training=None):
        shape = tuple(inputs.shape)
        pooled = keras.KerasTensor((shape[0], self.num_units, shape[-1]), dtype=self.compute_dtype)
        if self.return_attention:
            return pooled, keras.KerasTensor((shape[0], self.num_units, shape[1]), dtype="float32")
        return pooled

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_units": self.num_units,
                "weighting": self.weighting,
                "fc2_units": self.fc2_units,
                "return_attention": self.return_attention,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
