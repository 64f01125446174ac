"""A tiny stand-in for the YouTube-8M extractor's model files, for tests that may not download anything.

`write_standin_model_dir` writes the four files `ac_keras.extraction.yt8m` reads, under their real names and
in their real layouts, but small:

- `classify_image_graph_def.pb`: a frozen GraphDef laid out like the 2015 Inception graph where the extractor
  touches it. A string placeholder `DecodeJpeg/contents` feeds a `DecodeJpeg` op (RGB, 3 channels), whose
  output `DecodeJpeg:0` the extractor feeds directly with a uint8 frame `(height, width, 3)` of any size;
  then `Cast` to float, `ExpandDims` to a batch of one, `ResizeBilinear` (the 2015 kernel: no half-pixel
  centers, no corner alignment) to `STANDIN_IMAGE_SIZE` instead of 299, `Sub` 128 and `Mul` 1/128 as the
  real graph normalizes; in place of the Inception layers, a 3x3 stride-2 convolution, a 4x4 average pool,
  a 1x1 convolution to 2048 channels, each convolution followed by `BatchNormWithGlobalNormalization` (the
  op the 2015 graph uses, removed in GraphDef version 9; the GraphDef's producer version is 8) and ReLU,
  and a 2x2 average pool named `pool_3` of shape `(1, 1, 1, 2048)`; then `pool_3/_reshape` of shape
  `(1, 2048)`. All weights are constants in the GraphDef.
- `mean.npy` `(2048, 1)`, `eigenvals.npy` `(1024, 1)` (positive, decreasing) and `eigenvecs.npy`
  `(1024, 2048)` (orthonormal rows), as in `yt8m_pca.tgz`.
"""

import os

import numpy as np
import tensorflow as tf

# The stand-in resizes frames to this size; the real graph resizes to 299.
STANDIN_IMAGE_SIZE = 16
POOL3_DIM = 2048
PCA_DIMS = 1024
_CONV_FILTERS = 16


def _batch_norm_constants(rng: np.random.Generator, scope: str, depth: int) -> list[tf.Tensor]:
    """The inputs of a `BatchNormWithGlobalNormalization` after `t`: moving mean, variance, beta, gamma."""
    values = {
        "moving_mean": rng.normal(0.0, 0.5, depth),
        "moving_variance": rng.uniform(0.5, 2.0, depth),
        "beta": rng.normal(0.1, 0.2, depth),
        "gamma": rng.uniform(0.5, 1.5, depth),
    }
    return [
        tf.constant(value.astype(np.float32), name=f"{scope}/batchnorm/{key}")
        for key, value in values.items()
    ]


def _standin_graph_def(rng: np.random.Generator) -> tf.compat.v1.GraphDef:
    conv_kernel = rng.normal(0.0, 0.3, (3, 3, 3, _CONV_FILTERS)).astype(np.float32)
    mixed_kernel = rng.normal(0.0, 0.5, (1, 1, _CONV_FILTERS, POOL3_DIM)).astype(np.float32)
    # name -> (inputs, scale_after_normalization) of the batch norms, written as Identity nodes first: a graph
    # of today's producer version cannot hold the op, its GraphDef can (as the 2015 graph does).
    batch_norms = {}
    graph = tf.Graph()
    with graph.as_default():
        contents = tf.compat.v1.placeholder(tf.string, shape=[], name="DecodeJpeg/contents")
        image = tf.io.decode_jpeg(contents, channels=3, name="DecodeJpeg")
        pixels = tf.cast(image, tf.float32, name="Cast")
        batch = tf.expand_dims(pixels, 0, name="ExpandDims")
        resized = tf.raw_ops.ResizeBilinear(
            images=batch,
            size=tf.constant([STANDIN_IMAGE_SIZE, STANDIN_IMAGE_SIZE], tf.int32, name="ResizeBilinear/size"),
            align_corners=False,
            half_pixel_centers=False,
            name="ResizeBilinear",
        )
        centered = tf.subtract(resized, tf.constant(128.0, name="Sub/y"), name="Sub")
        normalized = tf.multiply(centered, tf.constant(1.0 / 128.0, name="Mul/y"), name="Mul")
        hidden = normalized
        for scope, kernel, strides, scale_after_normalization in (
            ("conv", conv_kernel, 2, True),
            ("mixed/conv", mixed_kernel, 1, False),
        ):
            convolved = tf.nn.conv2d(
                hidden,
                tf.constant(kernel, name=f"{scope}/conv2d_params"),
                strides,
                "SAME",
                name=f"{scope}/Conv2D",
            )
            inputs = [convolved, *_batch_norm_constants(rng, scope, kernel.shape[-1])]
            normalized = tf.identity(convolved, name=f"{scope}/batchnorm")
            batch_norms[normalized.op.name] = (
                [tensor.op.name for tensor in inputs],
                scale_after_normalization,
            )
            hidden = tf.nn.relu(normalized, name=scope)
            if scope == "conv":
                hidden = tf.nn.avg_pool2d(hidden, ksize=4, strides=4, padding="VALID", name="pool")
        pool3 = tf.nn.avg_pool2d(hidden, ksize=2, strides=2, padding="VALID", name="pool_3")
        tf.reshape(pool3, tf.constant([1, POOL3_DIM], name="pool_3/_reshape/shape"), name="pool_3/_reshape")
    graph_def = graph.as_graph_def()
    for node in graph_def.node:
        if node.name in batch_norms:
            inputs, scale_after_normalization = batch_norms[node.name]
            node.op = "BatchNormWithGlobalNormalization"
            del node.input[:]
            node.input.extend(inputs)
            node.attr["variance_epsilon"].f = 0.001
            node.attr["scale_after_normalization"].b = scale_after_normalization
    # An old producer version, below the op's removal (version 9), as the 2015 graph has.
    graph_def.versions.producer = 8
    graph_def.versions.min_consumer = 0
    return graph_def


def write_standin_model_dir(directory: str, seed: int = 0) -> str:
    """Writes a stand-in `classify_image_graph_def.pb` and stand-in YouTube-8M PCA files into `directory`.

    Args:
        directory: str, created if missing; existing files of the same names are replaced.
        seed: int, seeds the graph's weights and the PCA values; the same seed writes the same files.
            Defaults to 0.

    Returns:
        `directory`.
    """
    rng = np.random.default_rng(seed)
    tf.io.gfile.makedirs(directory)
    with tf.io.gfile.GFile(os.path.join(directory, "classify_image_graph_def.pb"), "wb") as file:
        file.write(_standin_graph_def(rng).SerializeToString())
    mean = rng.uniform(0.0, 0.5, (POOL3_DIM, 1)).astype(np.float32)
    eigenvals = np.sort(rng.uniform(0.01, 2.0, (PCA_DIMS, 1)), axis=0)[::-1]
    # Orthonormal rows, cheaply: rows of a Sylvester Hadamard matrix over sqrt(2048), with random signs and
    # columns in random order.
    hadamard = np.ones((1, 1))
    while hadamard.shape[0] < POOL3_DIM:
        hadamard = np.block([[hadamard, hadamard], [hadamard, -hadamard]])
    rows = rng.choice(POOL3_DIM, PCA_DIMS, replace=False)
    signs = rng.choice([-1.0, 1.0], (PCA_DIMS, 1))
    eigenvecs = signs * hadamard[rows][:, rng.permutation(POOL3_DIM)] / np.sqrt(POOL3_DIM)
    for name, values in (("mean.npy", mean), ("eigenvals.npy", eigenvals), ("eigenvecs.npy", eigenvecs)):
        with tf.io.gfile.GFile(os.path.join(directory, name), "wb") as file:
            np.save(file, values)
    return directory
