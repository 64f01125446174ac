"""A one-minute synthetic demo: attention clusters find the one informative frame that averaging dilutes.

Usage: python -m ac_keras.demo [--videos=2048] [--epochs=10]

Each video is a set of 10-30 noise frames per modality (rgb 16-d, audio 8-d); in rgb one frame carries its
class prototype. The script trains the paper's classifier (fc1 weighting with shifting, N = 8) and the
Average baseline on the same data and prints held-out top-1 accuracy for both, beside chance. This is not
a paper benchmark: Flash-MNIST (paper section 4) is.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import time

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from ac_keras.model import build_model

DEMO_FEATURES = {"rgb": 16, "audio": 8}


def _define_flags():
    """Defines the demo's flags; only when run as a command, so importing `toy_videos` defines none."""
    flags.DEFINE_integer("videos", 2048, "Number of training videos (a quarter as many are held out).")
    flags.DEFINE_integer("epochs", 10, "Training epochs.")
    flags.DEFINE_integer("classes", 10, "Number of classes.")
    flags.DEFINE_integer("seed", 0, "Random seed for data and initialization.")


def toy_videos(num_videos, num_classes, seed=0, features=None, signal_modality="rgb", task_seed=1000):
    """Ragged frame sets whose class is marked by one informative frame among noise frames.

    Args:
        num_videos: int, number of videos.
        num_classes: int, number of classes.
        seed: int, random seed of the videos.
        features: mapping modality -> dim. Defaults to `{"rgb": 16, "audio": 8}`.
        signal_modality: the modality that carries the signal frame. Defaults to `"rgb"`.
        task_seed: int, seed of the class prototypes; training and test sets must share it. Defaults to 1000.

    Returns:
        `(features, labels)`: a dict modality -> float32 `tf.RaggedTensor` `(num_videos, None, dim)` with
        10-30 frames per video, and int64 class ids `(num_videos,)`.
    """
    features = dict(features or DEMO_FEATURES)
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(task_seed).normal(size=(num_classes, features[signal_modality]))
    labels = rng.integers(0, num_classes, size=num_videos)
    frames = {}
    for name, dim in features.items():
        lengths = rng.integers(10, 31, size=num_videos)
        values = rng.normal(size=(lengths.sum(), dim)).astype("float32")
        if name == signal_modality:
            starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
            values[starts + rng.integers(0, 3, size=num_videos)] += 2.0 * prototypes[labels]
        frames[name] = tf.RaggedTensor.from_row_lengths(values, lengths)
    return frames, labels


def _train_and_score(weighting, train, test, num_classes, epochs, seed):
    keras.utils.set_random_seed(seed)
    model = build_model(DEMO_FEATURES, {"rgb": 8, "audio": 2}, num_classes, weighting=weighting, dropout=0.2)
    model.compile(
        optimizer=keras.optimizers.Adam(0.003),
        loss="sparse_categorical_crossentropy",
        metrics=["sparse_categorical_accuracy"],
    )
    train_data = tf.data.Dataset.from_tensor_slices(train).shuffle(4096, seed=seed).batch(64)
    test_data = tf.data.Dataset.from_tensor_slices(test).batch(256)
    model.fit(train_data, epochs=epochs, verbose=2)
    _, accuracy = model.evaluate(test_data, verbose=0)
    return accuracy


def main(argv):
    del argv
    start = time.time()
    num_classes = flags.FLAGS.classes
    train = toy_videos(flags.FLAGS.videos, num_classes, seed=flags.FLAGS.seed)
    test = toy_videos(max(flags.FLAGS.videos // 4, 1), num_classes, seed=flags.FLAGS.seed + 1)
    results = {}
    for weighting in ("fc1", "average"):
        print(f"== training weighting={weighting} (shift on, N=8 rgb / 2 audio)", flush=True)
        results[weighting] = _train_and_score(
            weighting, train, test, num_classes, flags.FLAGS.epochs, flags.FLAGS.seed
        )
    print(
        f"held-out top-1: attention (fc1) {results['fc1']:.3f}, average {results['average']:.3f}, "
        f"chance {1 / num_classes:.3f} ({time.time() - start:.0f} s)"
    )


if __name__ == "__main__":
    _define_flags()
    cli.run(main)
