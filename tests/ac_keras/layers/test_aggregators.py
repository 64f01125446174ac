"""The comparison aggregators of Table 4 / appendix B: serialization, NumPy references, padding and masks."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras.layers import (
    AverageAggregator,
    BiLSTMAggregator,
    FlattenAggregator,
    TemporalInceptionAggregator,
    TSLSTMAggregator,
)
from tests.ac_keras.layers.layer_test_utils import (
    MIXED_POLICIES,
    assert_close_to_float32,
    ragged_frames,
    run_layer_test,
)

DIM = 3
# One instance per aggregator, small enough for a CPU test.
LAYERS = {
    "average": (AverageAggregator, {}),
    "flatten": (FlattenAggregator, {"num_frames": 6}),
    "bilstm": (BiLSTMAggregator, {"units": 4}),
    "ts_lstm": (TSLSTMAggregator, {"units": 4}),
    "temporal_inception": (TemporalInceptionAggregator, {"filters": 4, "kernel_sizes": (1, 3, 4)}),
}
OUTPUT_DIMS = {"average": DIM, "flatten": 6 * DIM, "bilstm": 8, "ts_lstm": 4, "temporal_inception": 12}


def _videos(lengths, seed=0):
    return ragged_frames(lengths, DIM, seed=seed)


@pytest.mark.parametrize("name", ["bilstm", "ts_lstm", "temporal_inception"])
def test_layer_with_weights(name, tmp_path):
    layer_cls, kwargs = LAYERS[name]
    run_layer_test(layer_cls, kwargs, _videos([5, 2, 7]), (3, OUTPUT_DIMS[name]), tmp_path)


@pytest.mark.parametrize("name", ["average", "flatten"])
def test_layer_without_weights(name, tmp_path):
    """`run_layer_test` without its fit step (these layers have no weights to train)."""
    layer_cls, kwargs = LAYERS[name]
    frames = _videos([5, 2, 7])
    layer = layer_cls(**kwargs)
    config = layer.get_config()
    assert all(key in config for key in kwargs)
    assert layer_cls.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(
        json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))
    )
    assert type(revived) is layer_cls and revived.get_config() == config
    assert tuple(layer(frames).shape) == (3, OUTPUT_DIMS[name])

    symbolic_input = keras.Input(shape=(None, DIM), ragged=True)
    model = keras.Model(symbolic_input, keras.layers.Dense(2)(layer_cls(**kwargs)(symbolic_input)))
    assert model.output_shape == (None, 2)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    np.testing.assert_array_equal(model(frames).numpy(), keras.models.load_model(path)(frames).numpy())
    for policy in MIXED_POLICIES:
        assert_close_to_float32(layer_cls(**kwargs, dtype=policy)(frames), layer(frames), policy)


def test_average_matches_numpy_and_ignores_order():
    frames = _videos([4, 1, 6])
    output = AverageAggregator()(frames).numpy()
    for video in range(3):
        np.testing.assert_allclose(output[video], frames[video].numpy().mean(axis=0), rtol=1e-6)
    shuffled = tf.ragged.constant([frames[0].numpy()[::-1]], ragged_rank=1)
    np.testing.assert_allclose(AverageAggregator()(shuffled).numpy()[0], output[0], rtol=1e-6)


def test_flatten_pads_and_truncates_in_order():
    frames = _videos([2, 6, 9])
    output = FlattenAggregator(num_frames=6)(frames).numpy()
    short = np.zeros((6, DIM), "float32")
    short[:2] = frames[0].numpy()
    np.testing.assert_array_equal(output[0], short.reshape(-1))
    np.testing.assert_array_equal(output[1], frames[1].numpy().reshape(-1))
    np.testing.assert_array_equal(output[2], frames[2].numpy()[:6].reshape(-1))


@pytest.mark.parametrize(
    ("length", "segments"),
    [
        (10, [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]),
        (7, [[0], [1], [2, 3], [4], [5, 6]]),
        (3, [[0], [0], [1], [1], [2]]),
        (1, [[0]] * 5),
    ],
)
def test_ts_lstm_segments_follow_each_videos_real_length(length, segments):
    layer = TSLSTMAggregator(units=2)
    mask = tf.sequence_mask([length, 12], maxlen=12)  # the batch is padded to 12 frames
    weights = layer.segment_weights(mask).numpy()[0]
    expected = np.zeros((5, 12), "float32")
    for segment, members in enumerate(segments):
        expected[segment, members] = 1.0 / len(members)
    np.testing.assert_allclose(weights, expected, rtol=1e-6)


def test_ts_lstm_runs_its_lstm_on_segment_means():
    frames = _videos([7])
    layer = TSLSTMAggregator(units=3)
    output = layer(frames).numpy()
    video = frames[0].numpy()
    means = np.stack([video[a:b].mean(axis=0) for a, b in [(0, 1), (1, 2), (2, 4), (4, 5), (5, 7)]])
    np.testing.assert_allclose(output, layer.lstm(means[None]).numpy(), rtol=1e-5, atol=1e-6)


def _conv_same(frames, kernel, bias):
    """NumPy "same" 1-D convolution (TensorFlow's padding split: (k - 1) // 2 before) with ReLU."""
    width = kernel.shape[0]
    before = (width - 1) // 2
    padded = np.pad(frames, [(before, width - 1 - before), (0, 0)])
    out = np.stack([np.einsum("kd,kdf->f", padded[t : t + width], kernel) for t in range(len(frames))])
    return np.maximum(out + bias, 0.0)


@pytest.mark.parametrize("pooling", ["max", "average"])
def test_temporal_inception_matches_numpy(pooling):
    frames = _videos([6, 2])
    layer = TemporalInceptionAggregator(filters=4, kernel_sizes=(3, 4), pooling=pooling)
    output = layer(frames).numpy()
    for video in range(2):
        x = frames[video].numpy().astype("float64")
        branches = [
            _conv_same(x, conv.kernel.numpy().astype("float64"), conv.bias.numpy())
            for conv in layer.convolutions[0]
        ]
        features = np.concatenate(branches, axis=-1)
        want = features.max(axis=0) if pooling == "max" else features.mean(axis=0)
        np.testing.assert_allclose(output[video], want, rtol=1e-5, atol=1e-6)


def test_bilstm_is_batch_norm_then_bidirectional_lstm_then_mean():
    frames = _videos([5])
    layer = BiLSTMAggregator(units=3)
    output = layer(frames).numpy()
    normalized = layer.batch_norm(frames.to_tensor(), training=False)
    states = layer.bilstm(normalized).numpy()[0]
    np.testing.assert_allclose(output[0], states.mean(axis=0), rtol=1e-5, atol=1e-6)


def test_bilstm_batch_norm_statistics_count_real_frames_only():
    frames = _videos([5, 1, 3])
    layer = BiLSTMAggregator(units=2)
    layer(frames, training=True)
    momentum = layer.batch_norm.momentum
    real = frames.flat_values.numpy()
    np.testing.assert_allclose(
        layer.batch_norm.moving_mean.numpy(), (1 - momentum) * real.mean(axis=0), rtol=1e-4, atol=1e-6
    )


@pytest.mark.parametrize("name", list(LAYERS))
def test_padded_batch_gives_each_video_its_own_output(name):
    """Mask correctness: a padded batch (ragged, or dense + mask with garbage padding) = each video alone."""
    layer_cls, kwargs = LAYERS[name]
    layer = layer_cls(**kwargs)
    lengths = [5, 1, 0, 9, 3]
    frames = _videos(lengths, seed=3)
    batched = layer(frames).numpy()
    assert batched.shape == (5, OUTPUT_DIMS[name])
    assert np.all(np.isfinite(batched))
    for video, length in enumerate(lengths):
        alone = layer(frames[video : video + 1]).numpy()[0]
        np.testing.assert_allclose(batched[video], alone, rtol=1e-5, atol=1e-6, err_msg=f"video {video}")
        if length:
            dense_alone = layer(frames[video : video + 1].to_tensor()).numpy()[0]  # no mask: all frames real
            np.testing.assert_allclose(dense_alone, alone, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(batched[2], 0.0)  # no frames: zeros, not NaN

    dense = frames.to_tensor(default_value=np.nan, shape=[5, 12, DIM])
    mask = tf.sequence_mask(frames.row_lengths(), 12)
    np.testing.assert_allclose(layer(dense, mask=mask).numpy(), batched, rtol=1e-5, atol=1e-6)
    int_mask = tf.cast(mask, "int32")
    np.testing.assert_allclose(layer(dense, mask=int_mask).numpy(), batched, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_mask_with_holes_reads_the_real_frames_in_order(name):
    layer_cls, kwargs = LAYERS[name]
    layer = layer_cls(**kwargs)
    frames = _videos([4], seed=5)
    packed = layer(frames).numpy()
    holes = np.full((1, 7, DIM), 1e6, "float32")
    positions = [0, 2, 3, 6]
    holes[0, positions] = frames[0].numpy()
    mask = np.zeros((1, 7), bool)
    mask[0, positions] = True
    np.testing.assert_allclose(layer(holes, mask=mask).numpy(), packed, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", list(LAYERS))
def test_batch_without_any_frame_is_finite(name):
    layer_cls, kwargs = LAYERS[name]
    empty = tf.RaggedTensor.from_row_lengths(np.zeros((0, DIM), "float32"), np.array([0, 0], "int64"))
    output = layer_cls(**kwargs)(empty).numpy()
    np.testing.assert_array_equal(output, np.zeros((2, OUTPUT_DIMS[name]), "float32"))


@pytest.mark.parametrize(
    ("layer_cls", "kwargs", "message"),
    [
        (FlattenAggregator, {"num_frames": 0}, "num_frames"),
        (BiLSTMAggregator, {"units": 0}, "units"),
        (TSLSTMAggregator, {"units": 4, "num_segments": 0}, "num_segments"),
        (TemporalInceptionAggregator, {"filters": 0}, "filters"),
        (TemporalInceptionAggregator, {"kernel_sizes": ()}, "kernel_sizes"),
        (TemporalInceptionAggregator, {"kernel_sizes": (3, 0)}, "kernel_sizes"),
        (TemporalInceptionAggregator, {"pooling": "sum"}, "pooling"),
        (TemporalInceptionAggregator, {"num_layers": 0}, "num_layers"),
    ],
)
def test_bad_arguments(layer_cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        layer_cls(**kwargs)


def test_stacked_temporal_inception_keeps_padding_out():
    layer = TemporalInceptionAggregator(filters=3, kernel_sizes=(3,), num_layers=2, pooling="average")
    frames = _videos([6, 2])
    batched = layer(frames).numpy()
    for video in range(2):
        np.testing.assert_allclose(
            batched[video], layer(frames[video : video + 1]).numpy()[0], rtol=1e-5, atol=1e-6
        )
    assert layer.convolutions[1][0].kernel.shape == (3, 3, 3)
