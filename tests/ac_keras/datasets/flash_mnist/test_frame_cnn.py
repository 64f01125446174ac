"""Tests of the Flash-MNIST frame CNN (ac_keras/datasets/flash_mnist/frame_cnn.py)."""

import keras
import numpy as np

from ac_keras.datasets import flash_mnist as fm


def test_cnn_frames(pools, noise):
    train_pool, _ = pools
    frames, labels = fm.make_cnn_frames(np.random.default_rng(0), train_pool, noise)
    counts = np.bincount(labels, minlength=11)
    np.testing.assert_array_equal(counts[:10], np.array(train_pool.counts_per_class()) * 5)
    assert counts[10] == round(0.1 * 5 * len(train_pool))
    assert frames.shape == (len(labels), 28, 28)
    _, few = fm.make_cnn_frames(np.random.default_rng(0), train_pool, noise, noise_frames=7)
    assert np.sum(few == fm.NOISE_CLASS) == 7


def test_frame_cnn_architecture():
    model = fm.build_frame_cnn()
    assert model.output_shape == (None, 11)
    assert model.get_layer("features").output.shape == (None, 50)
    assert model.get_layer("conv1").filters == 10 and model.get_layer("conv1").kernel_size == (5, 5)
    assert model.get_layer("conv2").filters == 20 and model.get_layer("conv2").kernel_size == (5, 5)


def _layer_after(model, name):
    """The layer whose input is `name`'s output (the model is a chain)."""
    output = model.get_layer(name).output
    (following,) = [layer for layer in model.layers if layer.input is output]
    return following


def test_frame_cnn_has_the_authors_dropouts():
    # The authors' code: Dropout2d(0.5) on conv2's output before its pooling, dropout 0.5 between the
    # 50-d ReLU layer (the features) and the 11-way layer.
    model = fm.build_frame_cnn()
    conv2_dropout = _layer_after(model, "conv2")
    assert isinstance(conv2_dropout, keras.layers.SpatialDropout2D) and conv2_dropout.rate == 0.5
    assert _layer_after(model, conv2_dropout.name).name == "pool2"
    features_dropout = _layer_after(model, "features")
    assert type(features_dropout) is keras.layers.Dropout and features_dropout.rate == 0.5
    assert _layer_after(model, features_dropout.name).name == "probabilities"
    assert model.get_layer("features").activation is keras.activations.relu
    dropouts = [
        layer for layer in model.layers if isinstance(layer, keras.layers.Dropout | type(conv2_dropout))
    ]
    assert [layer.name for layer in dropouts] == ["conv2_dropout", "features_dropout"]


def test_frame_cnn_dropout_acts_in_training_only():
    model = fm.build_frame_cnn()
    frames = np.random.default_rng(1).integers(0, 256, size=(8, 28, 28), dtype=np.uint8)
    extract = fm.feature_extractor(model)
    np.testing.assert_array_equal(extract(frames), extract(frames))
    inputs = frames.astype(np.float32)
    np.testing.assert_array_equal(model(inputs, training=False), model(inputs, training=False))
    assert not np.allclose(model(inputs, training=True), model(inputs, training=False))


def test_feature_extractor_gives_the_features_layer():
    model = fm.build_frame_cnn()
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 3, 28, 28), dtype=np.uint8)
    features = fm.feature_extractor(model, batch_size=4)(frames)  # 6 frames: two forward passes
    assert features.shape == (2, 3, 50) and features.dtype == np.float32
    features_layer = keras.Model(model.inputs, model.get_layer("features").output)
    expected = features_layer.predict_on_batch(frames.reshape(6, 28, 28).astype(np.float32))
    np.testing.assert_allclose(features.reshape(6, 50), expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(fm.frame_accuracy(model, frames[:0, 0], np.zeros(0, np.int64)))
