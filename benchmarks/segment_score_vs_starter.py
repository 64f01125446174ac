r"""The YouTube-8M 2019 segment score: ours beside the starter's own `segment_eval_inference.py`.

    python benchmarks/segment_score_vs_starter.py --starter_dir=PATH/TO/youtube-8m \
        [--records='validate*.tfrecord' --submission=submission.csv]

`--starter_dir` is a checkout of github.com/google/youtube-8m (nothing of it is copied here). Without
`--records`, the script builds the data of tests/ac_keras/test_segment_ranking.py (seven generated 2019-style
records, the integer predictor), writes the two submissions that test checks, and scores each; with
`--records` and `--submission`, it scores that submission (any file in the starter's format, e.g. one
`python -m ac_keras.predict --segment_size=5 --segment_classes=...` wrote) over those records' ratings.

Printed per submission: `segment_map` as `ac_keras.metrics.segment_mean_average_precision` computes it, and
the starter's value (the mean of the APs its `mean_average_precision_calculator` returns, full precision) in
two readings:
- "as read": its `read_segment_predictions` on the file without its header line (it takes every line for a
  class row and fails on the header `Class,Segments`), each line's newline then staying on the last segment
  id, which matches no rated pair: the last segment of every class is ignored;
- "newline apart": the same with a space before each newline (so the last id reads clean), the score the
  script means; ours should equal it.
Its `read_labels` is TF1 (`tf.enable_eager_execution`, `tf.gfile`); it is re-expressed here in TF2 with the
same dict, the video id decoded (under Python 3 the original's `"%s" % bytes` gives "b'id'"). The rest of its
`main` runs as it is, its module's TF1 names served by `tf.compat.v1`. These are the values the test keeps
as literals.
"""

import argparse
import glob
import os
import pathlib
import sys
import tempfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rated_pairs(pattern):
    """(segment id, class) -> rating of the records, read as the starter's `read_labels` reads them."""
    import tensorflow as tf

    features = {
        "id": tf.io.FixedLenFeature([], tf.string),
        "segment_labels": tf.io.VarLenFeature(tf.int64),
        "segment_start_times": tf.io.VarLenFeature(tf.int64),
        "segment_scores": tf.io.VarLenFeature(tf.float32),
    }
    rated = {}
    for record in tf.data.TFRecordDataset(sorted(glob.glob(pattern))):
        context, _ = tf.io.parse_single_sequence_example(record, context_features=features)
        video_id = context["id"].numpy().decode("utf8")
        for label, start, score in zip(
            context["segment_labels"].values.numpy(),
            context["segment_start_times"].values.numpy(),
            context["segment_scores"].values.numpy(),
            strict=True,
        ):
            rated[(f"{video_id}:{start}", int(label))] = float(score)
    return rated


def ours(submission, rated):
    from ac_keras import metrics

    with open(submission) as handle:
        lines = handle.read().splitlines()
    if lines and lines[0] == "Class,Segments":
        lines = lines[1:]
    ranked = {int(line.split(",")[0]): line.split(",")[1].split(" ") for line in lines if line}
    return metrics.segment_mean_average_precision(ranked, rated)["segment_map"]


def starters(starter_dir, records, submission, directory):
    """The starter's score of `submission` in its two readings (see the module docstring)."""
    import tensorflow as tf

    real_tensorflow = sys.modules["tensorflow"]
    sys.modules["tensorflow"] = tf.compat.v1
    sys.path.insert(0, os.path.abspath(starter_dir))
    try:
        import segment_eval_inference as starter
    finally:
        sys.modules["tensorflow"] = real_tensorflow
    pairs = rated_pairs(records)
    starter.read_labels = lambda pattern, cache_path="": starter.Labels(pairs)
    captured = []
    calculator = starter.map_calculator.MeanAveragePrecisionCalculator
    peek = calculator.peek_map_at_n

    def capture(self):
        captured.append(peek(self))
        return captured[-1]

    calculator.peek_map_at_n = capture
    with open(submission) as handle:
        rows = [line for line in handle.read().splitlines(keepends=True) if not line.startswith("Class,")]
    values = {}
    for reading, text in (
        ("as read", "".join(rows)),
        ("newline apart", "".join(r.replace("\n", " \n") for r in rows)),
    ):
        path = os.path.join(directory, f"starter_input_{reading.replace(' ', '_')}.csv")
        with open(path, "w") as handle:
            handle.write(text)
        starter.FLAGS(["starter", f"--eval_data_pattern={records}", f"--submission_file={path}"])
        starter.main([])
        values[reading] = float(np.mean(captured[-1]))
    calculator.peek_map_at_n = peek
    return values


def test_data_submissions(directory):
    """The submissions of tests/ac_keras/test_segment_ranking.py: (name, records, submission path)."""
    from tests.ac_keras import test_segment_ranking as literal

    records = literal._literal_records(pathlib.Path(directory))
    made = []
    for top_k, top_segments in ((3, 6), (5, 100_000)):
        submission, _ = literal._score(records, top_k=top_k, top_segments=top_segments)
        path = os.path.join(directory, f"submission_top{top_k}_{top_segments}.csv")
        submission.write_csv(path, overwrite=True)
        made.append((f"test data, --top_k={top_k} --top_segments={top_segments}", records, path))
    return made


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--starter_dir", required=True, help="A checkout of github.com/google/youtube-8m.")
    parser.add_argument("--records", help="The 2019 records (a glob) whose ratings score the submission.")
    parser.add_argument("--submission", help="A submission CSV (Class,Segments).")
    args = parser.parse_args()
    if bool(args.records) != bool(args.submission):
        parser.error("--records and --submission go together.")
    with tempfile.TemporaryDirectory() as directory:
        if args.records:
            submissions = [(args.submission, args.records, args.submission)]
        else:
            submissions = test_data_submissions(directory)
        for name, records, path in submissions:
            value = ours(path, rated_pairs(records))
            theirs = starters(args.starter_dir, records, path, directory)
            print(name)
            print(f"  ours (ac_keras.metrics)             segment_map = {value!r}")
            for reading, starter_value in theirs.items():
                print(f"  starter, {reading:<13}               mAP = {starter_value!r}")


if __name__ == "__main__":
    main()
