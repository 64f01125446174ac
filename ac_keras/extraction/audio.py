"""The AudioSet / YouTube-8M audio features (the VGGish recipe; SPEC section 7), in TensorFlow 2 and Keras 3.

Three stages, each usable alone, reproduce the released TF1 code (tensorflow/models research/audioset/vggish):
- the front end: a 16 kHz mono waveform -> log-mel spectrogram (25 ms periodic Hann window, 10 ms hop,
  magnitude of a 512-point FFT, 64 HTK mel bands between 125 and 7,500 Hz, `log(mel + 0.01)`) ->
  non-overlapping patches of 96 frames x 64 bands (0.96 s), in `tf.signal` ops so that a serving graph can
  run it too;
- the VGGish network (`build_vggish`), which loads the released TF1 checkpoint `vggish_model.ckpt` by its
  variable names (`load_vggish_checkpoint`) and maps each patch to a 128-value embedding;
- the released postprocessor (`VggishPca`): PCA with `vggish_pca_params.npz`, clip to [-2, 2] and 8-bit
  quantization that truncates (`astype(uint8)`), unlike the rounding of the YouTube-8M frame features.

`AudioEmbedder` puts them together: one feature per 0.96 s of audio. Resampling to 16 kHz is not done here:
the decoder (`ac_keras.extraction.video`) asks PyAV for 16 kHz mono audio, where the released code used
resampy.

The front end computes in float64, as the released NumPy code does, and returns float32 (what the released
code feeds the network), so its patches agree with the released ones to float32 rounding.
"""

import functools
import json
import os

import keras
import numpy as np
import tensorflow as tf

from ac_keras import errors, schema
from ac_keras.data.files import file_sha256

# vggish_params.py of the released code.
SAMPLE_RATE = 16000
STFT_WINDOW_SECONDS = 0.025
STFT_HOP_SECONDS = 0.010
NUM_BANDS = 64
MEL_MIN_HZ = 125.0
MEL_MAX_HZ = 7500.0
LOG_OFFSET = 0.01
PATCH_SECONDS = 0.96
PATCH_FRAMES = 96
EMBEDDING_SIZE = 128

STFT_WINDOW_SAMPLES = round(SAMPLE_RATE * STFT_WINDOW_SECONDS)  # 400
STFT_HOP_SAMPLES = round(SAMPLE_RATE * STFT_HOP_SECONDS)  # 160
FFT_LENGTH = 2 ** int(np.ceil(np.log2(STFT_WINDOW_SAMPLES)))  # 512
NUM_SPECTROGRAM_BINS = FFT_LENGTH // 2 + 1  # 257

# The HTK mel scale: mel = 1127 ln(1 + f / 700).
_MEL_BREAK_HZ = 700.0
_MEL_HIGH_FREQUENCY_Q = 1127.0

QUANTIZATION = "truncate"
PCA_EIGEN_VECTORS_KEY = "pca_eigen_vectors"
PCA_MEANS_KEY = "pca_means"

# The layers of VGGish in order: (Keras layer name, released variable scope, kernel shape).
_LAYERS = (
    ("conv1", "vggish/conv1", (3, 3, 1, 64)),
    ("conv2", "vggish/conv2", (3, 3, 64, 128)),
    ("conv3_1", "vggish/conv3/conv3_1", (3, 3, 128, 256)),
    ("conv3_2", "vggish/conv3/conv3_2", (3, 3, 256, 256)),
    ("conv4_1", "vggish/conv4/conv4_1", (3, 3, 256, 512)),
    ("conv4_2", "vggish/conv4/conv4_2", (3, 3, 512, 512)),
    ("fc1_1", "vggish/fc1/fc1_1", (6 * 4 * 512, 4096)),
    ("fc1_2", "vggish/fc1/fc1_2", (4096, 4096)),
    ("fc2", "vggish/fc2", (4096, EMBEDDING_SIZE)),
)

# Released checkpoint variable name -> (Keras layer name, "kernel" or "bias").
VARIABLE_NAMES = {
    f"{scope}/{suffix}": (layer, weight)
    for layer, scope, _ in _LAYERS
    for suffix, weight in (("weights", "kernel"), ("biases", "bias"))
}
# Released checkpoint variable name -> its shape.
VARIABLE_SHAPES = {
    f"{scope}/{suffix}": shape
    for _, scope, kernel_shape in _LAYERS
    for suffix, shape in (("weights", kernel_shape), ("biases", kernel_shape[-1:]))
}

# ----------------------------------------------------------------------------------------------------------
# The front end.


def hertz_to_mel(frequencies_hz):
    """The HTK mel scale, `1127 ln(1 + f / 700)`, in float64.

    Args:
        frequencies_hz: float or array-like of frequencies in Hz.

    Returns:
        A float64 NumPy array (or scalar) of mels.
    """
    # log(1 + x), not log1p(x): the released code's expression, to its last bit.
    return _MEL_HIGH_FREQUENCY_Q * np.log(1.0 + np.asarray(frequencies_hz, dtype=np.float64) / _MEL_BREAK_HZ)


def mel_band_edges_hz() -> np.ndarray:
    """The `NUM_BANDS + 2` band edges of the recipe in Hz: band `i` rises from edge `i`, peaks at `i + 1`.

    Returns:
        A float64 array of shape `(NUM_BANDS + 2,)`, from 125 Hz to 7,500 Hz, equally spaced in mels.
    """
    edges_mel = np.linspace(hertz_to_mel(MEL_MIN_HZ), hertz_to_mel(MEL_MAX_HZ), NUM_BANDS + 2)
    return _MEL_BREAK_HZ * np.expm1(edges_mel / _MEL_HIGH_FREQUENCY_Q)


@functools.cache
def mel_weight_matrix() -> np.ndarray:
    """The recipe's spectrogram-to-mel matrix (the released `spectrogram_to_mel_matrix`), float64.

    Each band is a triangle, linear in mels, over the spectrogram bins' frequencies `linspace(0, 8000, 257)`;
    the DC bin gets no weight (HTK excludes it).

    Returns:
        A read-only float64 array of shape `(NUM_SPECTROGRAM_BINS, NUM_BANDS)`, to post-multiply magnitude
        spectra with.
    """
    bins_mel = hertz_to_mel(np.linspace(0.0, SAMPLE_RATE / 2.0, NUM_SPECTROGRAM_BINS))
    edges_mel = np.linspace(hertz_to_mel(MEL_MIN_HZ), hertz_to_mel(MEL_MAX_HZ), NUM_BANDS + 2)
    lower, centre, upper = edges_mel[:-2], edges_mel[1:-1], edges_mel[2:]
    rising = (bins_mel[:, None] - lower) / (centre - lower)
    falling = (upper - bins_mel[:, None]) / (upper - centre)
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights[0, :] = 0.0
    weights.setflags(write=False)
    return weights


def periodic_hann(window_length: int) -> np.ndarray:
    """The periodic Hann window `0.5 - 0.5 cos(2 pi n / N)`, n = 0 .. N - 1, in float64 (the released order).

    Args:
        window_length: int, N.

    Returns:
        A float64 array of shape `(N,)`.
    """
    return 0.5 - 0.5 * np.cos(2.0 * np.pi / window_length * np.arange(window_length))


def _as_waveform_tensor(waveform) -> tf.Tensor:
    """A float waveform as a 1-D float64 tensor; ValueError for other ranks or non-float dtypes."""
    waveform = tf.convert_to_tensor(waveform)
    if not waveform.dtype.is_floating:
        raise ValueError(
            f"The waveform must hold floats in [-1, 1] (16 kHz mono), got dtype {waveform.dtype.name}; "
            "divide int16 samples by 32768."
        )
    if waveform.shape.rank is not None and waveform.shape.rank != 1:
        raise ValueError(
            f"The waveform must be 1-D (16 kHz mono samples), got shape {waveform.shape}; mix channels "
            "down to mono when decoding."
        )
    return tf.cast(waveform, tf.float64)


def log_mel_spectrogram(waveform) -> tf.Tensor:
    """The recipe's log-mel spectrogram of a 16 kHz mono waveform, in TensorFlow ops.

    Frames of 400 samples every 160 (no padding: `1 + floor((N - 400) / 160)` frames, none when N < 400),
    times a periodic Hann window, `|rfft|` with 512 points, the mel matrix (`mel_weight_matrix`), then
    `log(mel + 0.01)`. Computed in float64 like the released NumPy code. Works eagerly and inside
    `tf.function` (the waveform's length may be unknown).

    Args:
        waveform: 1-D float tensor or array of samples in [-1, 1] at 16 kHz.

    Returns:
        A float32 tensor of shape `(num_frames, NUM_BANDS)`.

    Raises:
        ValueError: if the waveform is not 1-D or not floating point.
    """
    signal = _as_waveform_tensor(waveform)
    frames = tf.signal.frame(signal, STFT_WINDOW_SAMPLES, STFT_HOP_SAMPLES, pad_end=False)
    window = periodic_hann(STFT_WINDOW_SAMPLES)
    # rfft's own padding to fft_length fails on zero frames, so the frames are padded here.
    windowed = tf.pad(frames * window, [[0, 0], [0, FFT_LENGTH - STFT_WINDOW_SAMPLES]])
    magnitude = tf.abs(tf.signal.rfft(windowed, [FFT_LENGTH]))
    mel = tf.matmul(magnitude, tf.constant(mel_weight_matrix(), dtype=tf.float64))
    return tf.cast(tf.math.log(mel + LOG_OFFSET), tf.float32)


def log_mel_patches_tensor(waveform) -> tf.Tensor:
    """`log_mel_patches` in TensorFlow ops, for graphs (no sample-rate check: the input must be 16 kHz).

    Args:
        waveform: 1-D float tensor of samples in [-1, 1] at 16 kHz.

    Returns:
        A float32 tensor of shape `(num_patches, PATCH_FRAMES, NUM_BANDS)`; `num_patches` is the number of
        complete patches, `floor(num_frames / 96)`, possibly 0.
    """
    spectrogram = log_mel_spectrogram(waveform)
    num_patches = tf.shape(spectrogram)[0] // PATCH_FRAMES
    return tf.reshape(spectrogram[: num_patches * PATCH_FRAMES], [num_patches, PATCH_FRAMES, NUM_BANDS])


@functools.cache
def _patches_function():
    return tf.function(log_mel_patches_tensor, input_signature=[tf.TensorSpec([None], tf.float64)])


def num_patches_for(num_samples: int) -> int:
    """How many complete 0.96 s patches `num_samples` samples at 16 kHz give.

    Args:
        num_samples: int >= 0.

    Returns:
        `floor(num_frames / 96)` with `num_frames = 1 + floor((num_samples - 400) / 160)` (0 when negative).
    """
    num_frames = max(0, 1 + (num_samples - STFT_WINDOW_SAMPLES) // STFT_HOP_SAMPLES)
    return num_frames // PATCH_FRAMES


def log_mel_patches(waveform, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """The recipe's input examples: non-overlapping 0.96 s log-mel patches of a 16 kHz mono waveform.

    Equals the released `vggish_input.waveform_to_examples` for 16 kHz input, except that audio too short
    for one STFT frame gives no patches instead of an error.

    Args:
        waveform: 1-D float array of samples in [-1, 1].
        sample_rate: int, the waveform's sample rate; must be 16000. Defaults to 16000.

    Returns:
        A float32 array of shape `(num_patches, 96, 64)`; `num_patches` counts the complete patches
        (`num_patches_for(len(waveform))`), so audio shorter than 0.975 s gives shape `(0, 96, 64)`.

    Raises:
        ValueError: if `sample_rate` is not 16000 (resample when decoding), or the waveform is not a 1-D
            float array.
    """
    if sample_rate != SAMPLE_RATE:
        raise ValueError(
            f"VGGish needs {SAMPLE_RATE} Hz audio, got sample_rate={sample_rate!r}; resample when decoding "
            f"(ac_keras.extraction.video decodes audio at {SAMPLE_RATE} Hz mono)."
        )
    waveform = np.asarray(waveform)
    if not np.issubdtype(waveform.dtype, np.floating):
        _as_waveform_tensor(waveform)  # raises the dtype error
    signal = _as_waveform_tensor(waveform.astype(np.float64, copy=False))
    return _patches_function()(signal).numpy()


# ----------------------------------------------------------------------------------------------------------
# The network.


def build_vggish(name: str = "vggish") -> keras.Model:
    """The VGGish network of the released `vggish_slim.py`, in Keras, with its layer names.

    Input `(batch, 96, 64)` log-mel patches, reshaped to `(batch, 96, 64, 1)`; conv1 (64), pool, conv2 (128),
    pool, conv3_1 and conv3_2 (256), pool, conv4_1 and conv4_2 (512), pool, flatten (height, width,
    channels order, 12288 values), fc1_1 and fc1_2 (4096, ReLU), fc2 (128, no activation: the embedding).
    Convolutions are 3x3, stride 1, "same" padding, ReLU; poolings 2x2 max, stride 2, "same". Every layer
    computes in float32 and channels-last whatever the global Keras settings, so that the released weights
    mean the same. `VARIABLE_NAMES` maps the released variable names to these layers.

    Args:
        name: str, the model's name. Defaults to "vggish".

    Returns:
        A `keras.Model` from `(None, 96, 64)` float32 to `(None, 128)` float32, with default-initialized
        weights (load them with `load_vggish_checkpoint`).
    """
    layers = keras.layers
    inputs = keras.Input((PATCH_FRAMES, NUM_BANDS), dtype="float32", name="log_mel")
    net = layers.Reshape((PATCH_FRAMES, NUM_BANDS, 1), dtype="float32", name="reshape")(inputs)
    pool_index = 0
    for layer_name, _, kernel_shape in _LAYERS[:6]:
        net = layers.Conv2D(
            kernel_shape[-1],
            3,
            padding="same",
            activation="relu",
            data_format="channels_last",
            dtype="float32",
            name=layer_name,
        )(net)
        if layer_name in ("conv1", "conv2", "conv3_2", "conv4_2"):
            pool_index += 1
            net = layers.MaxPooling2D(
                2, 2, padding="same", data_format="channels_last", dtype="float32", name=f"pool{pool_index}"
            )(net)
    net = layers.Flatten(data_format="channels_last", dtype="float32", name="flatten")(net)
    for layer_name, _, kernel_shape in _LAYERS[6:]:
        activation = None if layer_name == "fc2" else "relu"
        net = layers.Dense(kernel_shape[-1], activation=activation, dtype="float32", name=layer_name)(net)
    return keras.Model(inputs, net, name=name)


def checkpoint_files(checkpoint_path) -> list[str]:
    """The files of a TF1 checkpoint: a V1 checkpoint's single file or a V2 prefix's .index and .data files.

    Args:
        checkpoint_path: str or path-like, the file (V1, like the released `vggish_model.ckpt`) or the
            prefix (V2: `<prefix>.index` and `<prefix>.data-*`).

    Returns:
        The existing files, sorted.

    Raises:
        MissingDataError: naming the path if there is no such file and no `.index` for such a prefix.
    """
    path = os.fspath(checkpoint_path)
    if tf.io.gfile.exists(path + ".index"):
        return sorted([path + ".index", *tf.io.gfile.glob(path + ".data-*")])
    if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
        return [path]
    raise errors.MissingDataError(
        f"VGGish checkpoint {path} not found: expected the released file vggish_model.ckpt, or a checkpoint "
        "prefix with .index and .data files."
    )


def read_vggish_checkpoint(checkpoint_path) -> dict[str, np.ndarray]:
    """Reads the VGGish variables of a TF1 checkpoint by their released names, checking names and shapes.

    Args:
        checkpoint_path: str or path-like, see `checkpoint_files`.

    Returns:
        The released variable name -> float32 array, for every name in `VARIABLE_NAMES` (other variables
        of the checkpoint are ignored).

    Raises:
        MissingDataError: if the checkpoint does not exist.
        DataError: naming the file and the variable, if a variable is missing, has another shape than the
            released one (both shapes given) or is not floating point, or the file is not a checkpoint.
    """
    path = os.fspath(checkpoint_path)
    checkpoint_files(path)
    try:
        reader = tf.train.load_checkpoint(path)
    except (tf.errors.OpError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise errors.DataError(f"VGGish checkpoint {path} cannot be read as a checkpoint: {reason}") from None
    shapes = reader.get_variable_to_shape_map()
    dtypes = reader.get_variable_to_dtype_map()
    for name, expected in VARIABLE_SHAPES.items():
        if name not in shapes:
            raise errors.DataError(
                f"VGGish checkpoint {path} has no variable {name!r} (expected shape {list(expected)}); "
                "is it the released vggish_model.ckpt?"
            )
        if tuple(shapes[name]) != expected:
            raise errors.DataError(
                f"VGGish checkpoint {path}: variable {name!r} has shape {list(shapes[name])}, expected "
                f"{list(expected)}."
            )
        if not dtypes[name].is_floating:
            raise errors.DataError(
                f"VGGish checkpoint {path}: variable {name!r} has dtype {dtypes[name].name}, expected "
                "float32."
            )
    return {name: np.asarray(reader.get_tensor(name), dtype=np.float32) for name in VARIABLE_SHAPES}


def _set_vggish_weights(model: keras.Model, variables) -> None:
    """Assigns released-name variables to the layers of a `build_vggish` model."""
    for layer_name, scope, _ in _LAYERS:
        try:
            layer = model.get_layer(layer_name)
        except ValueError:
            raise ValueError(
                f"Model {model.name!r} has no layer {layer_name!r}: build it with build_vggish()."
            ) from None
        kernel, bias = variables[f"{scope}/weights"], variables[f"{scope}/biases"]
        found = [tuple(weight.shape) for weight in layer.weights]
        if found != [kernel.shape, bias.shape]:
            raise ValueError(
                f"Layer {layer_name!r} of model {model.name!r} has weights of shapes {found}, expected "
                f"{[kernel.shape, bias.shape]}: build the model with build_vggish()."
            )
        layer.set_weights([kernel, bias])


def load_vggish_checkpoint(model: keras.Model, checkpoint_path) -> None:
    """Loads the released VGGish checkpoint (or one with the same variables) into a `build_vggish` model.

    Every variable is checked before any is assigned, so a bad checkpoint leaves the model unchanged.

    Args:
        model: a model from `build_vggish`.
        checkpoint_path: str or path-like: the released `vggish_model.ckpt` (a V1 checkpoint, one file) or a
            V2 checkpoint prefix; see `read_vggish_checkpoint`.

    Raises:
        MissingDataError: if the checkpoint does not exist.
        DataError: naming the file and the variable, if a variable is missing or has the wrong shape.
        ValueError: if the model lacks a VGGish layer or its weights have other shapes.
    """
    _set_vggish_weights(model, read_vggish_checkpoint(checkpoint_path))


def random_vggish_variables(seed: int) -> dict[str, np.ndarray]:
    """Random VGGish weights by released variable name, reproducible from the seed.

    Kernels are uniform with the variance of LeCun initialization (`1 / fan_in`), which keeps the
    embeddings of log-mel patches of order one; biases are zero, as in the released initialization.
    Drawn with NumPy's PCG64 generator, so they do not depend on the Keras or TensorFlow version.

    Args:
        seed: int, the seed.

    Returns:
        The released variable name -> float32 array of the released shape.
    """
    rng = np.random.default_rng(seed)
    variables = {}
    for _, scope, kernel_shape in _LAYERS:
        limit = np.float32(np.sqrt(3.0 / np.prod(kernel_shape[:-1])))
        kernel = rng.random(kernel_shape, dtype=np.float32)
        kernel -= np.float32(0.5)
        kernel *= 2 * limit
        variables[f"{scope}/weights"] = kernel
        variables[f"{scope}/biases"] = np.zeros(kernel_shape[-1:], np.float32)
    return variables


# ----------------------------------------------------------------------------------------------------------
# The postprocessor.


class VggishPca:
    """The released VGGish postprocessor: PCA, clip to [-2, 2], truncating 8-bit quantization.

    Args:
        eigen_vectors: array `(128, 128)`, the PCA matrix (rows are output components), kept in float64.
        means: array `(128,)`, the embedding means subtracted first, kept in float64.
        source: str or None, where the parameters came from (named in error messages and `description`).
            Defaults to None.

    Raises:
        ValueError: if the shapes are not `(128, 128)` and `(128,)` or a value is not finite.
    """

    def __init__(self, eigen_vectors, means, source: str | None = None):
        eigen_vectors = np.asarray(eigen_vectors, dtype=np.float64)
        means = np.asarray(means, dtype=np.float64)
        where = f" in {source}" if source else ""
        if eigen_vectors.shape != (EMBEDDING_SIZE, EMBEDDING_SIZE):
            raise ValueError(
                f"VGGish PCA {PCA_EIGEN_VECTORS_KEY!r}{where} has shape {list(eigen_vectors.shape)}, "
                f"expected {[EMBEDDING_SIZE, EMBEDDING_SIZE]}."
            )
        if means.shape != (EMBEDDING_SIZE,):
            raise ValueError(
                f"VGGish PCA {PCA_MEANS_KEY!r}{where} has shape {list(means.shape)}, expected "
                f"{[EMBEDDING_SIZE]}."
            )
        if not (np.all(np.isfinite(eigen_vectors)) and np.all(np.isfinite(means))):
            raise ValueError(f"VGGish PCA parameters{where} hold NaN or infinite values.")
        self.eigen_vectors = eigen_vectors
        self.means = means
        self.source = source

    @classmethod
    def from_npz(cls, path) -> "VggishPca":
        """Reads the released `vggish_pca_params.npz` (keys `pca_eigen_vectors` and `pca_means`).

        Args:
            path: str or path-like, readable with `tf.io.gfile`.

        Returns:
            A `VggishPca` whose `source` is the path.

        Raises:
            MissingDataError: if the file does not exist.
            DataError: naming the file, if it is not an .npz, lacks a key, or an array has the wrong shape.
        """
        import io
        import zipfile

        path = os.fspath(path)
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise errors.MissingDataError(f"VGGish PCA parameters {path} not found.")
        with tf.io.gfile.GFile(path, "rb") as stream:
            content = stream.read()
        try:
            arrays = np.load(io.BytesIO(content), allow_pickle=False)
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as error:
            raise errors.DataError(
                f"VGGish PCA parameters {path} are not a NumPy .npz file: {error}"
            ) from None
        if not isinstance(arrays, np.lib.npyio.NpzFile):
            raise errors.DataError(
                f"VGGish PCA parameters {path} hold a single array, expected an .npz file with the keys "
                f"{PCA_EIGEN_VECTORS_KEY!r} and {PCA_MEANS_KEY!r}."
            )
        with arrays:
            missing = [key for key in (PCA_EIGEN_VECTORS_KEY, PCA_MEANS_KEY) if key not in arrays]
            if missing:
                raise errors.DataError(
                    f"VGGish PCA parameters {path} lack {missing[0]!r} (keys found: {sorted(arrays.keys())}; "
                    f"expected {PCA_EIGEN_VECTORS_KEY!r} and {PCA_MEANS_KEY!r})."
                )
            eigen_vectors, means = arrays[PCA_EIGEN_VECTORS_KEY], arrays[PCA_MEANS_KEY]
        try:
            return cls(eigen_vectors, means, source=path)
        except ValueError as error:
            raise errors.DataError(str(error)) from None

    def transform(self, embeddings) -> np.ndarray:
        """The PCA of the released postprocessor: `dot(eigen_vectors, embeddings.T - means[:, None]).T`.

        Args:
            embeddings: array `(num_patches, 128)`, VGGish embeddings (float32 as the network gives them).

        Returns:
            A float64 array `(num_patches, 128)`, neither clipped nor quantized.

        Raises:
            ValueError: if `embeddings` is not of shape `(num_patches, 128)`.
        """
        embeddings = np.asarray(embeddings)
        if embeddings.ndim != 2 or embeddings.shape[1] != EMBEDDING_SIZE:
            raise ValueError(
                f"VGGish embeddings must have shape (num_patches, {EMBEDDING_SIZE}), got {embeddings.shape}."
            )
        return np.dot(self.eigen_vectors, embeddings.T - self.means.reshape(-1, 1)).T

    def postprocess_tensor(self, embeddings):
        """`postprocess` in TensorFlow ops (the PCA and the truncating quantization in float64, as the
        released NumPy code computes them), for a serving graph: `(num_patches, 128)` -> uint8."""
        centered = tf.cast(embeddings, tf.float64) - self.means
        transformed = tf.matmul(centered, self.eigen_vectors, transpose_b=True)
        return schema.quantize_tensor(transformed, rounding=QUANTIZATION)

    def postprocess(self, embeddings) -> np.ndarray:
        """The released postprocessor: `transform`, clip to [-2, 2], `((x + 2) * 255 / 4).astype(uint8)`.

        Args:
            embeddings: array `(num_patches, 128)`, VGGish embeddings.

        Returns:
            A uint8 array `(num_patches, 128)`.

        Raises:
            ValueError: if `embeddings` has the wrong shape, or the PCA gives NaN or infinite values.
        """
        return schema.quantize(self.transform(embeddings), rounding=QUANTIZATION)

    @property
    def description(self) -> dict:
        """`{"pca_path": source, "pca_sha256": hash of the file}` (hash None without a file)."""
        return {"pca_path": self.source, "pca_sha256": file_sha256(self.source) if self.source else None}


# ----------------------------------------------------------------------------------------------------------
# The embedder.


def _json_ready(description) -> dict:
    """A copy of `description`, checked to be JSON-serializable."""
    if not isinstance(description, dict):
        raise ValueError(f"description must be a dict, got {type(description).__name__}.")
    try:
        return json.loads(json.dumps(description))
    except (TypeError, ValueError) as error:
        raise ValueError(f"description must be JSON-serializable: {error}") from None


class AudioEmbedder:
    """Turns a 16 kHz mono waveform into one feature per 0.96 s.

    A model maps each log-mel patch (`log_mel_patches`) to a vector; with a `VggishPca` the vectors are then
    postprocessed to uint8 as in AudioSet and YouTube-8M (`quantized` is True), without one they stay float32.

    Args:
        model: a `keras.Model` from `(None, 96, 64)` or `(None, 96, 64, 1)` float32 patches to `(None, D)`.
        pca: a `VggishPca` (then D must be 128) or None.
        description: dict, JSON-serializable, what rebuilds this embedder (see `from_description`); it is
            recorded in extraction.json.

    Raises:
        DataError: if the model's input or output shape does not fit.
        ValueError: if a PCA is given for a model whose output is not 128-dimensional, or the description
            is not JSON-serializable.
    """

    def __init__(self, model: keras.Model, pca: VggishPca | None, *, description: dict):
        input_shape, output_dim = _model_shapes(model, getattr(model, "name", "model"))
        if pca is not None and output_dim != EMBEDDING_SIZE:
            raise ValueError(
                f"The VGGish PCA needs {EMBEDDING_SIZE}-dimensional embeddings, model {model.name!r} gives "
                f"{output_dim}."
            )
        self.model = model
        self.pca = pca
        self.description = _json_ready(description)
        self.output_dim = output_dim
        self.quantized = pca is not None
        with_channel = len(input_shape) == 3

        def forward(patches):
            if with_channel:
                patches = patches[..., None]
            return tf.cast(model(patches, training=False), tf.float32)

        self._forward = tf.function(
            forward, input_signature=[tf.TensorSpec([None, PATCH_FRAMES, NUM_BANDS], tf.float32)]
        )

    @classmethod
    def from_vggish(cls, checkpoint_path, pca_path) -> "AudioEmbedder":
        """The exact AudioSet / YouTube-8M audio features: the released checkpoint, PCA and quantization.

        Args:
            checkpoint_path: str or path-like, the released `vggish_model.ckpt` (see
                `load_vggish_checkpoint`).
            pca_path: str or path-like, the released `vggish_pca_params.npz`; None gives the raw float32
                128-d embeddings instead.

        Returns:
            An `AudioEmbedder` with `output_dim` 128 and uint8 output (float32 without a PCA).

        Raises:
            MissingDataError: if a file does not exist.
            DataError: naming the file, if a file does not hold what the recipe needs.
        """
        checkpoint_path = os.fspath(checkpoint_path)
        weight_files = [
            {"path": path, "sha256": file_sha256(path)} for path in checkpoint_files(checkpoint_path)
        ]
        pca = None if pca_path is None else VggishPca.from_npz(pca_path)
        model = build_vggish()
        load_vggish_checkpoint(model, checkpoint_path)
        description = _vggish_description("checkpoint", checkpoint_path, weight_files, None, pca)
        return cls(model, pca, description=description)

    @classmethod
    def random_vggish(cls, seed: int, pca_path=None) -> "AudioEmbedder":
        """VGGish with random weights (weights 'none'), reproducible from the seed: for tests and dry runs.

        Args:
            seed: int, the seed of `random_vggish_variables`; the same seed gives the same weights.
            pca_path: str, path-like or None, a `vggish_pca_params.npz` to postprocess with. Defaults to None
                (float32 output).

        Returns:
            An `AudioEmbedder` with `output_dim` 128.

        Raises:
            ValueError: if the seed is not a non-negative int.
            MissingDataError, DataError: for a bad `pca_path`, as in `VggishPca.from_npz`.
        """
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {seed!r}.")
        pca = None if pca_path is None else VggishPca.from_npz(pca_path)
        model = build_vggish()
        _set_vggish_weights(model, random_vggish_variables(int(seed)))
        return cls(model, pca, description=_vggish_description("none", None, [], int(seed), pca))

    @classmethod
    def from_keras_file(cls, path) -> "AudioEmbedder":
        """A user's `.keras` model over log-mel patches, `(96, 64)` or `(96, 64, 1)`, giving float32 vectors.

        Args:
            path: str or path-like, a `.keras` file whose model maps a batch of patches to `(batch, D)`.

        Returns:
            An `AudioEmbedder` without PCA (float32 output of `output_dim` D).

        Raises:
            MissingDataError: if the file does not exist.
            DataError: naming the file, if it cannot be loaded or its input or output shape does not fit.
        """
        path = os.fspath(path)
        if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
            raise errors.MissingDataError(f"Audio model {path} not found.")
        try:
            model = keras.saving.load_model(path, compile=False)
        except (ValueError, OSError, TypeError) as error:
            raise errors.DataError(
                f"Audio model {path} cannot be loaded as a .keras model: {error}"
            ) from None
        _, output_dim = _model_shapes(model, path)
        description = {
            "model": "keras",
            "weights": "keras",
            "weights_path": path,
            "weight_files": [{"path": path, "sha256": file_sha256(path)}],
            "seed": None,
            "pca_path": None,
            "pca_sha256": None,
            **_frontend_description(None, output_dim),
        }
        return cls(model, None, description=description)

    @classmethod
    def from_description(cls, description: dict, *, verify: bool = True) -> "AudioEmbedder":
        """Rebuilds the embedder a `description` describes, as recorded in extraction.json.

        Args:
            description: dict, an `AudioEmbedder.description`.
            verify: bool, whether the files must still have the recorded SHA-256. Defaults to True.

        Returns:
            An `AudioEmbedder` equal to the one described.

        Raises:
            DataError: if the description is not one of an `AudioEmbedder`, or (with `verify`) a file
                changed since; the message names the file.
            MissingDataError: if a file is gone.
        """
        model, weights = description.get("model"), description.get("weights")
        if model == "vggish" and weights == "checkpoint":
            embedder = cls.from_vggish(description["weights_path"], description.get("pca_path"))
        elif model == "vggish" and weights == "none":
            embedder = cls.random_vggish(description["seed"], description.get("pca_path"))
        elif model == "keras":
            embedder = cls.from_keras_file(description["weights_path"])
        else:
            raise errors.DataError(
                f"Unknown audio embedder description (model {model!r}, weights {weights!r}); expected model "
                "'vggish' with weights 'checkpoint' or 'none', or model 'keras'."
            )
        if verify:
            recorded = _file_hashes(description)
            for path, sha256 in _file_hashes(embedder.description).items():
                if path in recorded and recorded[path] != sha256:
                    raise errors.DataError(
                        f"{path} changed since the features were extracted: SHA-256 {sha256}, recorded "
                        f"{recorded[path]}."
                    )
        return embedder

    def embed_patches(self, patches, batch_size: int = 64) -> np.ndarray:
        """One feature per log-mel patch.

        Args:
            patches: float array `(num_patches, 96, 64)`, e.g. from `log_mel_patches`.
            batch_size: int, patches per model call. Defaults to 64.

        Returns:
            `(num_patches, output_dim)`: uint8 if `quantized`, else float32; `(0, output_dim)` for no patches.

        Raises:
            ValueError: if `patches` has another shape or `batch_size` is not positive.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
        patches = np.asarray(patches, dtype=np.float32)
        if patches.ndim != 3 or patches.shape[1:] != (PATCH_FRAMES, NUM_BANDS):
            raise ValueError(
                f"Log-mel patches must have shape (num_patches, {PATCH_FRAMES}, {NUM_BANDS}), got "
                f"{patches.shape}."
            )
        outputs = [
            self._forward(tf.constant(patches[start : start + batch_size])).numpy()
            for start in range(0, len(patches), batch_size)
        ]
        embeddings = np.concatenate(outputs) if outputs else np.zeros((0, self.output_dim), np.float32)
        if self.pca is not None:
            return self.pca.postprocess(embeddings)
        return embeddings

    def embed_tensor(self, patches):
        """`embed_patches` in TensorFlow ops, for a serving graph: float32 `(num_patches, 96, 64)` ->
        `(num_patches, output_dim)`, uint8 if `quantized`, else float32; all patches in one forward pass."""
        embeddings = self._forward(tf.cast(patches, tf.float32))
        if self.pca is not None:
            return self.pca.postprocess_tensor(embeddings)
        return embeddings

    def embed_waveform(self, waveform, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """One feature per complete 0.96 s of a 16 kHz mono waveform: `log_mel_patches`, then `embed_patches`.

        Args:
            waveform: 1-D float array of samples in [-1, 1].
            sample_rate: int, must be 16000. Defaults to 16000.

        Returns:
            `(num_patches, output_dim)`, uint8 if `quantized`, else float32.

        Raises:
            ValueError: as `log_mel_patches`.
        """
        return self.embed_patches(log_mel_patches(waveform, sample_rate))


def _model_shapes(model, where) -> tuple[tuple, int]:
    """The per-example input shape and the output dim of an audio model; DataError naming `where`."""
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs or len(inputs) != 1 or len(outputs) != 1:
        raise errors.DataError(
            f"Audio model {where} must have one input of log-mel patches and one output, found "
            f"{len(inputs or [])} input(s) and {len(outputs or [])} output(s)."
        )
    input_shape = tuple(inputs[0].shape[1:])
    if input_shape not in ((PATCH_FRAMES, NUM_BANDS), (PATCH_FRAMES, NUM_BANDS, 1)):
        raise errors.DataError(
            f"Audio model {where} takes inputs of shape {input_shape}, expected log-mel patches "
            f"({PATCH_FRAMES}, {NUM_BANDS}) or ({PATCH_FRAMES}, {NUM_BANDS}, 1)."
        )
    output_shape = tuple(outputs[0].shape[1:])
    if len(output_shape) != 1 or output_shape[0] is None:
        raise errors.DataError(
            f"Audio model {where} gives outputs of shape {output_shape} per patch, expected a vector (D,)."
        )
    return input_shape, int(output_shape[0])


def _frontend_description(pca, output_dim) -> dict:
    return {
        "output_dim": output_dim,
        "sample_rate": SAMPLE_RATE,
        "patch_seconds": PATCH_SECONDS,
        "quantization": QUANTIZATION if pca is not None else None,
    }


def _vggish_description(weights, checkpoint_path, weight_files, seed, pca) -> dict:
    return {
        "model": "vggish",
        "weights": weights,
        "weights_path": checkpoint_path,
        "weight_files": weight_files,
        "seed": seed,
        **(pca.description if pca is not None else {"pca_path": None, "pca_sha256": None}),
        **_frontend_description(pca, EMBEDDING_SIZE),
    }


def _file_hashes(description) -> dict:
    """`{path: sha256}` of the files a description records."""
    hashes = {entry["path"]: entry["sha256"] for entry in description.get("weight_files") or ()}
    if description.get("pca_path"):
        hashes[description["pca_path"]] = description.get("pca_sha256")
    return hashes
