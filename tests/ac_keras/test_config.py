import copy
import dataclasses
import pathlib
import subprocess
import sys

import pytest
from absl import flags

from ac_keras import config as ac_config

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _parse(*args):
    flag_values = copy.deepcopy(flags.FLAGS)
    flag_values.unparse_flags()
    flag_values(["prog", *args])
    return flag_values


@pytest.mark.parametrize(
    "name", ["kinetics", "youtube8m", "ucf101", "hmdb51", "flash_mnist", "flash_mnist_paper"]
)
def test_shipped_flagfiles_validate(name):
    flagfile = ROOT / "configs" / f"{name}.flags"
    assert flagfile.read_text().startswith("# "), "each flagfile opens with a comment"
    assert "python -m ac_keras.train --flagfile=configs/" in flagfile.read_text()
    config = ac_config.from_flags(
        _parse(f"--flagfile={flagfile}", "--train_data=train*.tfrecord", "--stats=stats.json")
    )
    assert config.num_classes > 1
    assert [name for name, _ in config.cluster_sizes] == [spec.name for spec in config.feature_specs]


def test_kinetics_flagfile_matches_the_paper():
    config = ac_config.from_flags(
        _parse(f"--flagfile={ROOT / 'configs/kinetics.flags'}", "--train_data=x", "--stats=s.json")
    )
    assert config.cluster_size_map == {"rgb": 64, "flow": 32, "audio": 32}
    assert [(s.name, s.dim, s.dtype) for s in config.feature_specs] == [
        ("rgb", 1536, "float"),
        ("flow", 1536, "float"),
        ("audio", 128, "float"),
    ]
    assert (config.optimizer, config.learning_rate, config.clip_norm) == ("rmsprop", 0.001, 5.0)
    assert (config.train_frames, config.eval_frames, config.class_balance) == (20, 25, True)
    assert config.num_classes == 400


def test_command_line_overrides_flagfile():
    config = ac_config.from_flags(
        _parse(
            f"--flagfile={ROOT / 'configs/kinetics.flags'}",
            "--train_data=x",
            "--stats=s.json",
            "--cluster_sizes=8",
            "--learning_rate=0.01",
        )
    )
    assert config.cluster_size_map == {"rgb": 8, "flow": 8, "audio": 8}
    assert config.learning_rate == 0.01


def test_to_flags_round_trip():
    config = ac_config.from_flags(
        _parse(f"--flagfile={ROOT / 'configs/youtube8m.flags'}", "--train_data=t*", "--noshift")
    )
    again = ac_config.from_flags(_parse(*config.to_flags().split()))
    assert again == config


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cluster_sizes=rgb:4"], r"--cluster_sizes: needs one N for each modality .* missing \['audio'\]"),
        (["--cluster_sizes=rgb:4,audio:x"], r"--cluster_sizes: 'audio:x' is not name:N"),
        (["--cluster_sizes=0"], r"--cluster_sizes: N of 'rgb' must be >= 1"),
        (["--features=rgb"], r"--features: "),
        (["--dropout=1.5"], r"--dropout: must be in \[0, 1\)"),
        (["--learning_rate=0"], r"--learning_rate: must be > 0"),
        (["--batch_size=0"], r"--batch_size: must be >= 1"),
        (["--class_balance"], r"--class_balance: needs --stats"),
        (["--center_features"], r"--center_features: needs --stats"),
        (["--missing_modality=mean"], r"--missing_modality: =mean needs --stats"),
        (["--num_classes=0"], r"--num_classes: must be a positive int"),
    ],
)
def test_bad_flags_name_the_flag(args, message):
    base = ["--train_data=t*", "--num_classes=4", "--features=rgb:8,audio:4"]
    with pytest.raises(ac_config.ConfigError, match=message):
        ac_config.from_flags(_parse(*base, *args))


def test_missing_train_data_is_reported():
    with pytest.raises(ac_config.ConfigError, match="--train_data: is required"):
        ac_config.from_flags(_parse("--num_classes=4"))


def test_config_is_frozen():
    config = ac_config.from_flags(_parse("--train_data=t*", "--num_classes=4"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.epochs = 3


def test_train_cli_rejects_bad_flag_before_reading_data(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ac_keras.train",
            "--train_data=/nonexistent/never*.tfrecord",
            "--num_classes=3",
            f"--model_dir={tmp_path / 'run'}",
            "--weighting=fc3",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert result.returncode != 0
    assert "weighting" in result.stderr and "fc3" in result.stderr
    assert "nonexistent" not in result.stderr
    assert not (tmp_path / "run").exists()
