"""A PCA with whitening fitted on extracted frame features (`--pca_dims`), the YouTube-8M way.

YouTube-8M reduces its 2048-d Inception features to 1024 by a PCA fitted on a sample of frames, and
whitens them: `((x - mean) @ components.T) / sqrt(eigenvalues + epsilon)`, with `epsilon = 1e-4`; the
writer then quantizes the result to 8 bits (`ac_keras.schema.quantize`), whose range [-2, 2] suits
whitened values. `fit_pca` fits the same transform on a sample of features; `save_pca` writes it beside the
records, so that every record, and every later extraction, applies the same one. The extraction applies
it with TensorFlow ops (`apply_pca_tensor`), as the exported `classify_frames` graph does, so both give the
same bytes; `apply_pca` is the same formula in NumPy.
"""

import dataclasses
import io

import numpy as np
import tensorflow as tf

from ac_keras.errors import DataError, MissingDataError, UsageError

# Added to the eigenvalues before whitening, as the YouTube-8M extractor does.
WHITENING_EPSILON = 1e-4
NPZ_KEYS = ("mean", "components", "eigenvalues", "epsilon")
# Rows of the centered features multiplied at a time when accumulating the covariance (bounds the memory).
_CHUNK_ROWS = 4096


@dataclasses.dataclass(frozen=True)
class PcaParams:
    """A fitted PCA with whitening.

    Args:
        mean: float32 array `(input_dim,)`, subtracted first.
        components: float32 array `(dims, input_dim)`, orthonormal rows: the principal axes in decreasing
            order of variance, each with its largest-magnitude entry positive.
        eigenvalues: float32 array `(dims,)`, the variance of the sample along each axis (non-increasing).
        epsilon: float, added to the eigenvalues before whitening. Defaults to 1e-4 (YouTube-8M).
    """

    mean: np.ndarray
    components: np.ndarray
    eigenvalues: np.ndarray
    epsilon: float = WHITENING_EPSILON

    @property
    def input_dim(self) -> int:
        """The length of the features the PCA takes."""
        return self.mean.shape[0]

    @property
    def dims(self) -> int:
        """The length of the features the PCA gives."""
        return self.components.shape[0]


def fit_pca(features, dims: int, *, epsilon: float = WHITENING_EPSILON) -> PcaParams:
    """Fits a PCA with whitening on a sample of features.

    The covariance `centered.T @ centered / (n - 1)` is accumulated in float64 and diagonalized with
    `np.linalg.eigh`; the result is deterministic: each component's largest-magnitude entry is positive.

    Args:
        features: float array-like `(n, input_dim)`, the sample (e.g. frames drawn from the training videos).
        dims: int, the number of components kept, 1 <= dims <= input_dim; the sample must hold more than
            `dims` frames (n frames span at most n - 1 directions around their mean).
        epsilon: float >= 0, added to the eigenvalues before whitening. Defaults to 1e-4 (YouTube-8M).

    Returns:
        A `PcaParams`.

    Raises:
        ValueError: `features` is not a 2-D array.
        UsageError: `dims` is not in 1..input_dim, or `epsilon` is negative.
        DataError: the sample is too small for `dims`, or holds NaN or infinite values.
    """
    features = np.asarray(features)
    if features.ndim != 2:
        raise ValueError(f"fit_pca takes features (n, input_dim), got shape {features.shape}.")
    num_samples, input_dim = features.shape
    if isinstance(dims, bool) or not isinstance(dims, int | np.integer) or not 1 <= dims <= input_dim:
        raise UsageError(f"pca_dims must be an int in 1..{input_dim} (the feature length), got {dims!r}.")
    if not epsilon >= 0:
        raise UsageError(f"The PCA's whitening epsilon must be >= 0, got {epsilon!r}.")
    if num_samples <= dims:
        raise DataError(
            f"A PCA with pca_dims={dims} needs a sample of more than {dims} frames ({num_samples} frames "
            f"span at most {max(num_samples - 1, 0)} directions around their mean): sample more frames or "
            "lower pca_dims."
        )
    if not np.all(np.isfinite(features)):
        raise DataError("The PCA's sample of features holds NaN or infinite values.")
    mean = features.mean(axis=0, dtype=np.float64)
    covariance = np.zeros((input_dim, input_dim), np.float64)
    for start in range(0, num_samples, _CHUNK_ROWS):
        centered = features[start : start + _CHUNK_ROWS].astype(np.float64) - mean
        covariance += centered.T @ centered
    covariance /= num_samples - 1
    eigenvalues, eigenvectors = np.linalg.eigh(covariance)  # ascending
    order = np.argsort(eigenvalues, kind="stable")[::-1][:dims]
    components = eigenvectors[:, order].T
    largest = np.argmax(np.abs(components), axis=1)
    components *= np.sign(components[np.arange(dims), largest])[:, None]
    return PcaParams(
        mean=mean.astype(np.float32),
        components=components.astype(np.float32),
        # Rounding can leave the eigenvalues of flat directions slightly negative.
        eigenvalues=np.maximum(eigenvalues[order], 0.0).astype(np.float32),
        epsilon=float(epsilon),
    )


def apply_pca(params: PcaParams, features) -> np.ndarray:
    """Projects and whitens features: `((x - mean) @ components.T) / sqrt(eigenvalues + epsilon)`.

    Computed in float32, as the YouTube-8M extractor computes it.

    Args:
        params: a `PcaParams`.
        features: float array-like `(..., input_dim)`.

    Returns:
        float32 array `(..., dims)`.

    Raises:
        ValueError: the features' last axis is not `params.input_dim` long.
    """
    features = np.asarray(features, dtype=np.float32)
    if features.ndim < 1 or features.shape[-1] != params.input_dim:
        raise ValueError(f"This PCA takes features of length {params.input_dim}, got shape {features.shape}.")
    projected = (features - params.mean) @ params.components.T
    scale = np.sqrt(params.eigenvalues + np.float32(params.epsilon))
    return (projected / scale).astype(np.float32)


def apply_pca_tensor(params: PcaParams, features):
    """`apply_pca` in TensorFlow ops (float32), for a serving graph: `(..., input_dim)` -> `(..., dims)`."""
    features = tf.cast(features, tf.float32)
    projected = tf.matmul(features - params.mean, params.components, transpose_b=True)
    return projected / np.sqrt(params.eigenvalues + np.float32(params.epsilon))


def save_pca(params: PcaParams, path: str) -> None:
    """Writes the PCA as an `.npz` file (keys `mean`, `components`, `eigenvalues`, `epsilon`).

    Args:
        params: a `PcaParams`.
        path: str, a local or `tf.io.gfile` path; its directory must exist.
    """
    buffer = io.BytesIO()
    np.savez(
        buffer,
        mean=np.asarray(params.mean, np.float32),
        components=np.asarray(params.components, np.float32),
        eigenvalues=np.asarray(params.eigenvalues, np.float32),
        epsilon=np.float64(params.epsilon),
    )
    with tf.io.gfile.GFile(path, "wb") as file:
        file.write(buffer.getvalue())


def load_pca(path: str) -> PcaParams:
    """Reads a PCA written by `save_pca`.

    Args:
        path: str, a local or `tf.io.gfile` path.

    Returns:
        A `PcaParams`.

    Raises:
        MissingDataError: the file does not exist.
        DataError: naming the file, when it is not such an `.npz` file: unreadable, a key missing, shapes
            that do not agree, or NaN or infinite values.
    """
    if not tf.io.gfile.exists(path):
        raise MissingDataError(f"PCA file {path} does not exist.")
    with tf.io.gfile.GFile(path, "rb") as file:
        content = file.read()
    try:
        with np.load(io.BytesIO(content), allow_pickle=False) as npz:
            missing = [key for key in NPZ_KEYS if key not in npz.files]
            if missing:
                raise DataError(
                    f"PCA file {path} lacks {', '.join(missing)} (it holds {', '.join(npz.files)})."
                )
            arrays = {key: npz[key] for key in NPZ_KEYS}
    except (ValueError, OSError, EOFError) as error:
        if isinstance(error, DataError):
            raise
        raise DataError(f"PCA file {path} is not a readable .npz file: {error}") from None
    mean, components, eigenvalues, epsilon = (arrays[key] for key in NPZ_KEYS)
    if (
        not all(np.issubdtype(array.dtype, np.number) for array in (mean, components, eigenvalues, epsilon))
        or mean.ndim != 1
        or components.ndim != 2
        or eigenvalues.ndim != 1
        or epsilon.ndim != 0
        or components.shape != (eigenvalues.shape[0], mean.shape[0])
    ):
        raise DataError(
            f"PCA file {path}: expected numeric mean (input_dim,), components (dims, input_dim), "
            f"eigenvalues (dims,) and a scalar epsilon, got {mean.dtype} {mean.shape}, "
            f"{components.dtype} {components.shape}, {eigenvalues.dtype} {eigenvalues.shape} and "
            f"{epsilon.dtype} {epsilon.shape}."
        )
    if not all(np.all(np.isfinite(array)) for array in (mean, components, eigenvalues, epsilon)):
        raise DataError(f"PCA file {path} holds NaN or infinite values.")
    if np.any(eigenvalues < 0) or epsilon < 0:
        raise DataError(f"PCA file {path} holds negative eigenvalues or epsilon.")
    return PcaParams(
        mean=mean.astype(np.float32),
        components=components.astype(np.float32),
        eigenvalues=eigenvalues.astype(np.float32),
        epsilon=float(epsilon),
    )
