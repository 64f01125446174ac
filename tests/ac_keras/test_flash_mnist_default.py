"""The embedded default, in miniature: the README's main command path on a tiny generated Flash-MNIST."""

import json
import pathlib
import subprocess
import sys

import pytest

from ac_keras import config as ac_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
# Generates Flash-MNIST and trains on it in subprocesses.
pytestmark = pytest.mark.slow
# 1,024 classes (every subset of the ten digits) and one training video each: 16 steps per epoch. The
# flagfile's learning rate 0.001 learns nothing measurable in a few epochs; 0.01 for 8 epochs does (top-1
# below).
EPOCHS = 8
LEARNING_RATE = 0.01


def _default_exports():
    """The versions under the export directory of the flagfile's default run (runs/flash_mnist), if any."""
    directory = ROOT / "runs" / "flash_mnist" / "export"
    return sorted(path.name for path in directory.iterdir()) if directory.is_dir() else []


def test_flash_mnist_flagfile_generates_trains_exports_and_visualizes(tmp_path):
    data_dir = tmp_path / "flash"
    run_dir = tmp_path / "run"
    common = [
        f"--flagfile={ROOT / 'configs' / 'flash_mnist.flags'}",
        f"--flash_mnist_dir={data_dir}",
        f"--train_data={data_dir}/train-*.tfrecord",
        f"--eval_data={data_dir}/test-*.tfrecord",
        f"--stats={data_dir}/stats.json",
        f"--model_dir={run_dir}",
    ]
    default_exports_before = _default_exports()
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "ac_keras.train",
            *common,
            "--flash_mnist_videos_per_class_train=1",
            "--flash_mnist_videos_per_class_test=1",
            "--flash_mnist_cnn_epochs=1",
            f"--epochs={EPOCHS}",
            f"--learning_rate={LEARNING_RATE}",
            "--cluster_sizes=frames:8",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert train.returncode == 0, train.stderr[-3000:]
    assert "generating Flash-MNIST" in train.stdout
    assert "Flash-MNIST ready" in train.stdout
    assert "Final evaluation:" in train.stdout
    info = json.loads((data_dir / "flash_mnist.json").read_text())
    assert info["num_train_videos"] == info["num_test_videos"] == 1024
    # No --export_dir: the export follows --model_dir, nothing lands in the default run's export directory.
    assert (run_dir / "export" / "1" / "saved_model.pb").exists()
    assert _default_exports() == default_exports_before
    best = json.loads((run_dir / "best" / "metrics.json").read_text())
    # Something was learned: chance is 1/1024 (one video of each class in the test set, single label), so a
    # guessing model gets about 1 of the 1,024 test videos right; at least 8 right is 8x chance (the chance of
    # guessing 8 is about 1e-5). Measured: 14 (top-1 0.0137) with this data and these flags (raw features of
    # the frame CNN version 2; 19 with the first CNN's centered features).
    assert best["top1"] >= 8 / 1024, best
    # The flagfile trains on the raw features, as the paper does; the generated training statistics are there
    # for --center_features, the option.
    stats = json.loads((data_dir / "stats.json").read_text())
    assert len(stats["modalities"]["frames"]["mean"]) == 50
    saved_config = ac_config.flat_config_dict(json.loads((run_dir / "config.json").read_text()))
    assert saved_config["center_features"] is False

    # A second run finds the data and does not regenerate it; a dataset from before stats.json gets one. The
    # run has finished: nothing is trained, and the same model is not exported again.
    (data_dir / "stats.json").unlink()
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "ac_keras.train",
            *common,
            f"--epochs={EPOCHS}",
            f"--learning_rate={LEARNING_RATE}",
            "--cluster_sizes=frames:8",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "generating Flash-MNIST" not in again.stdout
    assert "Writing the training statistics" in again.stdout
    assert f"the run has finished its {EPOCHS} epoch(s), nothing to train" in again.stdout
    assert f"Nothing trained since the export {run_dir / 'export' / '1'}: not exported again" in again.stdout
    assert sorted(path.name for path in (run_dir / "export").iterdir()) == ["1"]
    rewritten = json.loads((data_dir / "stats.json").read_text())
    assert rewritten["data"] == f"{data_dir}/train-*.tfrecord"
    assert {**rewritten, "data": None} == {**stats, "data": None}

    picture = tmp_path / "attention.png"
    visualize = subprocess.run(
        [
            sys.executable,
            "-m",
            "ac_keras.visualize",
            *common,
            "--cluster_sizes=frames:8",
            f"--output={picture}",
            "--num_videos=3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert visualize.returncode == 0, visualize.stderr[-3000:]
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "attention maps of 3 videos" in visualize.stdout
