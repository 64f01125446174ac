"""LiteRT (TFLite) export: one file with builtin ops only, that gives the SavedModel's probabilities.

`python -m ac_keras.export --format=litert --litert_file=FILE` writes

- FILE, a LiteRT flatbuffer with one signature, `serving_default`: per modality an input `<modality>`
  `[1, T, dim]` (uint8, the records' bytes, for a quantized modality; float32 otherwise) and
  `<modality>_mask` int32 `[1, T]` (1 for a real frame); output `probabilities` float32
  `[1, num_classes]`. Only LiteRT's builtin operators (the pip interpreters cannot run Flex ops);
- FILE.json, its description (`ac_keras.litert_client`): the inputs, the frame selection of a video longer
  than T (evaluation's), the fill of a missing modality, the class names when the run has them.

The model is the trained classifier rebuilt with dense inputs and masks (`build_model(input_format="dense")`,
float32 layers, the trained weights copied by their paths), with the quantized modalities dequantized by the
same formula (`schema.dequantize`) in plain arithmetic, and its variables frozen into constants before
conversion. Freezing is what makes the file right: converted from a function that reads the Keras variables,
the converter keeps them as LiteRT resource variables (`VAR_HANDLE`/`READ_VARIABLE`) that nothing
initializes, and the interpreter then computes with uninitialized weights (the NaN or constant probabilities
of issue 28); the layers' masked softmax and norms convert exactly as they are.
"""

import dataclasses
import json
import os
import re

import keras
import numpy as np
import tensorflow as tf
from tensorflow.lite.python import convert_phase
from tensorflow.python.framework import convert_to_constants  # no public API freezes a function's variables

from ac_keras import data as ac_data
from ac_keras import litert_client, schema
from ac_keras.config import LITERT_QUANTIZATIONS
from ac_keras.data.files import write_text_atomically
from ac_keras.errors import DataError, UsageError
from ac_keras.model import MASK_SUFFIX, dense_inputs

SIGNATURE = litert_client.SIGNATURE
OUTPUT = litert_client.OUTPUT
# Videos of the training data (else the evaluation data) that calibrate --quantize=int8.
CALIBRATION_VIDEOS = 256


@dataclasses.dataclass(frozen=True)
class LiteRTExport:
    """What `export_litert` wrote.

    Attributes:
        path: the model file.
        description_path: its description JSON.
        size: the model file's size in bytes.
        max_frames: the frames per modality of its inputs.
        max_frames_source: where `max_frames` came from (a flag or the run's setting), for the user.
        operators: the builtin operators the model uses, sorted.
    """

    path: str
    description_path: str
    size: int
    max_frames: int
    max_frames_source: str
    operators: tuple


def default_max_frames(config):
    """The frames per modality of a LiteRT model of the run `config`, and where the figure comes from.

    `--eval_frames` when it is set; for a run that evaluates every frame (`--eval_frames=0`), the longest
    video of the training data as its `--stats` file counts it.

    Raises:
        UsageError: `--eval_frames=0` and no statistics file with frame counts: `--max_frames` is needed.
    """
    if config.data.eval_frames:
        return config.data.eval_frames, f"--eval_frames={config.data.eval_frames}"
    stats = config.data.stats
    longest = 0
    if stats:
        loaded = ac_data.load_stats(stats)
        for spec in config.data.feature_specs:
            histogram = loaded.get("modalities", {}).get(spec.name, {}).get("frame_count_histogram", {})
            longest = max([longest, *(int(length) for length in histogram)])
    if longest < 1:
        raise UsageError(
            "--max_frames: the run evaluates every frame (--eval_frames=0) and its statistics give no frame "
            "counts; pass --max_frames=T, the frames per modality of the LiteRT model."
        )
    source = stats if isinstance(stats, str) else "the run's statistics"
    return longest, f"the longest training video in {source} (--eval_frames=0)"


def dense_float_model(model, task):
    """A copy of the trained `model` with dense inputs and masks and float inputs (no `Dequantize` layer),
    float32 layers, and the trained weights.

    Raises:
        DataError: the model's weights do not match its run's configuration.
    """
    dense = task.build_model(mixed_precision="none", input_format="dense", uint8_inputs=())
    trained = {weight.path: weight for weight in model.weights}
    wanted = {weight.path: weight for weight in dense.weights}
    if set(trained) != set(wanted):
        raise DataError(
            "The trained model's weights do not match its run's config.json: "
            f"only in the model {sorted(set(trained) - set(wanted))}, "
            f"only in the configuration's model {sorted(set(wanted) - set(trained))}."
        )
    for path, weight in wanted.items():
        weight.assign(keras.ops.convert_to_numpy(trained[path]).astype(weight.dtype))
    return dense


def input_signature(specs, max_frames):
    """The LiteRT model's inputs: name -> `tf.TensorSpec` (frames `[1, T, dim]`, masks int32 `[1, T]`)."""
    signature = {}
    for spec in specs:
        dtype = tf.uint8 if spec.quantized else tf.float32
        signature[spec.name] = tf.TensorSpec([1, max_frames, spec.dim], dtype, name=spec.name)
        mask = spec.name + MASK_SUFFIX
        signature[mask] = tf.TensorSpec([1, max_frames], tf.int32, name=mask)
    return signature


def litert_function(model, task, max_frames):
    """The concrete function converted: the classifier on dense frames and masks, its weights constants.

    Args:
        model: the trained classifier (`build_model`, any input format).
        task: the run's `ac_keras.task.Task`.
        max_frames: int T, frames per modality.

    Returns:
        A `tf.types.experimental.ConcreteFunction` from `input_signature(specs, T)` to
        `{"probabilities": float32 [1, num_classes]}` that captures no variable.
    """
    specs = task.config.data.feature_specs
    dense = dense_float_model(model, task)
    signature = input_signature(specs, max_frames)

    @tf.function(input_signature=[signature], autograph=False)
    def classify(inputs):
        model_inputs = dict(inputs)
        for spec in specs:
            if spec.quantized:
                # The starter's formula in plain arithmetic: `Dequantize`'s fused kernel is no builtin op.
                model_inputs[spec.name] = schema.dequantize(tf.cast(inputs[spec.name], tf.float32))
        return tf.cast(dense(model_inputs, training=False), tf.float32)

    frozen = convert_to_constants.convert_variables_to_constants_v2(classify.get_concrete_function())

    # The frozen function returns a flat list; the outer one names the output for the signature.
    @tf.function(input_signature=[signature], autograph=False)
    def serving(inputs):
        return {OUTPUT: frozen(**inputs)[0]}

    return serving.get_concrete_function()


def calibration_inputs(task, max_frames, num_videos=CALIBRATION_VIDEOS):
    """The first `num_videos` videos of the run's training data (else its evaluation data) as LiteRT model
    inputs, selected and filled as evaluation does: the representative data of `--quantize=int8`.

    Raises:
        UsageError: the run names no records.
    """
    data = task.config.data
    pattern = data.train_data or data.eval_data
    if not pattern:
        raise UsageError("--quantize=int8 calibrates on records: give --train_data or --eval_data.")
    dataset = task.eval_dataset(pattern, batch_size=1, num_frames=max_frames, labels=False).take(num_videos)
    return [
        {name: value.numpy() for name, value in dense_inputs(features, num_frames=max_frames).items()}
        for features in dataset
    ]


def convert(model, task, *, max_frames, quantize="none", calibration=None):
    """The LiteRT flatbuffer of the trained `model` (see the module docstring).

    Args:
        model: the trained classifier.
        task: the run's `ac_keras.task.Task`.
        max_frames: int T >= 1, frames per modality.
        quantize: "none" (float32), "float16" (float16 weights) or "int8" (int8 weights and activations
            where LiteRT has int8 kernels, float elsewhere; inputs and output keep their types).
        calibration: for "int8", a list of input dicts (`calibration_inputs`); None reads them from the
            run's records.

    Returns:
        bytes.

    Raises:
        UsageError: a bad `max_frames` or `quantize`, or a model that needs operators outside LiteRT's builtin
            set (the message names the aggregator and the converter's complaint).
    """
    if quantize not in LITERT_QUANTIZATIONS:
        raise UsageError(f"--quantize must be one of {', '.join(LITERT_QUANTIZATIONS)}, got {quantize!r}.")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise UsageError(f"--max_frames must be a positive number of frames, got {max_frames!r}.")
    function = litert_function(model, task, max_frames)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([function], tf.Module())
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        samples = calibration_inputs(task, max_frames) if calibration is None else calibration
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(samples)
    try:
        return converter.convert()
    except convert_phase.ConverterError as error:
        missing = sorted(set(re.findall(r"'tf\.(\w+)' op is neither a custom op nor a flex op", str(error))))
        if not missing:
            raise
        raise UsageError(
            f"--format=litert: the model (--aggregator={task.config.model.aggregator}) needs TensorFlow "
            f"operators that LiteRT's builtin set lacks: {', '.join(missing)} (docs/serving.md lists the "
            "aggregators that convert)."
        ) from None


def operators(flatbuffer):
    """The sorted names of the operators a LiteRT flatbuffer uses (`ai_edge_litert`'s schema).

    Raises:
        DataError: an operator is a custom or Flex one (the pip interpreters cannot run it).
    """
    from ai_edge_litert import schema_py_generated as litert_schema

    names = {value: name for name, value in vars(litert_schema.BuiltinOperator).items() if name.isupper()}
    parsed = litert_schema.Model.GetRootAs(flatbuffer, 0)
    found = set()
    for index in range(parsed.OperatorCodesLength()):
        code = parsed.OperatorCodes(index)
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == litert_schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode().decode() if code.CustomCode() else "?"
            raise DataError(f"The LiteRT model uses the custom operator {custom!r}, not a builtin one.")
        found.add(names.get(builtin, str(builtin)))
    return tuple(sorted(found))


def describe(task, *, max_frames, quantize, model_file, class_names=None):
    """The description JSON of a LiteRT export (`ac_keras.litert_client` reads it), as a dict."""
    config = task.config
    fill = task.stats.missing_fill or {}
    inputs = []
    for spec in config.data.feature_specs:
        vector = np.asarray(fill.get(spec.name, np.zeros(spec.dim)), np.float32)
        entry = {"name": spec.name, "dim": spec.dim, "mask": spec.name + MASK_SUFFIX}
        if spec.quantized:
            entry["dtype"] = "uint8"
            entry["fill"] = schema.quantize_tensor(vector).numpy().astype(int).tolist()
            value_range = schema.MAX_QUANTIZED_VALUE - schema.MIN_QUANTIZED_VALUE
            entry["values"] = (
                "the quantized bytes of the records; the model dequantizes them as "
                f"q * {value_range} / 255 + {value_range} / 512 + {schema.MIN_QUANTIZED_VALUE}"
            )
        else:
            entry["dtype"] = "float32"
            entry["fill"] = vector.tolist()
            entry["values"] = "the float features of the records"
        inputs.append(entry)
    fill_source = "the training mean of the run's statistics" if task.stats.missing_fill else "zeros"
    return {
        "format": litert_client.FORMAT,
        "model": os.path.basename(model_file),
        "signature": SIGNATURE,
        "max_frames": max_frames,
        "eval_frames": config.data.eval_frames,
        "quantize": quantize,
        "inputs": inputs,
        "output": {
            "name": OUTPUT,
            "shape": [1, config.data.num_classes],
            "dtype": "float32",
            "activation": "softmax" if config.data.label_mode == "single" else "sigmoid",
        },
        "frame_selection": (
            f"per modality, a video with L > {max_frames} frames keeps frames floor((2 i + 1) L / "
            f"(2 * {max_frames})) for i = 0 .. {max_frames - 1}, in order; a shorter video keeps all its "
            f"frames. {_selection_note(config.data.eval_frames, max_frames)}"
        ),
        "layout": (
            "<modality> [1, max_frames, dim]: the kept frames first, then zeros; <modality>_mask int32 "
            "[1, max_frames]: 1 for a kept frame, 0 after"
        ),
        "missing_modality": (
            f"a video without frames of a modality: pass its fill vector ({fill_source}) as its one frame "
            "(mask 1, 0, ..., 0), as the SavedModel fills a record without the modality; an all-zero mask "
            "pools the modality to zero instead"
        ),
        "class_names": None if class_names is None else [str(name) for name in class_names],
    }


def _selection_note(eval_frames, max_frames):
    if eval_frames == max_frames:
        return f"This is evaluation's selection (--eval_frames={eval_frames}), as the SavedModel selects."
    kept = f"{eval_frames} frames" if eval_frames else "every frame"
    return (
        f"Evaluation's rule with {max_frames} in place of --eval_frames: the SavedModel keeps {kept}, so a "
        f"video longer than {min(eval_frames or max_frames, max_frames)} frames is seen differently."
    )


def export_litert(
    model, task, litert_file, *, max_frames=None, quantize="none", overwrite=False, class_names=None
):
    """Writes the LiteRT model of `model` to `litert_file` and its description to `<litert_file>.json`.

    Args:
        model: the trained classifier.
        task: the run's `ac_keras.task.Task`.
        litert_file: the model file to write.
        max_frames: int T, frames per modality; None for `default_max_frames(task.config)`.
        quantize: one of `LITERT_QUANTIZATIONS` (see `convert`).
        overwrite: replace existing files. Defaults to False.
        class_names: one name per class ("" for none), or None.

    Returns:
        A `LiteRTExport`.

    Raises:
        UsageError: no file name, an existing file without `overwrite`, a bad `max_frames` or `quantize`,
            a model that does not convert.
    """
    if not litert_file:
        raise UsageError("--format=litert needs --litert_file=FILE, the model file to write.")
    description_file = litert_client.description_path(litert_file)
    for path in (litert_file, description_file):
        if tf.io.gfile.exists(path) and not overwrite:
            raise UsageError(f"--litert_file: {path} exists; pass --overwrite to replace it.")
    if max_frames is None:
        max_frames, source = default_max_frames(task.config)
    else:
        source = f"--max_frames={max_frames}"
    flatbuffer = convert(model, task, max_frames=max_frames, quantize=quantize)
    used = operators(flatbuffer)
    directory = os.path.dirname(litert_file)
    if directory:
        tf.io.gfile.makedirs(directory)
    temporary = f"{litert_file}.tmp"
    with tf.io.gfile.GFile(temporary, "wb") as handle:
        handle.write(flatbuffer)
    tf.io.gfile.rename(temporary, litert_file, overwrite=True)
    description = describe(
        task, max_frames=max_frames, quantize=quantize, model_file=litert_file, class_names=class_names
    )
    write_text_atomically(description_file, json.dumps(description, indent=1) + "\n")
    return LiteRTExport(
        path=litert_file,
        description_path=description_file,
        size=len(flatbuffer),
        max_frames=max_frames,
        max_frames_source=source,
        operators=used,
    )
