"""The YouTube-8M frame features, computed as the released extractor computes them (SPEC section 7).

The released extractor (google/youtube-8m, `feature_extractor/feature_extractor.py`) feeds each RGB uint8
frame to the 2015 ImageNet Inception graph at `DecodeJpeg:0` (the graph casts it to float, makes a batch of
one, resizes it to 299 x 299 and normalizes it itself), reads the 2048 values of `pool_3/_reshape:0`, and
applies the released PCA in float32:

    feats = pool3[0] - mean[:, 0]
    feats = feats @ eigenvecs.T[:, :1024]
    feats /= sqrt(eigenvals[:1024, 0] + 1e-4)

Here the same GraphDef is imported into a TF2 function (`tf.compat.v1.wrap_function`, no session), with
its batch norms, an op TF2 functions no longer run, rewritten as the old kernel's arithmetic
(`replace_old_batch_norms`), and the same PCA is applied to its output. The features agree with the
extractor's up to float32 rounding (which also varies with the hardware the extractor ran on).

The 8-bit quantization of the records (`ac_keras.schema.quantize`, nearest rounding) is the writer's job,
not this module's: `Yt8mEmbedder.embed` returns float32.

Nothing here downloads: the four files come from the user's `model_dir` (see `MODEL_SOURCES`).
"""

import io
import os

import numpy as np
import tensorflow as tf
from google.protobuf import message

from ac_keras.errors import DataError, MissingDataError
from ac_keras.extraction.backbones import file_sha256

GRAPH_FILE = "classify_image_graph_def.pb"
PCA_FILES = ("mean.npy", "eigenvals.npy", "eigenvecs.npy")
INPUT_TENSOR = "DecodeJpeg:0"
OUTPUT_TENSOR = "pool_3/_reshape:0"
POOL3_DIM = 2048
PCA_DIMS = 1024
# Added to the eigenvalues before whitening, as the released extractor does.
WHITENING_EPSILON = 1e-4
# Where the user gets the files: the archive that holds each, and the archive's address.
MODEL_SOURCES = {
    GRAPH_FILE: "inception-2015-12-05.tgz from "
    "http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz",
    **{name: "yt8m_pca.tgz from http://data.yt8m.org/yt8m_pca.tgz" for name in PCA_FILES},
}


def _node_name(tensor_name: str) -> str:
    return tensor_name.rsplit(":", 1)[0]


def _load_npy(path: str) -> np.ndarray:
    try:
        with tf.io.gfile.GFile(path, "rb") as file:
            return np.load(io.BytesIO(file.read()), allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise DataError(f"{path} is not a readable .npy file: {error}") from None


class Yt8mPca:
    """The released YouTube-8M PCA and whitening, in the layouts the extractor uses, as float32.

    Build it with `from_dir` (the files of `yt8m_pca.tgz`) or `from_arrays` (the same layouts in memory).

    Args:
        mean: float array `(2048,)`, the mean subtracted from the pool_3 features.
        eigenvecs: float array `(2048, 1024)`, the projection (the columns are the principal axes).
        eigenvals: float array `(1024,)`, the variances the projected features are whitened by.
    """

    def __init__(self, mean, eigenvecs, eigenvals):
        self.mean = np.asarray(mean, dtype=np.float32)
        self.eigenvecs = np.asarray(eigenvecs, dtype=np.float32)
        self.eigenvals = np.asarray(eigenvals, dtype=np.float32)
        if (
            self.mean.shape != (POOL3_DIM,)
            or self.eigenvecs.shape != (POOL3_DIM, PCA_DIMS)
            or self.eigenvals.shape != (PCA_DIMS,)
        ):
            raise ValueError(
                f"Yt8mPca takes mean (2048,), eigenvecs (2048, 1024) and eigenvals (1024,), got "
                f"{self.mean.shape}, {self.eigenvecs.shape} and {self.eigenvals.shape}."
            )

    @classmethod
    def from_arrays(cls, mean, eigenvals, eigenvecs, *, names=PCA_FILES) -> "Yt8mPca":
        """Builds the PCA from arrays laid out as in `yt8m_pca.tgz`, keeping what the extractor keeps.

        The extractor uses `mean[:, 0]`, `eigenvals[:1024, 0]` and `eigenvecs.T[:, :1024]`.

        Args:
            mean: array `(2048, 1)`.
            eigenvals: array `(K, 1)` with K >= 1024, finite and not below -1e-4 (the whitening's epsilon).
            eigenvecs: array `(K, 2048)` with K >= 1024 (one principal axis per row).
            names: the names the error messages give the three arrays, in this order. Defaults to the file
                names.

        Returns:
            A `Yt8mPca`.

        Raises:
            DataError: naming the array whose shape or values are not as above.
        """
        arrays = {
            "mean": np.asarray(mean),
            "eigenvals": np.asarray(eigenvals),
            "eigenvecs": np.asarray(eigenvecs),
        }
        expected = {
            "mean": ("(2048, 1)", lambda shape: shape == (POOL3_DIM, 1)),
            "eigenvals": ("(K, 1) with K >= 1024", lambda shape: len(shape) == 2 and shape[0] >= PCA_DIMS),
            "eigenvecs": (
                "(K, 2048) with K >= 1024",
                lambda shape: len(shape) == 2 and shape[0] >= PCA_DIMS and shape[1] == POOL3_DIM,
            ),
        }
        for (key, values), name in zip(arrays.items(), names, strict=True):
            layout, fits = expected[key]
            if not np.issubdtype(values.dtype, np.number) or not fits(values.shape):
                raise DataError(
                    f"{name}: expected a numeric array of shape {layout} (as in yt8m_pca.tgz), got "
                    f"{values.dtype} {values.shape}."
                )
            if not np.all(np.isfinite(values)):
                raise DataError(f"{name} holds NaN or infinite values.")
        eigenvals = arrays["eigenvals"][:PCA_DIMS, 0]
        if np.any(eigenvals.astype(np.float32) + np.float32(WHITENING_EPSILON) <= 0):
            raise DataError(f"{names[1]}: the first 1024 eigenvalues must be above -{WHITENING_EPSILON}.")
        return cls(arrays["mean"][:, 0], arrays["eigenvecs"].T[:, :PCA_DIMS], eigenvals)

    @classmethod
    def from_dir(cls, model_dir: str) -> "Yt8mPca":
        """Loads `mean.npy`, `eigenvals.npy` and `eigenvecs.npy` from `model_dir` (see `from_arrays`).

        Raises:
            MissingDataError: a file is missing, naming it and where to get it.
            DataError: a file is not a .npy file or not in the layout `from_arrays` expects, naming it.
        """
        _check_files(model_dir, PCA_FILES)
        paths = [os.path.join(model_dir, name) for name in PCA_FILES]
        return cls.from_arrays(*(_load_npy(path) for path in paths), names=paths)

    def apply(self, features) -> np.ndarray:
        """Projects and whitens pool_3 features: `((x - mean) @ eigenvecs) / sqrt(eigenvals + 1e-4)`.

        Computed in float32, as the extractor's graph computes it.

        Args:
            features: float array-like `(..., 2048)`.

        Returns:
            float32 array `(..., 1024)`.
        """
        features = np.asarray(features, dtype=np.float32)
        if features.ndim < 1 or features.shape[-1] != POOL3_DIM:
            raise ValueError(f"Yt8mPca.apply takes features (..., 2048), got shape {features.shape}.")
        projected = (features - self.mean) @ self.eigenvecs
        return (projected / np.sqrt(self.eigenvals + np.float32(WHITENING_EPSILON))).astype(np.float32)

    def apply_tensor(self, features):
        """`apply` in TensorFlow ops (float32), for a serving graph: `(..., 2048)` -> `(..., 1024)`."""
        projected = tf.matmul(tf.cast(features, tf.float32) - self.mean, self.eigenvecs)
        return projected / np.sqrt(self.eigenvals + np.float32(WHITENING_EPSILON))


def _check_files(model_dir: str, names) -> None:
    missing = [name for name in names if not tf.io.gfile.exists(os.path.join(model_dir, name))]
    if missing:
        sources = "\n".join(f"  {name}: in {MODEL_SOURCES[name]}" for name in missing)
        raise MissingDataError(
            f"The YouTube-8M feature extractor's model_dir {model_dir} lacks {', '.join(missing)}. "
            f"Download and extract into it:\n{sources}"
        )


def replace_old_batch_norms(graph_def: tf.compat.v1.GraphDef) -> tf.compat.v1.GraphDef:
    """Rewrites each `BatchNormWithGlobalNormalization` node as the arithmetic of its kernel.

    The 2015 Inception graph normalizes with `BatchNormWithGlobalNormalization`, an op removed in GraphDef
    version 9: a `tf.compat.v1.Session` still runs it (a graph imported into an empty graph keeps the old
    producer version), a TF2 function does not ("not available in GraphDef version ..."). Each such node
    becomes the expression of TensorFlow's kernel (`batch_norm_op.h`), in the same order:
    `(t - mean) * (rsqrt(variance + epsilon) * gamma) + beta` (without `* gamma` when
    `scale_after_normalization` is false), the last op keeping the node's name so that its consumers are
    unchanged. The values agree with the old kernel's up to float32 rounding.

    Args:
        graph_def: a `GraphDef`; it is not modified.

    Returns:
        A new `GraphDef` (the same content when no node uses the op).
    """
    rewritten = tf.compat.v1.GraphDef()
    rewritten.CopyFrom(graph_def)
    old_nodes = [node for node in rewritten.node if node.op == "BatchNormWithGlobalNormalization"]
    if not old_nodes:
        return rewritten
    kept = [node for node in rewritten.node if node.op != "BatchNormWithGlobalNormalization"]
    del rewritten.node[:]
    rewritten.node.extend(kept)
    for old in old_nodes:
        data_inputs = [name for name in old.input if not name.startswith("^")]
        control_inputs = [name for name in old.input if name.startswith("^")]
        if len(data_inputs) != 5:
            raise DataError(
                f"Node {old.name} (BatchNormWithGlobalNormalization) has {len(data_inputs)} inputs, not 5."
            )
        inputs, means, variances, betas, gammas = data_inputs
        dtype = old.attr["T"]

        def add_node(name, op, node_inputs, dtype=dtype, device=old.device):
            node = rewritten.node.add(name=name, op=op, device=device)
            node.input.extend(node_inputs)
            node.attr["dtype" if op == "Const" else "T"].CopyFrom(dtype)
            return node

        prefix = f"{old.name}/_ac_keras_batchnorm/"
        epsilon = add_node(prefix + "variance_epsilon", "Const", [])
        epsilon.attr["value"].tensor.CopyFrom(
            tf.make_tensor_proto(old.attr["variance_epsilon"].f, dtype=tf.as_dtype(dtype.type), shape=[])
        )
        plus_epsilon = add_node(prefix + "add", "AddV2", [variances, epsilon.name])
        scale = add_node(prefix + "rsqrt", "Rsqrt", [plus_epsilon.name])
        if old.attr["scale_after_normalization"].b:
            scale = add_node(prefix + "mul_gamma", "Mul", [scale.name, gammas])
        centered = add_node(prefix + "sub", "Sub", [inputs, means])
        scaled = add_node(prefix + "mul", "Mul", [centered.name, scale.name])
        add_node(old.name, "AddV2", [scaled.name, betas, *control_inputs])
    return rewritten


def _import_inception(graph_path: str):
    """Imports the GraphDef into a function: RGB uint8 frame `(height, width, 3)` -> pool_3 `(1, 2048)`."""
    try:
        with tf.io.gfile.GFile(graph_path, "rb") as file:
            graph_def = tf.compat.v1.GraphDef.FromString(file.read())
    except message.DecodeError as error:
        raise DataError(f"{graph_path} is not a serialized GraphDef: {error}") from None
    node_names = {node.name for node in graph_def.node}
    absent = [name for name in (INPUT_TENSOR, OUTPUT_TENSOR) if _node_name(name) not in node_names]
    if absent:
        raise DataError(
            f"{graph_path} has no tensor {' or '.join(absent)}: it is not the 2015 Inception graph "
            f"({MODEL_SOURCES[GRAPH_FILE]})."
        )

    graph_def = replace_old_batch_norms(graph_def)

    def import_graph(frame):
        (pool3,) = tf.graph_util.import_graph_def(
            graph_def, input_map={INPUT_TENSOR: frame}, return_elements=[OUTPUT_TENSOR], name=""
        )
        return pool3

    try:
        wrapped = tf.compat.v1.wrap_function(import_graph, [tf.TensorSpec([None, None, 3], tf.uint8)])
    except (ValueError, TypeError) as error:
        raise DataError(
            f"{graph_path} cannot be imported with {INPUT_TENSOR} fed RGB uint8 frames: {error}"
        ) from None
    output = wrapped.outputs[0]
    if output.dtype != tf.float32 or not output.shape.is_compatible_with([1, POOL3_DIM]):
        raise DataError(
            f"{graph_path}: {OUTPUT_TENSOR} is {output.dtype.name} {output.shape}, not float32 "
            f"(1, {POOL3_DIM})."
        )
    # Pruning drops what the frame does not reach: the JPEG decoder and its string placeholder.
    # A graph that imports may still not run (another op of a removed version, a bad shape): one frame tells.
    try:
        inception = wrapped.prune(feeds=wrapped.inputs, fetches=wrapped.outputs)
        inception(tf.zeros([2, 2, 3], tf.uint8))
    except (ValueError, tf.errors.OpError) as error:
        raise DataError(f"{graph_path} does not run on an RGB uint8 frame: {error}") from None
    return inception


class Yt8mEmbedder:
    """The YouTube-8M frame feature extractor: RGB frames -> 1024 whitened PCA features, in float32.

    Args:
        model_dir: str, a directory holding `classify_image_graph_def.pb` (from `inception-2015-12-05.tgz`)
            and `mean.npy`, `eigenvals.npy`, `eigenvecs.npy` (from `yt8m_pca.tgz`); see `MODEL_SOURCES`.

    Attributes:
        name: "yt8m".
        output_dim: 1024.
        input_size: None: frames of any size are fed as they are; the graph resizes them to 299 x 299.
        channels: 3 (RGB).
        description: JSON-serializable dict: `model` "yt8m", `model_dir`, `files` (name -> sha256 of each
            of the four files), the tensor names, `pca_dims`, `whitening_epsilon` and `quantization`
            ("nearest", what the writer must apply: `ac_keras.schema.quantize`).

    Raises:
        MissingDataError: listing the missing files and where to get them.
        DataError: the GraphDef cannot be read, lacks `DecodeJpeg:0` or `pool_3/_reshape:0`, or a PCA file
            is not in the released layout.
    """

    name = "yt8m"
    output_dim = PCA_DIMS
    input_size = None
    channels = 3

    def __init__(self, model_dir: str):
        self.model_dir = model_dir
        _check_files(model_dir, (GRAPH_FILE, *PCA_FILES))
        self.pca = Yt8mPca.from_dir(model_dir)
        inception = _import_inception(os.path.join(model_dir, GRAPH_FILE))

        def pool3_of_one(frame):
            return tf.reshape(inception(frame)[0], [POOL3_DIM])

        # The graph takes one frame (its ExpandDims makes a batch of one): the frames go through it in turn.
        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
        def pool3_of_frames(frames):
            return tf.map_fn(pool3_of_one, frames, fn_output_signature=tf.TensorSpec([POOL3_DIM], tf.float32))

        self._pool3_of_frames = pool3_of_frames
        self.description = {
            "model": self.name,
            "model_dir": model_dir,
            "files": {name: file_sha256(os.path.join(model_dir, name)) for name in (GRAPH_FILE, *PCA_FILES)},
            "input_tensor": INPUT_TENSOR,
            "output_tensor": OUTPUT_TENSOR,
            "pca_dims": PCA_DIMS,
            "whitening_epsilon": WHITENING_EPSILON,
            "quantization": "nearest",
        }

    def pool3(self, frames, batch_size: int = 32) -> np.ndarray:
        """The Inception graph's `pool_3/_reshape:0` for each frame, without the PCA.

        Args:
            frames: uint8 array `(batch, height, width, 3)`, RGB (OpenCV decodes BGR: reverse its channels).
            batch_size: int >= 1, frames per call of the traced function (the graph itself takes them one
                at a time). Defaults to 32.

        Returns:
            float32 array `(batch, 2048)`.

        Raises:
            ValueError: `frames` is not a uint8 array of that shape.
        """
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(
                f"Yt8mEmbedder takes RGB uint8 frames (batch, height, width, 3), got {frames.dtype} "
                f"{frames.shape}."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        features = np.zeros((frames.shape[0], POOL3_DIM), np.float32)
        for start in range(0, frames.shape[0], batch_size):
            features[start : start + batch_size] = self._pool3_of_frames(
                frames[start : start + batch_size]
            ).numpy()
        return features

    def embed_tensor(self, frames):
        """`embed` in TensorFlow ops, for a serving graph: the imported 2015 graph (one frame at a time, as
        it takes them) and the PCA: uint8 `(batch, height, width, 3)` -> float32 `(batch, 1024)`."""
        return self.pca.apply_tensor(self._pool3_of_frames(frames))

    def embed(self, frames, batch_size: int = 32) -> np.ndarray:
        """The YouTube-8M frame features: pool_3, then the released PCA and whitening.

        Args:
            frames: uint8 array `(batch, height, width, 3)`, RGB, of any height and width.
            batch_size: int >= 1, as in `pool3`. Defaults to 32.

        Returns:
            float32 array `(batch, 1024)`, before quantization.

        Raises:
            ValueError: `frames` is not a uint8 array of that shape.
        """
        return self.pca.apply(self.pool3(frames, batch_size))
