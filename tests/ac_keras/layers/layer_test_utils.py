"""The shared layer test: every layer goes through the same serialization, call, fit and precision checks."""

import json

import keras
import numpy as np
import tensorflow as tf


def ragged_frames(lengths, dim, seed=0):
    """A float32 ragged batch `(len(lengths), None, dim)` with the given row lengths."""
    rng = np.random.default_rng(seed)
    values = rng.normal(size=(int(sum(lengths)), dim)).astype("float32")
    return tf.RaggedTensor.from_row_lengths(values, np.asarray(lengths, dtype="int64"))


# Relative tolerance of a mixed-precision output against float32 with the same weights: float16 keeps an
# 11-bit significand (unit roundoff 2^-11 ~ 5e-4), bfloat16 an 8-bit one (2^-8 ~ 4e-3); a layer's few chained
# ops (matmul over dims of tens, softmax, normalization) grow that by about an order of magnitude.
MIXED_POLICIES = {"mixed_float16": 1e-2, "mixed_bfloat16": 5e-2}


def assert_close_to_float32(output, reference, policy):
    """`output` of a layer under `policy` has the compute dtype and is close to the float32 `reference`.

    The tolerance is relative to each value and, for values near zero, to the largest reference value.
    """
    compute_dtype = tf.as_dtype(policy.split("_")[1])
    assert output.dtype == compute_dtype, (policy, output.dtype)
    output = tf.cast(output, "float32").numpy()
    reference = np.asarray(reference, "float32")
    assert np.all(np.isfinite(output)), policy
    tolerance = MIXED_POLICIES[policy]
    np.testing.assert_allclose(
        output, reference, rtol=tolerance, atol=tolerance * float(np.abs(reference).max()), err_msg=policy
    )


def run_layer_test(layer_cls, init_kwargs, inputs, expected_output_shape, tmp_path, ragged=True):
    """Checks one layer class end to end.

    - `get_config` / `from_config` round trip, and a JSON round trip through `keras.saving` serialization;
    - an eager call and a symbolic call (functional model) agree on output shapes;
    - the layer trains: one `fit` step on a model around it changes its weights, all finite;
    - a `.keras` save/load of that model gives identical outputs;
    - calls under `mixed_float16` and `mixed_bfloat16` with the same weights give outputs of the policy's
      compute dtype that are close to the float32 outputs (`assert_close_to_float32`).

    Args:
        layer_cls: the layer class.
        init_kwargs: dict of constructor arguments.
        inputs: the layer's input (ragged or dense tensor).
        expected_output_shape: tuple, the output shape of an eager call on `inputs`.
        tmp_path: a pytest temporary directory.
        ragged: whether `inputs` is ragged (sets the functional Input accordingly).
    """
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key in init_kwargs:
        assert key in config, f"get_config() misses constructor argument {key!r}"
    clone = layer_cls.from_config(config)
    assert clone.get_config() == config
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is layer_cls
    assert revived.get_config() == config

    eager = layer(inputs)
    assert tuple(eager.shape) == tuple(expected_output_shape)
    assert np.all(np.isfinite(eager.numpy()))

    symbolic_input = keras.Input(shape=tuple(inputs.shape[1:]), ragged=ragged)
    symbolic_output = layer_cls(**init_kwargs)(symbolic_input)
    assert tuple(symbolic_output.shape[1:]) == tuple(expected_output_shape[1:])

    inner = layer_cls(**init_kwargs)
    flat = keras.layers.Flatten()(inner(symbolic_input))
    model = keras.Model(symbolic_input, keras.layers.Dense(1)(flat))
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = [w.numpy().copy() for w in inner.trainable_weights]
    targets = np.ones((expected_output_shape[0], 1), "float32")
    dataset = tf.data.Dataset.from_tensors((inputs, targets))
    model.fit(dataset, epochs=1, verbose=0, shuffle=False)
    after = [w.numpy() for w in inner.trainable_weights]
    # Not every weight must move (the fc1 bias is a no-op under the softmax, so its gradient is ~0).
    assert any(np.any(b != a) for b, a in zip(before, after, strict=True)), "fit changed no weight"
    assert all(np.all(np.isfinite(a)) for a in after)

    path = tmp_path / f"{layer_cls.__name__}.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model(inputs).numpy(), reloaded(inputs).numpy())

    for policy in MIXED_POLICIES:
        mixed = layer_cls(**init_kwargs, dtype=policy)
        mixed(inputs)  # builds the weights (float32 variables under a mixed policy)
        mixed.set_weights(layer.get_weights())
        assert_close_to_float32(mixed(inputs), eager, policy)
