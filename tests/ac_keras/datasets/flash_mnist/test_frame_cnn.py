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


def test_feature_extractor_gives_the_features_layer():
    model = fm.build_frame_cnn()
    frames = np.random.default_rng(0).integers(0, 256, size=(2, 3, 28, 28), dtype=np.uint8)
    features = fm.feature_extractor(model, batch_size=4)(frames)  # 6 frames: two forward passes
    assert features.shape == (2, 3, 50) and features.dtype == np.float32
    features_layer = keras.Model(model.inputs, model.get_layer("features").output)
    expected = features_layer.predict_on_batch(frames.reshape(6, 28, 28).astype(np.float32))
    np.testing.assert_allclose(features.reshape(6, 50), expected, rtol=1e-5, atol=1e-6)
    assert np.isnan(fm.frame_accuracy(model, frames[:0, 0], np.zeros(0, np.int64)))
