"""Tests of `resolve_stats` and the statistics helpers: what the statistics JSON feeds, and its errors."""

import json

import numpy as np
import pytest

from ac_keras import schema
from ac_keras.data import (
    MISSING_MODALITY,
    STATS_FORMAT,
    ClassWeights,
    ResolvedStats,
    class_weights_from_stats,
    load_stats,
    resolve_stats,
)
from ac_keras.data import stats as data_stats
from ac_keras.testing import records

FEATURES = "rgb:4,audio:2:float"
RGB_MEAN = [0.5, -0.5, 1.0, 0.0]
AUDIO_MEAN = [2.0, -1.0]


def stats_dict(class_counts=(4, 1, 0), modalities=None):
    if modalities is None:
        modalities = {"rgb": {"dim": 4, "mean": RGB_MEAN}, "audio": {"dim": 2, "mean": AUDIO_MEAN}}
    return {
        "format": STATS_FORMAT,
        "num_classes": len(class_counts),
        "class_counts": list(class_counts),
        "modalities": modalities,
    }


@pytest.fixture
def stats_path(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(stats_dict()))
    return str(path)


def test_missing_modality_values_are_the_one_enumeration():
    assert MISSING_MODALITY == ("auto", "mean", "zeros")
    assert schema.LABEL_MODES == ("single", "multi")


def test_without_stats_everything_resolves_to_none():
    resolved = resolve_stats(None, FEATURES, num_classes=3)
    assert resolved == ResolvedStats(feature_means=None, missing_fill=None, class_weights=None)
    assert resolve_stats(None, FEATURES, num_classes=None, missing_modality="zeros").missing_fill is None


def test_auto_and_mean_fill_with_the_stats_means_and_zeros_fills_with_zeros(stats_path):
    for mode in ("auto", "mean"):
        resolved = resolve_stats(stats_path, FEATURES, num_classes=3, missing_modality=mode)
        np.testing.assert_array_equal(resolved.missing_fill["rgb"], RGB_MEAN)
        np.testing.assert_array_equal(resolved.missing_fill["audio"], AUDIO_MEAN)
        assert resolved.missing_fill["rgb"].dtype == np.float32
        assert resolved.feature_means is None and resolved.class_weights is None
    assert resolve_stats(stats_path, FEATURES, num_classes=3, missing_modality="zeros").missing_fill is None


def test_center_features_gives_the_means_and_a_loaded_dict_works_like_the_file(stats_path):
    resolved = resolve_stats(
        stats_dict(), FEATURES, num_classes=3, missing_modality="zeros", center_features=True
    )
    assert resolved.missing_fill is None
    np.testing.assert_array_equal(resolved.feature_means["audio"], AUDIO_MEAN)
    from_file = resolve_stats(stats_path, FEATURES, num_classes=3, center_features=True)
    for name in ("rgb", "audio"):
        np.testing.assert_array_equal(from_file.feature_means[name], resolved.feature_means[name])


def test_class_balance_gives_one_over_the_class_count(stats_path):
    weights = resolve_stats(stats_path, FEATURES, num_classes=4, class_balance=True).class_weights
    assert isinstance(weights, ClassWeights)
    # Counts (4, 1, 0) padded to 4 classes; an empty class weighs 1, a video without labels 1 / max S.
    np.testing.assert_allclose(weights.weights, [0.25, 1.0, 1.0, 1.0])
    assert weights.weights.dtype == np.float32
    assert weights.empty_weight == pytest.approx(0.25)
    assert class_weights_from_stats(stats_dict(), 3)[1] == pytest.approx(0.25)


@pytest.mark.parametrize(
    ("stats", "options", "message"),
    [
        (None, {"missing_modality": "median"}, r"missing_modality must be one of \('auto', 'mean'"),
        (None, {"missing_modality": "mean"}, "missing_modality='mean' needs stats"),
        (None, {"class_balance": True}, "class_balance=True needs stats"),
        (None, {"center_features": True}, "center_features=True needs stats"),
        (stats_dict(), {"class_balance": True, "num_classes": None}, "class_balance=True needs"),
        ({"format": "other"}, {}, "stats dict is not an ac_keras statistics file"),
    ],
)
def test_bad_options_raise_value_errors(stats, options, message):
    with pytest.raises(ValueError, match=message):
        resolve_stats(stats, FEATURES, **{"num_classes": 3, **options})


def test_errors_name_the_stats_file_and_what_is_missing(tmp_path):
    def write(name, stats):
        path = tmp_path / name
        path.write_text(json.dumps(stats))
        return str(path)

    no_audio = write("no_audio.json", stats_dict(modalities={"rgb": {"dim": 4, "mean": RGB_MEAN}}))
    with pytest.raises(ValueError, match=r"no_audio.json: .*no mean for modality 'audio'.*\['rgb'\]"):
        resolve_stats(no_audio, FEATURES, num_classes=3)
    # Zeros needs no mean, so the same file serves.
    assert resolve_stats(no_audio, FEATURES, num_classes=3, missing_modality="zeros").missing_fill is None
    with pytest.raises(ValueError, match=r"no_audio.json: .*no mean for modality 'audio'"):
        resolve_stats(no_audio, FEATURES, num_classes=3, missing_modality="zeros", center_features=True)
    with pytest.raises(ValueError, match=r"stats.json: .*modality 'rgb' has 4 values.*declares dim 5"):
        resolve_stats(write("stats.json", stats_dict()), "rgb:5,audio:2:float", num_classes=3)
    with pytest.raises(ValueError, match=r"count 3 classes, more than num_classes=2"):
        resolve_stats(str(tmp_path / "stats.json"), FEATURES, num_classes=2, class_balance=True)
    no_counts = stats_dict()
    del no_counts["class_counts"]
    with pytest.raises(ValueError, match=r"counts.json: holds no class_counts"):
        resolve_stats(write("counts.json", no_counts), FEATURES, num_classes=3, class_balance=True)
    with pytest.raises(ValueError, match=r"other.json is not an ac_keras statistics file"):
        load_stats(write("other.json", {"format": "other"}))


def test_computed_stats_round_trip_through_write_and_resolve(tmp_path):
    videos = records.random_videos(FEATURES, 5, num_classes=3, min_frames=1, max_frames=4, seed=1)
    records.write_videos(tmp_path, videos)
    computed = data_stats.compute_stats(str(tmp_path / "train-*"), FEATURES, num_classes=3, batch_size=2)
    path = str(tmp_path / "stats.json")
    data_stats.write_stats(computed, path)
    assert load_stats(path) == computed
    audio = np.concatenate([video["frames"]["audio"] for video in videos])
    resolved = resolve_stats(path, FEATURES, num_classes=3, class_balance=True)
    np.testing.assert_allclose(resolved.missing_fill["audio"], audio.mean(axis=0), rtol=1e-6)
    counts = np.bincount(np.concatenate([video["labels"] for video in videos]), minlength=3)
    np.testing.assert_allclose(resolved.class_weights.weights, 1.0 / np.maximum(counts, 1), rtol=1e-6)
