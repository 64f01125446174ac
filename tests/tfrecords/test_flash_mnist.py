"""Tests of the Flash-MNIST command line (tfrecords/flash_mnist.py), run in fresh processes.

The library it calls (ac_keras.datasets.flash_mnist) has its tests in tests/ac_keras/datasets/flash_mnist/.
"""

import json
import os
import subprocess
import sys

import pytest

from ac_keras.datasets import flash_mnist as fm

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TINY = dict(
    seed=3,
    videos_per_class_train=1,
    videos_per_class_test=1,
    test_digits_per_class=490,  # train pool of 100 digits: 500 + 50 CNN frames
    cnn_epochs=1,
    num_shards=2,
)


def run_cli(*args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return subprocess.run(
        [sys.executable, "-m", "tfrecords.flash_mnist", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def shard_bytes(directory):
    names = sorted(n for n in os.listdir(directory) if n.endswith(".tfrecord"))
    return {name: open(os.path.join(directory, name), "rb").read() for name in names}


@pytest.mark.slow
def test_cli_overwrites_with_the_very_same_bytes(tmp_path):
    directory = tmp_path / "dataset"
    metadata = fm.generate_dataset(directory, progress=False, **TINY)
    before = shard_bytes(directory)
    # A fresh process with the same settings must write the very same bytes.
    result = run_cli(
        f"--output_dir={directory}",
        "--overwrite",
        *(f"--{name}={value}" for name, value in TINY.items()),
    )
    assert result.returncode == 0, result.stderr
    assert "1024 training and 1024 test videos" in result.stdout
    assert shard_bytes(directory) == before, "same seed should give byte-identical shards"
    with open(directory / "flash_mnist.json") as stream:
        rewritten = json.load(stream)
    for key in ("cnn_test_digit_accuracy", "train_pool_per_class", "noise_histogram"):
        assert rewritten[key] == metadata[key]


@pytest.mark.slow
def test_cli_help_and_refusal(tmp_path):
    result = run_cli("--help")
    assert result.returncode == 0, result.stderr
    assert "videos_per_class_train" in result.stdout + result.stderr
    (tmp_path / "flash_mnist.json").write_text("{}")
    result = run_cli(f"--output_dir={tmp_path}")
    assert result.returncode != 0
    assert str(tmp_path) in result.stderr and "--overwrite" in result.stderr
    result = run_cli(f"--output_dir={tmp_path / 'new'}", f"--mnist_dir={tmp_path}")
    assert result.returncode != 0
    assert "train-images-idx3-ubyte" in result.stderr
    assert not (tmp_path / "new").exists()
