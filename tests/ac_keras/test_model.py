import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras.demo import toy_videos
from ac_keras.model import PREDICTIONS_KEY, attention_key, build_model, dense_inputs
from tests.ac_keras.layers.layer_test_utils import ragged_frames

FEATURES = {"rgb": 6, "audio": 3}


def _inputs(batch_lengths=((4, 1, 7), (2, 2, 0))):
    return {
        name: ragged_frames(lengths, dim, seed=i)
        for i, ((name, dim), lengths) in enumerate(zip(FEATURES.items(), batch_lengths, strict=True))
    }


def test_output_shapes_and_probabilities():
    model = build_model(FEATURES, {"rgb": 4, "audio": 2}, num_classes=5)
    probabilities = model(_inputs()).numpy()
    assert probabilities.shape == (3, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    multi = build_model(FEATURES, 2, num_classes=5, label_mode="multi")(_inputs()).numpy()
    assert np.all((multi > 0) & (multi < 1))
    assert not np.allclose(multi.sum(axis=1), 1.0)


def test_spec_string_and_cluster_size_per_modality():
    model = build_model({"rgb": 6, "flow": 6, "audio": 3}, {"rgb": 8, "flow": 4, "audio": 2}, num_classes=7)
    assert model.get_layer("concat").output.shape[-1] == 8 * 6 + 4 * 6 + 2 * 3
    assert model.get_layer("classifier").kernel.shape == (8 * 6 + 4 * 6 + 2 * 3, 7)


def test_dense_and_ragged_inputs_agree():
    ragged_model = build_model(FEATURES, 3, num_classes=4, weighting="fc2")
    dense_model = build_model(FEATURES, 3, num_classes=4, weighting="fc2", input_format="dense")
    dense_model.set_weights(ragged_model.get_weights())
    inputs = _inputs()
    dense = dense_inputs(inputs)
    # The padding's values must not matter: the mask leaves them out (bool masks are taken too).
    padded = {name: tf.where(dense[name + "_mask"][..., None] > 0, dense[name], 7.0) for name in inputs}
    bool_masks = {name + "_mask": tf.cast(dense[name + "_mask"], tf.bool) for name in inputs}
    for given in ({**dense, **padded}, {**padded, **bool_masks}):
        np.testing.assert_allclose(
            ragged_model(inputs).numpy(), dense_model(given).numpy(), rtol=1e-6, atol=1e-7
        )


def test_dense_inputs_layout():
    frames = tf.ragged.constant([[[1, 2], [3, 4]], [], [[5, 6]]], dtype=tf.uint8, ragged_rank=1)
    features = {"rgb": frames, "video_id": tf.constant(["a", "b", "c"])}
    dense = dense_inputs(features)
    assert sorted(dense) == ["rgb", "rgb_mask"]
    assert dense["rgb"].dtype == tf.uint8
    np.testing.assert_array_equal(dense["rgb"], [[[1, 2], [3, 4]], [[0, 0], [0, 0]], [[5, 6], [0, 0]]])
    np.testing.assert_array_equal(dense["rgb_mask"], [[1, 1], [0, 0], [1, 0]])
    assert dense["rgb_mask"].dtype == tf.int32
    fixed = dense_inputs(features, num_frames=4)
    assert fixed["rgb"].shape == (3, 4, 2) and fixed["rgb_mask"].shape == (3, 4)
    np.testing.assert_array_equal(fixed["rgb_mask"], [[1, 1, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    with pytest.raises(
        tf.errors.InvalidArgumentError, match="modality rgb has videos longer than num_frames=1"
    ):
        dense_inputs(features, num_frames=1)


def test_return_attention_outputs():
    model = build_model(FEATURES, {"rgb": 4, "audio": 2}, num_classes=5, return_attention=True)
    outputs = model(_inputs())
    assert set(outputs) == {PREDICTIONS_KEY, attention_key("rgb"), attention_key("audio")}
    assert outputs[attention_key("rgb")].shape == (3, 4, 7)
    np.testing.assert_allclose(outputs[attention_key("audio")].numpy()[0].sum(axis=-1), 1.0, rtol=1e-6)
    # The video without audio frames has all-zero audio attention, and finite predictions.
    assert np.all(outputs[attention_key("audio")].numpy()[2] == 0.0)
    assert np.all(np.isfinite(outputs[PREDICTIONS_KEY].numpy()))


def test_save_and_load_gives_identical_outputs(tmp_path):
    model = build_model(FEATURES, {"rgb": 4, "audio": 2}, num_classes=5, weighting="fc2", shift=True)
    inputs = _inputs()
    path = tmp_path / "model.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    np.testing.assert_array_equal(model(inputs).numpy(), reloaded(inputs).numpy())
    config = model.get_config()
    rebuilt = keras.Model.from_config(config)
    rebuilt.set_weights(model.get_weights())
    np.testing.assert_array_equal(model(inputs).numpy(), rebuilt(inputs).numpy())


def test_mixed_precision_model():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(FEATURES, 4, num_classes=5)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    assert model.get_layer("rgb_cluster").compute_dtype == "float16"
    probabilities = model(_inputs())
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-3)
    # The same weights in float32 give the same probabilities, to float16's precision (layer_test_utils).
    reference = build_model(FEATURES, 4, num_classes=5)
    reference.set_weights(model.get_weights())
    np.testing.assert_allclose(probabilities.numpy(), reference(_inputs()).numpy(), rtol=1e-2, atol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"cluster_sizes": {"rgb": 2}}, "missing \\['audio'\\]"),
        ({"cluster_sizes": {"rgb": 2, "audio": 2, "flow": 1}}, "unknown \\['flow'\\]"),
        ({"num_classes": 0}, "num_classes"),
        ({"label_mode": "multiple"}, "label_mode"),
        ({"weighting": "fc"}, "weighting"),
        ({"input_format": "sparse"}, "input_format"),
        ({"dropout": 1.0}, "dropout"),
        ({"features": {}}, "at least one modality"),
        ({"features": {"rgb": 0}}, "rgb"),
    ],
)
def test_bad_arguments(kwargs, message):
    arguments = {"features": FEATURES, "cluster_sizes": 2, "num_classes": 3, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_model(**arguments)


def _fit_toy(strategy):
    keras.utils.set_random_seed(1)
    features, labels = toy_videos(512, num_classes=4, seed=2, features=FEATURES)
    labels = tf.one_hot(labels, 4)
    # Keras 3 `fit` cannot distribute ragged tensors (values.py: 'RaggedTensor' has no attribute 'device'),
    # so this test feeds the dense + mask input format; ac_keras.train uses its own loop with strategy.run.
    dense = dense_inputs(features)
    dataset = tf.data.Dataset.from_tensor_slices((dense, labels)).batch(32)
    with strategy.scope():
        model = build_model(
            FEATURES, {"rgb": 4, "audio": 1}, num_classes=4, dropout=0.1, input_format="dense"
        )
        model.compile(
            optimizer=keras.optimizers.Adam(0.01), loss="categorical_crossentropy", metrics=["accuracy"]
        )
    history = model.fit(dataset, epochs=8, verbose=0, shuffle=False)
    return history.history


@pytest.mark.slow  # 8 epochs of 16 steps
@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
def test_tiny_model_learns_toy_problem(strategy_name):
    if strategy_name == "mirrored":
        devices = [device.name for device in tf.config.list_logical_devices("CPU")]
        assert len(devices) >= 2, "tests/conftest.py configures two logical CPU devices"
        # Reduction through one device: collective all-reduce instance keys clash between the several
        # MirroredStrategy objects one pytest process creates.
        strategy = tf.distribute.MirroredStrategy(
            devices[:2], cross_device_ops=tf.distribute.ReductionToOneDevice()
        )
        assert strategy.num_replicas_in_sync == 2
    else:
        strategy = tf.distribute.get_strategy()
    history = _fit_toy(strategy)
    # Chance is 25% accuracy and loss ln(4) = 1.39.
    assert history["loss"][-1] < 0.5 * history["loss"][0], history["loss"]
    assert history["accuracy"][-1] > 0.8, history["accuracy"]
