"""Stand-ins for the released VGGish files, for tests: a TF1 checkpoint and a PCA file of the real layout.

`write_vggish_checkpoint` writes `vggish_model.ckpt` with exactly the released variable names and shapes
(random values), `write_vggish_pca` writes `vggish_pca_params.npz` with the released keys, so that the loaders
of `ac_keras.extraction.audio` are tested against the layout of the real files, not against themselves.
The checkpoint is written with TensorFlow's raw save ops, as a TF1 `Saver` would: V1 (one file, the format
of the released `vggish_model.ckpt`) or V2 (`.index` and `.data` files). At the real size it holds 72 million
float32 values (about 290 MB).
"""

import io
import os

import numpy as np
import tensorflow as tf

from ac_keras.extraction import audio

CHECKPOINT_NAME = "vggish_model.ckpt"
PCA_NAME = "vggish_pca_params.npz"


def write_checkpoint(prefix, variables, *, version: int = 1) -> str:
    """Writes a TF1 name-based checkpoint holding `variables` under their names, whatever they are.

    Args:
        prefix: str or path-like, the checkpoint file (V1) or prefix (V2); its directory is created.
        variables: mapping of variable name -> array; written as given (no check of names or shapes), so
            tests can write broken checkpoints.
        version: int, 1 (one file, like the released checkpoint) or 2 (`.index` and `.data` files).
            Defaults to 1.

    Returns:
        The path to give `tf.train.load_checkpoint`, `prefix` as a str.

    Raises:
        ValueError: for another `version` or no variables.
    """
    prefix = os.fspath(prefix)
    if version not in (1, 2):
        raise ValueError(f"version must be 1 or 2, got {version!r}.")
    if not variables:
        raise ValueError("A checkpoint needs at least one variable.")
    tf.io.gfile.makedirs(os.path.dirname(prefix) or ".")
    names = sorted(variables)
    tensors = [tf.convert_to_tensor(variables[name]) for name in names]
    if version == 1:
        tf.raw_ops.Save(filename=prefix, tensor_names=names, data=tensors)
    else:
        tf.raw_ops.SaveV2(
            prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors
        )
    return prefix


def vggish_variables(seed: int = 0) -> dict[str, np.ndarray]:
    """Random float32 values for every released VGGish variable, with the released shapes.

    Kernels are uniform with variance `1 / fan_in` and biases uniform in [-0.1, 0.1], so activations stay
    of order one and the biases matter.

    Args:
        seed: int, seed of NumPy's generator. Defaults to 0.

    Returns:
        The released variable name -> float32 array.
    """
    rng = np.random.default_rng(seed)
    variables = {}
    for name, shape in audio.VARIABLE_SHAPES.items():
        values = rng.random(shape, dtype=np.float32)
        values -= np.float32(0.5)
        if name.endswith("/weights"):
            values *= np.float32(2.0 * np.sqrt(3.0 / np.prod(shape[:-1])))
        else:
            values *= np.float32(0.2)
        variables[name] = values
    return variables


def write_vggish_checkpoint(directory, seed: int = 0, *, version: int = 1) -> tuple[str, dict]:
    """Writes `<directory>/vggish_model.ckpt` with the released variable names and shapes, random values.

    Args:
        directory: str or path-like, created if needed.
        seed: int, seed of the values (`vggish_variables`). Defaults to 0.
        version: int, 1 (one file, as released) or 2 (`.index` and `.data` files). Defaults to 1.

    Returns:
        `(checkpoint_path, variables)`: the path to give the loader and the name -> array written.
    """
    variables = vggish_variables(seed)
    prefix = write_checkpoint(os.path.join(os.fspath(directory), CHECKPOINT_NAME), variables, version=version)
    return prefix, variables


def write_vggish_pca(directory, seed: int = 0) -> str:
    """Writes `<directory>/vggish_pca_params.npz` with the released keys: an orthonormal matrix and means.

    Args:
        directory: str or path-like, created if needed.
        seed: int, seed of the values. Defaults to 0.

    Returns:
        The path of the file.
    """
    rng = np.random.default_rng(seed)
    size = audio.EMBEDDING_SIZE
    eigen_vectors, _ = np.linalg.qr(rng.standard_normal((size, size)))
    means = rng.normal(0.0, 0.1, size)
    directory = os.fspath(directory)
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, PCA_NAME)
    buffer = io.BytesIO()  # zipfile seeks, which a gfile opened for writing cannot
    np.savez(buffer, **{audio.PCA_EIGEN_VECTORS_KEY: eigen_vectors, audio.PCA_MEANS_KEY: means})
    with tf.io.gfile.GFile(path, "wb") as stream:
        stream.write(buffer.getvalue())
    return path
