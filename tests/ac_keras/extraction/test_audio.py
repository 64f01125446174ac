"""Tests of the VGGish recipe: the log-mel front end, the network and its checkpoint, the postprocessor.

Each stage is checked against a plain NumPy reference written from the released recipe (frames, periodic
Hann window, |rfft|, the mel matrix built band by band, log offset, patches; the network applied with the
checkpoint's raw arrays; the postprocessor's formula), not against the module's own helpers. The checkpoint
and PCA files are stand-ins of the released layout (`ac_keras.testing.vggish_standin`).
"""

import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras import errors
from ac_keras.extraction import audio
from ac_keras.testing import vggish_standin

RATE = 16000
WINDOW, HOP, FFT = 400, 160, 512


# ----------------------------------------------------------------------------------------------------------
# NumPy references of the released recipe.


def reference_mel(frequencies_hz):
    return 1127.0 * np.log(1.0 + np.asarray(frequencies_hz, dtype=np.float64) / 700.0)


def reference_mel_edges():
    return np.linspace(reference_mel(125.0), reference_mel(7500.0), 64 + 2)


def reference_mel_matrix():
    bins_mel = reference_mel(np.linspace(0.0, RATE / 2, FFT // 2 + 1))
    edges = reference_mel_edges()
    matrix = np.empty((FFT // 2 + 1, 64))
    for band in range(64):
        lower, centre, upper = edges[band : band + 3]
        rising = (bins_mel - lower) / (centre - lower)
        falling = (upper - bins_mel) / (upper - centre)
        matrix[:, band] = np.maximum(0.0, np.minimum(rising, falling))
    matrix[0, :] = 0.0
    return matrix


def reference_frame(data, window, hop):
    num_frames = 1 + (len(data) - window) // hop
    if num_frames <= 0:
        return np.zeros((0, window) + data.shape[1:], data.dtype)
    return np.stack([data[index * hop : index * hop + window] for index in range(num_frames)])


def reference_log_mel(waveform):
    frames = reference_frame(np.asarray(waveform, dtype=np.float64), WINDOW, HOP)
    hann = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(WINDOW) / WINDOW)
    spectrum = np.abs(np.fft.rfft(frames * hann, FFT))
    return np.log(spectrum @ reference_mel_matrix() + 0.01)


def reference_patches(waveform):
    return reference_frame(reference_log_mel(waveform), 96, 96)


def reference_conv_relu(image, kernel, bias):
    """3x3, stride 1, SAME, ReLU on one (height, width, channels) image, by im2col."""
    height, width, channels = image.shape
    padded = np.pad(image, ((1, 1), (1, 1), (0, 0)))
    columns = np.stack([padded[i : i + height, j : j + width] for i in range(3) for j in range(3)], axis=2)
    output = columns.reshape(height, width, 9 * channels) @ kernel.reshape(9 * channels, -1) + bias
    return np.maximum(output, 0.0)


def reference_max_pool(image):
    height, width, channels = image.shape
    return image.reshape(height // 2, 2, width // 2, 2, channels).max(axis=(1, 3))


def reference_vggish(patch, variables):
    """The released vggish_slim network on one (96, 64) patch, in float64, from raw checkpoint arrays."""
    weights = {name: value.astype(np.float64) for name, value in variables.items()}
    net = patch.astype(np.float64)[:, :, None]
    for scope, pool in (
        ("conv1", True),
        ("conv2", True),
        ("conv3/conv3_1", False),
        ("conv3/conv3_2", True),
        ("conv4/conv4_1", False),
        ("conv4/conv4_2", True),
    ):
        net = reference_conv_relu(net, weights[f"vggish/{scope}/weights"], weights[f"vggish/{scope}/biases"])
        if pool:
            net = reference_max_pool(net)
    net = net.reshape(-1)
    for scope in ("fc1/fc1_1", "fc1/fc1_2"):
        net = np.maximum(net @ weights[f"vggish/{scope}/weights"] + weights[f"vggish/{scope}/biases"], 0.0)
    return net @ weights["vggish/fc2/weights"] + weights["vggish/fc2/biases"]


def reference_postprocess(embeddings, eigen_vectors, means):
    pca_applied = np.dot(eigen_vectors, embeddings.T - means.reshape(-1, 1)).T
    clipped = np.clip(pca_applied, -2.0, 2.0)
    return ((clipped - -2.0) * (255.0 / 4.0)).astype(np.uint8)


def tone(frequency_hz, seconds, amplitude=0.5):
    times = np.arange(round(seconds * RATE)) / RATE
    return (amplitude * np.sin(2 * np.pi * frequency_hz * times)).astype(np.float32)


def noise(num_samples, seed=0):
    return np.random.default_rng(seed).uniform(-0.8, 0.8, num_samples).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# The front end.


def test_recipe_constants():
    assert (audio.STFT_WINDOW_SAMPLES, audio.STFT_HOP_SAMPLES, audio.FFT_LENGTH) == (WINDOW, HOP, FFT)
    assert (audio.PATCH_FRAMES, audio.NUM_BANDS, audio.EMBEDDING_SIZE) == (96, 64, 128)
    assert audio.SAMPLE_RATE == RATE and audio.PATCH_SECONDS == 0.96
    np.testing.assert_array_equal(audio.mel_weight_matrix(), reference_mel_matrix())
    np.testing.assert_allclose(reference_mel(audio.mel_band_edges_hz()), reference_mel_edges(), rtol=1e-12)


@pytest.mark.parametrize("signal", ["noise", "tone"])
def test_log_mel_patches_equal_the_numpy_recipe(signal):
    waveform = noise(3 * RATE + 1234) if signal == "noise" else tone(440.0, 3.1)
    patches = audio.log_mel_patches(waveform)
    expected = reference_patches(waveform)
    assert patches.dtype == np.float32 and patches.shape == expected.shape == (3, 96, 64)
    # The front end computes in float64 like the released code: only float32 rounding remains.
    np.testing.assert_allclose(patches, expected, rtol=1e-6, atol=1e-5)


def test_log_mel_spectrogram_in_a_graph_of_unknown_length():
    waveform = noise(RATE + 777, seed=1)
    spectrogram_fn = tf.function(
        audio.log_mel_spectrogram, input_signature=[tf.TensorSpec([None], tf.float32)]
    )
    patches_fn = tf.function(
        audio.log_mel_patches_tensor, input_signature=[tf.TensorSpec([None], tf.float32)]
    )
    assert patches_fn.get_concrete_function().structured_outputs.shape.as_list() == [None, 96, 64]
    spectrogram = spectrogram_fn(tf.constant(waveform)).numpy()
    assert spectrogram.dtype == np.float32
    np.testing.assert_allclose(spectrogram, reference_log_mel(waveform), rtol=1e-6, atol=1e-5)
    np.testing.assert_allclose(
        patches_fn(tf.constant(waveform)).numpy(), reference_patches(waveform), atol=1e-5
    )
    assert spectrogram_fn(tf.zeros([WINDOW - 1])).shape == (0, 64)
    assert patches_fn(tf.zeros([0])).shape == (0, 96, 64)
    # Eagerly, too.
    np.testing.assert_allclose(audio.log_mel_spectrogram(waveform).numpy(), spectrogram, atol=1e-6)


@pytest.mark.parametrize("frequency_hz", [1000.0, 3000.0])
def test_a_tone_peaks_in_the_band_centred_nearest_to_it(frequency_hz):
    log_mel = audio.log_mel_spectrogram(tone(frequency_hz, 2.0)).numpy()
    centres_mel = reference_mel_edges()[1:-1]
    distances = np.abs(centres_mel - reference_mel(frequency_hz))
    nearest = int(np.argmin(distances))
    assert np.sort(distances)[1] - distances[nearest] > 1.0  # the nearest band is not a tie
    assert int(np.argmax(log_mel.mean(axis=0))) == nearest
    assert np.all(np.argmax(log_mel, axis=1) == nearest)


def test_patch_count_follows_the_framing_formula():
    # num_frames = 1 + floor((N - 400) / 160); num_patches = floor(num_frames / 96). The first patch needs
    # 96 frames: N >= 400 + 160 * 95 = 15600 samples (0.975 s), k patches N >= 400 + 160 * (96 k - 1).
    def first_with(num_patches):
        return WINDOW + HOP * (96 * num_patches - 1)

    assert first_with(1) == 15600 and first_with(2) == 30960
    cases = {
        0: 0,
        WINDOW - 1: 0,
        round(0.95 * RATE): 0,
        first_with(1) - 1: 0,
        first_with(1): 1,
        round(0.96 * RATE) + WINDOW: 1,
        first_with(2) - 1: 1,
        first_with(2): 2,
        3 * RATE: 3,
    }
    for num_samples, num_patches in cases.items():
        waveform = noise(num_samples, seed=num_samples)
        patches = audio.log_mel_patches(waveform)
        assert patches.shape == (num_patches, 96, 64), num_samples
        assert audio.num_patches_for(num_samples) == num_patches
        if num_samples >= WINDOW:
            assert len(reference_patches(waveform)) == num_patches


def test_log_mel_patches_rejects_what_it_cannot_take():
    with pytest.raises(ValueError, match=r"16000 Hz.*sample_rate=44100.*resample when decoding"):
        audio.log_mel_patches(noise(RATE), sample_rate=44100)
    with pytest.raises(ValueError, match="must be 1-D"):
        audio.log_mel_patches(np.zeros((RATE, 2), np.float32))
    with pytest.raises(ValueError, match="32768"):
        audio.log_mel_patches(np.zeros(RATE, np.int16))


# ----------------------------------------------------------------------------------------------------------
# The network and the checkpoint.


_MODEL = []


def build_once():
    """One VGGish model shared by the tests that only need its layers (building it allocates 290 MB)."""
    if not _MODEL:
        _MODEL.append(audio.build_vggish())
    return _MODEL[0]


def test_build_vggish_has_the_released_layers_and_shapes():
    model = build_once()
    assert tuple(model.input_shape) == (None, 96, 64) and tuple(model.output_shape) == (None, 128)
    assert model.get_layer("flatten").output.shape[-1] == 12288
    assert len(audio.VARIABLE_NAMES) == 18 and set(audio.VARIABLE_NAMES) == set(audio.VARIABLE_SHAPES)
    for name, (layer_name, weight) in audio.VARIABLE_NAMES.items():
        layer = model.get_layer(layer_name)
        variable = layer.kernel if weight == "kernel" else layer.bias
        assert tuple(variable.shape) == audio.VARIABLE_SHAPES[name], name
    assert audio.VARIABLE_NAMES["vggish/conv3/conv3_1/weights"] == ("conv3_1", "kernel")
    assert audio.VARIABLE_SHAPES["vggish/fc1/fc1_1/weights"] == (12288, 4096)
    assert model.get_layer("fc2").activation is keras.activations.linear


@pytest.mark.slow
def test_checkpoint_loads_and_matches_the_network_applied_by_hand(tmp_path):
    checkpoint, variables = vggish_standin.write_vggish_checkpoint(tmp_path / "v1", seed=3)
    assert sorted(tf.train.list_variables(checkpoint)) == sorted(
        (name, list(shape)) for name, shape in audio.VARIABLE_SHAPES.items()
    )
    model = audio.build_vggish()
    audio.load_vggish_checkpoint(model, checkpoint)
    patches = np.concatenate(
        [audio.log_mel_patches(noise(RATE, seed=5)), audio.log_mel_patches(tone(500, 1))]
    )
    embeddings = model.predict_on_batch(patches)
    expected = np.stack([reference_vggish(patch, variables) for patch in patches])
    assert embeddings.shape == (2, 128) and np.std(expected) > 0.05
    np.testing.assert_allclose(embeddings, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())

    # A V2 checkpoint (.index and .data files) of the same values loads the same, and is hashed file by file.
    prefix, _ = vggish_standin.write_vggish_checkpoint(tmp_path / "v2", seed=3, version=2)
    embedder = audio.AudioEmbedder.from_vggish(prefix, None)
    files = [entry["path"] for entry in embedder.description["weight_files"]]
    assert files == [prefix + ".data-00000-of-00001", prefix + ".index"]
    assert all(len(entry["sha256"]) == 64 for entry in embedder.description["weight_files"])
    np.testing.assert_array_equal(embedder.embed_patches(patches), embeddings)


def test_missing_checkpoint_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "vggish_model.ckpt"
    with pytest.raises(errors.MissingDataError, match=str(missing)):
        audio.load_vggish_checkpoint(build_once(), missing)
    with pytest.raises(errors.MissingDataError, match=str(missing)):
        audio.AudioEmbedder.from_vggish(missing, None)


def test_checkpoint_missing_a_variable_or_of_another_shape_names_it(tmp_path):
    conv1 = np.zeros((3, 3, 1, 64), np.float32)
    partial = vggish_standin.write_checkpoint(tmp_path / "partial.ckpt", {"vggish/conv1/weights": conv1})
    with pytest.raises(errors.DataError, match=r"partial\.ckpt has no variable 'vggish/conv1/biases'"):
        audio.read_vggish_checkpoint(partial)

    wrong = vggish_standin.write_checkpoint(
        tmp_path / "wrong.ckpt",
        {"vggish/conv1/weights": np.zeros((3, 3, 3, 64), np.float32), "vggish/conv1/biases": np.zeros(64)},
        version=2,
    )
    message = (
        r"wrong\.ckpt: variable 'vggish/conv1/weights' has shape \[3, 3, 3, 64\], expected \[3, 3, 1, 64\]"
    )
    with pytest.raises(errors.DataError, match=message):
        audio.load_vggish_checkpoint(build_once(), wrong)

    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint" * 64)
    with pytest.raises(errors.DataError, match=r"garbage\.ckpt cannot be read as a checkpoint"):
        audio.read_vggish_checkpoint(garbage)


# ----------------------------------------------------------------------------------------------------------
# The postprocessor.


def test_postprocess_equals_the_released_formula(tmp_path):
    path = vggish_standin.write_vggish_pca(tmp_path)
    pca = audio.VggishPca.from_npz(path)
    with np.load(path) as arrays:
        eigen_vectors, means = arrays["pca_eigen_vectors"], arrays["pca_means"]
    assert eigen_vectors.dtype == means.dtype == np.float64
    embeddings = np.random.default_rng(0).normal(0.0, 1.5, (50, 128)).astype(np.float32)

    transformed = pca.transform(embeddings)
    assert transformed.dtype == np.float64
    np.testing.assert_array_equal(transformed, np.dot(eigen_vectors, embeddings.T - means[:, None]).T)
    assert transformed.min() < -2.0 and transformed.max() > 2.0  # the clip matters

    quantized = pca.postprocess(embeddings)
    assert quantized.dtype == np.uint8 and quantized.shape == (50, 128)
    np.testing.assert_array_equal(quantized, reference_postprocess(embeddings, eigen_vectors, means))
    assert {0, 255} <= set(np.unique(quantized).tolist())
    rounded = np.rint((np.clip(transformed, -2, 2) + 2) * 255 / 4)
    assert np.any(rounded != quantized)  # truncation, not rounding
    assert pca.postprocess(np.zeros((0, 128), np.float32)).shape == (0, 128)


def test_bad_pca_files_name_the_file(tmp_path):
    with pytest.raises(errors.MissingDataError, match="absent.npz"):
        audio.VggishPca.from_npz(tmp_path / "absent.npz")
    bad_keys = tmp_path / "bad_keys.npz"
    np.savez(bad_keys, eigen_vectors=np.eye(128), means=np.zeros(128))
    with pytest.raises(errors.DataError, match=r"bad_keys\.npz lack 'pca_eigen_vectors'"):
        audio.VggishPca.from_npz(bad_keys)
    bad_shape = tmp_path / "bad_shape.npz"
    np.savez(bad_shape, pca_eigen_vectors=np.eye(128)[:64], pca_means=np.zeros(128))
    with pytest.raises(
        errors.DataError, match=r"'pca_eigen_vectors' in .*bad_shape\.npz has shape \[64, 128\]"
    ):
        audio.VggishPca.from_npz(bad_shape)
    not_npz = tmp_path / "not.npz"
    not_npz.write_bytes(b"plain text")
    with pytest.raises(errors.DataError, match=r"not\.npz are not a NumPy \.npz file"):
        audio.VggishPca.from_npz(not_npz)


# ----------------------------------------------------------------------------------------------------------
# The embedder.


def test_random_vggish_with_pca_gives_one_uint8_feature_per_0_96_s(tmp_path):
    pca_path = vggish_standin.write_vggish_pca(tmp_path)
    embedder = audio.AudioEmbedder.random_vggish(0, pca_path)
    features = embedder.embed_waveform(tone(1000.0, 3.0))
    assert embedder.quantized and embedder.output_dim == 128
    assert features.dtype == np.uint8 and features.shape == (3, 128)
    assert embedder.embed_waveform(tone(1000.0, 0.95)).shape == (0, 128)
    with pytest.raises(ValueError, match="shape"):
        embedder.embed_patches(np.zeros((2, 96, 32), np.float32))
    assert json.loads(json.dumps(embedder.description)) == {
        "model": "vggish",
        "weights": "none",
        "weights_path": None,
        "weight_files": [],
        "seed": 0,
        "pca_path": pca_path,
        "pca_sha256": audio.file_sha256(pca_path),
        "output_dim": 128,
        "sample_rate": 16000,
        "patch_seconds": 0.96,
        "quantization": "truncate",
    }


@pytest.mark.slow
def test_random_vggish_is_reproducible_from_its_seed(tmp_path):
    patches = audio.log_mel_patches(noise(2 * RATE, seed=7))
    first = audio.AudioEmbedder.random_vggish(0)
    assert first.output_dim == 128 and not first.quantized and first.description["quantization"] is None
    outputs = first.embed_patches(patches)
    assert outputs.dtype == np.float32 and outputs.shape == (2, 128) and np.std(outputs) > 0.01
    np.testing.assert_array_equal(audio.AudioEmbedder.random_vggish(0).embed_patches(patches), outputs)
    assert np.abs(audio.AudioEmbedder.random_vggish(1).embed_patches(patches) - outputs).max() > 0.01
    assert first.embed_patches(np.zeros((0, 96, 64))).shape == (0, 128)

    # The description rebuilds the same embedder, PCA included.
    pca_path = vggish_standin.write_vggish_pca(tmp_path)
    quantized = audio.AudioEmbedder.random_vggish(0, pca_path)
    rebuilt = audio.AudioEmbedder.from_description(json.loads(json.dumps(quantized.description)))
    np.testing.assert_array_equal(rebuilt.embed_patches(patches), quantized.embed_patches(patches))
    np.testing.assert_array_equal(quantized.embed_patches(patches), quantized.pca.postprocess(outputs))


def tiny_patch_model(input_shape, dim=8):
    inputs = keras.Input(input_shape)
    net = inputs if len(input_shape) == 3 else keras.layers.Reshape((*input_shape, 1))(inputs)
    net = keras.layers.Conv2D(4, 3, strides=4, activation="relu")(net)
    net = keras.layers.GlobalAveragePooling2D()(net)
    return keras.Model(inputs, keras.layers.Dense(dim)(net))


def test_from_keras_file_takes_a_patch_model_and_rejects_other_inputs(tmp_path):
    path = tmp_path / "tiny.keras"
    model = tiny_patch_model((96, 64, 1))
    model.save(path)
    embedder = audio.AudioEmbedder.from_keras_file(path)
    assert embedder.output_dim == 8 and not embedder.quantized
    patches = audio.log_mel_patches(noise(2 * RATE, seed=2))
    features = embedder.embed_patches(patches, batch_size=1)
    assert features.dtype == np.float32 and features.shape == (2, 8)
    np.testing.assert_allclose(features, model(patches[..., None]).numpy(), rtol=1e-5, atol=1e-6)
    assert embedder.description["weight_files"] == [{"path": str(path), "sha256": audio.file_sha256(path)}]

    # A file changed since extraction is refused when the description is replayed.
    tiny_patch_model((96, 64)).save(path)
    with pytest.raises(errors.DataError, match=r"tiny\.keras changed since the features were extracted"):
        audio.AudioEmbedder.from_description(embedder.description)

    wrong = tmp_path / "wrong.keras"
    tiny_patch_model((96, 32, 1)).save(wrong)
    with pytest.raises(errors.DataError, match=r"wrong\.keras takes inputs of shape \(96, 32, 1\)"):
        audio.AudioEmbedder.from_keras_file(wrong)
    with pytest.raises(errors.MissingDataError, match="absent.keras"):
        audio.AudioEmbedder.from_keras_file(tmp_path / "absent.keras")


def test_file_sha256(tmp_path):
    path = tmp_path / "bytes.bin"
    path.write_bytes(b"abc" * 1_000_000)
    assert audio.file_sha256(path) == hashlib.sha256(b"abc" * 1_000_000).hexdigest()
    with pytest.raises(errors.MissingDataError):
        audio.file_sha256(tmp_path / "absent.bin")
