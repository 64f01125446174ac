"""The Flash-MNIST frame CNN (paper, appendix A.2): its training frames, the model, its accuracy, features.

conv 5x5x10, pool; conv 5x5x20, channel dropout 0.5, pool; FC 50 ReLU (layer ``features``, each frame's
feature); dropout 0.5; FC 11 softmax (class 10 is a pure-noise frame), trained with Adam 0.001 on every
training digit over noise backgrounds plus pure-noise frames. The two dropouts are in the authors' code
(PyTorch ``Dropout2d`` and ``F.dropout``), not in the paper's text; they make the features better for
attention clusters (docs/flash_mnist.md). Keras and TensorFlow are imported only when a model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ac_keras.datasets.flash_mnist.digits import IMAGE_SIZE, NUM_DIGITS, DigitPool
from ac_keras.datasets.flash_mnist.videos import NoiseSampler

NOISE_CLASS = NUM_DIGITS
FEATURE_DIM = 50

# Paper, appendix A.2: every one of the 60,000 training digits on 5 backgrounds (300,000 frames) plus
# 30,000 pure-noise frames; smaller digit pools keep this ratio.
PAPER_NOISE_RATIO = 30_000 / 300_000
CNN_LEARNING_RATE = 1e-3  # paper, appendix A.2
CNN_BATCH_SIZE = 64  # not given in the paper
CNN_DROPOUT = 0.5  # the authors' code: channel dropout after conv2, dropout after the FC 50 layer
# The frame CNN's version, recorded in the dataset's metadata: 1 (no version recorded) is the paper's text
# without dropout, 2 adds the authors' two dropouts. A dataset of an older version is regenerated.
FRAME_CNN_VERSION = 2


def make_cnn_frames(
    rng: np.random.Generator,
    digit_pool: DigitPool,
    noise: NoiseSampler,
    *,
    backgrounds_per_digit: int = 5,
    noise_frames: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Builds the frame classifier's data: every digit over noise backgrounds, plus pure noise.

    Args:
        rng: np.random.Generator.
        digit_pool: DigitPool whose every image is used.
        noise: NoiseSampler for the backgrounds.
        backgrounds_per_digit: int >= 1, how many noise backgrounds each digit image is put on (pixel-wise
            max). Defaults to 5 (paper, appendix A.2).
        noise_frames: optional int >= 0, how many pure-noise frames (class 10) to add. Defaults to None:
            ``PAPER_NOISE_RATIO`` times the number of digit frames (the paper's 30,000 : 300,000).

    Returns:
        ``(frames, labels)``: ``uint8`` of shape ``(n, 28, 28)`` and ``int64`` of shape ``(n,)`` with
        values 0..10, shuffled.
    """
    if backgrounds_per_digit < 1:
        raise ValueError(f"backgrounds_per_digit must be >= 1, got {backgrounds_per_digit}.")
    num_digit_frames = len(digit_pool) * backgrounds_per_digit
    if noise_frames is None:
        noise_frames = round(PAPER_NOISE_RATIO * num_digit_frames)
    if noise_frames < 0:
        raise ValueError(f"noise_frames must be >= 0, got {noise_frames}.")
    frames = noise.sample(rng, (num_digit_frames + noise_frames, IMAGE_SIZE, IMAGE_SIZE))
    digits = np.repeat(digit_pool.images, backgrounds_per_digit, axis=0)
    frames[:num_digit_frames] = np.maximum(frames[:num_digit_frames], digits)
    labels = np.concatenate(
        [
            np.repeat(digit_pool.labels, backgrounds_per_digit),
            np.full(noise_frames, NOISE_CLASS, dtype=np.int64),
        ]
    )
    order = rng.permutation(len(labels))
    return frames[order], labels[order]


def build_frame_cnn() -> Any:
    """Builds the paper's frame classifier (appendix A.2), uncompiled.

    Input: ``(batch, 28, 28)`` pixels in 0..255 (any numeric dtype; scaled by 1/255 inside).
    conv 5x5, 10 filters, ReLU, max-pool 2; conv 5x5, 20 filters, ReLU, channel dropout 0.5 (layer
    ``conv2_dropout``, ``SpatialDropout2D``), max-pool 2; dense 50, ReLU (layer ``features``, the frame
    feature); dropout 0.5 (layer ``features_dropout``); dense 11 softmax (layer ``probabilities``; class 10 is
    pure noise). The dropouts, as in the authors' code, act in training only; the features are read before
    ``features_dropout``.

    Returns:
        A ``keras.Model`` named ``frame_cnn``.
    """
    import keras

    pixels = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE), name="pixels")
    hidden = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(pixels)
    hidden = keras.layers.Reshape((IMAGE_SIZE, IMAGE_SIZE, 1), name="add_channel")(hidden)
    hidden = keras.layers.Conv2D(10, 5, activation="relu", name="conv1")(hidden)
    hidden = keras.layers.MaxPooling2D(2, name="pool1")(hidden)
    hidden = keras.layers.Conv2D(20, 5, activation="relu", name="conv2")(hidden)
    hidden = keras.layers.SpatialDropout2D(CNN_DROPOUT, name="conv2_dropout")(hidden)
    hidden = keras.layers.MaxPooling2D(2, name="pool2")(hidden)
    hidden = keras.layers.Flatten(name="flatten")(hidden)
    features = keras.layers.Dense(FEATURE_DIM, activation="relu", name="features")(hidden)
    hidden = keras.layers.Dropout(CNN_DROPOUT, name="features_dropout")(features)
    probabilities = keras.layers.Dense(NUM_DIGITS + 1, activation="softmax", name="probabilities")(hidden)
    return keras.Model(pixels, probabilities, name="frame_cnn")


def train_frame_cnn(
    frames: np.ndarray,
    labels: np.ndarray,
    *,
    epochs: int = 10,
    batch_size: int = CNN_BATCH_SIZE,
    learning_rate: float = CNN_LEARNING_RATE,
    seed: int = 0,
    verbose: int = 0,
) -> Any:
    """Builds and trains the frame CNN with Adam (paper, appendix A.2).

    Args:
        frames: ``uint8`` array ``(n, 28, 28)``, e.g. from ``make_cnn_frames``.
        labels: int array ``(n,)`` with values 0..10.
        epochs: int >= 1. Defaults to 10 (paper).
        batch_size: int >= 1. Defaults to 64 (the paper gives none).
        learning_rate: float, Adam's learning rate. Defaults to 0.001 (paper).
        seed: int, seeds weight initialization and shuffling (``keras.utils.set_random_seed``).
        verbose: int, Keras ``fit`` verbosity. Defaults to 0.

    Returns:
        The trained ``keras.Model`` (``build_frame_cnn``), compiled with accuracy as metric.
    """
    import keras

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}.")
    keras.utils.set_random_seed(seed)
    model = build_frame_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(
        frames.astype(np.float32),
        np.asarray(labels, dtype=np.int64),
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=verbose,
    )
    return model


def frame_accuracy(model: Any, frames: np.ndarray, labels: np.ndarray, batch_size: int = 2048) -> float:
    """Returns the fraction of frames the CNN classifies correctly (NaN for no frames).

    Args:
        model: the frame CNN.
        frames: ``uint8`` array ``(n, 28, 28)``.
        labels: int array ``(n,)`` with values 0..10.
        batch_size: int, frames per forward pass. Defaults to 2048.
    """
    if len(labels) == 0:
        return float("nan")
    predictions = [
        np.argmax(model.predict_on_batch(frames[start : start + batch_size].astype(np.float32)), -1)
        for start in range(0, len(labels), batch_size)
    ]
    return float(np.mean(np.concatenate(predictions) == np.asarray(labels)))


def feature_extractor(model: Any, batch_size: int = 2048) -> Callable[[np.ndarray], np.ndarray]:
    """Returns a function mapping frames to the CNN's 50-d ``features`` layer output.

    Args:
        model: the frame CNN (``build_frame_cnn``).
        batch_size: int, frames per forward pass; bounds the memory of the conv activations. Defaults to
            2048.

    Returns:
        A function: ``uint8`` frames of shape ``(..., 28, 28)`` -> ``float32`` features ``(..., 50)``.
    """
    import keras
    import tensorflow as tf

    features_model = keras.Model(model.inputs, model.get_layer("features").output)

    @tf.function(
        input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE], tf.uint8)],
        jit_compile=False,
    )
    def forward(pixels):
        return features_model(tf.cast(pixels, tf.float32), training=False)

    def extract(frames: np.ndarray) -> np.ndarray:
        leading = frames.shape[:-2]
        flat = frames.reshape(-1, IMAGE_SIZE, IMAGE_SIZE)
        out = np.empty((flat.shape[0], FEATURE_DIM), dtype=np.float32)
        for start in range(0, flat.shape[0], batch_size):
            out[start : start + batch_size] = forward(flat[start : start + batch_size]).numpy()
        return out.reshape(*leading, FEATURE_DIM)

    return extract
