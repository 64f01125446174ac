"""Loading a trained model for evaluation and prediction: the best Keras model or an exported SavedModel."""

import tensorflow as tf

from ac_keras import metrics as ac_metrics
from ac_keras import schema
from ac_keras.export import FEATURES_SIGNATURE, NUM_FRAMES_SUFFIX
from ac_keras.training import load_best_model


def load_predictor(model_dir=None, saved_model=None):
    """A function from a features dict (ragged per modality) to float32 class probabilities.

    Args:
        model_dir: training directory; its best model (`best/model.keras`) is used.
        saved_model: path of an exported SavedModel version; takes precedence over `model_dir`. It runs
            through its `predict_features` signature, as a client of TF Serving would.
    """
    if saved_model:
        if not tf.io.gfile.exists(saved_model):
            raise FileNotFoundError(f"--saved_model {saved_model!r} does not exist.")
        loaded = tf.saved_model.load(saved_model)
        if FEATURES_SIGNATURE not in loaded.signatures:
            raise ValueError(
                f"SavedModel {saved_model!r} has no {FEATURES_SIGNATURE!r} signature "
                f"(found {sorted(loaded.signatures)}); export it with `python -m ac_keras.export`."
            )
        signature = loaded.signatures[FEATURES_SIGNATURE]

        def predict_saved(features):
            inputs = {}
            for name, frames in features.items():
                if name == schema.VIDEO_ID_KEY:
                    continue
                inputs[name] = frames.to_tensor()
                inputs[name + NUM_FRAMES_SUFFIX] = tf.cast(frames.row_lengths(), tf.int32)
            return signature(**inputs)["probabilities"]

        predict_saved.loaded = loaded  # keep the SavedModel's resources alive
        return predict_saved
    if not model_dir:
        raise ValueError("Give --model_dir (its best model is used) or --saved_model.")
    model = load_best_model(model_dir)

    @tf.function(reduce_retracing=True)
    def predict_keras(features):
        inputs = {name: value for name, value in features.items() if name != schema.VIDEO_ID_KEY}
        return tf.cast(model(inputs, training=False), tf.float32)

    return predict_keras


def evaluate_dataset(predictor, dataset, label_mode, num_classes):
    """Streams `dataset` through `predictor` and returns the metrics of `ac_keras.metrics`."""
    accumulator = ac_metrics.make_metrics(label_mode, num_classes)
    for batch in dataset:
        features, labels = batch[0], batch[1]
        accumulator.update(labels.numpy(), predictor(features).numpy())
    return accumulator.result()
