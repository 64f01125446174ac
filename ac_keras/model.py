"""The multimodal classifier (paper Fig. 2): the builder training, tuning and export use.

Each modality's frames go through an aggregator, by default an attention cluster; the paper's comparison
aggregators (Table 4, appendix B) can take its place, and everything after them is the same.

`model_parts(model)` is the documented way for other code (the fused training head, the attention maps) to
reach a built model's dropout, classifier and attention clusters; only this module knows their layer names.
"""

import dataclasses
from collections.abc import Mapping

import keras

from ac_keras.layers import (
    AGGREGATORS,
    WEIGHTINGS,
    AttentionCluster,
    AverageAggregator,
    BiLSTMAggregator,
    Dequantize,
    FeatureCentering,
    FlattenAggregator,
    TemporalInceptionAggregator,
    TSLSTMAggregator,
)
from ac_keras.schema import LABEL_MODES

INPUT_FORMATS = ("ragged", "dense")
PREDICTIONS_KEY = "predictions"
MASK_SUFFIX = "_mask"
# Appendix B: bidirectional LSTMs with 1024 hidden units for RGB and 512 for flow and audio.
PAPER_LSTM_UNITS = {"rgb": 1024, "flow": 512, "audio": 512}
DEFAULT_LSTM_UNITS = 512
DROPOUT_LAYER = "dropout"
CLASSIFIER_LAYER = "classifier"
_CLUSTER_SUFFIX = "_cluster"


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


def _per_modality(values, modalities, argument):
    if isinstance(values, int):
        return dict.fromkeys(modalities, values)
    sizes = dict(values)
    missing = [name for name in modalities if name not in sizes]
    unknown = [name for name in sizes if name not in modalities]
    if missing or unknown:
        raise ValueError(
            f"`{argument}` must give one size per modality {list(modalities)}; "
            f"missing {missing}, unknown {unknown}."
        )
    return {name: sizes[name] for name in modalities}


def _cluster_sizes(cluster_sizes, modalities):
    return _per_modality(cluster_sizes, modalities, "cluster_sizes")


def paper_lstm_units(modalities):
    """The appendix B LSTM sizes: 1024 for `rgb`, 512 for `flow`, `audio` and any other modality."""
    return {name: PAPER_LSTM_UNITS.get(name, DEFAULT_LSTM_UNITS) for name in modalities}


def _aggregator_layer(
    aggregator, modality, *, lstm_units, flatten_frames, num_segments, inception, regularizer
):
    """One modality's aggregator other than the attention cluster, named `<modality>_<aggregator>`."""
    name = f"{modality}_{aggregator}"
    if aggregator == "average":
        return AverageAggregator(name=name)
    if aggregator == "flatten":
        return FlattenAggregator(flatten_frames, name=name)
    if aggregator == "bilstm":
        return BiLSTMAggregator(lstm_units[modality], kernel_regularizer=regularizer, name=name)
    if aggregator == "ts_lstm":
        return TSLSTMAggregator(
            lstm_units[modality], num_segments=num_segments, kernel_regularizer=regularizer, name=name
        )
    return TemporalInceptionAggregator(**inception, kernel_regularizer=regularizer, name=name)


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
    aggregator="attention_cluster",
    lstm_units=None,
    flatten_frames=None,
    num_segments=5,
    inception_filters=256,
    inception_kernel_sizes=(5, 7),
    feature_means=None,
    fused_shift=True,
    uint8_inputs=(),
    name="attention_clusters",
):
    """Builds the multimodal attention-cluster classifier of Fig. 2, or a Table 4 comparison model.

    One `AttentionCluster` per modality (each with its own cluster size), the cluster outputs concatenated,
    dropout, and one fully connected layer to the classes with softmax (single-label data) or sigmoid
    (multi-label data). The classifier output is float32 under mixed precision. With another `aggregator`
    each modality's cluster is replaced by that aggregator (`ac_keras.layers.aggregators`, appendix B) and
    the rest of the model is unchanged; the attention-cluster arguments (`cluster_sizes`, `weighting`,
    `shift`, `fc2_units`, `alpha_initializer`, `beta_initializer`) are then ignored.

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
        kernel_regularizer: optional regularizer of the attention kernels (of the LSTM input kernels or the
            convolution kernels for those aggregators); its penalties are `model.losses`, which Keras's
            `fit` and ac_keras's training loop (`Trainer`, through a `Task` whose `build_model` passes it)
            add to the loss. Defaults to None.
        aggregator: how each modality's frames become one vector: `"attention_cluster"` (the paper's
            method), `"average"` (`AverageAggregator`), `"flatten"` (`FlattenAggregator`, needs
            `flatten_frames`), `"bilstm"` (`BiLSTMAggregator`), `"ts_lstm"` (`TSLSTMAggregator`) or
            `"temporal_inception"` (`TemporalInceptionAggregator`). Defaults to `"attention_cluster"`.
        lstm_units: int or mapping modality -> LSTM hidden size, for `"bilstm"` and `"ts_lstm"`; None for
            the paper's sizes (1024 for `rgb`, 512 for every other modality). Defaults to None.
        flatten_frames: int, the fixed frame count of `"flatten"` (shorter videos are zero-padded, longer
            ones truncated); set it to the training and evaluation frame count. Defaults to None.
        num_segments: int, temporal segments of `"ts_lstm"`. Defaults to 5 (the paper's setting).
        inception_filters: int, filters of each `"temporal_inception"` convolution. Defaults to 256.
        inception_kernel_sizes: tuple of ints, the parallel `"temporal_inception"` kernel widths.
            Defaults to `(5, 7)`.
        feature_means: optional mapping modality -> mean frame (length dim), e.g. the training-set means
            of `python -m tfrecords.stats`: each listed modality's frames are centered (`FeatureCentering`
            layer `<modality>_centering`) before its aggregator. Defaults to None (no centering).
        fused_shift: bool, whether the clusters' shifting operation runs as one XLA kernel in training (the
            same function; `AttentionCluster(fused_shift)`). Defaults to True.
        uint8_inputs: modalities whose input is the quantized uint8 frames of the records, dequantized by
            the model's first layer (`Dequantize`, named `<modality>_dequantize`); the input pipeline then
            hands them over undequantized (`make_dataset(dequantize=False)`). Defaults to none (float
            inputs).
        name: model name. Defaults to `"attention_clusters"`.

    Returns:
        A `keras.Model` taking a dict of inputs and returning class probabilities `(batch, num_classes)`
        (or the dict described under `return_attention`).

    Example:
    >>> model = build_model({"rgb": 16, "audio": 8}, {"rgb": 4, "audio": 2}, num_classes=5)
    >>> model.output_shape
    (None, 5)
    >>> build_model({"rgb": 16}, None, num_classes=5, aggregator="bilstm", lstm_units=8).output_shape
    (None, 5)

    References:
        Long et al., "Attention Clusters", CVPR 2018, Fig. 2, Table 4 and appendix B.
    """
    dims = _feature_dims(features)
    if aggregator not in AGGREGATORS:
        raise ValueError(f"`aggregator` must be one of {AGGREGATORS}, got {aggregator!r}.")
    clusters = aggregator == "attention_cluster"
    sizes = _cluster_sizes(cluster_sizes, dims) if clusters else None
    if return_attention and not clusters:
        raise ValueError(
            f"`return_attention=True` needs `aggregator='attention_cluster'`; {aggregator!r} has none."
        )
    if aggregator in ("bilstm", "ts_lstm"):
        lstm_units = _per_modality(
            paper_lstm_units(dims) if lstm_units is None else lstm_units, dims, "lstm_units"
        )
        for modality, units in lstm_units.items():
            if not isinstance(units, int) or units < 1:
                raise ValueError(f"`lstm_units` of {modality!r} must be a positive int, got {units!r}.")
    if aggregator == "flatten" and (not isinstance(flatten_frames, int) or flatten_frames < 1):
        raise ValueError(
            "`flatten_frames` must be a positive int (the fixed frame count) for aggregator='flatten', "
            f"got {flatten_frames!r}."
        )
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
    feature_means = dict(feature_means or {})
    unknown = [name for name in feature_means if name not in dims]
    if unknown:
        raise ValueError(f"`feature_means` names modalities {unknown} that are not among {list(dims)}.")
    uint8_inputs = tuple(uint8_inputs)
    unknown = [name for name in uint8_inputs if name not in dims]
    if unknown:
        raise ValueError(f"`uint8_inputs` names modalities {unknown} that are not among {list(dims)}.")

    inputs = {}
    encoded = []
    attention = {}
    inception = {"filters": inception_filters, "kernel_sizes": tuple(inception_kernel_sizes)}
    for modality, dim in dims.items():
        if clusters:
            layer = AttentionCluster(
                sizes[modality],
                weighting=weighting,
                shift=shift,
                fc2_units=fc2_units,
                return_attention=True,
                alpha_initializer=alpha_initializer,
                beta_initializer=beta_initializer,
                kernel_regularizer=kernel_regularizer,
                fused_shift=fused_shift,
                name=modality + _CLUSTER_SUFFIX,
            )
        else:
            layer = _aggregator_layer(
                aggregator,
                modality,
                lstm_units=lstm_units,
                flatten_frames=flatten_frames,
                num_segments=num_segments,
                inception=inception,
                regularizer=kernel_regularizer,
            )
        input_dtype = "uint8" if modality in uint8_inputs else None
        if input_format == "ragged":
            inputs[modality] = keras.Input(shape=(None, dim), ragged=True, dtype=input_dtype, name=modality)
        else:
            inputs[modality] = keras.Input(shape=(None, dim), dtype=input_dtype, name=modality)
        frames = inputs[modality]
        if modality in uint8_inputs:
            frames = Dequantize(name=f"{modality}_dequantize")(frames)
        if modality in feature_means:
            centering = FeatureCentering(feature_means[modality], name=f"{modality}_centering")
            if centering.dim != dim:
                raise ValueError(
                    f"`feature_means[{modality!r}]` has {centering.dim} values; the modality's dim is {dim}."
                )
            frames = centering(frames)
        if input_format == "ragged":
            output = layer(frames)
        else:
            mask_name = modality + MASK_SUFFIX
            inputs[mask_name] = keras.Input(shape=(None,), dtype="int32", name=mask_name)
            output = layer(frames, mask=inputs[mask_name])
        if clusters:
            output, attention[attention_key(modality)] = output
        encoded.append(output)

    merged = encoded[0] if len(encoded) == 1 else keras.layers.Concatenate(name="concat")(encoded)
    merged = keras.layers.Dropout(dropout, name=DROPOUT_LAYER)(merged)
    logits = keras.layers.Dense(num_classes, name=CLASSIFIER_LAYER)(merged)
    activation = "softmax" if label_mode == "single" else "sigmoid"
    predictions = keras.layers.Activation(activation, dtype="float32", name=PREDICTIONS_KEY)(logits)
    outputs = {PREDICTIONS_KEY: predictions, **attention} if return_attention else predictions
    return keras.Model(inputs=inputs, outputs=outputs, name=name)


@dataclasses.dataclass(frozen=True)
class ModelParts:
    """The parts of a `build_model` model that training and visualization use.

    Attributes:
        dropout: the `keras.layers.Dropout` before the classifier.
        classifier: the final `keras.layers.Dense` (logits, before the softmax or sigmoid).
        clusters: modality -> its `AttentionCluster` layer (empty for the other aggregators); each returns
            `(output, weights)`.
    """

    dropout: keras.layers.Layer
    classifier: keras.layers.Layer
    clusters: dict

    def logits_model(self, model):
        """A model sharing `model`'s weights that returns the classifier's logits."""
        return keras.Model(model.inputs, self.classifier.output)

    def trunk_model(self, model):
        """A model sharing `model`'s weights that returns the classifier's input, before dropout."""
        return keras.Model(model.inputs, self.dropout.input)


def model_parts(model):
    """The `ModelParts` of a model from `build_model` (also after `.keras` save and load).

    Raises:
        ValueError: `model` was not built by `build_model` (no dropout and classifier layers).
    """
    try:
        dropout = model.get_layer(DROPOUT_LAYER)
        classifier = model.get_layer(CLASSIFIER_LAYER)
    except ValueError:
        raise ValueError(
            f"Model {model.name!r} was not built by ac_keras.model.build_model: it has no "
            f"{DROPOUT_LAYER!r} and {CLASSIFIER_LAYER!r} layers."
        ) from None
    clusters = {
        layer.name[: -len(_CLUSTER_SUFFIX)]: layer
        for layer in model.layers
        if isinstance(layer, AttentionCluster) and layer.name.endswith(_CLUSTER_SUFFIX)
    }
    return ModelParts(dropout=dropout, classifier=classifier, clusters=clusters)


def uint8_modalities(model):
    """The modalities whose model input is uint8 (dequantized inside the model), as a tuple of names."""
    return tuple(
        tensor.name.split(":")[0]
        for tensor in model.inputs
        if str(tensor.dtype) == "uint8" and not tensor.name.endswith(MASK_SUFFIX)
    )


def adapt_inputs(model, features):
    """`features` (modality -> frames) in the dtypes `model` takes: uint8 frames of a modality the model
    takes as floats (a model from before `uint8_inputs`) are dequantized; anything else is left alone."""
    import tensorflow as tf

    from ac_keras import schema

    wanted = {tensor.name.split(":")[0]: str(tensor.dtype) for tensor in model.inputs}
    adapted = {}
    for name, frames in features.items():
        needs_floats = wanted.get(name, "uint8") != "uint8" and frames.dtype == tf.uint8
        adapted[name] = schema.dequantize(frames) if needs_floats else frames
    return adapted


def dense_inputs(features, num_frames=None):
    """Ragged features (`make_dataset`'s) in the `input_format="dense"` layout, e.g. for Keras `fit`.

    Args:
        features: dict modality -> ragged frames `(batch, None, dim)`; other keys (the video ids) are
            dropped.
        num_frames: int, the padded frame count of every modality (a fixed shape for `fit`); None pads
            each modality to its longest video in the batch. Longer videos are an error, not cut.

    Returns:
        dict: per modality its zero-padded dense frames `(batch, frames, dim)`, in the features' dtype, and
        `"<modality>_mask"`, int32 `(batch, frames)`, 1 for real frames and 0 for padding.
    """
    import tensorflow as tf

    from ac_keras import schema

    dense = {}
    for name, frames in features.items():
        if name == schema.VIDEO_ID_KEY:
            continue
        lengths = frames.row_lengths()
        if num_frames is None:
            padded = frames.to_tensor()
        else:
            checked = tf.debugging.assert_less_equal(
                lengths,
                tf.cast(num_frames, lengths.dtype),
                message=f"dense_inputs: modality {name} has videos longer than num_frames={num_frames}",
            )
            with tf.control_dependencies([checked]):
                padded = frames.to_tensor(shape=[None, num_frames, frames.shape[-1]])
        dense[name] = padded
        dense[name + MASK_SUFFIX] = tf.sequence_mask(lengths, tf.shape(padded)[1], dtype=tf.int32)
    return dense
