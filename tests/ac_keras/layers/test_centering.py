"""FeatureCentering and the model's `feature_means`: subtraction, invariance, saving, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras.layers import FeatureCentering
from ac_keras.model import build_model


def _ragged(rng, lengths, dim):
    rows = [rng.normal(size=(length, dim)).astype("float32") for length in lengths]
    return tf.RaggedTensor.from_row_lengths(np.concatenate(rows), lengths), rows


def test_subtracts_the_mean_from_every_real_frame_ragged_and_dense():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=6).astype("float32")
    frames, rows = _ragged(rng, [3, 1, 4], 6)
    layer = FeatureCentering(mean)
    centered = layer(frames)
    assert isinstance(centered, tf.RaggedTensor)
    np.testing.assert_array_equal(centered.row_lengths().numpy(), [3, 1, 4])
    np.testing.assert_allclose(centered.flat_values.numpy(), np.concatenate(rows) - mean, rtol=1e-6)
    dense = frames.to_tensor().numpy()
    np.testing.assert_allclose(layer(dense).numpy(), dense - mean, rtol=1e-6)
    assert not layer.trainable_weights and len(layer.non_trainable_weights) == 1


def test_centering_model_equals_the_plain_model_on_centered_frames():
    # The layer is exactly "subtract the mean, then the paper's model": same weights, same outputs.
    rng = np.random.default_rng(1)
    dims = {"rgb": 5, "audio": 3}
    means = {"rgb": rng.uniform(0, 3, size=5).astype("float32")}
    centered_model = build_model(dims, {"rgb": 4, "audio": 2}, 7, feature_means=means)
    plain_model = build_model(dims, {"rgb": 4, "audio": 2}, 7)
    plain_model.set_weights([w for w in centered_model.get_weights() if w.shape != (5,)])
    rgb, rgb_rows = _ragged(rng, [4, 2], 5)
    audio, _ = _ragged(rng, [4, 2], 3)
    shifted = tf.RaggedTensor.from_row_lengths(np.concatenate(rgb_rows) - means["rgb"], [4, 2])
    np.testing.assert_allclose(
        centered_model({"rgb": rgb, "audio": audio}).numpy(),
        plain_model({"rgb": shifted, "audio": audio}).numpy(),
        rtol=1e-5,
        atol=1e-7,
    )
    # Centering changes the prediction of the shifted model (non-zero mean), so the layer is not a no-op.
    assert not np.allclose(
        centered_model({"rgb": rgb, "audio": audio}).numpy(),
        plain_model({"rgb": rgb, "audio": audio}).numpy(),
    )


def test_dense_input_model_ignores_padding_after_centering():
    rng = np.random.default_rng(2)
    means = {"rgb": rng.uniform(1, 2, size=4).astype("float32")}
    model = build_model({"rgb": 4}, 3, 5, input_format="dense", feature_means=means)
    frames = rng.normal(size=(2, 6, 4)).astype("float32")
    mask = np.array([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1]], np.int32)
    padded_differently = frames.copy()
    padded_differently[0, 3:] = 123.0
    first = model({"rgb": frames, "rgb_mask": mask}).numpy()
    second = model({"rgb": padded_differently, "rgb_mask": mask}).numpy()
    np.testing.assert_allclose(first, second, rtol=1e-6)


def test_saved_model_keeps_the_mean(tmp_path):
    mean = np.arange(4, dtype="float32")
    model = build_model({"rgb": 4}, 2, 3, feature_means={"rgb": mean})
    path = tmp_path / "model.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    np.testing.assert_array_equal(restored.get_layer("rgb_centering").mean.numpy(), mean)
    frames, _ = _ragged(np.random.default_rng(3), [2, 5], 4)
    np.testing.assert_allclose(restored({"rgb": frames}).numpy(), model({"rgb": frames}).numpy(), rtol=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"feature_means": {"rgb": np.zeros(3)}},
            r"`feature_means\['rgb'\]` has 3 values; the modality's dim is 4",
        ),
        (
            {"feature_means": {"flow": np.zeros(4)}},
            r"names modalities \['flow'\] that are not among \['rgb'\]",
        ),
        ({"feature_means": {"rgb": [0.0, np.nan, 0.0, 0.0]}}, r"`mean` must be a finite 1-D vector"),
    ],
)
def test_bad_means_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model({"rgb": 4}, 2, 3, **kwargs)


def _stats_file(path, modalities):
    from ac_keras.data import STATS_FORMAT

    stats = {"format": STATS_FORMAT, "modalities": modalities, "class_counts": [1, 1, 1]}
    path.write_text(__import__("json").dumps(stats))
    return str(path)


def test_config_builds_the_centering_from_the_stats_file(tmp_path):
    from ac_keras import config as ac_config
    from ac_keras.task import Task

    stats = _stats_file(
        tmp_path / "stats.json", {"rgb": {"mean": [1.0, 2.0, 3.0, 4.0]}, "audio": {"mean": [5.0, 6.0]}}
    )
    base = {
        "train_data": "unused",
        "eval_data": None,
        "features": "rgb:4:float,audio:2:float",
        "cluster_sizes": (("rgb", 2), ("audio", 2)),
        "num_classes": 3,
    }
    config = ac_config.validate(ac_config.Config.from_values(**base, stats=stats, center_features=True))
    model = Task(config).build_model()
    np.testing.assert_array_equal(model.get_layer("rgb_centering").mean.numpy(), [1, 2, 3, 4])
    np.testing.assert_array_equal(model.get_layer("audio_centering").mean.numpy(), [5, 6])
    plain = Task(ac_config.validate(ac_config.Config.from_values(**base, stats=stats))).build_model()
    assert not [layer for layer in plain.layers if layer.name.endswith("_centering")]

    partial = _stats_file(tmp_path / "partial.json", {"rgb": {"mean": [1.0, 2.0, 3.0, 4.0]}})
    config = ac_config.validate(ac_config.Config.from_values(**base, stats=partial, center_features=True))
    with pytest.raises(ValueError, match=r"partial.json: .*no mean for modality 'audio'"):
        Task(config)
