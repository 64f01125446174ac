import numpy as np
import pytest
import tensorflow as tf

from ac_keras.layers import AttentionUnit
from tests.ac_keras.layers import reference
from tests.ac_keras.layers.layer_test_utils import (
    MIXED_POLICIES,
    assert_close_to_float32,
    ragged_frames,
    run_layer_test,
)


def _randomize(layer, seed):
    """Gives every weight random values so the softmax is far from uniform."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(scale=1.5, size=weight.shape).astype("float32"))
    return {weight.name: weight.numpy().astype("float64") for weight in layer.weights}


@pytest.mark.parametrize("weighting", ["average", "fc1", "fc2"])
@pytest.mark.parametrize(("num_units", "dim"), [(1, 3), (4, 7), (16, 5)])
def test_matches_numpy_reference(weighting, num_units, dim):
    lengths = [1, 6, 3, 11]
    frames = ragged_frames(lengths, dim, seed=num_units)
    layer = AttentionUnit(num_units=num_units, weighting=weighting, fc2_units=3, return_attention=True)
    layer.build((None, None, dim))
    params = _randomize(layer, seed=dim)
    pooled, weights = layer(frames)
    for video, length in enumerate(lengths):
        video_frames = frames[video].numpy().astype("float64")
        want_pooled, want_weights = reference.attention_unit(video_frames, weighting, params, num_units)
        np.testing.assert_allclose(pooled[video].numpy(), want_pooled, rtol=2e-5, atol=2e-6)
        np.testing.assert_allclose(weights[video, :, :length].numpy(), want_weights, rtol=2e-5, atol=1e-7)
        # Padding positions of the shorter videos carry exactly zero weight.
        assert np.all(weights[video, :, length:].numpy() == 0.0)


@pytest.mark.parametrize("weighting", ["average", "fc1", "fc2"])
def test_weights_sum_to_one_and_permutation_invariance(weighting):
    frames = ragged_frames([9, 4], dim=6, seed=3)
    layer = AttentionUnit(num_units=5, weighting=weighting, return_attention=True)
    pooled, weights = layer(frames)
    np.testing.assert_allclose(weights.numpy().sum(axis=-1), 1.0, rtol=1e-6)
    order = np.random.default_rng(0).permutation(9)
    dense = frames.to_tensor().numpy()
    dense[0, :9] = dense[0, order]
    permuted = tf.RaggedTensor.from_tensor(dense, lengths=[9, 4])
    permuted_pooled, permuted_weights = layer(permuted)
    np.testing.assert_allclose(permuted_pooled.numpy(), pooled.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(permuted_weights[0, :, :9].numpy(), weights.numpy()[0][:, order], rtol=1e-5)


def test_average_is_masked_mean_repeated_per_unit():
    frames = ragged_frames([5, 2, 1], dim=4, seed=1)
    pooled = AttentionUnit(num_units=3, weighting="average")(frames).numpy()
    for video in range(3):
        np.testing.assert_allclose(
            pooled[video], np.tile(frames[video].numpy().mean(axis=0), (3, 1)), rtol=1e-6
        )
    average = AttentionUnit(num_units=3, weighting="average")
    average.build((None, None, 4))
    assert average.weights == []


@pytest.mark.parametrize("weighting", ["average", "fc1", "fc2"])
def test_dense_mask_ragged_and_unpadded_agree(weighting):
    frames = ragged_frames([3, 7], dim=5, seed=2)
    layer = AttentionUnit(num_units=4, weighting=weighting)
    from_ragged = layer(frames).numpy()
    # Dense padding holds garbage (even NaN) that the mask must hide completely.
    dense = frames.to_tensor(default_value=np.nan)
    mask = tf.sequence_mask(frames.row_lengths(), maxlen=7)
    from_dense = layer(dense, mask=mask).numpy()
    np.testing.assert_array_equal(from_ragged, from_dense)
    for video in range(2):
        unpadded = layer(frames[video : video + 1].to_tensor()).numpy()
        np.testing.assert_allclose(unpadded[0], from_ragged[video], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("weighting", ["average", "fc1", "fc2"])
def test_zero_frame_video_is_finite_with_finite_gradients(weighting):
    frames = ragged_frames([0, 3], dim=4, seed=4)
    layer = AttentionUnit(num_units=2, weighting=weighting, return_attention=True)
    with tf.GradientTape() as tape:
        tape.watch(frames.flat_values)
        pooled, weights = layer(frames)
        loss = tf.reduce_sum(pooled)
    assert np.all(pooled[0].numpy() == 0.0)
    assert np.all(weights[0].numpy() == 0.0)
    gradients = tape.gradient(loss, [frames.flat_values, *layer.trainable_weights])
    for gradient in gradients:
        assert np.all(np.isfinite(tf.convert_to_tensor(gradient).numpy()))


def test_fc1_weight_names_and_shapes():
    layer = AttentionUnit(num_units=6, weighting="fc1")
    layer.build((None, None, 10))
    assert {w.path.split("/")[-1]: tuple(w.shape) for w in layer.weights} == {
        "kernel": (10, 6),
        "bias": (6,),
    }


def test_fc2_units_have_independent_parameters():
    layer = AttentionUnit(num_units=3, weighting="fc2", fc2_units=4, return_attention=True)
    frames = ragged_frames([5], dim=6, seed=5)
    layer(frames)
    shapes = {w.path.split("/")[-1]: tuple(w.shape) for w in layer.weights}
    assert shapes == {
        "hidden_kernel": (6, 12),
        "hidden_bias": (12,),
        "kernel": (3, 4),
        "bias": (3,),
    }
    _, before = layer(frames)
    # Changing unit 1's hidden parameters moves unit 1's weights only.
    hidden_kernel = layer.hidden_kernel.numpy()
    hidden_kernel[:, 4:8] += 1.0
    layer.hidden_kernel.assign(hidden_kernel)
    _, after = layer(frames)
    changed = np.any(np.abs(after.numpy() - before.numpy()) > 1e-7, axis=-1)[0]
    assert changed.tolist() == [False, True, False]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_units": 0}, "num_units"),
        ({"weighting": "fc3"}, "weighting"),
        ({"fc2_units": -1}, "fc2_units"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AttentionUnit(**kwargs)


@pytest.mark.parametrize("weighting", ["fc1", "fc2"])
def test_layer_contract(weighting, tmp_path):
    frames = ragged_frames([4, 2, 6], dim=5)
    kwargs = {"num_units": 3, "weighting": weighting, "fc2_units": 4}
    run_layer_test(AttentionUnit, kwargs, frames, (3, 3, 5), tmp_path)


def test_average_layer_contract():
    # `average` has no weights, so the fit and save parts of run_layer_test do not apply.
    frames = ragged_frames([4, 2, 6], dim=5)
    layer = AttentionUnit(num_units=3, weighting="average")
    assert AttentionUnit.from_config(layer.get_config()).get_config() == layer.get_config()
    assert tuple(layer(frames).shape) == (3, 3, 5)
    for policy in MIXED_POLICIES:
        mixed = AttentionUnit(num_units=3, weighting="average", dtype=policy)
        assert_close_to_float32(mixed(frames), layer(frames), policy)
