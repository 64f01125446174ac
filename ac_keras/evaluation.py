"""The one evaluation loop: batches -> (labels, probabilities) -> the field's metrics.

The trainer evaluates each epoch with its distributed step, the evaluate command with a loaded model or
SavedModel; both stream through `evaluate` into an `ac_keras.metrics` accumulator.
"""


def evaluate(batches, predict, metrics):
    """Streams `batches` through `predict` into `metrics`; returns `metrics.result()`.

    Args:
        batches: an iterable of batches (e.g. a `tf.data.Dataset` or a distributed dataset).
        predict: function of one batch returning `(labels, probabilities)`, tensors or arrays of shape
            `(batch, num_classes)`; a batch of size 0 is skipped.
        metrics: an accumulator from `ac_keras.metrics.make_metrics` (or `Task.make_metrics`).

    Returns:
        The dict of metric name -> float.
    """
    for batch in batches:
        labels, probabilities = predict(batch)
        if probabilities.shape[0]:
            metrics.update(_numpy(labels), _numpy(probabilities))
    return metrics.result()


def predictor_step(predictor):
    """Adapts a features -> probabilities function to `evaluate`'s `predict` on `(features, labels)`."""

    def predict(batch):
        features, labels = batch[0], batch[1]
        return labels, predictor(features)

    return predict


def _numpy(value):
    return value.numpy() if hasattr(value, "numpy") else value
