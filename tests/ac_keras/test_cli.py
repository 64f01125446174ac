"""ac_keras.cli: which errors are the user's (a short message) and which are bugs (a traceback)."""

import tensorflow as tf
from absl import app

from ac_keras import cli, errors
from ac_keras.config import ConfigError
from ac_keras.trainer import TrainingDivergedError

PIPELINE_ERROR = (
    "{{function_node __wrapped__IteratorGetNext_output_types_3_device_/job:localhost/replica:0/task:0/device:"
    "CPU:0}} Error in user-defined function passed to ParallelMapDatasetV2:7 transformation with iterator: "
    "Iterator::Root::Prefetch::ParallelMapV2: assertion failed: [Modality rgb declares dim 16 (uint8: each "
    "frame one byte string of 16 bytes), found frames of (bytes):] [8 8] [in byte strings:] [1 1] "
    "[in video(s)] [badvid badvid] [records] [/data/x.tfrecord:0 /data/x.tfrecord:1]\n\t "
    "[[{{node Assert/Assert}}]] [Op:IteratorGetNext] name: "
)


def test_user_errors_become_messages():
    assert cli.user_error_message(errors.MissingDataError("No files match 'x*'")) == "No files match 'x*'"
    assert (
        cli.user_error_message(ConfigError("--dropout: must be in [0, 1)")) == "--dropout: must be in [0, 1)"
    )
    assert (
        cli.user_error_message(app.UsageError("--output_csv: is required.")) == "--output_csv: is required."
    )
    assert "diverged" in cli.user_error_message(TrainingDivergedError("diverged"))
    assert cli.user_error_message(FileExistsError("out.csv exists")) == "out.csv exists"


def test_pipeline_assertions_become_a_few_lines_naming_video_and_record():
    error = tf.errors.InvalidArgumentError(None, None, PIPELINE_ERROR)
    message = cli.user_error_message(error)
    assert message.splitlines() == [
        "Modality rgb declares dim 16 (uint8: each frame one byte string of 16 bytes), found frames of "
        "(bytes): 8 8",
        "  in byte strings: 1 1",
        "  in video(s) badvid badvid",
        "  records /data/x.tfrecord:0 /data/x.tfrecord:1",
    ]


def test_bugs_keep_their_traceback():
    assert cli.user_error_message(ValueError("shapes do not match")) is None
    assert cli.user_error_message(KeyError("rgb")) is None
    assert cli.user_error_message(TypeError("bad operand")) is None
    other = tf.errors.InvalidArgumentError(None, None, "Incompatible shapes: [2,3] vs. [3,2]")
    assert cli.user_error_message(other) is None


def test_native_log_lines_are_recognised_and_python_log_lines_kept():
    native = [
        b"I0000 00:00:1795931733.157615    6401 port.cc:153] oneDNN custom operations are on.",
        b"E0000 00:00:1795931753.032900    6676 cuda_platform.cc:52] failed call to cuInit",
        b"W0000 00:00:1795931772.091754    7393 local_rendezvous.cc:412] Local rendezvous is aborting",
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        b"2026-11-29 06:01:02.123456: I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow",
    ]
    kept = [
        b"W1129 06:05:03.123456 140290920541056 files.py:105] Record file x is empty (0 bytes)",
        b"ac_keras.train: error: No files match file_pattern 'x*'.",
        b"Epoch 1/10",
    ]
    assert all(cli._NATIVE_LOG_LINE.match(line) for line in native)
    assert not any(cli._NATIVE_LOG_LINE.match(line) for line in kept)
