"""SavedModel export for TF Serving, written with `keras.export.ExportArchive`.

The exported model needs neither ac_keras nor Keras to run: TF Serving, `saved_model_cli run`,
`tf.saved_model.load` and the TF1 `tf.compat.v1.saved_model.loader.load` all run it. Signatures:

- `serving_default`: input `inputs`, a 1-D batch of serialized `tf.train.SequenceExample` strings in the
  training layout. Decoding, dequantization, missing-modality fill and frame selection (`eval_frames` at equal
  intervals, or all) run in the graph. Outputs `video_id` (string), `classes` (int64 top-k class ids) and
  `scores` (float32 top-k probabilities), `k = min(top_k, num_classes)`.
- `predict_features`: per modality a dense input `<modality>` `(batch, frames, dim)`, uint8 (the quantized
  bytes, as in the records) for a quantized modality of a model that takes uint8 (every model trained since
  uint8 inputs; older ones take float32) and float32 for a float modality, and an int32
  `<modality>_num_frames` `(batch,)` giving each video's real frame count; output `probabilities`
  `(batch, num_classes)`.
- `classify_frames` (`--with_extractor`, for a model trained on features of `python -m tfrecords.extract`):
  one decoded video in, its feature extraction and the classifier in one graph: uint8 `frames`
  `(num_frames, height, width, 3)` sampled as the extraction sampled them (for an rgb modality), float32
  `waveform` `(num_samples,)` of 16 kHz mono audio, empty for a video without audio (audio), uint8
  `flow_images` `(num_frames - 1, h, w, 2)` computed by the client with `Extractor.flow_images` (flow:
  optical flow is OpenCV, not a TensorFlow op); outputs `classes` int64 `(k,)`, `scores` float32 `(k,)` and
  `names` string `(k,)` ("" for a class without a name).

With class names (`--class_names` at training, `<model_dir>/class_names.csv`) `serving_default` also
returns `names` string `(batch, k)`. Versions are integer directories `<export_dir>/<n>/`, as TF Serving
expects. An existing version is never overwritten: each export takes the next number, is written to a
hidden temporary directory and renamed into place, so a server watching `export_dir` never sees a
half-written model. `assets.extra/` holds `tf_serving_warmup_requests` (a few `PredictionLog` warm-up
requests for TF Serving) and the run's files a client needs: `config.json`, the `--stats` file as
`stats.json`, `extraction.json` and `class_names.csv` (`artifacts.run_file`).

With `--format=litert --litert_file=FILE` the command writes a LiteRT (TFLite) model instead, builtin ops
only, and its description `FILE.json` (`ac_keras.litert`; docs/serving.md, "LiteRT").
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import os
import re

import keras
import tensorflow as tf

from ac_keras import artifacts, litert_client, schema
from ac_keras import data as ac_data
from ac_keras.artifacts import EXTRA_ASSETS_DIR, FEATURES_SIGNATURE, NUM_FRAMES_SUFFIX
from ac_keras.errors import UsageError
from ac_keras.model import adapt_inputs, uint8_modalities

SERVING_SIGNATURE = "serving_default"
WARMUP_FILE = os.path.join(EXTRA_ASSETS_DIR, "tf_serving_warmup_requests")
# The training features' extraction.json (tfrecords.extract), copied into the export.
EXTRACTION_FILE = artifacts.EXTRACTION_FILE
FRAMES_SIGNATURE = "classify_frames"
# The classify_frames input that carries each modality's decoded video.
FRAMES_INPUTS = {"rgb": "frames", "audio": "waveform", "flow": "flow_images"}


def next_version(export_dir):
    """The next integer version under `export_dir` (1 when there is none)."""
    if not tf.io.gfile.exists(export_dir):
        return 1
    versions = [
        int(name.rstrip("/")) for name in tf.io.gfile.listdir(export_dir) if re.fullmatch(r"\d+/?", name)
    ]
    return max(versions, default=0) + 1


def _top_k(probabilities, top_k):
    k = min(top_k, probabilities.shape[-1])
    scores, classes = tf.math.top_k(probabilities, k=k)
    return scores, tf.cast(classes, tf.int64)


def frames_input_signature(specs):
    """The `classify_frames` inputs of a model with modalities `specs`: name -> `tf.TensorSpec`."""
    shapes = {
        "frames": ([None, None, None, 3], tf.uint8),
        "waveform": ([None], tf.float32),
        "flow_images": ([None, None, None, 2], tf.uint8),
    }
    names = [FRAMES_INPUTS[spec.name] for spec in specs]
    return {name: tf.TensorSpec(*shapes[name], name=name) for name in shapes if name in names}


def build_archive(model, task, *, class_names=None, extractor=None):
    """An `ExportArchive` with the `serving_default` and `predict_features` endpoints of `model`.

    Args:
        model: the trained classifier from `ac_keras.model.build_model` (ragged inputs, probabilities out).
        task: the run's `ac_keras.task.Task`: features, eval_frames and top_k of its config, and the fill of
            a modality a record lacks (the training means when the config asks for them, else zeros).
        class_names: optional sequence of one name per class ("" for none): `serving_default` then also
            returns `names`.
        extractor: optional `ac_keras.extraction.extractor.Extractor` of the training features (from the
            run's extraction.json): adds the `classify_frames` endpoint.
    """
    config = task.config
    specs = config.data.feature_specs
    eval_frames = config.data.eval_frames or None
    top_k = config.runtime.top_k
    fill = task.stats.missing_fill
    uint8_inputs = set(uint8_modalities(model))
    names = None if class_names is None else [str(name) for name in class_names]

    archive = keras.export.ExportArchive()
    # Not `archive.track(model)`: the endpoints already capture the weights, and tracking the model as well
    # saved each weight twice (once as a Keras variable, once as the tf.Variable the functions use).

    def serve(inputs):
        features, _ = ac_data.parse_serialized(
            inputs, specs, training=False, num_frames=eval_frames, missing_fill=fill, dequantize=False
        )
        model_inputs = adapt_inputs(model, {spec.name: features[spec.name] for spec in specs})
        probabilities = tf.cast(model(model_inputs, training=False), tf.float32)
        scores, classes = _top_k(probabilities, top_k)
        outputs = {"video_id": features[schema.VIDEO_ID_KEY], "classes": classes, "scores": scores}
        if names is not None:
            outputs["names"] = tf.gather(tf.constant(names), classes)
        return outputs

    archive.add_endpoint(
        name=SERVING_SIGNATURE,
        fn=serve,
        input_signature=[tf.TensorSpec([None], tf.string, name="inputs")],
    )

    def predict_features(features):
        model_inputs = {
            spec.name: tf.RaggedTensor.from_tensor(
                features[spec.name], lengths=tf.cast(features[spec.name + NUM_FRAMES_SUFFIX], tf.int64)
            )
            for spec in specs
        }
        return {"probabilities": tf.cast(model(model_inputs, training=False), tf.float32)}

    feature_signature = {}
    for spec in specs:
        dtype = tf.uint8 if spec.name in uint8_inputs else tf.float32
        feature_signature[spec.name] = tf.TensorSpec([None, None, spec.dim], dtype, name=spec.name)
        name = spec.name + NUM_FRAMES_SUFFIX
        feature_signature[name] = tf.TensorSpec([None], tf.int32, name=name)
    archive.add_endpoint(name=FEATURES_SIGNATURE, fn=predict_features, input_signature=[feature_signature])
    if extractor is not None:
        _add_frames_endpoint(archive, model, task, extractor, names)
    return archive


def _add_frames_endpoint(archive, model, task, extractor, class_names):
    specs = task.config.data.feature_specs
    archive.add_endpoint(
        name=FRAMES_SIGNATURE,
        fn=frames_classifier(model, task, extractor, class_names),
        input_signature=[frames_input_signature(specs)],
    )


def frames_classifier(model, task, extractor, class_names=None):
    """The function of the `classify_frames` signature: the extraction's stages in TensorFlow ops
    (`Extractor.features_tensor`), then what `ac_keras.classify` does with the features.

    Args:
        model, task: as in `build_archive`.
        extractor: the `Extractor` of the training features.
        class_names: optional sequence of one name per class ("" for none); "" for every class by default.

    Returns:
        A function from the inputs of `frames_input_signature` (a dict) to `classes`, `scores`, `names`.
    """
    config = task.config
    specs = config.data.feature_specs
    eval_frames = config.data.eval_frames or None
    fill = task.stats.missing_fill
    names = [str(name) for name in class_names] if class_names else [""] * config.data.num_classes
    # Models are built (and their weights loaded) here, eagerly: a model first loaded while the endpoint is
    # traced would be saved with its initial weights.
    for spec in specs:
        extractor.embedder(spec.name)

    def classify_frames(inputs):
        frames = {}
        for spec in specs:
            features = extractor.features_tensor(spec.name, inputs[FRAMES_INPUTS[spec.name]])
            frames[spec.name] = tf.RaggedTensor.from_tensor(features[tf.newaxis])
        prepared = ac_data.select_and_fill(frames, specs, num_frames=eval_frames, missing_fill=fill)
        probabilities = tf.cast(model(adapt_inputs(model, prepared), training=False), tf.float32)
        scores, classes = _top_k(probabilities, config.runtime.top_k)
        return {
            "classes": classes[0],
            "scores": scores[0],
            "names": tf.gather(tf.constant(names), classes[0]),
        }

    return classify_frames


def write_warmup_requests(path, serialized_examples, signature_name=SERVING_SIGNATURE):
    """Writes TF Serving warm-up `PredictionLog`s (tensorflow-serving-api protos) for some records."""
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    tf.io.gfile.makedirs(os.path.dirname(path))
    with tf.io.TFRecordWriter(path) as writer:
        request = predict_pb2.PredictRequest(
            model_spec=model_pb2.ModelSpec(signature_name=signature_name),
        )
        request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(list(serialized_examples), dtype=tf.string))
        log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
        writer.write(log.SerializeToString())


def export_saved_model(model, task, export_dir, warmup_examples=(), *, with_extractor=False):
    """Exports `model` as a new version under `export_dir`; returns the version's path.

    Args:
        model: the trained classifier.
        task: the run's `ac_keras.task.Task` (see `build_archive`). Its class names (`--class_names`), else
            those stored in its model_dir, name the classes.
        export_dir: base directory; the model goes to `<export_dir>/<next version>/`.
        warmup_examples: serialized `SequenceExample`s for the TF Serving warm-up file (none: no file).
        with_extractor: bool, add the `classify_frames` signature, which extracts the features from decoded
            video as the run's extraction.json records (in its model_dir). Defaults to False.

    Raises:
        MissingDataError, DataError: with `with_extractor`, no extraction.json in the model_dir, or a file it
            records missing or changed.
    """
    config = task.config
    model_dir = config.runtime.model_dir
    class_names = task.class_names
    if class_names is None and model_dir:
        class_names = artifacts.load_class_names(config.data.num_classes, model_dir=model_dir)
    extractor = None
    if with_extractor:
        if not model_dir:
            raise UsageError("--with_extractor: needs --model_dir (its extraction.json).")
        extractor = artifacts.load_extractor(config.data.feature_specs, model_dir=model_dir)
    tf.io.gfile.makedirs(export_dir)
    version = next_version(export_dir)
    final = os.path.join(export_dir, str(version))
    temporary = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
    if tf.io.gfile.exists(temporary):
        tf.io.gfile.rmtree(temporary)
    build_archive(model, task, class_names=class_names, extractor=extractor).write_out(
        temporary, verbose=False
    )
    if warmup_examples:
        write_warmup_requests(os.path.join(temporary, WARMUP_FILE), warmup_examples)
    _write_run_files(os.path.join(temporary, EXTRA_ASSETS_DIR), task, class_names)
    if tf.io.gfile.exists(final):  # Another exporter took this version meanwhile: never overwrite it.
        raise FileExistsError(
            f"Export version {final} appeared while exporting; the new model is in {temporary}."
        )
    tf.io.gfile.rename(temporary, final)
    return final


def _write_run_files(directory, task, class_names):
    """Copies into the export what a client classifying videos needs: the run's config, its statistics (the
    fill of a missing modality), extraction.json and the class names (`artifacts.run_file` reads them)."""
    config = task.config
    tf.io.gfile.makedirs(directory)
    artifacts.write_text_atomically(os.path.join(directory, artifacts.CONFIG_FILE), config.to_json())
    if config.data.stats and isinstance(config.data.stats, str):
        tf.io.gfile.copy(config.data.stats, os.path.join(directory, artifacts.STATS_FILE), overwrite=True)
    model_dir = config.runtime.model_dir
    extraction = os.path.join(model_dir, EXTRACTION_FILE) if model_dir else None
    if extraction and tf.io.gfile.exists(extraction):
        tf.io.gfile.copy(extraction, os.path.join(directory, EXTRACTION_FILE), overwrite=True)
    if class_names is not None:
        artifacts.write_class_names(directory, class_names)


def first_records(file_pattern, count=2):
    """The first `count` serialized records of `file_pattern` (for warm-up requests)."""
    files = sorted(tf.io.gfile.glob(file_pattern)) if file_pattern else []
    if not files:
        return []
    return [record.numpy() for record in tf.data.TFRecordDataset(files[:1]).take(count)]


def check_litert_options(options):
    """Refuses, before anything is loaded, LiteRT flags that do not fit `--format` (`CommandOptions`).

    Raises:
        UsageError: `--format=litert` without `--litert_file`, or with an existing file and no `--overwrite`,
            or a LiteRT flag with `--format=saved_model`.
    """
    if options.export_format == "litert":
        if not options.litert_file:
            raise UsageError("--format=litert needs --litert_file=FILE, the model file to write.")
        if options.with_extractor:
            raise UsageError(
                "--with_extractor adds a SavedModel signature; it does not apply to --format=litert."
            )
        for path in (options.litert_file, litert_client.description_path(options.litert_file)):
            if tf.io.gfile.exists(path) and not options.overwrite:
                raise UsageError(f"--litert_file: {path} exists; pass --overwrite to replace it.")
        return
    given = [
        name
        for name, value, default in (
            ("--litert_file", options.litert_file, None),
            ("--max_frames", options.max_frames, None),
            ("--quantize", options.quantize, "none"),
        )
        if value != default
    ]
    if given:
        raise UsageError(f"{', '.join(given)}: only for --format=litert (this export writes a SavedModel).")


def main(argv):
    """`python -m ac_keras.export --flagfile=F --model_dir=D [--export_dir=E]`: exports the best model of D
    as a new version under E (default D/export). With `--format=litert --litert_file=FILE [--max_frames=T]
    [--quantize=none|float16|int8]` it writes a LiteRT model instead (`ac_keras.litert`).

    A run without --eval_data keeps no best model: its latest checkpoint is exported.
    """
    from absl import app

    from ac_keras.task import Task

    config, options = cli.command_from_argv(argv, need_train_data=False)
    runtime = config.runtime
    if not runtime.model_dir:
        raise app.UsageError("--model_dir is required: the run whose model to export.")
    check_litert_options(options)
    model = artifacts.load_trained_model(runtime.model_dir)
    if options.export_format == "litert":
        _export_litert(model, Task(config), options)
        return
    warmup = first_records(config.data.eval_data or config.data.train_data)
    path = export_saved_model(
        model,
        Task(config),
        runtime.export_base,
        warmup_examples=warmup,
        with_extractor=options.with_extractor,
    )
    print(f"Exported SavedModel to {path}", flush=True)


def _export_litert(model, task, options):
    from ac_keras import litert

    class_names = task.class_names
    model_dir = task.config.runtime.model_dir
    if class_names is None and model_dir:
        class_names = artifacts.load_class_names(task.config.data.num_classes, model_dir=model_dir)
    written = litert.export_litert(
        model,
        task,
        options.litert_file,
        max_frames=options.max_frames,
        quantize=options.quantize,
        overwrite=options.overwrite,
        class_names=class_names,
    )
    print(
        f"Exported LiteRT model to {written.path} ({written.size:,} bytes, --quantize={options.quantize}, "
        f"{written.max_frames} frames per modality: {written.max_frames_source}); its inputs are described "
        f"in {written.description_path}",
        flush=True,
    )


if __name__ == "__main__":
    from ac_keras import flags as _flags  # noqa: F401  (defines the flags)

    cli.run(main)
