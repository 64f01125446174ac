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


def test_only_native_info_and_the_named_harmless_lines_are_dropped():
    dropped = {
        b"I0000 00:00:1795931733.157615    6401 port.cc:153] oneDNN custom operations are on.": "native INFO",
        b"2026-11-29 06:01:02.123456: I tensorflow/core/platform/cpu_feature_guard.cc:210] This TensorFlow": (
            "native INFO"
        ),
        b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR": (
            "absl-before-init"
        ),
        b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with "
        b"the appropriate compiler flags.": "cpu-instructions",
        b"E0000 00:00:17965.6    8075 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error: "
        b"Failed call to cuInit: UNKNOWN ERROR (303)": "cuinit-without-gpu",
        b"W0000 00:00:17959.0    7393 local_rendezvous.cc:412] Local rendezvous is aborting with status: "
        b"OUT_OF_RANGE: End of sequence": "end-of-sequence",
        b"WARNING:root:apitools not found": "beam-no-cloud-clients",
        b"INFO:__main__:Logging handler created.": "Python INFO",
        b"WARNING:__main__:No semi_persistent_directory found:  User registered objects (e.g. schema, "
        b"logical type) throughregisteries may not be effective": "beam-semi-persistent-directory",
        b"WARNING:apache_beam.options.pipeline_options:Discarding unparseable args: "
        b"['--pipeline_type_check', '--direct_runner_use_stacked_bundle']": "beam-worker-internal-options",
    }
    for line, why in dropped.items():
        reason = cli.dropped_line(line, no_gpu=True)
        assert getattr(reason, "name", reason) == why, line
    kept = [
        # Warnings, errors and fatal lines of native code that are not on the list.
        b"W0000 00:00:17959.0    7393 local_rendezvous.cc:412] Local rendezvous is aborting with status: "
        b"INVALID_ARGUMENT: bad input",
        b"W0000 00:00:17959.1    7393 cpu_allocator_impl.cc:83] Allocation of 1 exceeds 10% of free memory.",
        b"E0000 00:00:17965.6    8075 cuda_dnn.cc:52] Could not create cudnn handle",
        b"F0000 00:00:17965.9    8590 parse_flags_from_env.cc:234] Unknown flag in XLA_FLAGS: --xla_x",
        # Python log lines, and our own output.
        b"W1129 06:05:03.123456 140290920541056 files.py:105] Record file x is empty (0 bytes)",
        b"WARNING:apache_beam.runners.worker.sdk_worker:Error processing instruction",
        # A mistyped Beam option among the discarded ones is the user's to see.
        b"WARNING:apache_beam.options.pipeline_options:Discarding unparseable args: "
        b"['--pipeline_type_check', '--runer=FlinkRunner']",
        b"ac_keras.train: error: No files match file_pattern 'x*'.",
        b"Epoch 1/10",
    ]
    for line in kept:
        assert cli.dropped_line(line, no_gpu=True) is None, line
    # On a machine with an NVIDIA device, a failed cuInit means the GPU is not used: it is shown.
    cuinit = next(line for line, why in dropped.items() if why == "cuinit-without-gpu")
    assert cli.dropped_line(cuinit, no_gpu=False) is None
    assert all(harmless.why for harmless in cli.HARMLESS_LINES)
