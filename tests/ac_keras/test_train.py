"""ac_keras/train.py: Flash-MNIST on first use, and again when its frame CNN is an older version."""

import dataclasses
import json
import os

import pytest
from absl import app

from ac_keras import config as ac_config
from ac_keras import train
from ac_keras.datasets import flash_mnist as fm

# The smallest dataset the generator makes: 1 training and 1 test video per subset, a 100-digit training pool,
# one CNN epoch.
TINY = dict(videos_per_class_train=1, videos_per_class_test=1, cnn_epochs=1, mnist_dir=None)


def _settings(data_dir, model_dir):
    """(config, options) as maybe_generate_flash_mnist gets them from configs/flash_mnist.flags."""
    config = ac_config.Config.from_values(
        train_data=f"{data_dir}/train-*.tfrecord", stats=f"{data_dir}/stats.json", model_dir=str(model_dir)
    )
    return config, ac_config.FlashMnistOptions(generate=True, directory=str(data_dir), **TINY)


def _old_dataset(data_dir, metadata):
    """A dataset directory as an older generator left it: a shard, stats.json and flash_mnist.json."""
    os.makedirs(data_dir)
    (data_dir / "train-00000-of-00001.tfrecord").write_bytes(b"old features")
    (data_dir / "stats.json").write_text("{}")
    (data_dir / fm.METADATA_FILE).write_text(json.dumps(metadata))


def _no_generation(*args, **kwargs):
    raise AssertionError("generate_dataset must not be called")


def test_a_dataset_of_an_older_frame_cnn_is_generated_again(tmp_path, monkeypatch, capsys):
    data_dir = tmp_path / "data" / "flash_mnist"
    _old_dataset(data_dir, {"dataset": "flash_mnist", "seed": 0})  # version 1 recorded no version
    beside = tmp_path / "data" / "mine.txt"
    beside.write_text("user data")
    calls = []
    real_generate = fm.generate_dataset

    def tiny_generate(output_dir, **kwargs):
        calls.append(kwargs)
        kwargs.update(test_digits_per_class=490, num_shards=1, progress=False)  # a 100-digit training pool
        return real_generate(output_dir, **kwargs)

    monkeypatch.setattr(fm, "generate_dataset", tiny_generate)
    train.maybe_generate_flash_mnist(*_settings(data_dir, tmp_path / "run"))
    assert len(calls) == 1 and calls[0]["overwrite"] is True
    out = capsys.readouterr().out
    assert "frame CNN version 1" in out and "nothing outside that directory is touched" in out
    metadata = json.loads((data_dir / fm.METADATA_FILE).read_text())
    assert metadata["frame_cnn_version"] == fm.FRAME_CNN_VERSION == 2
    assert (data_dir / "train-00000-of-00001.tfrecord").read_bytes() != b"old features"
    assert json.loads((data_dir / "stats.json").read_text())  # the new statistics
    # Replaced in place: nothing left beside it but what was there.
    assert sorted(os.listdir(tmp_path / "data")) == ["flash_mnist", "mine.txt"]
    assert beside.read_text() == "user data"

    # Current now: the next run uses it as it is.
    monkeypatch.setattr(fm, "generate_dataset", _no_generation)
    train.maybe_generate_flash_mnist(*_settings(data_dir, tmp_path / "run"))


def test_a_current_or_foreign_dataset_is_left_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(fm, "generate_dataset", _no_generation)
    current = tmp_path / "current"
    _old_dataset(current, {"dataset": "flash_mnist", "frame_cnn_version": fm.FRAME_CNN_VERSION})
    train.maybe_generate_flash_mnist(*_settings(current, tmp_path / "run"))
    # Shards without the generator's flash_mnist.json are not ours to replace.
    foreign = tmp_path / "foreign"
    os.makedirs(foreign)
    (foreign / "train-00000-of-00001.tfrecord").write_bytes(b"someone's records")
    (foreign / "stats.json").write_text("{}")
    train.maybe_generate_flash_mnist(*_settings(foreign, tmp_path / "run"))
    assert (foreign / "train-00000-of-00001.tfrecord").read_bytes() == b"someone's records"


def test_train_data_outside_flash_mnist_dir_is_used_as_it_is_and_said(tmp_path, monkeypatch, capsys):
    # --flash_mnist_dir moved on the command line while the flagfile's --train_data still finds the old data.
    monkeypatch.setattr(fm, "generate_dataset", _no_generation)
    existing = tmp_path / "data" / "flash_mnist"
    _old_dataset(existing, {"dataset": "flash_mnist", "frame_cnn_version": fm.FRAME_CNN_VERSION})
    config, options = _settings(existing, tmp_path / "run")
    train.maybe_generate_flash_mnist(
        config, dataclasses.replace(options, directory=str(tmp_path / "elsewhere"))
    )
    said = capsys.readouterr().out
    assert f"--train_data '{existing}/train-*.tfrecord' lies outside --flash_mnist_dir" in said
    assert "nothing is generated" in said
    assert not (tmp_path / "elsewhere").exists()
    # The same directory, written differently.
    train.maybe_generate_flash_mnist(
        config, dataclasses.replace(options, directory=f"{existing}/../flash_mnist/")
    )
    assert "lies outside" not in capsys.readouterr().out


def test_a_run_on_the_old_features_is_refused_before_anything_is_generated(tmp_path, monkeypatch):
    data_dir = tmp_path / "flash_mnist"
    _old_dataset(data_dir, {"dataset": "flash_mnist", "frame_cnn_version": 1})
    checkpoint = tmp_path / "run" / "checkpoints" / "ckpt-1.index"
    os.makedirs(checkpoint.parent)
    checkpoint.write_bytes(b"weights")
    monkeypatch.setattr(fm, "generate_dataset", _no_generation)  # minutes of work the refusal must save
    with pytest.raises(app.UsageError, match="holds a run trained on it. Nothing was generated"):
        train.maybe_generate_flash_mnist(*_settings(data_dir, tmp_path / "run"))
    assert checkpoint.read_bytes() == b"weights"
    assert (data_dir / "train-00000-of-00001.tfrecord").read_bytes() == b"old features"
