"""Writes top-k predictions: `python -m ac_keras.predict --flagfile=F --model_dir=D --output_csv=P`.

The CSV has the YouTube-8M submission format: a header `VideoId,LabelConfidencePairs`, then one row per video
with `--top_k` space-separated `class score` pairs, best first. When the classes have names (`--class_names`,
or those stored with the model at training), a third column `LabelNames` holds the names of those classes
in the same order, separated by ";" ("" for a class without a name).

With `--segment_size=S` every segment of S frames of each video is scored instead (docs/segments.md): with
`--segment_classes=segment_label_ids.csv` the CSV is the YouTube-8M 2019 submission of the starter code
(`Class,Segments`, then per listed class its best `--top_segments` segments as `video:start`, from each
segment's `--top_k` listed classes); without it, one row per segment,
`VideoId,SegmentStart,SegmentEnd,LabelConfidencePairs[,LabelNames]` (seconds; a timeline of each record).
Either way the CSV is written as the segments stream by: memory holds a batch and, for the submission, a
bounded heap per class, never every segment's scores.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import csv

import tensorflow as tf
from absl import app

from ac_keras import artifacts, schema, segment_ranking
from ac_keras import flags as _flags  # noqa: F401  (defines the shared flags)
from ac_keras.data import segments
from ac_keras.data.classes import read_segment_classes
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


def predict_segments_to_csv(predictor, dataset, features, path, top_k, overwrite=False, class_names=None):
    """Writes `VideoId,SegmentStart,SegmentEnd,LabelConfidencePairs[,LabelNames]` rows, one per segment of a
    segment-mode dataset, as they stream by; returns the row count."""
    if tf.io.gfile.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
    temporary = f"{path}.tmp"
    rows = 0
    with tf.io.gfile.GFile(temporary, "w") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        header = ["VideoId", "SegmentStart", "SegmentEnd", "LabelConfidencePairs"]
        writer.writerow(header + (["LabelNames"] if class_names else []))
        for _, batch, probabilities in segment_ranking.segment_batches(predictor, dataset, features):
            scores, classes = tf.math.top_k(probabilities, k=min(top_k, probabilities.shape[-1]))
            for video_id, start, end, segment_classes, segment_scores in zip(
                batch[schema.VIDEO_ID_KEY],
                batch[segments.START_KEY],
                batch[segments.END_KEY],
                classes.numpy(),
                scores.numpy(),
                strict=True,
            ):
                pairs = " ".join(f"{c} {s:.6f}" for c, s in zip(segment_classes, segment_scores, strict=True))
                row = [video_id.decode("utf-8", "replace"), int(start), int(end), pairs]
                if class_names:
                    row.append(";".join(class_names[c] for c in segment_classes))
                writer.writerow(row)
                rows += 1
    tf.io.gfile.rename(temporary, path, overwrite=True)
    return rows


def predict_submission(predictor, dataset, features, submission, path, overwrite=False):
    """Streams a segment-mode dataset into `submission` (a `segment_ranking.SegmentSubmission`) and writes its
    CSV; returns the number of class rows."""
    if tf.io.gfile.exists(path) and not overwrite:
        raise FileExistsError(f"{path} exists; pass --overwrite to replace it.")
    for ids, batch, probabilities in segment_ranking.segment_batches(predictor, dataset, features):
        submission.update(batch[schema.VIDEO_ID_KEY], batch[segments.START_KEY], probabilities, ids=ids)
    return submission.write_csv(path, overwrite=overwrite)


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
    classes = None
    if options.segment_size and options.segment_classes:
        classes = read_segment_classes(options.segment_classes, config.data.num_classes)
    saved_model = options.saved_model
    predictor = artifacts.load_predictor(config.runtime.model_dir, saved_model)
    task = Task(config)
    class_names = task.class_names or artifacts.load_class_names(
        config.data.num_classes, model_dir=config.runtime.model_dir, saved_model=saved_model
    )
    features = config.data.feature_specs
    if classes is not None:
        submission = segment_ranking.SegmentSubmission(
            classes, config.data.num_classes, top_segments=options.top_segments, top_k=config.runtime.top_k
        )
        dataset = task.segment_dataset(pattern, options.segment_size, check_classes=False)
        rows = predict_submission(predictor, dataset, features, submission, output_csv, overwrite=overwrite)
        print(
            f"Wrote the segment submission of {submission.num_segments} segments ({rows} classes) to "
            f"{output_csv}",
            flush=True,
        )
        return
    if options.segment_size:
        dataset = task.segment_dataset(pattern, options.segment_size, check_classes=False)
        rows = predict_segments_to_csv(
            predictor,
            dataset,
            features,
            output_csv,
            config.runtime.top_k,
            overwrite=overwrite,
            class_names=class_names,
        )
        print(f"Wrote predictions of {rows} segments to {output_csv}", flush=True)
        return
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
