import math

import numpy as np
import pytest
import tensorflow as tf

from ac_keras.layers import AttentionCluster
from tests.ac_keras.layers import reference
from tests.ac_keras.layers.layer_test_utils import ragged_frames, run_layer_test


def _params(cluster):
    attention = {w.path.split("/")[-1]: w.numpy().astype("float64") for w in cluster.attention.weights}
    if cluster.shift_normalize is None:
        return attention, None, None
    return (
        attention,
        cluster.shift_normalize.alpha.numpy().astype("float64"),
        cluster.shift_normalize.beta.numpy().astype("float64"),
    )


@pytest.mark.parametrize("weighting", ["average", "fc1", "fc2"])
@pytest.mark.parametrize("shift", [True, False])
@pytest.mark.parametrize(("cluster_size", "dim"), [(1, 6), (8, 3)])
def test_matches_numpy_reference(weighting, shift, cluster_size, dim):
    lengths = [7, 1, 4]
    frames = ragged_frames(lengths, dim, seed=cluster_size)
    cluster = AttentionCluster(cluster_size, weighting=weighting, shift=shift, fc2_units=5)
    output = cluster(frames).numpy()
    attention, alpha, beta = _params(cluster)
    assert output.shape == (3, cluster_size * dim)
    for video in range(3):
        want = reference.attention_cluster(
            frames[video].numpy().astype("float64"),
            weighting,
            attention,
            cluster_size,
            shift,
            alpha,
            beta,
        )
        np.testing.assert_allclose(output[video], want, rtol=3e-5, atol=3e-6)


def test_output_is_unit_major():
    frames = ragged_frames([5, 3], dim=4, seed=1)
    cluster = AttentionCluster(3, shift=False, return_attention=True)
    output, weights = cluster(frames)
    pooled = tf.matmul(weights, frames.to_tensor()).numpy()  # (batch, units, dim)
    np.testing.assert_allclose(output.numpy()[:, 4:8], pooled[:, 1], rtol=1e-6)


@pytest.mark.parametrize("cluster_size", [1, 2, 16])
def test_shifted_norms(cluster_size):
    frames = ragged_frames([6, 2, 9], dim=5, seed=2)
    output = AttentionCluster(cluster_size).call(frames).numpy()
    units = output.reshape(3, cluster_size, 5)
    np.testing.assert_allclose(np.linalg.norm(units, axis=-1), 1 / math.sqrt(cluster_size), rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(output, axis=-1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("weighting", ["average", "fc1", "fc2"])
def test_invariances(weighting):
    frames = ragged_frames([8, 3], dim=4, seed=3)
    cluster = AttentionCluster(4, weighting=weighting)
    from_ragged = cluster(frames).numpy()
    mask = tf.sequence_mask(frames.row_lengths(), maxlen=8)
    from_dense = cluster(frames.to_tensor(default_value=1e6), mask=mask).numpy()
    np.testing.assert_array_equal(from_ragged, from_dense)
    unpadded = cluster(frames[1:2].to_tensor()).numpy()
    np.testing.assert_allclose(unpadded[0], from_ragged[1], rtol=1e-5, atol=1e-7)
    # Extra padding beyond the longest video changes nothing.
    wider = tf.pad(frames.to_tensor(), [[0, 0], [0, 5], [0, 0]], constant_values=-3.0)
    wider_mask = tf.sequence_mask(frames.row_lengths(), maxlen=13)
    np.testing.assert_array_equal(cluster(wider, mask=wider_mask).numpy(), from_ragged)
    shuffled = frames.to_tensor().numpy()
    shuffled[0] = shuffled[0, np.random.default_rng(1).permutation(8)]
    from_shuffled = cluster(tf.RaggedTensor.from_tensor(shuffled, lengths=[8, 3])).numpy()
    np.testing.assert_allclose(from_shuffled, from_ragged, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shift", [True, False])
def test_zero_frame_video_gives_finite_output_and_gradients(shift):
    frames = ragged_frames([0, 2, 0], dim=3, seed=4)
    cluster = AttentionCluster(2, shift=shift)
    with tf.GradientTape() as tape:
        output = cluster(frames)
        loss = tf.reduce_sum(output * tf.range(6, dtype="float32"))
    assert np.all(np.isfinite(output.numpy()))
    for gradient in tape.gradient(loss, cluster.trainable_weights):
        assert np.all(np.isfinite(tf.convert_to_tensor(gradient).numpy()))
    if not shift:
        assert np.all(output.numpy()[[0, 2]] == 0.0)


def test_return_attention_shapes():
    frames = ragged_frames([3, 5], dim=2)
    output, weights = AttentionCluster(6, return_attention=True)(frames)
    assert output.shape == (2, 12)
    assert weights.shape == (2, 6, 5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="cluster_size"):
        AttentionCluster(0)
    with pytest.raises(ValueError, match="weighting"):
        AttentionCluster(2, weighting="fc9")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"cluster_size": 3},
        {"cluster_size": 2, "weighting": "fc2", "fc2_units": 3},
        {"cluster_size": 4, "shift": False},
        {"cluster_size": 2, "alpha_initializer": "ones", "beta_initializer": "zeros"},
    ],
)
def test_layer_contract(kwargs, tmp_path):
    frames = ragged_frames([4, 2, 6], dim=5)
    run_layer_test(AttentionCluster, kwargs, frames, (3, kwargs["cluster_size"] * 5), tmp_path)
