"""Writes top-k predictions: `python -m ac_keras.predict --flagfile=F --model_dir=D --output_csv=P`.

The CSV has the YouTube-8M submission format: a header `VideoId,LabelConfidencePairs`, then one row per video
with `--top_k` space-separated `class score` pairs, best first. When the classes have names (`--class_names`,
or those stored with the model at training), a third column `LabelNames` holds the names of those classes
in the same order, separated by ";" ("" for a class without a name).
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import csv

import tensorflow as tf
from absl import app

from ac_keras import artifacts, schema
from ac_keras import flags as _flags  # noqa: F401  (defines the shared flags)
from ac_keras.task import Task


def predict_to_csv(predictor, dataset, path, top_k, overwrite=False, class_names=None):
    """Writes `VideoId,LabelConfidencePairs[,LabelNames]` rows for every video of `dataset`; returns the row
    count. `class_names` (one per class) adds the `LabelNames` column."""
    if tf.io.gfile.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
    temporary = f"{path}.tmp"
    rows = 0
    with tf.io.gfile.GFile(temporary, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["VideoId", "LabelConfidencePairs", *(["LabelNames"] if class_names else [])])
        for batch in dataset:
            features = batch[0] if isinstance(batch, tuple) else batch
            probabilities = predictor(features)
            scores, classes = tf.math.top_k(probabilities, k=min(top_k, probabilities.shape[-1]))
            for video_id, video_classes, video_scores in zip(
                features[schema.VIDEO_ID_KEY].numpy(), classes.numpy(), scores.numpy(), strict=True
            ):
                pairs = " ".join(f"{c} {s:.6f}" for c, s in zip(video_classes, video_scores, strict=True))
                row = [video_id.decode("utf-8", "replace"), pairs]
                if class_names:
                    row.append(";".join(class_names[c] for c in video_classes))
                writer.writerow(row)
                rows += 1
    tf.io.gfile.rename(temporary, path, overwrite=True)
    return rows


def main(argv):
    config, options = cli.command_from_argv(argv, need_train_data=False)
    overwrite = options.overwrite
    output_csv = options.output_csv
    pattern = options.predict_data or config.data.eval_data
    if not pattern:
        raise app.UsageError("--predict_data: is required (or --eval_data).")
    if not output_csv:
        raise app.UsageError("--output_csv: is required.")
    if tf.io.gfile.exists(output_csv) and not overwrite:
        raise app.UsageError(f"--output_csv: {output_csv} exists; pass --overwrite to replace it.")
    saved_model = options.saved_model
    predictor = artifacts.load_predictor(config.runtime.model_dir, saved_model)
    task = Task(config)
    class_names = task.class_names or artifacts.load_class_names(
        config.data.num_classes, model_dir=config.runtime.model_dir, saved_model=saved_model
    )
    dataset = task.eval_dataset(pattern, labels=False, keep_ids=True)
    rows = predict_to_csv(
        predictor,
        dataset,
        output_csv,
        config.runtime.top_k,
        overwrite=overwrite,
        class_names=class_names,
    )
    print(f"Wrote {rows} predictions to {output_csv}", flush=True)


if __name__ == "__main__":
    cli.run(main)
