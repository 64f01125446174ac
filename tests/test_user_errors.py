"""What a person sees when a command meets bad input: a short message, exit status 2, no traceback.

Each case runs the real command in a fresh process on data made here, as a user would.
"""

import concurrent.futures
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


# The commands of the cases below start together, one per core at a time, when the first test asks for a
# result (a command's run is mostly TensorFlow starting, single-threaded); each test then checks its own.
# A case is a function of a fresh directory that writes its data there and runs one command.
_CASES = {}


def _case(function):
    _CASES[function.__name__.lstrip("_")] = function
    return function


def _uses(*names):
    """Marks a test with the cases it reads, so that only the selected tests' cases are started."""

    def mark(test):
        test.cases = names
        return test

    return mark


@pytest.fixture(scope="module")
def started(request, tmp_path_factory):
    wanted = {
        name
        for item in request.session.items
        if item.module is sys.modules[__name__]
        for name in getattr(item.function, "cases", ())
    }
    root = tmp_path_factory.mktemp("cases")
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        futures = {}
        for name, function in _CASES.items():
            if name in wanted:
                (root / name).mkdir()
                futures[name] = pool.submit(function, root / name)
        yield lambda name: (root / name, futures[name].result())


@_case
def _no_file_matches(directory):
    return _train(directory, "/nonexistent/train*.tfrecord")


@_uses("no_file_matches")
def test_no_file_matches_the_pattern(started):
    directory, (status, output) = started("no_file_matches")
    _assert_short_error(status, output, "No files match file_pattern '/nonexistent/train*.tfrecord'")
    assert not (directory / "run" / "checkpoints").exists()


@_case
def _damaged_files(directory):
    paths = {}
    for damage in ("truncated", "corrupted", "not_a_tfrecord", "good"):
        path = pathlib.Path(_write(directory / f"train-{damage}.tfrecord", _good_videos(12)))
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
    return (*_train(directory, directory / "train-*.tfrecord"), paths)


@_uses("damaged_files")
def test_damaged_record_files_are_named(started):
    """A truncated file, one with a corrupted record and one that is no TFRecord file at all, beside a good
    one: one short message names each of the three (checked at the end of the pass over the files)."""
    _, (status, output, paths) = started("damaged_files")
    damaged = [paths[damage] for damage in ("truncated", "corrupted", "not_a_tfrecord")]
    _assert_short_error(status, output, *damaged, "is corrupt or truncated", "--skip_corrupt")
    assert paths["good"] not in output


def _one_bad_record(directory, name, example, features="rgb:8", *args):
    path = _write(directory / f"{name}.tfrecord", [example])
    return (*_train(directory, path, *args, features=features), path)


@_case
def _frame_dim_bytes(directory):
    frames = [np.zeros(6, "uint8")] * 3
    return _one_bad_record(directory, "bytes", records.sequence_example("badvid", [1], {"rgb": frames}))


@_case
def _frame_dim_floats(directory):
    frames = [np.zeros(6, "float32")] * 3
    example = records.sequence_example("badvid", [1], {"rgb": frames})
    return _one_bad_record(directory, "floats", example, "rgb:8:float")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("frame_dim_bytes", ["declares dim 8", "found frames of (bytes)"]),
        ("frame_dim_floats", ["declares dim 8", "found frames of"]),
    ],
)
@_uses("frame_dim_bytes", "frame_dim_floats")
def test_wrong_frame_dim_names_modality_video_and_record(started, case, expected):
    _, (status, output, path) = started(case)
    _assert_short_error(status, output, "Modality rgb", *expected, "badvid", f"{path}:0")


@_case
def _split_frame(directory):
    example = records.sequence_example("splitvid", [1], {"rgb": np.zeros((2, 8), "uint8")})
    example.feature_lists.feature_list["rgb"].feature[1].bytes_list.value.append(b"\x00" * 8)
    return _one_bad_record(directory, "split", example)


@_uses("split_frame")
def test_frame_split_over_several_byte_strings(started):
    _, (status, output, path) = started("split_frame")
    _assert_short_error(status, output, "Modality rgb", "splitvid", "byte strings", f"{path}:0")


@_case
def _video_level_dim(directory):
    example = records.video_level_example("meanvid", [1], {"rgb": [0.5] * 5})
    return _one_bad_record(directory, "video", example, "rgb:8:float")


@_uses("video_level_dim")
def test_video_level_vector_of_the_wrong_dim(started):
    _, (status, output, path) = started("video_level_dim")
    _assert_short_error(status, output, "rgb", "meanvid", f"{path}:0", "8")


@_case
def _label_range(directory):
    example = records.sequence_example("labelvid", [7], {"rgb": np.zeros((3, 8), "uint8")})
    return _one_bad_record(directory, "labels", example)


@_uses("label_range")
def test_label_out_of_range(started):
    _, (status, output, path) = started("label_range")
    _assert_short_error(status, output, "labelvid", "7", f"{path}:0", "num_classes")


def _nan_record(directory):
    frames = np.zeros((3, 8), "float32")
    frames[1, 2] = np.nan
    return _write(directory / "nan.tfrecord", [records.sequence_example("nanvid", [1], {"rgb": frames})])


@_case
def _nan(directory):
    return _train(directory, _nan_record(directory), features="rgb:8:float")


@_case
def _nan_skipped(directory):
    return _train(directory, _nan_record(directory), "--skip_nonfinite", features="rgb:8:float")


@_uses("nan", "nan_skipped")
def test_nan_in_float_features_points_to_the_flag(started):
    _, (status, output) = started("nan")
    _assert_short_error(status, output, "NaN or Inf", "nanvid", "--skip_nonfinite")
    # The flag it names exists and skips the video: the only record is dropped, so no batch is left.
    _, (status, output) = started("nan_skipped")
    _assert_short_error(status, output, "produced no training batch")


@_case
def _stats_mismatch(directory):
    path = _write(directory / "train.tfrecord", _good_videos())
    stats = directory / "stats.json"
    stats.write_text(
        json.dumps({"format": "ac_keras.stats.v1", "modalities": {"audio": {"mean": [0.0] * 4}}})
    )
    return _train(directory, path, f"--stats={stats}")


@_uses("stats_mismatch")
def test_stats_file_that_does_not_match_the_features(started):
    directory, (status, output) = started("stats_mismatch")
    _assert_short_error(status, output, str(directory / "stats.json"), "no mean for modality 'rgb'")


@_case
def _missing_flagfile(directory):
    return _command("ac_keras.train", f"--flagfile={directory / 'missing.flags'}")


@_uses("missing_flagfile")
def test_unreadable_flagfile(started):
    _, (status, output) = started("missing_flagfile")
    _assert_short_error(status, output, "missing.flags")


@_case
def _unknown_flag(directory):
    del directory
    return _command("ac_keras.evaluate", "--eval_dta=x")


@_uses("unknown_flag")
def test_unknown_flag_is_a_short_usage_error(started):
    _, (status, output) = started("unknown_flag")
    _assert_short_error(status, output, "eval_dta")


def test_resuming_with_another_configuration_is_refused_before_restoring(tmp_path):
    path = _write(tmp_path / "train.tfrecord", _good_videos())
    status, output = _train(tmp_path, path, "--noexport")  # the export is not what this test is about
    assert status == 0, output
    checkpoint_files = sorted((tmp_path / "run" / "checkpoints").iterdir())
    saved_config = (tmp_path / "run" / "config.json").read_text()
    status, output = _train(
        tmp_path, path, "--cluster_sizes=4", "--weighting=fc2", "--epochs=2", "--noexport"
    )
    _assert_short_error(
        status, output, "--cluster_sizes: rgb:2 in the run, rgb:4 now", "--weighting: fc1 in the run, fc2 now"
    )
    assert "--epochs" not in output.split("Settings that may change")[0], "epochs may change"
    assert sorted((tmp_path / "run" / "checkpoints").iterdir()) == checkpoint_files
    assert (tmp_path / "run" / "config.json").read_text() == saved_config
    # Settings that may change between runs are accepted.
    status, output = _train(tmp_path, path, "--epochs=2", "--noexport")
    assert status == 0, output


@_case
def _zero_byte_file(directory):
    good = _write(directory / "train-0.tfrecord", _good_videos())
    (directory / "train-1.tfrecord").write_bytes(b"")
    return (*_train(directory, str(directory / "train-*.tfrecord")), good)


@_uses("zero_byte_file")
def test_zero_byte_record_file_is_named_in_a_warning(started):
    directory, (status, output, good) = started("zero_byte_file")
    assert status == 0, output
    assert f"{directory / 'train-1.tfrecord'} is empty (0 bytes)" in output
    assert good not in output


@_case
def _verbose_flag(directory):
    return _train(directory, "/nonexistent/train*.tfrecord", "--verbose")


@_case
def _verbose_variable(directory):
    return _train(directory, "/nonexistent/train*.tfrecord", AC_KERAS_VERBOSE="1")


@_uses("verbose_flag", "verbose_variable")
def test_verbose_shows_the_traceback(started):
    _, (status, output) = started("verbose_flag")
    assert status != 0 and "Traceback" in output and "No files match" in output
    _, (status, output) = started("verbose_variable")
    assert "Traceback" in output


@_case
def _quiet_run(directory):
    return _train(directory, _write(directory / "train.tfrecord", _good_videos()))


@_case
def _verbose_run(directory):
    return _train(directory, _write(directory / "train.tfrecord", _good_videos()), "--verbose")


@_uses("quiet_run", "verbose_run")
def test_a_normal_run_shows_no_native_info_or_known_harmless_line(started):
    _, (status, output) = started("quiet_run")
    assert status == 0, output
    for noise in ("oneDNN", "cuda", "absl::InitializeLog", "XLA service", "I0000", "E0000", "W0000"):
        assert noise not in output, (noise, output)
    _, (status, output) = started("verbose_run")
    assert "absl::InitializeLog" in output or "I0000" in output, "--verbose shows TensorFlow's own lines"


@_case
def _stats_tool_without_data(directory):
    return _command(
        "tfrecords.stats",
        "--data=/nonexistent/x*.tfrecord",
        "--features=rgb:8",
        f"--output={directory}/s.json",
    )


@_case
def _tuner_without_data(directory):
    return _command(
        "tuner.search",
        "--train_data=/nonexistent/t*.tfrecord",
        "--eval_data=/nonexistent/e*.tfrecord",
        "--features=rgb:8",
        "--num_classes=4",
        f"--tuner_dir={directory / 'search'}",
        "--max_trials=1",
        "--search_cluster_sizes=1",
    )


@_uses("stats_tool_without_data", "tuner_without_data")
def test_tools_and_tuner_end_data_errors_the_same_way(started):
    _, (status, output) = started("stats_tool_without_data")
    _assert_short_error(status, output, "/nonexistent/x*.tfrecord")
    _, (status, output) = started("tuner_without_data")
    _assert_short_error(status, output, "/nonexistent/")
