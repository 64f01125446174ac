r"""Dataset statistics for the reader: per-modality mean vectors, class counts, frame-count histograms.

    python -m tfrecords.stats --data='/data/train-*.tfrecord' --features=rgb:1024,audio:128 \
        --output=/data/stats.json

The JSON feeds `ac_keras.data.resolve_stats`: `missing_modality="mean"` fills a record without a modality
with that modality's mean vector, `class_balance=True` weights videos by 1/S with S the class counts. Means
are over all frames of all videos, dequantized; a video-level record counts as one frame. The computation
lives in `ac_keras.data.stats` (`compute_stats`, `write_stats`); this module is the command line.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

from absl import app, flags, logging

from ac_keras.data import stats as data_stats
from tfrecords import run_command


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so importing defines none)."""
    flags.DEFINE_string("data", None, "Glob of the TFRecord files, e.g. /data/train-*.tfrecord.")
    flags.DEFINE_string("features", None, "Feature spec, e.g. rgb:1024,audio:128.")
    flags.DEFINE_string("output", None, "Where to write the statistics JSON.")
    flags.DEFINE_enum("record_type", "auto", ["auto", "frame", "video"], "Record kind.")
    flags.DEFINE_integer("num_classes", None, "Length of class_counts; default: largest label + 1.")
    flags.DEFINE_integer("batch_size", 64, "Records parsed per batch.")
    flags.DEFINE_bool("skip_corrupt", False, "Skip the rest of corrupt files instead of failing.")
    flags.mark_flags_as_required(["data", "features", "output"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    config = flags.FLAGS
    stats = data_stats.compute_stats(
        config.data,
        config.features,
        record_type=config.record_type,
        num_classes=config.num_classes,
        batch_size=config.batch_size,
        skip_corrupt=config.skip_corrupt,
    )
    data_stats.write_stats(stats, config.output)
    logging.info("Wrote statistics of %d videos to %s", stats["num_videos"], config.output)


if __name__ == "__main__":
    run_command(main, define_flags)
