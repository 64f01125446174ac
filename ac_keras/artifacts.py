"""What a run leaves in its model_dir and how later commands load it.

    <model_dir>/config.json          the run's `Config` (`Config.to_json`)
    <model_dir>/extraction.json      how the training features were extracted from video files, copied
                                     from beside the training records when `tfrecords.extract` made them
    <model_dir>/checkpoints/         step and epoch checkpoints (`ac_keras.trainer`)
    <model_dir>/best/model.keras     the best model by the evaluation metric
    <model_dir>/best/metrics.json    its metrics, epoch and step
    <model_dir>/train/, eval/        TensorBoard logs

Every file is written to a temporary name and renamed into place, so an interrupted run never leaves a
half-written one. `load_predictor` gives evaluation and prediction one function from features to
probabilities, from the best model of a model_dir or from an exported SavedModel.
"""

import json
import os

import keras
import numpy as np
import tensorflow as tf

from ac_keras import schema
from ac_keras.errors import ConfigMismatchError, DataError, MissingDataError, UsageError
from ac_keras.model import adapt_inputs

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "best"
BEST_MODEL_FILE = "model.keras"
BEST_METRICS_FILE = "metrics.json"
CONFIG_FILE = "config.json"
# Written by `tfrecords.extract` beside the records (`ac_keras.extraction.extractor.EXTRACTION_FILE`).
EXTRACTION_FILE = "extraction.json"
# The exported SavedModel's signature that takes dense features (ac_keras.export writes it).
FEATURES_SIGNATURE = "predict_features"
NUM_FRAMES_SUFFIX = "_num_frames"


def write_text_atomically(path, text):
    """Writes `text` to `path` through a temporary file renamed into place."""
    temporary = f"{path}.tmp"
    with tf.io.gfile.GFile(temporary, "w") as handle:
        handle.write(text)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def write_config(model_dir, config):
    """Writes `config.json` into `model_dir` (created if needed)."""
    tf.io.gfile.makedirs(model_dir)
    write_text_atomically(os.path.join(model_dir, CONFIG_FILE), config.to_json())


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
        model_dir: training directory; its best model (`best/model.keras`) is used.
        saved_model: path of an exported SavedModel version; takes precedence over `model_dir`. It runs
            through its `predict_features` signature, as a client of TF Serving would.

    Raises:
        FileNotFoundError: the SavedModel or the best model does not exist.
        ValueError: neither is given, or the SavedModel lacks the `predict_features` signature.
    """
    if saved_model:
        return _saved_model_predictor(saved_model)
    if not model_dir:
        raise UsageError("Give --model_dir (its best model is used) or --saved_model.")
    model = load_best_model(model_dir)

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
