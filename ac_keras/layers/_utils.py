"""Helpers shared by the layers: ragged or masked frames to dense frames plus a mask; initializers."""

import tensorflow as tf
from keras import ops


def dense_frames_and_mask(inputs, mask=None):
    """Returns `(frames, mask)` for a ragged or dense batch of frame sets.

    Args:
        inputs: `tf.RaggedTensor` of shape `(batch, None, dim)` or a dense tensor `(batch, frames, dim)`.
        mask: optional boolean tensor `(batch, frames)` for dense inputs; `True` marks real frames.
            Ignored (and must be None) for ragged inputs, whose row lengths define the real frames.

    Returns:
        `frames`, a dense `(batch, frames, dim)` tensor with zeros at padded positions, and `mask`, a boolean
        `(batch, frames)` tensor, or None when every frame is real.
    """
    if isinstance(inputs, tf.RaggedTensor):
        if inputs.ragged_rank != 1:
            raise ValueError(
                "Expected a ragged tensor of shape (batch, None, dim) with ragged_rank 1, "
                f"got ragged_rank {inputs.ragged_rank} and shape {inputs.shape}."
            )
        frames = inputs.to_tensor()
        mask = tf.sequence_mask(inputs.row_lengths(), maxlen=tf.shape(frames)[1])
        return frames, mask
    if mask is not None:
        mask = ops.cast(mask, "bool")
        # Padded frames may hold anything (NaN too); zero them so 0 * frame stays 0 in the pooling matmul.
        inputs = ops.where(mask[:, :, None], inputs, ops.zeros_like(inputs))
    return inputs, mask


def fresh_initializer(initializer):
    """A new instance of `initializer` with the same config, or None.

    An unseeded Keras 3 initializer instance fixes its seed when constructed, so calling one instance for two
    weights of the same shape returns identical values. Layers call this once per weight.
    """
    if initializer is None:
        return None
    return initializer.__class__.from_config(initializer.get_config())
