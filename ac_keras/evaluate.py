"""Evaluates a trained model: `python -m ac_keras.evaluate --flagfile=F --model_dir=D --output_json=J`.

Scores the best model of `--model_dir` (its latest checkpoint when the run kept none), or the SavedModel
given by `--saved_model`, on `--eval_data` with the field's metrics (single-label: top1, top5,
mean_class_accuracy; multi-label: gap, hit_at_1, perr, map), prints them and writes them as JSON.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import json

import tensorflow as tf
from absl import app

from ac_keras import artifacts, evaluation
from ac_keras import flags as _flags  # noqa: F401  (defines the shared flags)
from ac_keras.task import Task


def write_json_atomically(path, payload, overwrite):
    """Writes `payload` as JSON to `path` via a temporary file; refuses to replace it unless `overwrite`."""
    if tf.io.gfile.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
    artifacts.write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def main(argv):
    config, options = cli.command_from_argv(argv, need_train_data=False)
    overwrite = options.overwrite
    output_json = options.output_json
    if not config.data.eval_data:
        raise app.UsageError("--eval_data: is required (a TFRecord file pattern).")
    if output_json and tf.io.gfile.exists(output_json) and not overwrite:
        raise app.UsageError(f"--output_json: {output_json} exists; pass --overwrite to replace it.")
    task = Task(config)
    predictor = artifacts.load_predictor(config.runtime.model_dir, options.saved_model)
    results = evaluation.evaluate(
        task.eval_dataset(), evaluation.predictor_step(predictor), task.make_metrics()
    )
    print(json.dumps(results, indent=2, sort_keys=True), flush=True)
    if output_json:
        write_json_atomically(output_json, results, overwrite)


if __name__ == "__main__":
    cli.run(main)
