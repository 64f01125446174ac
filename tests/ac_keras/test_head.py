"""The training step's fused dropout + classifier (ac_keras.head) against NumPy and Keras references."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras import head
from ac_keras.model import build_model, model_parts


def _key(a, b):
    return tf.constant([a, b], tf.uint32)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_fraction_matches_rate(rate):
    mask = head.keep_mask([256, 4000], _key(7, 11), rate).numpy()
    kept = mask.mean()
    sigma = np.sqrt(rate * (1 - rate) / mask.size)
    assert abs(kept - (1 - rate)) < 5 * sigma
    # Rows and columns are not copies of each other, and no column is always kept or dropped.
    assert abs(mask[:, 0].mean() - (1 - rate)) < 5 * np.sqrt(rate * (1 - rate) / 256)
    assert not np.array_equal(mask[0], mask[1])
    assert not np.array_equal(mask[:, 0], mask[:, 1])


def test_mask_bits_are_uncorrelated():
    mask = head.keep_mask([128, 2048], _key(3, 5), 0.5).numpy().astype(np.float64) - 0.5
    # Neighbours along columns and rows, and a column shift of 1,024, all correlate at noise level.
    for left, right in [
        (mask[:, :-1], mask[:, 1:]),
        (mask[:-1], mask[1:]),
        (mask[:, :1024], mask[:, 1024:]),
    ]:
        correlation = np.mean(left * right) / 0.25
        assert abs(correlation) < 5 / np.sqrt(left.size)


def test_mask_is_a_function_of_the_key():
    first = head.keep_mask([64, 300], _key(1, 2), 0.5).numpy()
    np.testing.assert_array_equal(first, head.keep_mask([64, 300], _key(1, 2), 0.5).numpy())
    for other in (_key(1, 3), _key(2, 2)):
        different = head.keep_mask([64, 300], other, 0.5).numpy()
        assert 0.4 < np.mean(first != different) < 0.6


def test_step_key_differs_by_step_replica_and_seed():
    keys = {
        tuple(head.step_key(seed, step, replica).numpy().tolist())
        for seed in (0, 1)
        for step in (0, 1, 2)
        for replica in (0, 1)
    }
    assert len(keys) == 12
    np.testing.assert_array_equal(head.step_key(5, 9, 1).numpy(), head.step_key(5, 9, 1).numpy())


@pytest.mark.parametrize("rate", [0.0, 0.6])
def test_dropout_dense_matches_numpy_reference_and_its_gradients(rate):
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(6, 40)).astype(np.float32))
    kernel = tf.constant(rng.normal(size=(40, 7)).astype(np.float32))
    bias = tf.constant(rng.normal(size=(7,)).astype(np.float32))
    upstream = rng.normal(size=(6, 7)).astype(np.float32)
    key = _key(12, 34)
    with tf.GradientTape() as tape:
        tape.watch([inputs, kernel, bias])
        logits = head.dropout_dense(inputs, kernel, bias, key, rate)
        loss = tf.reduce_sum(logits * upstream)
    grads = tape.gradient(loss, [inputs, kernel, bias])

    keep = head.keep_mask([6, 40], key, rate).numpy() if rate else np.ones((6, 40), bool)
    if rate:
        assert 0 < keep.mean() < 1
    dropped = np.where(keep, inputs.numpy() / (1 - rate), 0.0)
    np.testing.assert_allclose(logits.numpy(), dropped @ kernel.numpy() + bias.numpy(), rtol=1e-5, atol=1e-5)
    grad_dropped = upstream @ kernel.numpy().T
    np.testing.assert_allclose(
        grads[0].numpy(), np.where(keep, grad_dropped / (1 - rate), 0.0), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(grads[1].numpy(), dropped.T @ upstream, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[2].numpy(), upstream.sum(0), rtol=1e-5, atol=1e-5)


def test_training_head_is_the_models_head_with_a_different_mask():
    model = build_model({"rgb": 12, "audio": 5}, {"rgb": 3, "audio": 2}, num_classes=4, dropout=0.0)
    assert head.head_unsupported(model) is None
    rng = np.random.default_rng(1)
    features = {
        "rgb": tf.ragged.constant(rng.normal(size=(3, 5, 12)).astype(np.float32), ragged_rank=1),
        "audio": tf.ragged.constant(rng.normal(size=(3, 5, 5)).astype(np.float32), ragged_rank=1),
    }
    logits_model = keras.Model(model.inputs, model.get_layer("classifier").output)
    training_head = head.TrainingHead(model, seed=0)
    # With dropout 0 the fast head computes exactly the Keras layers' logits, and the same gradients.
    with tf.GradientTape(persistent=True) as tape:
        expected = logits_model(features, training=True)
        got = training_head(features, step=0)
        expected_loss = tf.reduce_sum(tf.square(expected))
        got_loss = tf.reduce_sum(tf.square(got))
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    for want, have in zip(
        tape.gradient(expected_loss, model.trainable_variables),
        tape.gradient(got_loss, model.trainable_variables),
        strict=True,
    ):
        np.testing.assert_allclose(have.numpy(), want.numpy(), rtol=1e-4, atol=1e-5)


def test_training_head_masks_change_with_the_step():
    model = build_model({"rgb": 12}, {"rgb": 3}, num_classes=4, dropout=0.5)
    features = {"rgb": tf.ragged.constant(np.ones((2, 4, 12), np.float32), ragged_rank=1)}
    training_head = head.TrainingHead(model, seed=3)
    first = training_head(features, step=0).numpy()
    np.testing.assert_array_equal(first, training_head(features, step=0).numpy())
    assert not np.allclose(first, training_head(features, step=1).numpy())
    assert not np.allclose(first, training_head(features, step=0, replica=1).numpy())


def test_unsupported_heads_are_named():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_model({"rgb": 8}, {"rgb": 2}, num_classes=3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert "mixed_bfloat16" in head.head_unsupported(model)
    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    assert "not built by ac_keras.model.build_model" in head.head_unsupported(other)
    with pytest.raises(ValueError, match="does not support"):
        head.TrainingHead(other, seed=0)


def test_the_training_loop_warns_in_one_line_when_the_fused_head_does_not_apply(caplog):
    from ac_keras.trainer import make_training_head

    inputs = keras.Input((4,))
    other = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    with caplog.at_level("WARNING", logger="ac_keras"):
        assert make_training_head(other, seed=0, fused=True) is None
        assert make_training_head(other, seed=0, fused=False) is None  # asked for: nothing to say
    assert [record.levelname for record in caplog.records] == ["WARNING"]
    message = caplog.records[0].getMessage()
    assert "not built by ac_keras.model.build_model" in message and len(message.splitlines()) == 1


def test_the_head_reaches_the_model_through_model_parts():
    model = build_model({"rgb": 8, "audio": 4}, {"rgb": 2, "audio": 3}, num_classes=3, dropout=0.3)
    parts = model_parts(model)
    assert isinstance(parts.dropout, keras.layers.Dropout) and parts.dropout.rate == 0.3
    assert isinstance(parts.classifier, keras.layers.Dense) and parts.classifier.units == 3
    assert sorted(parts.clusters) == ["audio", "rgb"]
    assert parts.clusters["rgb"].cluster_size == 2
    training_head = head.TrainingHead(model, seed=0)
    assert training_head.classifier is parts.classifier
    assert training_head.rate == 0.3
    averaged = build_model({"rgb": 8}, None, num_classes=3, aggregator="average")
    assert model_parts(averaged).clusters == {}
