"""Evaluates a trained model: `python -m ac_keras.evaluate --flagfile=F --model_dir=D --output_json=J`.

Scores the best model of `--model_dir` (its latest checkpoint when the run kept none), or the SavedModel
given by `--saved_model`, on `--eval_data` with the field's metrics (single-label: top1, top5,
mean_class_accuracy; multi-label: gap, hit_at_1, perr, map), prints them and writes them as JSON.

With `--segment_size=S --segment_classes=segment_label_ids.csv` it scores segments instead (docs/segments.md):
`segment_map`, the YouTube-8M 2019 score (the starter's `segment_eval_inference.py`) of the submission that
`python -m ac_keras.predict` writes with the same flags from the same model and records, over the rated
(segment, class) pairs of the records; `--eval_data` (or `--predict_data`) names the records.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import json

import tensorflow as tf
from absl import app

from ac_keras import artifacts, evaluation, schema, segment_ranking
from ac_keras import flags as _flags  # noqa: F401  (defines the shared flags)
from ac_keras.data import segments
from ac_keras.data.classes import read_segment_classes
from ac_keras.task import Task


def write_json_atomically(path, payload, overwrite):
    """Writes `payload` as JSON to `path` via a temporary file; refuses to replace it unless `overwrite`."""
    if tf.io.gfile.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
    artifacts.write_text_atomically(path, json.dumps(payload, indent=2, sort_keys=True) + "\n")


def evaluate_segments(predictor, dataset, features, submission):
    """The segment score of a segment-mode dataset: its segments streamed into `submission` (a
    `segment_ranking.SegmentSubmission`) and their ratings collected, then `RatedSegments.score`."""
    rated = segment_ranking.RatedSegments()
    for ids, batch, probabilities in segment_ranking.segment_batches(predictor, dataset, features):
        submission.update(batch[schema.VIDEO_ID_KEY], batch[segments.START_KEY], probabilities, ids=ids)
        rated.update(ids, batch[segments.RATED_CLASSES_KEY], batch[segments.RATED_SCORES_KEY])
    return rated.score(submission)


def main(argv):
    config, options = cli.command_from_argv(argv, need_train_data=False)
    overwrite = options.overwrite
    output_json = options.output_json
    pattern = config.data.eval_data or (options.predict_data if options.segment_size else None)
    if not pattern:
        raise app.UsageError("--eval_data: is required (a TFRecord file pattern).")
    if options.segment_size and not options.segment_classes:
        raise app.UsageError(
            "--segment_classes: is required with --segment_size (the classes rated for segments, e.g. "
            "YouTube-8M's segment_label_ids.csv)."
        )
    if output_json and tf.io.gfile.exists(output_json) and not overwrite:
        raise app.UsageError(f"--output_json: {output_json} exists; pass --overwrite to replace it.")
    classes = None
    if options.segment_size:
        classes = read_segment_classes(options.segment_classes, config.data.num_classes)
    task = Task(config)
    predictor = artifacts.load_predictor(config.runtime.model_dir, options.saved_model)
    if options.segment_size:
        submission = segment_ranking.SegmentSubmission(
            classes, config.data.num_classes, top_segments=options.top_segments, top_k=config.runtime.top_k
        )
        dataset = task.segment_dataset(pattern, options.segment_size)
        results = evaluate_segments(predictor, dataset, config.data.feature_specs, submission)
    else:
        results = evaluation.evaluate(
            task.eval_dataset(), evaluation.predictor_step(predictor), task.make_metrics()
        )
    print(json.dumps(results, indent=2, sort_keys=True), flush=True)
    if output_json:
        write_json_atomically(output_json, results, overwrite)


if __name__ == "__main__":
    cli.run(main)
