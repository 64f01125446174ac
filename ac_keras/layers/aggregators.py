"""The paper's comparison aggregators (Table 4, appendix B): other ways to turn a frame set into one vector.

Each layer takes one modality's frames, a `tf.RaggedTensor` `(batch, None, dim)` or a dense
`(batch, frames, dim)` tensor with an optional mask, and returns one vector per video, so the model builder
can put any of them where an `AttentionCluster` goes. Padding never reaches the output: a dense batch is first
compacted so each video's real frames come first, in order (a mask with holes behaves like the same frames
packed at the front), and every pooling step counts real frames only. A video with no real frame gives a
zero vector, never NaN. Pooling runs in float32 under mixed precision; outputs have the compute dtype.

This module holds five small layers rather than one per module: they are alternatives to one another, share
their masking helpers, and are only compared, never combined.
"""

import keras
import tensorflow as tf

from ac_keras.layers._utils import dense_frames_and_mask

AGGREGATORS = ("attention_cluster", "average", "flatten", "bilstm", "ts_lstm", "temporal_inception")
INCEPTION_POOLINGS = ("max", "average")


def _real_frames_first(inputs, mask):
    """Returns `(frames, mask)`: dense frames with every video's real frames first, and a bool mask.

    Padded positions hold zeros. A ragged batch is already packed; a dense batch with a mask is packed with
    `tf.ragged.boolean_mask` so convolutions and segment boundaries see the real frames contiguously.
    """
    if isinstance(inputs, tf.RaggedTensor):
        return dense_frames_and_mask(inputs)
    frames, mask = dense_frames_and_mask(inputs, mask)
    if mask is None:
        return frames, tf.ones(tf.shape(frames)[:2], dtype="bool")
    return dense_frames_and_mask(tf.ragged.boolean_mask(frames, mask))


def _at_least_one_step(frames, mask):
    """Pads the frame axis to length >= 1 (a masked zero frame): recurrent and conv ops never see 0 steps."""
    missing = tf.maximum(1 - tf.shape(frames)[1], 0)
    frames = tf.pad(frames, [[0, 0], [0, missing], [0, 0]])
    mask = tf.pad(mask, [[0, 0], [0, missing]], constant_values=False)
    return frames, mask


def _masked_mean(values, mask):
    """Float32 mean over the real positions of `values` `(batch, steps, dim)`; zero for a video with none."""
    values = tf.cast(values, "float32")
    valid = tf.cast(mask, "float32")[:, :, None]
    total = tf.reduce_sum(values * valid, axis=1)
    count = tf.reduce_sum(valid, axis=1)
    return total / tf.maximum(count, 1.0)


def _has_frames(mask):
    return tf.reduce_any(mask, axis=1, keepdims=True)


class _Aggregator(keras.layers.Layer):
    """Shared plumbing: masking support, no propagated mask, output spec from `_output_dim`."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def _output_dim(self, dim):
        raise NotImplementedError

    def _feature_dim(self, input_shape):
        dim = input_shape[-1]
        if dim is None:
            raise ValueError(f"The last (feature) dimension of the input must be known, got {input_shape}.")
        return dim

    def compute_mask(self, inputs, mask=None):
        # The frame axis is pooled away, so no mask propagates.
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self._output_dim(input_shape[-1]))

    def compute_output_spec(self, inputs, mask=None, training=None):
        shape = tuple(inputs.shape)
        return keras.KerasTensor((shape[0], self._output_dim(shape[-1])), dtype=self.compute_dtype)


@keras.saving.register_keras_serializable(package="ac_keras")
class AverageAggregator(_Aggregator):
    """The global average of a video's real frames (appendix B "Average").

    The output is `(1 / L) sum_t x_t` over the `L` real frames, the same vector as one `AttentionUnit` with
    `weighting="average"` (Eq. 3), not repeated: the Table 4 Average baseline concatenates one global
    average per modality. Order-free and padding-free; a video without frames gives zeros.

    Args:
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `tf.RaggedTensor` `(batch, None, dim)` or dense `(batch, frames, dim)`.
        mask: optional boolean or int `(batch, frames)` for dense inputs; true/1 marks real frames.
        training: unused; present for the Keras call convention.

    Returns:
        Tensor `(batch, dim)` in the compute dtype (summed in float32).

    Example:
    >>> frames = tf.ragged.constant([[[1., 0.], [0., 1.]], [[2., 2.]]], ragged_rank=1)
    >>> AverageAggregator()(frames).numpy().tolist()
    [[0.5, 0.5], [2.0, 2.0]]

    References:
        Long et al., "Attention Clusters", CVPR 2018, Table 4 and appendix B ("Average").
    """

    def _output_dim(self, dim):
        return dim

    def build(self, input_shape):
        self._feature_dim(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        frames, mask = dense_frames_and_mask(inputs, mask)
        if mask is None:
            mask = tf.ones(tf.shape(frames)[:2], dtype="bool")
        return tf.cast(_masked_mean(frames, mask), self.compute_dtype)


@keras.saving.register_keras_serializable(package="ac_keras")
class FlattenAggregator(_Aggregator):
    """A video's first `num_frames` real frames concatenated in order (appendix B "Flatten").

    The paper flattens the `L x M` local features of a fixed `L` into one `L * M` vector. Videos vary in
    length, so `num_frames` is fixed when the model is built: a video with fewer real frames is zero-padded
    at the end, one with more keeps its first `num_frames` (deterministic truncation). The input pipeline
    already takes `--train_frames` frames at random (in temporal order) in training and `--eval_frames` at
    equal intervals in evaluation, so with both equal to `num_frames` nothing is truncated. Padding of the
    batch never moves a frame: the output depends only on each video's real frames.

    Args:
        num_frames: int, the fixed frame count `L`. The output has `num_frames * dim` values.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `tf.RaggedTensor` `(batch, None, dim)` or dense `(batch, frames, dim)`.
        mask: optional boolean or int `(batch, frames)` for dense inputs; true/1 marks real frames.
        training: unused; present for the Keras call convention.

    Returns:
        Tensor `(batch, num_frames * dim)`, frame-major (all `dim` values of frame 1 first).

    Example:
    >>> frames = tf.ragged.constant([[[1., 0.], [0., 1.]], [[2., 2.]]], ragged_rank=1)
    >>> FlattenAggregator(num_frames=2)(frames).numpy().tolist()
    [[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 0.0, 0.0]]

    References:
        Long et al., "Attention Clusters", CVPR 2018, Table 4 and appendix B ("Flatten").
    """

    def __init__(self, num_frames, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_frames, int) or isinstance(num_frames, bool) or num_frames < 1:
            raise ValueError(f"`num_frames` must be a positive int, got {num_frames!r}.")
        self.num_frames = num_frames

    def _output_dim(self, dim):
        return None if dim is None else self.num_frames * dim

    def build(self, input_shape):
        self._feature_dim(input_shape)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        frames, _ = _real_frames_first(inputs, mask)
        frames = tf.cast(frames, self.compute_dtype)[:, : self.num_frames]
        missing = tf.maximum(self.num_frames - tf.shape(frames)[1], 0)
        frames = tf.pad(frames, [[0, 0], [0, missing], [0, 0]])
        dim = frames.shape[-1]
        return tf.reshape(frames, [tf.shape(frames)[0], self.num_frames * dim])

    def get_config(self):
        config = super().get_config()
        config.update({"num_frames": self.num_frames})
        return config


def _check_units(units, argument="units"):
    if not isinstance(units, int) or isinstance(units, bool) or units < 1:
        raise ValueError(f"`{argument}` must be a positive int, got {units!r}.")


@keras.saving.register_keras_serializable(package="ac_keras")
class BiLSTMAggregator(_Aggregator):
    """Batch normalization, a bidirectional LSTM, and the average of its outputs over the real frames.

    Appendix B "Bi-directional LSTMs": per modality a batch-normalization layer, then a bidirectional LSTM
    (the paper uses 1024 hidden units for RGB and 512 for flow and audio), and the average of the output
    hidden states (forward and backward concatenated, `2 * units` values per frame).

    Padding: batch normalization computes its training statistics over real frames only (Keras's masked
    moments), the LSTMs skip masked steps (the backward LSTM starts at each video's last real frame), and the
    average counts real frames only, so a padded batch gives every video the outputs it gets alone (in
    inference mode; in training mode batch statistics depend on the batch, as for any batch normalization).
    A video with no real frame gives zeros.

    Args:
        units: int, hidden size of each direction's LSTM.
        kernel_regularizer: optional regularizer of the LSTM input kernels. Defaults to None.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `tf.RaggedTensor` `(batch, None, dim)` or dense `(batch, frames, dim)`.
        mask: optional boolean or int `(batch, frames)` for dense inputs; true/1 marks real frames.
        training: bool, training mode of the batch normalization.

    Returns:
        Tensor `(batch, 2 * units)`.

    Example:
    >>> frames = tf.ragged.constant([[[1., 0.], [0., 1.]], [[2., 2.]]], ragged_rank=1)
    >>> BiLSTMAggregator(units=3)(frames).shape
    TensorShape([2, 6])

    References:
        Long et al., "Attention Clusters", CVPR 2018, Table 4 and appendix B ("Bi-directional LSTMs");
        Ioffe and Szegedy, "Batch Normalization", ICML 2015; Hochreiter and Schmidhuber, "Long Short-Term
        Memory", 1997.
    """

    def __init__(self, units, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        _check_units(units)
        self.units = units
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.batch_norm = keras.layers.BatchNormalization(dtype=self.dtype_policy, name="batch_norm")
        lstm = keras.layers.LSTM(
            units,
            return_sequences=True,
            kernel_regularizer=self.kernel_regularizer,
            dtype=self.dtype_policy,
            name="lstm",
        )
        self.bilstm = keras.layers.Bidirectional(lstm, dtype=self.dtype_policy, name="bilstm")
        # Bidirectional serializes `lstm` twice to make its two layers. While a model loads, Keras's object
        # sharing keys serialized configs by id(): once this LSTM were freed, another aggregator's LSTM could
        # get its address, and the load would then hand that aggregator layers of this one (seen as a
        # "different go_backwards" error, depending on when the garbage collector ran). Keeping the LSTM
        # alive, outside Keras's layer tracking (no weights, not saved), keeps every id distinct.
        object.__setattr__(self, "_template_lstm", lstm)

    def _output_dim(self, dim):
        return 2 * self.units

    def build(self, input_shape):
        dim = self._feature_dim(input_shape)
        self.batch_norm.build((input_shape[0], None, dim))
        self.bilstm.build((input_shape[0], None, dim))
        self.built = True

    def call(self, inputs, mask=None, training=None):
        frames, mask = _real_frames_first(inputs, mask)
        frames, mask = _at_least_one_step(tf.cast(frames, self.compute_dtype), mask)
        normalized = self.batch_norm(frames, training=training, mask=mask)
        # A video without frames would be a zero-length sequence, which cuDNN rejects: let the LSTMs read its
        # (zero, masked-out) first step; the average below still counts no frame for it.
        first_step = tf.range(tf.shape(mask)[1]) < 1
        lstm_mask = tf.logical_or(
            mask, tf.logical_and(first_step[None, :], tf.logical_not(_has_frames(mask)))
        )
        states = self.bilstm(normalized, mask=lstm_mask, training=training)
        return tf.cast(_masked_mean(states, mask), self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="ac_keras")
class TSLSTMAggregator(_Aggregator):
    """TS-LSTM: mean-pool `num_segments` temporal segments, an LSTM over them, its last hidden state.

    Temporal Segment LSTM (Ma et al. 2017) splits a video into equal temporal segments, mean-pools the frame
    features in each, and runs an LSTM over the segment sequence; the paper's Table 4 uses 5 segments. The
    segment boundaries come from each video's own real length `L`: segment `s` averages real frames
    `floor(s L / S)` up to (not including) `max(floor((s + 1) L / S), floor(s L / S) + 1)`, so each segment
    holds at least one frame (for `L < S` some frames serve several segments) and padding never enters a
    segment. The output is the LSTM's last hidden state (as in the authors' code, which classifies the last
    time step). A video with no real frame gives zeros.

    Args:
        units: int, LSTM hidden size.
        num_segments: int, number of temporal segments `S`. Defaults to 5.
        kernel_regularizer: optional regularizer of the LSTM input kernel. Defaults to None.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `tf.RaggedTensor` `(batch, None, dim)` or dense `(batch, frames, dim)`.
        mask: optional boolean or int `(batch, frames)` for dense inputs; true/1 marks real frames.
        training: unused by the layer itself; passed to the LSTM.

    Returns:
        Tensor `(batch, units)`.

    Example:
    >>> frames = tf.ragged.constant([[[1., 0.], [0., 1.]], [[2., 2.]]], ragged_rank=1)
    >>> TSLSTMAggregator(units=3)(frames).shape
    TensorShape([2, 3])

    References:
        Ma, Chen, Kira and AlRegib, "TS-LSTM and Temporal-Inception: Exploiting Spatiotemporal Dynamics for
        Activity Recognition", arXiv:1703.10667, 2017; Long et al., "Attention Clusters", CVPR 2018, Table 4
        and appendix B.
    """

    def __init__(self, units, num_segments=5, kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        _check_units(units)
        _check_units(num_segments, "num_segments")
        self.units = units
        self.num_segments = num_segments
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.lstm = keras.layers.LSTM(
            units, kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy, name="lstm"
        )

    def _output_dim(self, dim):
        return self.units

    def build(self, input_shape):
        dim = self._feature_dim(input_shape)
        self.lstm.build((input_shape[0], self.num_segments, dim))
        self.built = True

    def segment_weights(self, mask):
        """Float32 `(batch, num_segments, frames)`: row `s` averages the real frames of segment `s`."""
        mask = tf.cast(mask, "bool")
        valid = tf.cast(mask, "int32")
        rank = tf.cumsum(valid, axis=1) - 1  # index of each real frame among the real frames
        length = tf.reduce_sum(valid, axis=1, keepdims=True)  # (batch, 1)
        segment = tf.range(self.num_segments, dtype="int32")[None, :]
        start = segment * length // self.num_segments
        end = tf.maximum((segment + 1) * length // self.num_segments, start + 1)
        inside = (
            (rank[:, None, :] >= start[:, :, None]) & (rank[:, None, :] < end[:, :, None]) & mask[:, None, :]
        )
        return tf.cast(inside, "float32") / tf.cast(end - start, "float32")[:, :, None]

    def call(self, inputs, mask=None, training=None):
        frames, mask = dense_frames_and_mask(inputs, mask)
        if mask is None:
            mask = tf.ones(tf.shape(frames)[:2], dtype="bool")
        segments = tf.matmul(self.segment_weights(mask), tf.cast(frames, "float32"))
        state = self.lstm(tf.cast(segments, self.compute_dtype), training=training)
        return tf.where(_has_frames(mask), state, tf.zeros_like(state))

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "units": self.units,
                "num_segments": self.num_segments,
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config


@keras.saving.register_keras_serializable(package="ac_keras")
class TemporalInceptionAggregator(_Aggregator):
    """Temporal-Inception: parallel 1-D temporal convolutions of several widths, then pooling over time.

    Each Temporal-Inception layer runs one `Conv1D` (`filters` outputs, ReLU, "same" padding) per kernel size
    over the frame sequence and concatenates them; `num_layers` such layers are stacked; the result is
    pooled over the real frames (max or average). Ma et al. (2017) convolve with widths 5 and 7 in each
    inception module, as here by default; their stack also pools between modules, which this version leaves
    to the final pooling so that it works for any video length.

    Padding: the video's real frames are packed at the front with zeros after them, exactly the zeros a
    "same" convolution pads a video with when it is alone, and after every layer the outputs at padded
    positions are set back to zero; the pooling reads real positions only. So a padded batch gives every
    video the output it gets alone. A video with no real frame gives zeros.

    Args:
        filters: int, output channels of each convolution. The output has `filters * len(kernel_sizes)`
            values. Defaults to 256.
        kernel_sizes: tuple of ints, the temporal widths of the parallel convolutions. Defaults to `(5, 7)`.
        num_layers: int, stacked inception layers. Defaults to 1.
        pooling: `"max"` or `"average"`, the pooling over time. Defaults to `"max"`.
        kernel_regularizer: optional regularizer of the convolution kernels. Defaults to None.
        **kwargs: base `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: `tf.RaggedTensor` `(batch, None, dim)` or dense `(batch, frames, dim)`.
        mask: optional boolean or int `(batch, frames)` for dense inputs; true/1 marks real frames.
        training: unused; present for the Keras call convention.

    Returns:
        Tensor `(batch, filters * len(kernel_sizes))`.

    Example:
    >>> frames = tf.ragged.constant([[[1., 0.], [0., 1.]], [[2., 2.]]], ragged_rank=1)
    >>> TemporalInceptionAggregator(filters=4)(frames).shape
    TensorShape([2, 8])

    References:
        Ma, Chen, Kira and AlRegib, "TS-LSTM and Temporal-Inception: Exploiting Spatiotemporal Dynamics for
        Activity Recognition", arXiv:1703.10667, 2017; Long et al., "Attention Clusters", CVPR 2018, Table 4
        and appendix B.
    """

    def __init__(
        self, filters=256, kernel_sizes=(5, 7), num_layers=1, pooling="max", kernel_regularizer=None, **kwargs
    ):
        super().__init__(**kwargs)
        _check_units(filters, "filters")
        _check_units(num_layers, "num_layers")
        kernel_sizes = tuple(kernel_sizes) if isinstance(kernel_sizes, list | tuple) else (kernel_sizes,)
        if not kernel_sizes or not all(
            isinstance(size, int) and not isinstance(size, bool) and size >= 1 for size in kernel_sizes
        ):
            raise ValueError(
                f"`kernel_sizes` must be a non-empty sequence of positive ints, got {kernel_sizes!r}."
            )
        if pooling not in INCEPTION_POOLINGS:
            raise ValueError(f"`pooling` must be one of {INCEPTION_POOLINGS}, got {pooling!r}.")
        self.filters = filters
        self.kernel_sizes = kernel_sizes
        self.num_layers = num_layers
        self.pooling = pooling
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.convolutions = [
            [
                keras.layers.Conv1D(
                    filters,
                    size,
                    padding="same",
                    activation="relu",
                    kernel_regularizer=self.kernel_regularizer,
                    dtype=self.dtype_policy,
                    name=f"inception{layer}_conv{size}",
                )
                for size in kernel_sizes
            ]
            for layer in range(num_layers)
        ]

    def _output_dim(self, dim):
        return self.filters * len(self.kernel_sizes)

    def build(self, input_shape):
        channels = self._feature_dim(input_shape)
        for layer in self.convolutions:
            for convolution in layer:
                convolution.build((input_shape[0], None, channels))
            channels = self._output_dim(channels)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        frames, mask = _real_frames_first(inputs, mask)
        features, mask = _at_least_one_step(tf.cast(frames, self.compute_dtype), mask)
        for layer in self.convolutions:
            features = tf.concat([convolution(features) for convolution in layer], axis=-1)
            features = tf.where(mask[:, :, None], features, tf.zeros_like(features))
        if self.pooling == "average":
            pooled = _masked_mean(features, mask)
        else:
            masked = tf.where(mask[:, :, None], tf.cast(features, "float32"), float("-inf"))
            pooled = tf.where(_has_frames(mask), tf.reduce_max(masked, axis=1), 0.0)
        return tf.cast(pooled, self.compute_dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_sizes": list(self.kernel_sizes),
                "num_layers": self.num_layers,
                "pooling": self.pooling,
                "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            }
        )
        return config
