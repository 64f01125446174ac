"""The console of every command (`ac_keras.cli.quiet_console`), with real native failures and real signals.

Each test runs a small program the way a command runs (`quiet_console(__name__)` first, as `__main__`) in a
subprocess, so the fork, the pipe and the exit status are the real ones.
"""

import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ac_keras.testing import records

ROOT = pathlib.Path(__file__).resolve().parents[2]
PROLOGUE = "import sys\nfrom ac_keras import cli\ncli.quiet_console(__name__)\n"


def _user_environment():
    """The environment without what tests/conftest.py sets for the test process (TF_CPP_MIN_LOG_LEVEL)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name not in ("AC_KERAS_VERBOSE", "TF_CPP_MIN_LOG_LEVEL")
    }


def _run_program(tmp_path, body, *args, env=None, timeout=120):
    program = tmp_path / "command.py"
    program.write_text(PROLOGUE + textwrap.dedent(body))
    environment = {**_user_environment(), "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run(
        [sys.executable, str(program), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
    )


@pytest.mark.slow  # imports TensorFlow in a subprocess
def test_native_warnings_and_errors_reach_the_console_and_an_abort_is_explained(tmp_path):
    body = """
        import tensorflow as tf
        logging = tf.compat.v1.logging
        tf.print("an info line", output_stream=logging.info)  # native log lines of each level
        tf.print("a warning line", output_stream=logging.warning)
        tf.print("an error line", output_stream=logging.error)
        import ctypes
        sys.stderr.write("the abort's own message\\n")
        ctypes.CDLL(None).abort()  # native code's abort(), as a failed CHECK of TensorFlow calls it
    """
    result = _run_program(tmp_path, body)
    assert result.returncode == -signal.SIGABRT, result.stderr
    lines = result.stderr.splitlines()
    assert any(line.startswith("W") and line.endswith("a warning line") for line in lines), lines
    assert any(line.startswith("E") and line.endswith("an error line") for line in lines), lines
    assert "the abort's own message" in result.stderr
    assert not any("an info line" in line for line in lines)  # native INFO
    assert "cuInit" not in result.stderr  # this machine has no NVIDIA device: the probe's line is harmless
    assert "absl::InitializeLog" not in result.stderr
    assert lines[-1].startswith("command.py: error: the process was aborted in native code (SIGABRT).")
    assert "XLA_FLAGS" in lines[-1]

    verbose = _run_program(tmp_path, body, "--verbose")
    assert verbose.returncode == -signal.SIGABRT
    assert "an info line" in verbose.stderr
    assert "was aborted in native code (SIGABRT)" in verbose.stderr.splitlines()[-1]


@pytest.mark.slow  # trains in a subprocess
def test_a_fatal_error_in_xla_is_shown_with_what_to_check(tmp_path):
    records.fake_dataset(tmp_path / "data", "rgb:8", 8, num_classes=3)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ac_keras.train",
            f"--train_data={tmp_path}/data/train*",
            "--features=rgb:8",
            "--num_classes=3",
            f"--model_dir={tmp_path}/run",
            "--epochs=1",
            "--batch_size=4",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**_user_environment(), "XLA_FLAGS": "--xla_no_such_flag"},
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) <= 10, lines
    assert any(
        line.startswith("F") and "Unknown flag in XLA_FLAGS: --xla_no_such_flag" in line for line in lines
    )
    assert lines[-1].startswith(
        "ac_keras.train: error: the process was ended by a fatal error of TensorFlow or XLA (the F line "
        "above) with exit status 1."
    )


def test_a_killed_command_is_explained_and_keeps_its_status(tmp_path):
    result = _run_program(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert result.returncode == -signal.SIGKILL
    assert "killed (SIGKILL), most often by the system's out-of-memory killer" in result.stderr


def test_python_errors_and_exits_are_not_taken_for_native_deaths(tmp_path):
    bug = _run_program(tmp_path, "raise ValueError('a bug keeps its traceback')\n")
    assert bug.returncode == 1
    assert "Traceback" in bug.stderr and "ValueError: a bug keeps its traceback" in bug.stderr
    assert "error: the process" not in bug.stderr
    done = _run_program(tmp_path, "print('done')\nsys.exit(3)\n")
    assert (done.returncode, done.stdout, done.stderr) == (3, "done\n", "")


def test_the_command_dies_with_its_console_and_sigterm_is_passed_on(tmp_path):
    pid_file = tmp_path / "pid"
    body = f"""
        import os, pathlib, signal, time
        def stop(number, frame):
            pathlib.Path({str(tmp_path / "stopped")!r}).write_text("SIGTERM")
            sys.exit(0)
        signal.signal(signal.SIGTERM, stop)
        pathlib.Path({str(pid_file)!r}).write_text(str(os.getpid()))
        time.sleep(60)
    """
    program = tmp_path / "command.py"
    program.write_text(PROLOGUE + textwrap.dedent(body))
    environment = {**os.environ, "PYTHONPATH": str(ROOT)}

    def start():
        pid_file.unlink(missing_ok=True)
        process = subprocess.Popen([sys.executable, str(program)], cwd=ROOT, env=environment)
        deadline = time.time() + 30
        while not pid_file.exists() and time.time() < deadline:
            time.sleep(0.02)
        return process, int(pid_file.read_text())

    console, command = start()
    assert command != console.pid
    console.send_signal(signal.SIGKILL)
    console.wait()
    deadline = time.time() + 5
    while _alive(command) and time.time() < deadline:
        time.sleep(0.02)
    assert not _alive(command), "a SIGKILL of the command must end the work too"

    console, command = start()
    console.send_signal(signal.SIGTERM)
    assert console.wait(timeout=30) == 0
    assert (tmp_path / "stopped").read_text() == "SIGTERM"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (ended, not yet reaped by its new parent) is not alive.
    status = pathlib.Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())
