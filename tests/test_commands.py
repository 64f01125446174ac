"""Every `python -m` command answers --help with exit status 0, and the CLI modules import side by side."""

import concurrent.futures
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = [
    "ac_keras.train",
    "ac_keras.evaluate",
    "ac_keras.predict",
    "ac_keras.export",
    "ac_keras.classify",
    "ac_keras.visualize",
    "ac_keras.demo",
    "tfrecords.convert",
    "tfrecords.stats",
    "tfrecords.inspect",
    "tfrecords.flash_mnist",
    "tuner.search",
]


def _help(module):
    """Problems of `python -m module --help` in a fresh process (empty when it answers with status 0)."""
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=300
    )
    if result.returncode != 0:
        return [f"{module} --help: exit status {result.returncode}\n{result.stderr[-2000:]}"]
    if "--" not in result.stdout + result.stderr:
        return [f"{module} --help lists no flag:\n{result.stdout[-2000:]}"]
    return []


@pytest.mark.slow  # one Python process per command, each importing TensorFlow
def test_help_exits_zero():
    # One command per core at a time: each start is mostly importing TensorFlow, single-threaded.
    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        problems = [problem for found in pool.map(_help, COMMANDS) for problem in found]
    assert not problems, "\n".join(problems)


def test_cli_modules_define_each_flag_once():
    import ac_keras.classify  # noqa: F401
    import ac_keras.evaluate  # noqa: F401
    import ac_keras.export  # noqa: F401
    import ac_keras.predict  # noqa: F401
    import ac_keras.train  # noqa: F401
    import ac_keras.visualize  # noqa: F401
