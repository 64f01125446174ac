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

Versions are integer directories `<export_dir>/<n>/`, as TF Serving expects. An existing version is never
overwritten: each export takes the next number, is written to a hidden temporary directory and renamed into
place, so a server watching `export_dir` never sees a half-written model. `assets.extra/
tf_serving_warmup_requests` holds a few `PredictionLog` warm-up requests for TF Serving.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import os
import re

import keras
import tensorflow as tf

from ac_keras import data as ac_data
from ac_keras import schema
from ac_keras.artifacts import FEATURES_SIGNATURE, NUM_FRAMES_SUFFIX
from ac_keras.model import adapt_inputs, uint8_modalities

SERVING_SIGNATURE = "serving_default"
EXTRA_ASSETS_DIR = "assets.extra"
WARMUP_FILE = os.path.join(EXTRA_ASSETS_DIR, "tf_serving_warmup_requests")
# The training features' extraction.json (tfrecords.extract), copied into the export.
EXTRACTION_FILE = "extraction.json"


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


def build_archive(model, task):
    """An `ExportArchive` with the `serving_default` and `predict_features` endpoints of `model`.

    Args:
        model: the trained classifier from `ac_keras.model.build_model` (ragged inputs, probabilities out).
        task: the run's `ac_keras.task.Task`: features, eval_frames and top_k of its config, and the fill of
            a modality a record lacks (the training means when the config asks for them, else zeros).
    """
    config = task.config
    specs = config.data.feature_specs
    eval_frames = config.data.eval_frames or None
    top_k = config.runtime.top_k
    fill = task.stats.missing_fill
    uint8_inputs = set(uint8_modalities(model))

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
        return {"video_id": features[schema.VIDEO_ID_KEY], "classes": classes, "scores": scores}

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
    return archive


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


def export_saved_model(model, task, export_dir, warmup_examples=()):
    """Exports `model` as a new version under `export_dir`; returns the version's path.

    Args:
        model: the trained classifier.
        task: the run's `ac_keras.task.Task` (see `build_archive`).
        export_dir: base directory; the model goes to `<export_dir>/<next version>/`.
        warmup_examples: serialized `SequenceExample`s for the TF Serving warm-up file (none: no file).
    """
    tf.io.gfile.makedirs(export_dir)
    version = next_version(export_dir)
    final = os.path.join(export_dir, str(version))
    temporary = os.path.join(export_dir, f".tmp-{version}-{os.getpid()}")
    if tf.io.gfile.exists(temporary):
        tf.io.gfile.rmtree(temporary)
    build_archive(model, task).write_out(temporary, verbose=False)
    if warmup_examples:
        write_warmup_requests(os.path.join(temporary, WARMUP_FILE), warmup_examples)
    model_dir = task.config.runtime.model_dir
    extraction = os.path.join(model_dir, EXTRACTION_FILE) if model_dir else None
    if extraction and tf.io.gfile.exists(extraction):
        tf.io.gfile.makedirs(os.path.join(temporary, EXTRA_ASSETS_DIR))
        tf.io.gfile.copy(extraction, os.path.join(temporary, EXTRA_ASSETS_DIR, EXTRACTION_FILE))
    if tf.io.gfile.exists(final):  # Another exporter took this version meanwhile: never overwrite it.
        raise FileExistsError(
            f"Export version {final} appeared while exporting; the new model is in {temporary}."
        )
    tf.io.gfile.rename(temporary, final)
    return final


def first_records(file_pattern, count=2):
    """The first `count` serialized records of `file_pattern` (for warm-up requests)."""
    files = sorted(tf.io.gfile.glob(file_pattern)) if file_pattern else []
    if not files:
        return []
    return [record.numpy() for record in tf.data.TFRecordDataset(files[:1]).take(count)]


def main(argv):
    """`python -m ac_keras.export --flagfile=F --model_dir=D --export_dir=E`: exports the best model of D."""
    from absl import app

    from ac_keras import artifacts
    from ac_keras.task import Task

    config = cli.config_from_argv(argv, need_train_data=False)
    runtime = config.runtime
    if not runtime.model_dir or not runtime.export_dir:
        raise app.UsageError("--model_dir and --export_dir: both are required.")
    model = artifacts.load_best_model(runtime.model_dir)
    warmup = first_records(config.data.eval_data or config.data.train_data)
    path = export_saved_model(model, Task(config), runtime.export_dir, warmup_examples=warmup)
    print(f"Exported SavedModel to {path}", flush=True)


if __name__ == "__main__":
    from ac_keras import flags as _flags  # noqa: F401  (defines the flags)

    cli.run(main)
