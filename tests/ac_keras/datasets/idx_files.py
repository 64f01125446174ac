"""Writes MNIST-style IDX files for tests."""

import gzip

import numpy as np


def write_idx(path, array, compress):
    """Writes ``array`` (uint8 or int32) as an IDX file, gzipped when ``compress``."""
    array = np.asarray(array)
    type_code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = bytes([0, 0, type_code, array.ndim]) + np.asarray(array.shape, ">u4").tobytes()
    payload = header + array.astype(array.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if compress else open
    with opener(path, "wb") as stream:
        stream.write(payload)


def write_mnist_dir(directory, rng, sizes, compress):
    """Writes random digits as the four standard MNIST IDX files of ``directory``.

    Args:
        directory: pathlib.Path to write into.
        rng: np.random.Generator for the pixels.
        sizes: dict split ("train" or "test") -> number of digits; labels cycle through 0..9.
        compress: bool, gzip the files (names get ``.gz``).

    Returns:
        dict split -> (uint8 images (n, 28, 28), uint8 labels (n,)) as written.
    """
    suffix = ".gz" if compress else ""
    written = {}
    for split, count in sizes.items():
        stem = "train" if split == "train" else "t10k"
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = np.arange(count, dtype=np.uint8) % 10
        write_idx(directory / f"{stem}-images-idx3-ubyte{suffix}", images, compress)
        write_idx(directory / f"{stem}-labels-idx1-ubyte{suffix}", labels, compress)
        written[split] = (images, labels)
    return written
