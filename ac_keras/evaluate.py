"""Evaluates a trained model: `python -m ac_keras.evaluate --flagfile=F --model_dir=D --output_json=J`.

Scores the best model of `--model_dir` (or the SavedModel given by `--saved_model`) on `--eval_data` with the
field's metrics (single-label: top1, top5, mean_class_accuracy; multi-label: gap, hit_at_1, perr, map), prints
them and writes them as JSON.
"""

import json

import tensorflow as tf
from absl import app, flags

from ac_keras import cli
from ac_keras import config as _config  # noqa: F401  (defines the shared flags)
from ac_keras import data as ac_data
from ac_keras.inference import evaluate_dataset, load_predictor
from ac_keras.training import dataset_options

_OUTPUT_JSON = flags.DEFINE_string("output_json", None, "Where to write the metrics JSON.")


def write_json_atomically(path, payload, overwrite):
    """Writes `payload` as JSON to `path` via a temporary file; refuses to replace it unless `overwrite`."""
    if tf.io.gfile.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
    temporary = f"{path}.tmp"
    with tf.io.gfile.GFile(temporary, "w") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    tf.io.gfile.rename(temporary, path, overwrite=True)


def main(argv):
    config = cli.config_from_argv(argv, need_train_data=False)
    if not config.eval_data:
        raise app.UsageError("--eval_data: is required (a TFRecord file pattern).")
    if _OUTPUT_JSON.value and tf.io.gfile.exists(_OUTPUT_JSON.value) and not flags.FLAGS.overwrite:
        raise app.UsageError(f"--output_json: {_OUTPUT_JSON.value} exists; pass --overwrite to replace it.")
    predictor = load_predictor(config.model_dir, flags.FLAGS.saved_model)
    dataset = ac_data.make_dataset(
        config.eval_data,
        batch_size=config.batch_size,
        training=False,
        num_frames=config.eval_frames or None,
        **dataset_options(config),
    )
    results = evaluate_dataset(predictor, dataset, config.label_mode, config.num_classes)
    print(json.dumps(results, indent=2, sort_keys=True), flush=True)
    if _OUTPUT_JSON.value:
        write_json_atomically(_OUTPUT_JSON.value, results, flags.FLAGS.overwrite)
    del results  # app.run treats a return value as the exit status


if __name__ == "__main__":
    cli.run(main)
