"""Every `python -m` command answers --help with exit status 0, and the CLI modules import side by side."""

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


@pytest.mark.slow  # one Python process per command, each importing TensorFlow
@pytest.mark.parametrize("module", COMMANDS)
def test_help_exits_zero(module):
    result = subprocess.run(
        [sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--" in result.stdout + result.stderr


def test_cli_modules_define_each_flag_once():
    import ac_keras.classify  # noqa: F401
    import ac_keras.evaluate  # noqa: F401
    import ac_keras.export  # noqa: F401
    import ac_keras.predict  # noqa: F401
    import ac_keras.train  # noqa: F401
    import ac_keras.visualize  # noqa: F401
