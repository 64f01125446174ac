import math

import numpy as np
import pytest
import tensorflow as tf

from ac_keras.layers import ShiftNormalize, reference_shift_stddev
from tests.ac_keras.layers import reference
from tests.ac_keras.layers.layer_test_utils import run_layer_test


@pytest.mark.parametrize(("num_units", "dim"), [(1, 4), (3, 9), (32, 50)])
def test_matches_numpy_reference_and_norms(num_units, dim):
    rng = np.random.default_rng(num_units)
    pooled = rng.normal(size=(5, num_units, dim)).astype("float32")
    layer = ShiftNormalize()
    output = layer(pooled).numpy()
    alpha, beta = layer.alpha.numpy().astype("float64"), layer.beta.numpy().astype("float64")
    for video in range(5):
        want = reference.shift_normalize(pooled[video].astype("float64"), alpha, beta)
        np.testing.assert_allclose(output[video], want, rtol=1e-5, atol=1e-7)
    # Each unit has norm 1/sqrt(N); the concatenated output has norm 1.
    np.testing.assert_allclose(np.linalg.norm(output, axis=-1), 1 / math.sqrt(num_units), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(output.reshape(5, -1), axis=-1), 1.0, rtol=1e-5)


def test_reference_initialization_statistics():
    num_units = 4096
    layer = ShiftNormalize()
    layer.build((None, num_units, 3))
    expected = reference_shift_stddev(num_units)
    assert expected == pytest.approx(math.sqrt(1 / math.sqrt(num_units)))
    for weight in (layer.alpha, layer.beta):
        values = weight.numpy()
        assert abs(values.mean()) < 4 * expected / math.sqrt(num_units)
        assert values.std() == pytest.approx(expected, rel=0.06)
    assert not np.allclose(layer.alpha.numpy(), layer.beta.numpy())


def test_identity_initialization_option_is_plain_normalization():
    layer = ShiftNormalize(alpha_initializer="ones", beta_initializer="zeros")
    pooled = np.random.default_rng(0).normal(size=(2, 4, 6)).astype("float32")
    output = layer(pooled).numpy()
    want = pooled / (2.0 * np.linalg.norm(pooled, axis=-1, keepdims=True))
    np.testing.assert_allclose(output, want, rtol=1e-6)


def test_zero_vector_stays_finite_with_finite_gradient():
    layer = ShiftNormalize(alpha_initializer="ones", beta_initializer="zeros")
    pooled = tf.zeros([1, 2, 3])
    with tf.GradientTape() as tape:
        tape.watch(pooled)
        output = layer(pooled)
    gradients = tape.gradient(output, [pooled, layer.alpha, layer.beta])
    assert np.all(output.numpy() == 0.0)
    for gradient in gradients:
        assert np.all(np.isfinite(gradient.numpy()))


def test_variable_names():
    layer = ShiftNormalize()
    layer.build((None, 5, 2))
    assert [w.path.split("/")[-1] for w in layer.weights] == ["alpha", "beta"]
    assert [tuple(w.shape) for w in layer.weights] == [(5,), (5,)]


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="epsilon"):
        ShiftNormalize(epsilon=0.0)
    with pytest.raises(ValueError, match="num_units"):
        ShiftNormalize().build((None, 7))


def test_layer_contract(tmp_path):
    pooled = tf.random.normal([3, 4, 6])
    run_layer_test(ShiftNormalize, {"epsilon": 1e-10}, pooled, (3, 4, 6), tmp_path, ragged=False)


def test_training_path_matches_inference_path_and_its_gradients():
    # training=True runs the XLA-compiled kernel, training=False the plain TensorFlow ops.
    layer = ShiftNormalize()
    values = tf.constant(np.random.default_rng(4).normal(size=(3, 5, 7)).astype(np.float32))
    layer.build(values.shape)
    results = {}
    for training in (True, False):
        with tf.GradientTape() as tape:
            tape.watch(values)
            output = layer(values, training=training)
            loss = tf.reduce_sum(output * tf.range(7, dtype=tf.float32))
        results[training] = (output, *tape.gradient(loss, [values, layer.alpha, layer.beta]))
    for fused, plain in zip(results[True], results[False], strict=True):
        # The alpha and beta gradients are sums over batch and dim, added in another order by the XLA
        # kernel: a small sum of large terms differs by a few float32 ulps of the terms, not of the sum.
        scale = max(1.0, float(np.abs(plain.numpy()).max()))
        np.testing.assert_allclose(fused.numpy(), plain.numpy(), rtol=1e-5, atol=1e-6 * scale)
    alpha, beta = layer.alpha.numpy().astype("float64"), layer.beta.numpy().astype("float64")
    for video in range(3):
        expected = reference.shift_normalize(values.numpy()[video].astype("float64"), alpha, beta)
        np.testing.assert_allclose(results[True][0].numpy()[video], expected, rtol=1e-5, atol=1e-6)
