import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras.datasets.flash_mnist.frame_cnn import build_frame_cnn
from ac_keras.errors import DataError, MissingDataError, UsageError
from ac_keras.extraction.backbones import BACKBONES, file_sha256, make_frame_embedder


def random_frames(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def assert_close(actual, expected, rtol=1e-4):
    """Equal up to `rtol` of the largest magnitude: randomly initialized backbones give features of any scale
    (about 1e-12 for mobilenet_v2), so an absolute tolerance would pass anything."""
    expected = np.asarray(expected)
    scale = np.abs(expected).max()
    assert scale > 0
    np.testing.assert_allclose(actual, expected, rtol=0, atol=rtol * scale)


def assert_differs(first, second, rtol=1e-2):
    assert np.abs(np.asarray(first) - np.asarray(second)).max() > rtol * np.abs(np.asarray(second)).max()


@pytest.mark.parametrize("name, module_name", [("mobilenet_v2", "mobilenet_v2"), ("resnet50", "resnet")])
def test_default_size_dim_and_own_preprocessing(name, module_name):
    """mobilenet_v2 scales to [-1, 1]; resnet50 flips RGB to BGR and subtracts the ImageNet mean."""
    embedder = make_frame_embedder(name, weights="none", seed=0)
    size = BACKBONES[name].input_size
    assert embedder.input_size == (size, size) and embedder.channels == 3
    assert embedder.output_dim == BACKBONES[name].feature_dim
    frames = random_frames((2, size, size, 3))
    features = embedder.embed(frames)
    assert features.dtype == np.float32 and features.shape == (2, BACKBONES[name].feature_dim)
    module = getattr(keras.applications, module_name)
    by_hand = embedder.model(module.preprocess_input(frames.astype(np.float32)), training=False)
    assert_close(features, by_hand)
    assert_differs(features[0], features[1])
    assert_differs(features, embedder.model(frames.astype(np.float32), training=False))
    assert embedder.description["preprocessing"] == f"keras.applications.{module_name}.preprocess_input"


def test_frames_are_resized_bilinear_without_antialias():
    embedder = make_frame_embedder("mobilenet_v2", weights="none", input_size=(48, 64))
    frames = random_frames((3, 30, 100, 3))
    resized = tf.image.resize(frames.astype(np.float32), (48, 64), method="bilinear", antialias=False)
    by_hand = embedder.model(keras.applications.mobilenet_v2.preprocess_input(resized), training=False)
    assert_close(embedder.embed(frames, batch_size=2), by_hand)
    # Gray frames are repeated to RGB.
    gray = random_frames((2, 48, 64, 1))
    assert_close(embedder.embed(gray), embedder.embed(np.repeat(gray, 3, axis=-1)))


def test_same_seed_same_weights_other_seed_other_weights():
    frames = random_frames((2, 64, 64, 3))
    first = make_frame_embedder("mobilenet_v2", weights="none", seed=5, input_size=64).embed(frames)
    again = make_frame_embedder("mobilenet_v2", weights="none", seed=5, input_size=64).embed(frames)
    other = make_frame_embedder("mobilenet_v2", weights="none", seed=6, input_size=64).embed(frames)
    np.testing.assert_array_equal(first, again)
    assert_differs(other, first)


def test_weights_file(tmp_path):
    original = make_frame_embedder("mobilenet_v2", weights="none", seed=1, input_size=64)
    path = str(tmp_path / "x.weights.h5")
    original.model.save_weights(path)
    loaded = make_frame_embedder("mobilenet_v2", weights=path, seed=2, input_size=64)
    frames = random_frames((2, 64, 64, 3))
    np.testing.assert_array_equal(loaded.embed(frames), original.embed(frames))
    assert loaded.description["weights"] == path
    assert (
        loaded.description["weights_sha256"]
        == hashlib.sha256((tmp_path / "x.weights.h5").read_bytes()).hexdigest()
    )
    assert loaded.description["random_init"] is False
    with pytest.raises(DataError, match=r"x.weights.h5 does not fit mobilenet_v2 at 64x64x2"):
        make_frame_embedder("mobilenet_v2", weights=path, channels=2, input_size=64)
    with pytest.raises(MissingDataError, match="absent.weights.h5"):
        make_frame_embedder("mobilenet_v2", weights=str(tmp_path / "absent.weights.h5"))


def test_description_is_json_and_random_weights_are_loud(caplog):
    embedder = make_frame_embedder("mobilenet_v2", weights="none", seed=3, input_size=32)
    assert "RANDOM WEIGHTS" in caplog.text and "for tests only" in caplog.text
    description = json.loads(json.dumps(embedder.description))
    assert description["model"] == "mobilenet_v2"
    assert (
        description["weights"] == "none" and description["seed"] == 3 and description["random_init"] is True
    )
    assert description["input_size"] == [32, 32] and description["pooling"] == "avg"
    assert description["preprocessing"] == "keras.applications.mobilenet_v2.preprocess_input"


def test_unknown_name_and_bad_arguments():
    with pytest.raises(UsageError) as raised:
        make_frame_embedder("resnet9000")
    assert "resnet152" in str(raised.value) and "inception_resnet_v2" in str(raised.value)
    assert ".keras" in str(raised.value)
    with pytest.raises(UsageError, match="3-channel"):
        make_frame_embedder("mobilenet_v2", weights="imagenet", channels=2)
    # Per-channel mean subtraction takes RGB only.
    with pytest.raises(UsageError, match="keras.applications.resnet.preprocess_input"):
        make_frame_embedder("resnet50", weights="none", channels=2)
    with pytest.raises(MissingDataError, match="absent.keras"):
        make_frame_embedder("/nonexistent/absent.keras")


def test_flow_frames_with_a_two_channel_model():
    embedder = make_frame_embedder("mobilenet_v2", weights="none", channels=2, input_size=32)
    assert embedder.embed(random_frames((2, 40, 40, 2))).shape == (2, 1280)
    with pytest.raises(UsageError, match="3-channel frames cannot"):
        embedder.embed(random_frames((1, 32, 32, 3)))
    rgb = make_frame_embedder("mobilenet_v2", weights="none", input_size=32)
    with pytest.raises(UsageError, match="takes 3-channel frames; 2-channel"):
        rgb.embed(random_frames((1, 32, 32, 2)))


def test_flash_mnist_frame_cnn_keras_file(tmp_path):
    """The frame CNN takes (28, 28) gray pixels in 0..255 and rescales them itself."""
    keras.utils.set_random_seed(0)
    cnn = build_frame_cnn()
    path = str(tmp_path / "frame_cnn.keras")
    cnn.save(path)
    embedder = make_frame_embedder(path, output_layer="features")
    assert embedder.input_size == (28, 28) and embedder.channels == 1 and embedder.output_dim == 50
    frames = random_frames((3, 40, 36, 3))
    gray = tf.image.rgb_to_grayscale(frames.astype(np.float32))
    pixels = tf.image.resize(gray, (28, 28), method="bilinear", antialias=False)[..., 0]
    features_model = keras.Model(cnn.inputs, cnn.get_layer("features").output)
    by_hand = features_model(pixels, training=False)
    assert_close(embedder.embed(frames), by_hand)
    assert_differs(by_hand[0], by_hand[1])
    description = json.loads(json.dumps(embedder.description))
    assert description["model"] == path and description["model_sha256"] == file_sha256(path)
    assert description["output_layer"] == "features" and description["preprocessing"].startswith("none")
    # Without output_layer, the output is the model's: the 11 class probabilities.
    assert make_frame_embedder(path).output_dim == 11
    with pytest.raises(UsageError, match="no layer 'feature'"):
        make_frame_embedder(path, output_layer="feature")
    with pytest.raises(UsageError, match="carries its own weights"):
        make_frame_embedder(path, weights="none")


def test_keras_model_with_a_feature_map_output_or_unknown_size(tmp_path):
    inputs = keras.Input((None, None, 3))
    feature_map = keras.layers.Conv2D(4, 3)(keras.layers.Rescaling(1 / 255)(inputs))
    map_path = str(tmp_path / "map.keras")
    keras.Model(inputs, feature_map).save(map_path)
    with pytest.raises(DataError, match="End it with pooling"):
        make_frame_embedder(map_path)

    pooled = keras.layers.GlobalAveragePooling2D()(feature_map)
    model = keras.Model(inputs, pooled)
    pooled_path = str(tmp_path / "pooled.keras")
    model.save(pooled_path)
    frames = random_frames((2, 20, 30, 3))
    as_they_are = make_frame_embedder(pooled_path)
    assert as_they_are.input_size is None
    assert_close(as_they_are.embed(frames), model(frames.astype(np.float32)))
    resized = make_frame_embedder(pooled_path, input_size=(10, 15))
    expected = model(tf.image.resize(frames.astype(np.float32), (10, 15), antialias=False))
    assert_close(resized.embed(frames), expected)
    assert_differs(resized.embed(frames), as_they_are.embed(frames))


def test_file_sha256(tmp_path):
    path = tmp_path / "bytes.bin"
    content = bytes(range(256)) * 1000
    path.write_bytes(content)
    assert file_sha256(str(path), chunk_size=1000) == hashlib.sha256(content).hexdigest()
    with pytest.raises(MissingDataError, match="absent.bin"):
        file_sha256(str(tmp_path / "absent.bin"))


def test_every_backbone_names_a_keras_application_and_its_preprocessing():
    for name, info in BACKBONES.items():
        assert callable(info.build), name
        assert callable(info.preprocess_input), name


# Built here: one of each family (the others share its constructor code and differ only in depth/width).
BUILT_BACKBONES = (
    "convnext_tiny",
    "densenet121",
    "efficientnet_v2_s",
    "inception_resnet_v2",
    "resnet152",
    "xception",
)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUILT_BACKBONES)
def test_backbones_at_their_default_size(name):
    embedder = make_frame_embedder(name, weights="none")
    info = BACKBONES[name]
    assert embedder.input_size == (info.input_size, info.input_size)
    # Built at its size with its pooled output; embed() itself is run on two backbones by the fast tests.
    assert embedder.model.output_shape == (None, info.feature_dim)
