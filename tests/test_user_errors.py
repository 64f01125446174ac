"""What a person sees when a command meets bad input: a short message, exit status 2, no traceback.

Each case runs the real command in a fresh process on data made here, as a user would.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ac_keras.testing import records

pytestmark = pytest.mark.slow  # every case starts a command

ROOT = pathlib.Path(__file__).resolve().parents[1]
MAX_LINES = 10


def _command(module, *args, env=None):
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    return result.returncode, result.stdout + result.stderr


def _train(tmp_path, data, *args, features="rgb:8", **env):
    return _command(
        "ac_keras.train",
        f"--train_data={data}",
        f"--features={features}",
        "--num_classes=4",
        "--cluster_sizes=2",
        f"--model_dir={tmp_path / 'run'}",
        "--epochs=1",
        "--batch_size=4",
        "--noexport",
        *args,
        env=env,
    )


def _assert_short_error(status, output, *expected):
    assert status == 2, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) <= MAX_LINES, output
    for text in expected:
        assert text in output, (text, output)


def _good_videos(count=6, dim=8, dtype="uint8"):
    rng = np.random.default_rng(0)
    videos = []
    for index in range(count):
        frames = rng.integers(0, 256, size=(5, dim)).astype(dtype)
        videos.append(records.sequence_example(f"v{index}", [index % 4], {"rgb": frames}))
    return videos


def _write(path, examples):
    records.write_records(str(path), examples)
    return str(path)


def test_no_file_matches_the_pattern(tmp_path):
    status, output = _train(tmp_path, "/nonexistent/train*.tfrecord")
    _assert_short_error(status, output, "No files match file_pattern '/nonexistent/train*.tfrecord'")
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_damaged_record_files_are_named(tmp_path):
    """A truncated file, one with a corrupted record and one that is no TFRecord file at all, beside a good
    one: one short message names each of the three (checked at the end of the pass over the files)."""
    paths = {}
    for damage in ("truncated", "corrupted", "not_a_tfrecord", "good"):
        path = pathlib.Path(_write(tmp_path / f"train-{damage}.tfrecord", _good_videos(12)))
        data = path.read_bytes()
        if damage == "truncated":
            path.write_bytes(data[: len(data) * 2 // 3])
        elif damage == "corrupted":
            middle = len(data) // 2
            path.write_bytes(
                data[:middle] + bytes(b ^ 0xFF for b in data[middle : middle + 40]) + data[middle + 40 :]
            )
        elif damage == "not_a_tfrecord":
            path.write_text("video_id,labels\nabc,1 2\n" * 50)
        paths[damage] = str(path)
    status, output = _train(tmp_path, tmp_path / "train-*.tfrecord")
    damaged = [paths[damage] for damage in ("truncated", "corrupted", "not_a_tfrecord")]
    _assert_short_error(status, output, *damaged, "is corrupt or truncated", "--skip_corrupt")
    assert paths["good"] not in output


@pytest.mark.parametrize(
    ("name", "frames", "features", "expected"),
    [
        ("bytes", [np.zeros(6, "uint8")] * 3, "rgb:8", ["declares dim 8", "found frames of (bytes)"]),
        ("floats", [np.zeros(6, "float32")] * 3, "rgb:8:float", ["declares dim 8", "found frames of"]),
    ],
)
def test_wrong_frame_dim_names_modality_video_and_record(tmp_path, name, frames, features, expected):
    path = _write(tmp_path / f"{name}.tfrecord", [records.sequence_example("badvid", [1], {"rgb": frames})])
    status, output = _train(tmp_path, path, features=features)
    _assert_short_error(status, output, "Modality rgb", *expected, "badvid", f"{path}:0")


def test_frame_split_over_several_byte_strings(tmp_path):
    example = records.sequence_example("splitvid", [1], {"rgb": np.zeros((2, 8), "uint8")})
    example.feature_lists.feature_list["rgb"].feature[1].bytes_list.value.append(b"\x00" * 8)
    path = _write(tmp_path / "split.tfrecord", [example])
    status, output = _train(tmp_path, path)
    _assert_short_error(status, output, "Modality rgb", "splitvid", "byte strings", f"{path}:0")


def test_video_level_vector_of_the_wrong_dim(tmp_path):
    example = records.video_level_example("meanvid", [1], {"rgb": [0.5] * 5})
    path = _write(tmp_path / "video.tfrecord", [example])
    status, output = _train(tmp_path, path, features="rgb:8:float")
    _assert_short_error(status, output, "rgb", "meanvid", f"{path}:0", "8")


def test_label_out_of_range(tmp_path):
    example = records.sequence_example("labelvid", [7], {"rgb": np.zeros((3, 8), "uint8")})
    path = _write(tmp_path / "labels.tfrecord", [example])
    status, output = _train(tmp_path, path)
    _assert_short_error(status, output, "labelvid", "7", f"{path}:0", "num_classes")


def test_nan_in_float_features_points_to_the_flag(tmp_path):
    frames = np.zeros((3, 8), "float32")
    frames[1, 2] = np.nan
    path = _write(tmp_path / "nan.tfrecord", [records.sequence_example("nanvid", [1], {"rgb": frames})])
    status, output = _train(tmp_path, path, features="rgb:8:float")
    _assert_short_error(status, output, "NaN or Inf", "nanvid", "--skip_nonfinite")
    # The flag it names exists and skips the video: the only record is dropped, so no batch is left.
    status, output = _train(tmp_path, path, "--skip_nonfinite", features="rgb:8:float")
    _assert_short_error(status, output, "produced no training batch")


def test_stats_file_that_does_not_match_the_features(tmp_path):
    path = _write(tmp_path / "train.tfrecord", _good_videos())
    stats = tmp_path / "stats.json"
    stats.write_text(
        json.dumps({"format": "ac_keras.stats.v1", "modalities": {"audio": {"mean": [0.0] * 4}}})
    )
    status, output = _train(tmp_path, path, f"--stats={stats}")
    _assert_short_error(status, output, str(stats), "no mean for modality 'rgb'")


def test_unreadable_flagfile(tmp_path):
    status, output = _command("ac_keras.train", f"--flagfile={tmp_path / 'missing.flags'}")
    _assert_short_error(status, output, "missing.flags")


def test_unknown_flag_is_a_short_usage_error(tmp_path):
    status, output = _command("ac_keras.evaluate", "--eval_dta=x")
    _assert_short_error(status, output, "eval_dta")


def test_resuming_with_another_configuration_is_refused_before_restoring(tmp_path):
    path = _write(tmp_path / "train.tfrecord", _good_videos())
    status, output = _train(tmp_path, path)
    assert status == 0, output
    checkpoint_files = sorted((tmp_path / "run" / "checkpoints").iterdir())
    saved_config = (tmp_path / "run" / "config.json").read_text()
    status, output = _train(tmp_path, path, "--cluster_sizes=4", "--weighting=fc2", "--epochs=2")
    _assert_short_error(
        status, output, "--cluster_sizes: rgb:2 in the run, rgb:4 now", "--weighting: fc1 in the run, fc2 now"
    )
    assert "--epochs" not in output.split("Settings that may change")[0], "epochs may change"
    assert sorted((tmp_path / "run" / "checkpoints").iterdir()) == checkpoint_files
    assert (tmp_path / "run" / "config.json").read_text() == saved_config
    # Settings that may change between runs are accepted.
    status, output = _train(tmp_path, path, "--epochs=2")
    assert status == 0, output


def test_zero_byte_record_file_is_named_in_a_warning(tmp_path):
    good = _write(tmp_path / "train-0.tfrecord", _good_videos())
    (tmp_path / "train-1.tfrecord").write_bytes(b"")
    status, output = _train(tmp_path, str(tmp_path / "train-*.tfrecord"))
    assert status == 0, output
    assert f"{tmp_path / 'train-1.tfrecord'} is empty (0 bytes)" in output
    assert good not in output


def test_verbose_shows_the_traceback(tmp_path):
    status, output = _train(tmp_path, "/nonexistent/train*.tfrecord", "--verbose")
    assert status != 0 and "Traceback" in output and "No files match" in output
    status, output = _train(tmp_path, "/nonexistent/train*.tfrecord", AC_KERAS_VERBOSE="1")
    assert "Traceback" in output


def test_tensorflow_log_lines_stay_out_of_a_normal_run(tmp_path):
    path = _write(tmp_path / "train.tfrecord", _good_videos())
    status, output = _train(tmp_path, path)
    assert status == 0, output
    for noise in ("oneDNN", "cuda", "absl::InitializeLog", "XLA service", "I0000", "E0000", "W0000"):
        assert noise not in output, (noise, output)
    status, output = _train(tmp_path / "again", path, "--verbose")
    assert "absl::InitializeLog" in output or "I0000" in output, "--verbose shows TensorFlow's own lines"


def test_tools_and_tuner_end_data_errors_the_same_way(tmp_path):
    status, output = _command(
        "tfrecords.stats",
        "--data=/nonexistent/x*.tfrecord",
        "--features=rgb:8",
        f"--output={tmp_path}/s.json",
    )
    _assert_short_error(status, output, "/nonexistent/x*.tfrecord")
    status, output = _command(
        "tuner.search",
        "--train_data=/nonexistent/t*.tfrecord",
        "--eval_data=/nonexistent/e*.tfrecord",
        "--features=rgb:8",
        "--num_classes=4",
        f"--tuner_dir={tmp_path / 'search'}",
        "--max_trials=1",
        "--search_cluster_sizes=1",
    )
    _assert_short_error(status, output, "/nonexistent/")
