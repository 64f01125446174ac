"""The YouTube-8M 2019 segment submission and score (`ac_keras.segment_ranking`, `metrics.segment_*`), and
predict / evaluate with `--segment_size`: the starter's CSV byte for byte, its score, and the commands."""

import csv
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import app, flags
from absl.testing import flagsaver

from ac_keras import artifacts, cli, evaluate, metrics, predict, schema, segment_ranking
from ac_keras import config as ac_config
from ac_keras.data import make_dataset, segments
from ac_keras.errors import DataError
from ac_keras.task import Task
from ac_keras.testing import records
from ac_keras.testing import segments as segment_testing

# --- The starter's own code on a fixed submission ----------------------------------------------------------
#
# Records: `_literal_records` (7 videos, seed 12, "rgb:4" bytes); scores: `_integer_predictor` (integer
# arithmetic on the bytes, so the same on every machine; 17 levels, so segments tie within a class, while a
# segment's classes never tie, where the starter's np.argpartition order would be the machine's). Listed
# classes 0, 1, 2, 4, 5 of 6.
#
# STARTER_CSV: produced by google/youtube-8m inference.py at commit e6f6bf682d20bb21904ea9c081c15e070809d914
# (its `format_lines` and its heap post-processing of `--segment_labels`, run here on these scores with
# `--top_k=3 --segment_max_pred=6`). STARTER_MAP: segment_eval_inference.py at the same commit (its
# `read_segment_predictions` and `main` as they are, `mean_average_precision_calculator` as it is; its TF1
# `read_labels` re-expressed in TF2 with the video id decoded, since under Python 3 `"%s" % bytes` gives
# "b'id'", which matches no segment), given the CSV without its header line (its reader takes every line for
# a class row and fails on `int("Class")`) and with each line's newline kept out of the last segment id (read
# as it is, "id\n" matches no rated pair: the starter then ignores every class's last segment, which on this
# data gives STARTER_MAP_AS_READ). The full-precision values are the mean of the APs its calculator returned.
# To recompute: benchmarks/segment_score_vs_starter.py --starter_dir=<a checkout of google/youtube-8m>.
STARTER_CSV = """Class,Segments
2,seg0000:20 seg0005:10 seg0004:5 seg0001:10 seg0001:20 seg0005:5
5,seg0001:0 seg0004:10 seg0001:25 seg0006:0 seg0001:15 seg0005:10
1,seg0005:25 seg0006:5 seg0002:0 seg0001:5 seg0004:0 seg0005:15
0,seg0002:10 seg0003:5 seg0000:5 seg0006:15 seg0002:5 seg0005:20
4,seg0002:5 seg0003:0 seg0000:10 seg0005:20 seg0005:25 seg0006:5
"""
STARTER_APS = {0: 0.3333333333333333, 1: 0.0, 2: 0.0, 4: 0.08333333333333333, 5: 0.1}
STARTER_MAP = 0.10333333333333332
STARTER_MAP_AS_READ = 0.08333333333333333
# The same with --top_k=5 --segment_max_pred=100000 (every segment of every listed class).
STARTER_MAP_ALL = 0.5743253968253967
LISTED = (0, 1, 2, 4, 5)


def _literal_records(directory):
    videos = segment_testing.segment_rated_videos("rgb:4", 7, num_classes=6, seed=12, max_segments=5)
    return segment_testing.write_segment_rated_videos(
        directory / "validate.tfrecord", videos, with_labels=False
    )


def _integer_predictor(features):
    """Scores `(levels + 1) / 18` with `levels = (sum of the segment's bytes + 5 c) mod 17` for class c."""
    frames = features["rgb"]
    per_frame = tf.reduce_sum(tf.cast(frames.flat_values, tf.int32), axis=1)
    totals = tf.reduce_sum(tf.RaggedTensor.from_row_splits(per_frame, frames.row_splits), axis=1)
    levels = tf.math.floormod(totals[:, None] + 5 * tf.range(6)[None, :], 17)
    return tf.cast(levels + 1, tf.float32) / 18.0


def _score(path, *, top_k, top_segments, batch_size=3):
    dataset = make_dataset(
        path,
        "rgb:4",
        batch_size=batch_size,
        training=False,
        num_frames=None,
        dequantize=False,
        num_classes=6,
        segment_size=5,
    )
    submission = segment_ranking.SegmentSubmission(LISTED, 6, top_segments=top_segments, top_k=top_k)
    rated = segment_ranking.RatedSegments()
    for ids, batch, probabilities in segment_ranking.segment_batches(_integer_predictor, dataset, "rgb:4"):
        submission.update(batch[schema.VIDEO_ID_KEY], batch[segments.START_KEY], probabilities, ids=ids)
        rated.update(ids, batch[segments.RATED_CLASSES_KEY], batch[segments.RATED_SCORES_KEY])
    return submission, rated


def test_the_submission_and_its_score_are_the_starters(tmp_path):
    path = _literal_records(tmp_path)
    submission, rated = _score(path, top_k=3, top_segments=6)
    assert "".join(submission.lines()) == STARTER_CSV
    assert metrics.segment_average_precisions(submission.ranked(), rated.ratings) == pytest.approx(
        STARTER_APS, abs=1e-15
    )
    result = rated.score(submission)
    assert result["segment_map"] == pytest.approx(STARTER_MAP, abs=1e-15)
    assert result["segment_map_classes"] == 5 and result["segments"] == 33 and result["rated_pairs"] == 47
    assert pytest.approx(STARTER_MAP) != STARTER_MAP_AS_READ  # the data shows the starter's newline quirk
    # Every segment of every class, and the batching of the segments, change nothing but what they should.
    everything, rated = _score(path, top_k=5, top_segments=100_000, batch_size=2)
    assert rated.score(everything)["segment_map"] == pytest.approx(STARTER_MAP_ALL, abs=1e-15)
    rebatched, _ = _score(path, top_k=3, top_segments=6, batch_size=7)
    assert "".join(rebatched.lines()) == STARTER_CSV


def _reference_map(ranked, rated):
    """The score from its definition, with loops: per class the rated pairs of its list in order, the
    precision at each position, summed at the positives, over all the class's positives; the mean over the
    classes that have positives."""
    precisions = []
    for class_id, listed in ranked.items():
        total = sum(1 for (_, c), rating in rated.items() if c == class_id and rating > 0)
        if not total:
            continue
        kept = [rated[(segment, class_id)] > 0 for segment in listed if (segment, class_id) in rated]
        ap = 0.0
        for position in range(len(kept)):
            if kept[position]:
                ap += sum(kept[: position + 1]) / (position + 1)
        precisions.append(ap / total)
    return float(np.mean(precisions)) if precisions else float("nan")


def test_segment_map_equals_its_definition_on_random_submissions():
    rng = np.random.default_rng(3)
    for trial in range(20):
        segment_names = [f"v{video}:{5 * k}" for video in range(8) for k in range(rng.integers(1, 6))]
        classes = list(range(int(rng.integers(2, 6))))
        rated = {}
        for _ in range(int(rng.integers(0, 40))):
            rated[(str(rng.choice(segment_names)), int(rng.choice(classes)))] = float(rng.integers(0, 2))
        ranked = {
            class_id: list(rng.permutation(segment_names)[: int(rng.integers(0, len(segment_names) + 1))])
            for class_id in classes
            if rng.random() < 0.9
        }
        expected = _reference_map(ranked, rated)
        found = metrics.segment_mean_average_precision(ranked, rated)["segment_map"]
        if np.isnan(expected):
            assert np.isnan(found), trial
        else:
            assert found == pytest.approx(expected, abs=1e-12), trial


def test_the_heaps_keep_the_best_segments_of_each_class():
    """Whatever the batches, each class keeps the `top_segments` largest (score as "%g", segment id) pairs of
    the segments whose `top_k` listed classes it is among, and lists them by score."""
    rng = np.random.default_rng(0)
    num_classes, listed = 7, (1, 2, 4, 6)
    scores = np.round(rng.random((300, num_classes)), 2).astype(np.float32)  # ties
    video_ids = [f"v{index // 9}".encode() for index in range(300)]
    starts = [5 * (index % 9) for index in range(300)]
    ids = segment_ranking.segment_ids(video_ids, starts)
    expected = {}
    for row in range(300):
        order = sorted(listed, key=lambda c, row=row: (-scores[row, c], c))[:3]
        for class_id in order:
            rounded = float("%g" % scores[row, class_id])  # noqa: UP031  (the starter's formatting)
            expected.setdefault(class_id, []).append((rounded, ids[row]))
    for batch_size in (1, 17, 300):
        submission = segment_ranking.SegmentSubmission(listed, num_classes, top_segments=25, top_k=3)
        for first in range(0, 300, batch_size):
            part = slice(first, first + batch_size)
            submission.update(video_ids[part], starts[part], scores[part])
        ranked = submission.ranked()
        assert set(ranked) == set(expected)
        for class_id, pairs in expected.items():
            best = sorted(pairs, reverse=True)[:25]
            assert set(ranked[class_id]) == {segment for _, segment in best}
            kept_scores = [dict(map(reversed, pairs))[segment] for segment in ranked[class_id]]
            assert kept_scores == sorted(kept_scores, reverse=True)


# --- The commands ------------------------------------------------------------------------------------------

FEATURES = "rgb:8,audio:4"


@pytest.fixture(scope="module")
def model_run(tmp_path_factory):
    """A deterministic untrained model in a model_dir, 2019-style records (some videos of one segment) and a
    segment_label_ids.csv."""
    root = tmp_path_factory.mktemp("segments")
    videos = segment_testing.segment_rated_videos(FEATURES, 9, num_classes=6, min_segments=1, seed=4)
    short = records.random_videos(FEATURES, 2, min_frames=3, max_frames=5, seed=9, id_prefix="short")
    path = segment_testing.write_segment_rated_videos(root / "validate.tfrecord", videos, with_labels=False)
    with tf.io.TFRecordWriter(str(root / "short.tfrecord")) as writer:
        for video in short:
            writer.write(
                records.sequence_example(video["video_id"], None, video["frames"]).SerializeToString()
            )
    (root / "segment_label_ids.csv").write_text("Index\n0\n1\n2\n3\n5\n")
    config = ac_config.from_values(
        features=FEATURES,
        num_classes=6,
        label_mode="multi",
        cluster_sizes="2",
        eval_frames=3,
        model_dir=str(root / "model"),
        need_train_data=False,
    )
    keras.utils.set_random_seed(1)
    artifacts.write_config(config.runtime.model_dir, config)
    artifacts.write_best_model(config.runtime.model_dir, Task(config).build_model(), {"epoch": 0})
    flags_ = [
        f"--model_dir={config.runtime.model_dir}",
        f"--features={FEATURES}",
        "--num_classes=6",
        "--label_mode=multi",
        "--cluster_sizes=2",
        "--eval_frames=3",
        "--batch_size=4",
        "--top_k=2",
    ]
    return {"root": root, "records": path, "short": str(root / "short.tfrecord"), "flags": flags_}


def _main(module, *args):
    """Runs a command's `main` in this process with its flags parsed (the flags restored after)."""
    with flagsaver.flagsaver():
        return module.main(flags.FLAGS(["ac_keras", *args]))


def _ratings(path):
    """(segment id, class) -> rating, read from the records with the protobuf API."""
    rated = {}
    for serialized in tf.data.TFRecordDataset(path).as_numpy_iterator():
        context = tf.train.SequenceExample.FromString(serialized).context.feature
        video_id = context["id"].bytes_list.value[0].decode()
        for start, label, score in zip(
            context["segment_start_times"].int64_list.value,
            context["segment_labels"].int64_list.value,
            context["segment_scores"].float_list.value,
            strict=True,
        ):
            rated[(f"{video_id}:{start}", label)] = score
    return rated


@pytest.mark.slow  # trains or runs a command in-process for seconds (the fast tier skips it)
def test_evaluate_scores_the_submission_predict_writes(model_run, tmp_path):
    segment_flags = [
        *model_run["flags"],
        f"--eval_data={model_run['records']}",
        "--segment_size=5",
        f"--segment_classes={model_run['root'] / 'segment_label_ids.csv'}",
        "--top_segments=4",
    ]
    _main(predict, *segment_flags, f"--output_csv={tmp_path / 'submission.csv'}")
    _main(evaluate, *segment_flags, f"--output_json={tmp_path / 'm.json'}")
    lines = (tmp_path / "submission.csv").read_text().splitlines()
    assert lines[0] == "Class,Segments"
    ranked = {int(line.split(",")[0]): line.split(",")[1].split(" ") for line in lines[1:]}
    assert set(ranked) <= {0, 1, 2, 3, 5} and all(len(listed) <= 4 for listed in ranked.values())
    result = json.loads((tmp_path / "m.json").read_text())
    assert result["segment_map"] == pytest.approx(
        _reference_map(ranked, _ratings(model_run["records"])), abs=1e-12
    )
    assert (
        result["top_segments"] == 4 and result["top_k"] == 2 and result["submission_classes"] == len(ranked)
    )


@pytest.mark.slow  # trains or runs a command in-process for seconds (the fast tier skips it)
def test_predict_gives_each_segment_of_a_record_its_scores(model_run, tmp_path):
    """Without --segment_classes: one row per segment; a video of one segment is scored as the video."""
    both = f"{model_run['records']},{model_run['short']}"
    _main(
        predict,
        *model_run["flags"],
        f"--predict_data={both}",
        "--segment_size=5",
        f"--output_csv={tmp_path / 's.csv'}",
    )
    _main(
        predict,
        *model_run["flags"],
        f"--predict_data={model_run['short']}",
        f"--output_csv={tmp_path / 'v.csv'}",
    )
    with open(tmp_path / "s.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["VideoId", "SegmentStart", "SegmentEnd", "LabelConfidencePairs"]
    lengths = {}
    for serialized in tf.data.TFRecordDataset(
        sorted(both.split(","))
    ).as_numpy_iterator():  # the reader's order
        example = tf.train.SequenceExample.FromString(serialized)
        video_id = example.context.feature["id"].bytes_list.value[0].decode()
        lengths[video_id] = max(
            len(example.feature_lists.feature_list[name].feature) for name in ("rgb", "audio")
        )
    expected = [
        (video_id, start, min(start + 5, length))
        for video_id, length in lengths.items()
        for start in range(0, length, 5)
    ]
    found = [(row["VideoId"], int(row["SegmentStart"]), int(row["SegmentEnd"])) for row in rows]
    assert sorted(found) == sorted(expected)  # the files are read interleaved; each video's segments in order
    assert all(
        found.index(item) < found.index(after)
        for item, after in zip(expected, expected[1:], strict=False)
        if item[0] == after[0]
    )
    with open(tmp_path / "v.csv") as handle:
        whole = {row["VideoId"]: row["LabelConfidencePairs"] for row in csv.DictReader(handle)}
    assert whole and all(
        row["LabelConfidencePairs"] == whole[row["VideoId"]] for row in rows if row["VideoId"] in whole
    )


def test_segment_flags_and_files_are_checked(model_run, tmp_path):
    base = [*model_run["flags"], f"--eval_data={model_run['records']}"]
    with pytest.raises(app.UsageError, match="--segment_classes: needs --segment_size"):
        _main(predict, *base, "--segment_classes=x.csv", f"--output_csv={tmp_path / 'p.csv'}")
    with pytest.raises(app.UsageError, match="--segment_classes: is required with --segment_size"):
        _main(evaluate, *base, "--segment_size=5")
    with pytest.raises(app.UsageError, match="--top_segments: must be >= 1"):
        _main(evaluate, *base, "--segment_size=5", "--top_segments=0")
    bad = tmp_path / "ids.csv"
    bad.write_text("Index\n2\n6\n")
    with pytest.raises(DataError, match=r"ids.csv:3: class 6 is not a class of the model \(0..5"):
        _main(evaluate, *base, "--segment_size=5", f"--segment_classes={bad}")
    # A rated class the model does not have: the command's short message names the video and the record.
    example = records.sequence_example("odd", None, {"rgb": np.zeros((10, 8), np.uint8)})
    records.add_segment_ratings(example, starts=[5], ends=[10], labels=[9], scores=[1])
    odd = records.write_records(tmp_path / "odd.tfrecord", [example])
    good = tmp_path / "good.csv"
    good.write_text("Index\n2\n")
    with pytest.raises(tf.errors.InvalidArgumentError) as raised:
        _main(
            evaluate,
            *model_run["flags"],
            f"--eval_data={odd}",
            "--segment_size=5",
            f"--segment_classes={good}",
        )
    assert cli.user_error_message(raised.value) == (
        f"Rated segment classes outside [0, 6) (num_classes=6): 9\n  in video(s) odd\n  records {odd}:0"
    )
