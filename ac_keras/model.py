"""The multimodal attention-cluster classifier (paper Fig. 2): the builder training, tuning and export use."""

from collections.abc import Mapping

import keras

from ac_keras.layers import WEIGHTINGS, AttentionCluster

LABEL_MODES = ("single", "multi")
INPUT_FORMATS = ("ragged", "dense")
PREDICTIONS_KEY = "predictions"
MASK_SUFFIX = "_mask"


def attention_key(modality):
    """Output key of a modality's attention weights when the model returns them."""
    return f"attention_{modality}"


def _feature_dims(features):
    if isinstance(features, Mapping):
        dims = dict(features)
    else:
        from ac_keras import schema  # a spec string or FeatureSpec tuple

        dims = schema.feature_dims(features)
    if not dims:
        raise ValueError("`features` must name at least one modality, got none.")
    for name, dim in dims.items():
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"Feature dim of modality {name!r} must be a positive int, got {dim!r}.")
    return dims


def _cluster_sizes(cluster_sizes, modalities):
    if isinstance(cluster_sizes, int):
        return dict.fromkeys(modalities, cluster_sizes)
    sizes = dict(cluster_sizes)
    missing = [name for name in modalities if name not in sizes]
    unknown = [name for name in sizes if name not in modalities]
    if missing or unknown:
        raise ValueError(
            f"`cluster_sizes` must give one size per modality {list(modalities)}; "
            f"missing {missing}, unknown {unknown}."
        )
    return {name: sizes[name] for name in modalities}


def build_model(
    features,
    cluster_sizes,
    num_classes,
    *,
    label_mode="single",
    weighting="fc1",
    shift=True,
    fc2_units=10,
    dropout=0.5,
    return_attention=False,
    input_format="ragged",
    alpha_initializer=None,
    beta_initializer=None,
    kernel_regularizer=None,
    name="attention_clusters",
):
    """Builds the multimodal attention-cluster classifier of Fig. 2.

    One `AttentionCluster` per modality (each with its own cluster size), the cluster outputs concatenated,
    dropout, and one fully connected layer to the classes with softmax (single-label data) or sigmoid
    (multi-label data). The classifier output is float32 under mixed precision.

    Args:
        features: the modalities and their feature dims: a mapping such as `{"rgb": 1024, "audio": 128}`, a
            spec string such as `"rgb:1024,audio:128"`, or a tuple of `ac_keras.schema.FeatureSpec`.
            Input order follows this order.
        cluster_sizes: int (the same N for every modality) or a mapping modality -> N.
        num_classes: int, number of classes.
        label_mode: `"single"` (softmax) or `"multi"` (sigmoid). Defaults to `"single"`.
        weighting: `"average"`, `"fc1"` or `"fc2"`. Defaults to `"fc1"`.
        shift: bool, whether clusters use the shifting operation. Defaults to True.
        fc2_units: int, hidden size of fc2 weighting. Defaults to 10.
        dropout: float in [0, 1), dropout rate before the classifier. Defaults to 0.5.
        return_attention: bool; if True the model returns a dict with `"predictions"` and, per modality,
            `"attention_<modality>"` weights `(batch, N, frames)`. Defaults to False.
        input_format: `"ragged"`: one ragged input `(batch, None, dim)` per modality, named after it;
            `"dense"`: per modality a dense input `(batch, frames, dim)` named after it plus an int32
            `"<modality>_mask"` input `(batch, frames)`, 1 for real frames and 0 for padding (bool masks
            are accepted too; int32 because MirroredStrategy cannot sum bool tensors). Defaults to
            `"ragged"`. Keras 3 `fit` cannot distribute ragged inputs; ac_keras's own training loop can.
        alpha_initializer: shift scale initializer, None for the authors' reference. Defaults to None.
        beta_initializer: shift offset initializer, None for the authors' reference. Defaults to None.
        kernel_regularizer: optional regularizer of the attention kernels. Defaults to None.
        name: model name. Defaults to `"attention_clusters"`.

    Returns:
        A `keras.Model` taking a dict of inputs and returning class probabilities `(batch, num_classes)`
        (or the dict described under `return_attention`).

    Example:
    >>> model = build_model({"rgb": 16, "audio": 8}, {"rgb": 4, "audio": 2}, num_classes=5)
    >>> model.output_shape
    (None, 5)
    """
    dims = _feature_dims(features)
    sizes = _cluster_sizes(cluster_sizes, dims)
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"`num_classes` must be a positive int, got {num_classes!r}.")
    if label_mode not in LABEL_MODES:
        raise ValueError(f"`label_mode` must be one of {LABEL_MODES}, got {label_mode!r}.")
    if weighting not in WEIGHTINGS:
        raise ValueError(f"`weighting` must be one of {WEIGHTINGS}, got {weighting!r}.")
    if input_format not in INPUT_FORMATS:
        raise ValueError(f"`input_format` must be one of {INPUT_FORMATS}, got {input_format!r}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"`dropout` must be in [0, 1), got {dropout!r}.")

    inputs = {}
    encoded = []
    attention = {}
    for modality, dim in dims.items():
        cluster = AttentionCluster(
            sizes[modality],
            weighting=weighting,
            shift=shift,
            fc2_units=fc2_units,
            return_attention=True,
            alpha_initializer=alpha_initializer,
            beta_initializer=beta_initializer,
            kernel_regularizer=kernel_regularizer,
            name=f"{modality}_cluster",
        )
        if input_format == "ragged":
            inputs[modality] = keras.Input(shape=(None, dim), ragged=True, name=modality)
            output, weights = cluster(inputs[modality])
        else:
            inputs[modality] = keras.Input(shape=(None, dim), name=modality)
            mask_name = modality + MASK_SUFFIX
            inputs[mask_name] = keras.Input(shape=(None,), dtype="int32", name=mask_name)
            output, weights = cluster(inputs[modality], mask=inputs[mask_name])
        encoded.append(output)
        attention[attention_key(modality)] = weights

    merged = encoded[0] if len(encoded) == 1 else keras.layers.Concatenate(name="concat")(encoded)
    merged = keras.layers.Dropout(dropout, name="dropout")(merged)
    logits = keras.layers.Dense(num_classes, name="classifier")(merged)
    activation = "softmax" if label_mode == "single" else "sigmoid"
    predictions = keras.layers.Activation(activation, dtype="float32", name=PREDICTIONS_KEY)(logits)
    outputs = {PREDICTIONS_KEY: predictions, **attention} if return_attention else predictions
    return keras.Model(inputs=inputs, outputs=outputs, name=name)
