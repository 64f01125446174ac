"""What the tuner tests share: tiny learnable TFRecords, a training config, the search space and command."""

import pathlib
import sys

from ac_keras import config as ac_config
from ac_keras.testing.learnable import learnable_videos
from ac_keras.testing.records import write_videos
from tuner import settings as tuner_settings

ROOT = pathlib.Path(__file__).resolve().parents[2]
FEATURES = "rgb:8:float,audio:4"
NUM_CLASSES = 4
SPACE = tuner_settings.SearchSpace(
    cluster_sizes=(("rgb", (1, 2, 4)), ("audio", (1, 2))),
    learning_rate=(1e-3, 3e-2),
)
# The same space as flags, for the command line.
SPACE_FLAGS = [
    "--search_cluster_sizes=rgb:1|2|4,audio:1|2",
    "--search_weighting=fc1,fc2",
    "--search_shift=true,false",
    "--search_learning_rate=1e-3,3e-2",
    "--search_dropout=0.0,0.7",
]


# The evaluation set's class counts (seed 1): chance is 1/4 and always answering the most frequent class, 3,
# scores 37/128 = 0.29. Fewer evaluation videos could not tell learning from a lucky guess (with 32, that most
# frequent class alone scored 14/32 = 0.44).
NUM_EVAL_VIDEOS = 128
MAJORITY_TOP1 = 37 / 128


def write_data(directory):
    """256 training and 128 evaluation videos: 8 + 4 batches of 32, a few seconds per trial."""
    write_videos(directory, learnable_videos(FEATURES, 256, seed=0), num_shards=1, prefix="train")
    write_videos(directory, learnable_videos(FEATURES, NUM_EVAL_VIDEOS, seed=1), num_shards=1, prefix="eval")
    return directory


def base_config(data_dir, **overrides):
    values = {
        "train_data": str(data_dir / "train-*"),
        "eval_data": str(data_dir / "eval-*"),
        "features": FEATURES,
        "num_classes": NUM_CLASSES,
        "cluster_sizes": (("rgb", 2), ("audio", 1)),
        "optimizer": "adam",
        "batch_size": 32,
        "epochs": 2,
        "train_frames": 6,
        "eval_frames": 0,
        "strategy": "default",
        "top_k": 3,
    }
    values.update(overrides)
    return ac_config.validate(ac_config.Config.from_values(**values))


def search_settings(config, tuner_dir, **overrides):
    values = {"tuner_dir": str(tuner_dir), "space": SPACE, "max_trials": 3}
    values.update(overrides)
    return tuner_settings.validate(tuner_settings.SearchSettings(**values), config)


def search_command(config, tuner_dir, *extra):
    """`python -m tuner.search` with the training flags of `config` and the shared search space."""
    flags = [line for line in config.to_flags().splitlines() if line]
    return [sys.executable, "-m", "tuner.search", *flags, *SPACE_FLAGS, f"--tuner_dir={tuner_dir}", *extra]
