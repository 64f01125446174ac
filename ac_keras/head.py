"""The training step's classifier head: dropout and the final dense layer as one fused operation.

`dropout_dense(x, kernel, bias, key, rate)` computes `dense(dropout(x))`, the function of a `build_model`
model's `Dropout` -> `Dense` head, with:
- a dropout mask from a counter-based hash (the murmur3 32-bit finalizer applied to each element's row and
  column, keyed by a per-step Philox seed), drawn, selected and scaled in one XLA kernel, and recomputed in
  the backward pass instead of stored;
- a hand-written gradient: `dx = einsum("bc,dc->bd", dy, kernel)` and `dkernel = matmul(x, dy,
  transpose_a=True)` (why, with the measured figures: docs/benchmarks.md, "Training head").

Each element is kept with probability `1 - rate` (to within 2**-32) and scaled by `1 / (1 - rate)`, as Keras
does; masks differ between steps and between replicas and are reproducible from the run's seed, the step
and the replica. Only the training step uses it (`TrainingConfig.fused_head`): the model itself (evaluation,
export, serving) keeps its Keras layers, so saved models are unchanged. `head_unsupported(model)` names what
the fused path does not cover (other precisions than float32, a different head); the training step then
calls the Keras layers. The head's layers come from `ac_keras.model.model_parts`.
"""

import keras
import tensorflow as tf

from ac_keras.model import model_parts

_ROW_MULTIPLIER = 0x9E3779B9  # 2**32 / golden ratio
_COLUMN_MULTIPLIER = 0x632BE5AB


def _fmix32(value):
    """The murmur3 32-bit finalizer: a bijective mix of uint32 values with full avalanche."""
    value = tf.bitwise.bitwise_xor(value, tf.bitwise.right_shift(value, 16))
    value = value * tf.constant(0x85EBCA6B, tf.uint32)
    value = tf.bitwise.bitwise_xor(value, tf.bitwise.right_shift(value, 13))
    value = value * tf.constant(0xC2B2AE35, tf.uint32)
    return tf.bitwise.bitwise_xor(value, tf.bitwise.right_shift(value, 16))


def _threshold(rate):
    """The uint32 below which an element is dropped: P(keep) = 1 - rate to within 2**-32."""
    return tf.constant(min(round(rate * 2**32), 2**32 - 1), tf.uint32)


def keep_mask(shape, key, rate):
    """Boolean keep mask of a 2-D `shape`: True with probability `1 - rate`, a function of `key` only.

    Args:
        shape: int32 tensor or list `[rows, columns]`.
        key: uint32 tensor of shape (2,), e.g. from `step_key`.
        rate: Python float in [0, 1), the drop probability.
    """
    rows = tf.cast(tf.range(shape[0]), tf.uint32)[:, None]
    columns = tf.cast(tf.range(shape[1]), tf.uint32)[None, :]
    row_key = _fmix32(rows * tf.constant(_ROW_MULTIPLIER, tf.uint32) + key[0])
    bits = _fmix32(columns * tf.constant(_COLUMN_MULTIPLIER, tf.uint32) + row_key + key[1])
    bits = _fmix32(tf.bitwise.bitwise_xor(bits, key[0]))
    return bits >= _threshold(rate)


def step_key(seed, step, replica=0):
    """A uint32 (2,) key from the run's seed, the step and the replica (Philox, stateless)."""
    counter = tf.cast(step, tf.int64) * 4096 + tf.cast(replica, tf.int64)
    bits = tf.random.stateless_uniform(
        [2], seed=tf.stack([tf.cast(seed, tf.int64), counter]), dtype=tf.int32, minval=None, maxval=None
    )
    return tf.bitcast(bits, tf.uint32)


def _masked_scale(values, key, rate):
    return tf.where(keep_mask(tf.shape(values), key, rate), values * (1.0 / (1.0 - rate)), 0.0)


# One XLA kernel: hash, compare, select and scale in a single pass over the (batch, width) values.
_masked_scale_xla = tf.function(_masked_scale, jit_compile=True, autograph=False, reduce_retracing=True)


def dropout_dense(inputs, kernel, bias, key, rate):
    """`dropout(inputs) @ kernel + bias` with the fused mask and the fast gradient (module docstring).

    Args:
        inputs: float32 (batch, width).
        kernel: float32 (width, classes), e.g. the classifier's kernel variable read as a tensor.
        bias: float32 (classes,), or None.
        key: uint32 (2,), the step's dropout key (`step_key`).
        rate: Python float in [0, 1).

    Returns:
        float32 (batch, classes) logits. Gradients flow to inputs, kernel and bias.
    """
    rate = float(rate)
    if bias is None:
        bias = tf.zeros([tf.shape(kernel)[1]], kernel.dtype)

    @tf.custom_gradient
    def forward(inputs, kernel, bias):
        dropped = _masked_scale_xla(inputs, key, rate) if rate > 0 else inputs
        logits = tf.nn.bias_add(tf.matmul(dropped, kernel), bias)

        def backward(upstream):
            grad_dropped = tf.einsum("bc,dc->bd", upstream, kernel)
            grad_inputs = _masked_scale_xla(grad_dropped, key, rate) if rate > 0 else grad_dropped
            grad_kernel = tf.matmul(dropped, upstream, transpose_a=True)
            grad_bias = tf.reduce_sum(upstream, axis=0)
            return grad_inputs, grad_kernel, grad_bias

        return logits, backward

    return forward(inputs, kernel, bias)


def head_unsupported(model):  # noqa: PLR0911 (one return per unsupported feature)
    """Why `TrainingHead` cannot run `model`'s head, or None when it can."""
    try:
        parts = model_parts(model)
    except ValueError:
        return "a model not built by ac_keras.model.build_model"
    dropout, classifier = parts.dropout, parts.classifier
    if not isinstance(dropout, keras.layers.Dropout) or type(classifier) is not keras.layers.Dense:
        return "a head other than Dropout -> Dense"
    if classifier.activation is not keras.activations.linear:
        return f"classifier activation {classifier.activation.__name__}"
    if dropout.noise_shape is not None:
        return "Dropout(noise_shape=...)"
    if classifier.compute_dtype != "float32" or classifier.variable_dtype != "float32":
        return f"precision policy {classifier.dtype_policy.name}"
    if classifier.kernel_constraint is not None or classifier.bias_constraint is not None:
        return "constraints on the classifier"
    if classifier.lora_enabled or getattr(classifier, "quantization_mode", None):
        return "LoRA or quantization on the classifier"
    if len(dropout.input.shape) != 2:
        return f"classifier input of rank {len(dropout.input.shape)}"
    return None


class TrainingHead:
    """Training-time logits of a `build_model` model: its trunk, then `dropout_dense` on its own weights.

    Args:
        model: a model from `ac_keras.model.build_model` for which `head_unsupported` returns None.
        seed: int, the run's seed; the dropout key of each step is `step_key(seed, step, replica)`.
    """

    def __init__(self, model, seed):
        reason = head_unsupported(model)
        if reason is not None:
            raise ValueError(f"TrainingHead does not support {reason}; use the Keras layers.")
        parts = model_parts(model)
        self.trunk = parts.trunk_model(model)
        self.classifier = parts.classifier
        self.rate = float(parts.dropout.rate)
        self.seed = int(seed)

    def __call__(self, features, step, replica=0):
        """Logits (batch, classes) in training mode; `step` and `replica` pick the dropout mask."""
        merged = self.trunk(features, training=True)
        kernel = self.classifier.kernel
        bias = self.classifier.bias if self.classifier.use_bias else None
        return dropout_dense(
            merged,
            tf.convert_to_tensor(kernel),
            None if bias is None else tf.convert_to_tensor(bias),
            step_key(self.seed, step, replica),
            self.rate,
        )
