"""`tfrecords.stats` and `tfrecords.inspect` on YouTube-8M 2019 segment-rated records."""

import numpy as np
import pytest

from ac_keras.data import stats as data_stats
from ac_keras.errors import DataError
from ac_keras.testing import records
from ac_keras.testing import segments as segment_testing
from tfrecords import inspect

FEATURES = "rgb:4,audio:2"


def test_stats_count_the_ratings_per_class(tmp_path):
    videos = segment_testing.segment_rated_videos(FEATURES, 6, num_classes=5, seed=3)
    segment_testing.write_segment_rated_videos(tmp_path / "validate.tfrecord", videos)
    unrated = records.sequence_example("plain", [1], {"rgb": np.zeros((3, 4), np.uint8)})
    records.write_records(tmp_path / "validate2.tfrecord", [unrated])
    computed = data_stats.compute_stats(str(tmp_path / "validate*"), FEATURES, batch_size=4, num_classes=5)
    pairs = [(label, rating) for video in videos for (_, _, label, rating) in video["ratings"]]
    expected = {
        str(label): {
            "pairs": sum(1 for c, _ in pairs if c == label),
            "positives": sum(1 for c, r in pairs if c == label and r > 0),
        }
        for label in sorted({c for c, _ in pairs})
    }
    assert computed["segment_ratings"] == {
        "num_videos": 6,
        "num_pairs": len(pairs),
        "num_positives": sum(1 for _, r in pairs if r > 0),
        "classes": expected,
    }
    assert computed["num_videos"] == 7  # the record without ratings counts as a video, not as rated

    bad = records.sequence_example("bad", None, {"rgb": np.zeros((5, 4), np.uint8)})
    records.add_segment_ratings(bad, starts=[0], ends=[5], labels=[1, 2], scores=[1])
    records.write_records(tmp_path / "bad.tfrecord", [unrated, bad])
    with pytest.raises(DataError, match=r"bad.tfrecord:1: segment_labels holds 2 entries, segment_scores 1"):
        data_stats.compute_stats(str(tmp_path / "bad.tfrecord"), FEATURES, batch_size=4)


def test_inspect_shows_the_ratings(tmp_path):
    example = records.sequence_example("v", None, {"rgb": np.zeros((12, 4), np.uint8)})
    records.add_segment_ratings(
        example, starts=[5, 0, 5], ends=[10, 5, 10], labels=[3, 1, 2], scores=[1, 0, 1]
    )
    bad = records.sequence_example("w", None, {"rgb": np.zeros((12, 4), np.uint8)})
    records.add_segment_ratings(bad, starts=[5, 0], ends=[10], labels=[3, 1], scores=[1, 0])
    path = records.write_records(tmp_path / "validate.tfrecord", [example, bad])
    text = inspect.describe_record(path, 0)
    assert text.endswith(
        "segment ratings: 3 (segment, class) pairs over 2 segments, 2 positive\n"
        "  [0, 5) class 1: 0\n  [5, 10) class 2: 1\n  [5, 10) class 3: 1"
    )
    assert "lists of unequal length (2 starts, 1 ends, 2 labels, 2 scores)" in inspect.describe_record(
        path, 1
    )
    plain = records.write_records(tmp_path / "plain.tfrecord", [records.sequence_example("p", [1], {})])
    assert "segment ratings" not in inspect.describe_record(plain, 0)
