"""What a run leaves in its model_dir and how later commands load it.

    <model_dir>/config.json          the run's `Config` (`Config.to_json`)
    <model_dir>/extraction.json      how the training features were extracted from video files, copied
                                     from beside the training records when `tfrecords.extract` made them
    <model_dir>/class_names.csv      the class names of `--class_names` (`index,name` rows)
    <model_dir>/checkpoints/         step and epoch checkpoints (`ac_keras.trainer`)
    <model_dir>/best/model.keras     the best model by the evaluation metric
    <model_dir>/best/metrics.json    its metrics, epoch and step
    <model_dir>/train/, eval/        TensorBoard logs
    <model_dir>/export.json          the export `ac_keras.train` made last: its path, the step and the
                                     settings it was made at (a rerun of a finished run does not export the
                                     same model again)

Every file is written to a temporary name and renamed into place, so an interrupted run never leaves a
half-written one. `load_predictor` gives evaluation and prediction one function from features to
probabilities, from the best model of a model_dir (its latest checkpoint when it kept none) or from an
exported SavedModel. An export carries the run's files that a program classifying new videos needs in
`<saved_model>/assets.extra/` (config.json, stats.json, extraction.json, class_names.csv); `run_file` finds
them in either place.
"""

import json
import os
import sys

import keras
import numpy as np
import tensorflow as tf

from ac_keras import schema
from ac_keras.data.classes import format_class_names, read_class_names
from ac_keras.data.files import write_text_atomically
from ac_keras.errors import ConfigMismatchError, DataError, MissingDataError, UsageError
from ac_keras.model import adapt_inputs

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "best"
BEST_MODEL_FILE = "model.keras"
BEST_METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
# Written by `tfrecords.extract` beside the records (`ac_keras.extraction.extractor.EXTRACTION_FILE`).
EXTRACTION_FILE = "extraction.json"
CLASS_NAMES_FILE = "class_names.csv"
# An export's copy of the run's --stats file (the fill of a missing modality).
STATS_FILE = "stats.json"
# Where an exported SavedModel version keeps the run's files (TF Serving's directory for extra files).
EXTRA_ASSETS_DIR = "assets.extra"
# The exported SavedModel's signature that takes dense features (ac_keras.export writes it).
FEATURES_SIGNATURE = "predict_features"
NUM_FRAMES_SUFFIX = "_num_frames"
EXPORT_RECORD_FILE = "export.json"


def write_config(model_dir, config):
    """Writes `config.json` into `model_dir` (created if needed)."""
    tf.io.gfile.makedirs(model_dir)
    write_text_atomically(os.path.join(model_dir, CONFIG_FILE), config.to_json())


def export_record(config, step, export_base):
    """What an export of a run depends on: the step its model was trained to, where it goes, every setting."""
    return {"step": int(step), "export_dir": export_base, "config": json.loads(config.to_json())}


def previous_export(model_dir, record):
    """The path of the version `ac_keras.train` exported from `model_dir` for the same `export_record`, if
    that version is still there; else None."""
    path = os.path.join(model_dir, EXPORT_RECORD_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as handle:
        try:
            saved = json.loads(handle.read())
        except json.JSONDecodeError:
            return None
    exported = saved.pop("path", None) if isinstance(saved, dict) else None
    if saved != record or not exported or not tf.io.gfile.exists(exported):
        return None
    return exported


def write_export_record(model_dir, record, path):
    """Writes `export.json`: `record` (see `export_record`) and the exported version's `path`."""
    write_text_atomically(os.path.join(model_dir, EXPORT_RECORD_FILE), json.dumps({**record, "path": path}))


def extraction_description_path(file_pattern):
    """The `extraction.json` beside the first file `file_pattern` matches (comma-separated globs), or None."""
    for part in (file_pattern or "").split(","):
        pattern = part.strip()
        matched = sorted(tf.io.gfile.glob(pattern)) if pattern else []
        if matched:
            candidate = os.path.join(os.path.dirname(matched[0]), EXTRACTION_FILE)
            return candidate if tf.io.gfile.exists(candidate) else None
    return None


def copy_extraction_description(model_dir, train_data):
    """Copies the training records' `extraction.json` into `model_dir` (so classify and export can extract
    features for a new video exactly as the training data was made); returns the copy's path or None."""
    source = extraction_description_path(train_data)
    if source is None:
        return None
    with tf.io.gfile.GFile(source, "r") as handle:
        text = handle.read()
    tf.io.gfile.makedirs(model_dir)
    target = os.path.join(model_dir, EXTRACTION_FILE)
    write_text_atomically(target, text)
    return target


def run_file(name, *, model_dir=None, saved_model=None):
    """The path of one of the run's files: `<saved_model>/assets.extra/<name>` when `saved_model` is given,
    else `<model_dir>/<name>` (it may not exist)."""
    if saved_model:
        return os.path.join(saved_model, EXTRA_ASSETS_DIR, name)
    if not model_dir:
        raise UsageError("Give --model_dir (its best model, else its latest checkpoint) or --saved_model.")
    return os.path.join(model_dir, name)


def load_run_config(*, model_dir=None, saved_model=None, **overrides):
    """The validated `Config` of the run that made a model_dir or an export, with fields replaced by name.

    The statistics are the run's `--stats` file (an export's copy in `assets.extra/stats.json`) unless
    `overrides` name others; a missing one is an error, since the fill of a missing modality depends on it.

    Raises:
        MissingDataError: no config.json (the message says where it was looked for), or the statistics
            file it records is gone.
    """
    path = run_file(CONFIG_FILE, model_dir=model_dir, saved_model=saved_model)
    what = f"--saved_model {saved_model}" if saved_model else f"--model_dir {model_dir}"
    if not tf.io.gfile.exists(saved_model or model_dir):
        raise MissingDataError(f"{what} does not exist.")
    if not tf.io.gfile.exists(path):
        raise MissingDataError(
            f"{what} has no {path}: it was not made by `python -m ac_keras.train` (or `ac_keras.export` of "
            "this version), so the settings of the run are unknown."
        )
    with tf.io.gfile.GFile(path) as handle:
        saved = json.loads(handle.read())
    from ac_keras import config as ac_config

    recorded = ac_config.flat_config_dict(saved).get("stats")
    if recorded and "stats" not in overrides:
        copy = run_file(STATS_FILE, saved_model=saved_model) if saved_model else None
        if copy and tf.io.gfile.exists(copy):
            overrides["stats"] = copy
        elif not tf.io.gfile.exists(recorded):
            raise MissingDataError(
                f"The run's statistics file {recorded} ({path}: --stats) does not exist; the fill of a "
                "missing modality comes from it. Pass --stats=PATH (the same file)."
            )
    try:
        return ac_config.from_saved(saved, **overrides)
    except ac_config.ConfigError as error:
        raise DataError(f"{path}: {error}") from None


def load_extractor(features, *, model_dir=None, saved_model=None):
    """The feature extractor of a model's training data, rebuilt from its extraction.json.

    Only the modalities of `features` are kept (the records may hold more than the model reads); each must
    have been extracted with the dim and dtype the model takes. `Extractor.from_description` checks every
    file the kept modalities were extracted with against its recorded SHA-256.

    Args:
        features: the model's feature spec string or sequence of `schema.FeatureSpec`; None keeps every
            extracted modality (a client computing flow images, say).
        model_dir, saved_model: where the extraction.json is (`run_file`).

    Returns:
        An `ac_keras.extraction.extractor.Extractor`.

    Raises:
        MissingDataError: there is no extraction.json (the model was not trained on features of
            `python -m tfrecords.extract`), or a file it records is gone.
        DataError: a modality the model reads was not extracted, or differs in dim or dtype, or a recorded
            file has changed.
    """
    from ac_keras.extraction import extractor as extractor_lib

    path = run_file(EXTRACTION_FILE, model_dir=model_dir, saved_model=saved_model)
    if not tf.io.gfile.exists(path):
        raise MissingDataError(
            f"{path} does not exist: the model was not trained on features of `python -m tfrecords.extract`, "
            "so nothing records how to extract its features from a video."
        )
    description = extractor_lib.read_description(path)
    try:
        extracted = {spec.name: spec for spec in schema.parse_features(description.get("features"))}
    except ValueError as error:
        raise DataError(f"{path}: {error}") from None
    specs = tuple(extracted.values()) if features is None else schema.to_feature_specs(features)
    for spec in specs:
        if extracted.get(spec.name) != spec:
            found = extracted.get(spec.name, "not extracted")
            raise DataError(f"{path}: the model takes {spec}, the extraction made {found}.")
    names = {spec.name for spec in specs}
    kept = dict(
        description,
        modalities={name: entry for name, entry in description["modalities"].items() if name in names},
    )
    return extractor_lib.Extractor.from_description(kept, source=path)


def write_class_names(directory, names):
    """Writes `<directory>/class_names.csv` atomically; returns its path."""
    tf.io.gfile.makedirs(directory)
    path = os.path.join(directory, CLASS_NAMES_FILE)
    write_text_atomically(path, format_class_names(names))
    return path


def load_class_names(num_classes, *, model_dir=None, saved_model=None):
    """The class names stored with a model (an export's `assets.extra/class_names.csv`, else the model_dir's
    `class_names.csv`) as `read_class_names` gives them, or None when none are stored."""
    candidates = []
    if saved_model:
        candidates.append(run_file(CLASS_NAMES_FILE, saved_model=saved_model))
    if model_dir:
        candidates.append(run_file(CLASS_NAMES_FILE, model_dir=model_dir))
    for path in candidates:
        if tf.io.gfile.exists(path):
            return read_class_names(path, num_classes)
    return None


def read_config(model_dir):
    """The loaded `config.json` of `model_dir` as a dict, or None when there is none."""
    path = os.path.join(model_dir, CONFIG_FILE)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path) as handle:
        return json.loads(handle.read())


def check_same_run(model_dir, config):
    """Refuses to continue a model_dir whose config.json holds other settings than `config`'s.

    Raises:
        ConfigMismatchError: naming each differing setting with the saved and the new value.
    """
    from ac_keras import config as ac_config

    saved = read_config(model_dir)
    if saved is None:
        return
    changed = ac_config.differences(saved, config)
    if changed:
        lines = "\n".join(f"  --{name}: {old} in the run, {new} now" for name, old, new in changed)
        raise ConfigMismatchError(
            f"--model_dir {model_dir} holds a run with other settings ({CONFIG_FILE}):\n{lines}\n"
            "Resume it with the same settings, or train into a new --model_dir. Settings that may change "
            "between runs: --epochs, --eval_data, --eval_frames, --skip_corrupt, --skip_nonfinite and the "
            "runtime flags (docs/training.md)."
        )


def best_model_path(model_dir):
    return os.path.join(model_dir, BEST_SUBDIR, BEST_MODEL_FILE)


def write_best_model(model_dir, model, record):
    """Saves `model` as the best model of `model_dir` with its `record` (metrics, epoch, step)."""
    best_dir = os.path.join(model_dir, BEST_SUBDIR)
    tf.io.gfile.makedirs(best_dir)
    temporary = os.path.join(best_dir, f".{BEST_MODEL_FILE}.tmp.keras")
    model.save(temporary)
    tf.io.gfile.rename(temporary, best_model_path(model_dir), overwrite=True)
    write_text_atomically(os.path.join(best_dir, BEST_METRICS_FILE), json.dumps(record, indent=2))


def load_best_model(model_dir):
    """Loads `<model_dir>/best/model.keras`, the best model by the evaluation metric.

    Raises:
        FileNotFoundError: there is none (the message says how to get one).
    """
    path = best_model_path(model_dir)
    if not tf.io.gfile.exists(path):
        raise MissingDataError(
            f"No best model at {path}: train with --eval_data so the best checkpoint is kept, or pass "
            "--saved_model."
        )
    return keras.models.load_model(path)


def load_trained_model(model_dir, *, say=None):
    """The model of a training directory: its best model, else (a run without --eval_data keeps none) the
    model of its latest checkpoint, built from the run's config.json.

    Args:
        model_dir: the training directory (`--model_dir`).
        say: called with one line when the latest checkpoint stands in for the best model. Defaults to
            printing it to stderr (stdout may carry a command's results).

    Raises:
        MissingDataError: neither a best model nor a checkpoint (the message names both places), or no
            config.json beside the checkpoints.
    """
    if tf.io.gfile.exists(best_model_path(model_dir)):
        return load_best_model(model_dir)
    checkpoint_dir = os.path.join(model_dir, CHECKPOINT_SUBDIR)
    latest = tf.train.latest_checkpoint(checkpoint_dir) if tf.io.gfile.exists(checkpoint_dir) else None
    if not latest:
        raise MissingDataError(
            f"--model_dir {model_dir} holds no trained model: no best model ({best_model_path(model_dir)}) "
            f"and no checkpoint in {checkpoint_dir}. Train into it first, or pass --saved_model."
        )
    from ac_keras.task import Task  # the task imports the data pipeline; only needed here

    model = Task(load_run_config(model_dir=model_dir)).build_model()
    tf.train.Checkpoint(model=model).restore(latest).expect_partial().assert_existing_objects_matched()
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    say(f"No best model in {model_dir} (trained without --eval_data): using its latest checkpoint {latest}.")
    return model


def best_or_final_model(model_dir, model, task):
    """The best model of `model_dir` when one was kept, else a plain copy of `model` (built by `task`).

    The copy is built outside any distribution strategy, for export and prediction.
    """
    if tf.io.gfile.exists(best_model_path(model_dir)):
        return load_best_model(model_dir)
    with tf.distribute.get_strategy().scope():
        copy = task.build_model()
    copy.set_weights([np.asarray(weight) for weight in model.get_weights()])
    return copy


def load_predictor(model_dir=None, saved_model=None):
    """A function from a features dict (ragged per modality) to float32 class probabilities.

    Quantized modalities may come as uint8 (the input pipeline's default) or float; a model or export that
    takes floats for them (made before uint8 inputs) gets them dequantized.

    Args:
        model_dir: training directory; its best model (`best/model.keras`) is used, or its latest
            checkpoint when it has none (`load_trained_model`).
        saved_model: path of an exported SavedModel version; takes precedence over `model_dir`. It runs
            through its `predict_features` signature, as a client of TF Serving would.

    Raises:
        FileNotFoundError: the SavedModel does not exist, or the model_dir holds no trained model.
        ValueError: neither is given, or the SavedModel lacks the `predict_features` signature.
    """
    if saved_model:
        return _saved_model_predictor(saved_model)
    if not model_dir:
        raise UsageError("Give --model_dir (its best model, else its latest checkpoint) or --saved_model.")
    model = load_trained_model(model_dir)

    @tf.function(reduce_retracing=True)
    def predict_keras(features):
        inputs = {name: value for name, value in features.items() if name != schema.VIDEO_ID_KEY}
        return tf.cast(model(adapt_inputs(model, inputs), training=False), tf.float32)

    return predict_keras


def _saved_model_predictor(saved_model):
    if not tf.io.gfile.exists(saved_model):
        raise MissingDataError(f"--saved_model {saved_model!r} does not exist.")
    loaded = tf.saved_model.load(saved_model)
    if FEATURES_SIGNATURE not in loaded.signatures:
        raise DataError(
            f"SavedModel {saved_model!r} has no {FEATURES_SIGNATURE!r} signature "
            f"(found {sorted(loaded.signatures)}); export it with `python -m ac_keras.export`."
        )
    signature = loaded.signatures[FEATURES_SIGNATURE]
    # Exports from before uint8 inputs take float32 frames for every modality.
    dtypes = {name: spec.dtype for name, spec in signature.structured_input_signature[1].items()}

    def predict_saved(features):
        inputs = {}
        for name, frames in features.items():
            if name == schema.VIDEO_ID_KEY:
                continue
            values = frames
            if frames.dtype == tf.uint8 and dtypes.get(name) == tf.float32:
                values = schema.dequantize(frames)
            inputs[name] = values.to_tensor()
            inputs[name + NUM_FRAMES_SUFFIX] = tf.cast(frames.row_lengths(), tf.int32)
        return signature(**inputs)["probabilities"]

    predict_saved.loaded = loaded  # keep the SavedModel's resources alive
    return predict_saved
