import copy
import dataclasses
import json
import pathlib
import subprocess
import sys

import pytest
from absl import flags

from ac_keras import artifacts
from ac_keras import config as ac_config
from ac_keras import flags as ac_flags

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _parse(*args):
    flag_values = copy.deepcopy(flags.FLAGS)
    flag_values.unparse_flags()
    flag_values(["prog", *args])
    return flag_values


@pytest.mark.parametrize(
    "name",
    ["kinetics", "youtube8m", "ucf101", "hmdb51", "flash_mnist", "flash_mnist_paper", "flash_mnist_video"],
)
def test_shipped_flagfiles_validate(name):
    flagfile = ROOT / "configs" / f"{name}.flags"
    assert flagfile.read_text().startswith("# "), "each flagfile opens with a comment"
    assert "python -m ac_keras.train --flagfile=configs/" in flagfile.read_text()
    config = ac_flags.config_from_flags(
        _parse(f"--flagfile={flagfile}", "--train_data=train*.tfrecord", "--stats=stats.json")
    )
    assert config.data.num_classes > 1
    assert [name for name, _ in config.model.cluster_sizes] == [
        spec.name for spec in config.data.feature_specs
    ]


def test_kinetics_flagfile_matches_the_paper():
    config = ac_flags.config_from_flags(
        _parse(f"--flagfile={ROOT / 'configs/kinetics.flags'}", "--train_data=x", "--stats=s.json")
    )
    assert dict(config.model.cluster_sizes) == {"rgb": 64, "flow": 32, "audio": 32}
    assert [(s.name, s.dim, s.dtype) for s in config.data.feature_specs] == [
        ("rgb", 1536, "float"),
        ("flow", 1536, "float"),
        ("audio", 128, "float"),
    ]
    training = config.training
    assert (training.optimizer, training.learning_rate, training.clip_norm) == ("rmsprop", 0.001, 5.0)
    assert (config.data.train_frames, config.data.eval_frames, config.data.class_balance) == (20, 25, True)
    assert config.data.num_classes == 400


def test_command_line_overrides_flagfile():
    config = ac_flags.config_from_flags(
        _parse(
            f"--flagfile={ROOT / 'configs/kinetics.flags'}",
            "--train_data=x",
            "--stats=s.json",
            "--cluster_sizes=8",
            "--learning_rate=0.01",
        )
    )
    assert dict(config.model.cluster_sizes) == {"rgb": 8, "flow": 8, "audio": 8}
    assert config.training.learning_rate == 0.01


def test_to_flags_round_trip():
    config = ac_flags.config_from_flags(
        _parse(f"--flagfile={ROOT / 'configs/youtube8m.flags'}", "--train_data=t*", "--noshift")
    )
    again = ac_flags.config_from_flags(_parse(*config.to_flags().split()))
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
        ac_flags.config_from_flags(_parse(*base, *args))


def test_missing_train_data_is_reported():
    with pytest.raises(ac_config.ConfigError, match="--train_data: is required"):
        ac_flags.config_from_flags(_parse("--num_classes=4"))


def test_export_base_follows_model_dir_unless_export_dir_is_given():
    runtime = ac_config.RuntimeConfig(model_dir="runs/variant")
    assert runtime.export_base == "runs/variant/export"
    assert dataclasses.replace(runtime, export_dir="serving/models").export_base == "serving/models"
    assert ac_config.RuntimeConfig().export_base is None
    # The shipped flagfiles leave it to model_dir: overriding --model_dir moves the export with it.
    for flagfile in (ROOT / "configs").glob("*.flags"):
        assert "--export_dir" not in flagfile.read_text(), flagfile.name


def test_a_finished_run_run_again_is_not_exported_twice(tmp_path):
    config = ac_flags.config_from_flags(
        _parse(f"--flagfile={ROOT / 'configs/youtube8m.flags'}", "--train_data=t*", f"--model_dir={tmp_path}")
    )
    model_dir, export_base = str(tmp_path), config.runtime.export_base
    record = artifacts.export_record(config, 320, export_base)
    assert artifacts.previous_export(model_dir, record) is None  # nothing exported yet
    version = tmp_path / "export" / "1"
    version.mkdir(parents=True)
    artifacts.write_export_record(model_dir, record, str(version))
    assert artifacts.previous_export(model_dir, record) == str(version)
    # Trained further, other settings, another export directory, or the version removed: export again.
    assert artifacts.previous_export(model_dir, artifacts.export_record(config, 321, export_base)) is None
    other = artifacts.export_record(config.replace(top_k=5), 320, export_base)
    assert artifacts.previous_export(model_dir, other) is None
    assert artifacts.previous_export(model_dir, artifacts.export_record(config, 320, "elsewhere")) is None
    version.rmdir()
    assert artifacts.previous_export(model_dir, record) is None
    (tmp_path / artifacts.EXPORT_RECORD_FILE).write_text("{half-written")
    assert artifacts.previous_export(model_dir, record) is None


def test_config_is_frozen():
    config = ac_flags.config_from_flags(_parse("--train_data=t*", "--num_classes=4"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training.epochs = 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.training = ac_config.TrainingConfig()


@pytest.mark.slow
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


def test_each_setting_lives_in_one_section_under_its_flag_name():
    config = ac_flags.config_from_flags(_parse("--train_data=t*", "--num_classes=4", "--epochs=7"))
    sections = {"data", "model", "training", "runtime"}
    assert set(ac_config.SECTION_OF.values()) == sections
    assert config.training.epochs == config.get("epochs") == 7
    # Every field is a flag of the same name, and every training flag of ac_keras.flags is a field.
    for name in ac_config.SECTION_OF:
        assert name in flags.FLAGS, name
    changed = config.replace(epochs=3, model_dir="runs/x", dropout=0.2)
    assert (changed.training.epochs, changed.runtime.model_dir, changed.model.dropout) == (3, "runs/x", 0.2)
    assert changed.data == config.data
    with pytest.raises(TypeError, match="no field 'epoch'"):
        config.replace(epoch=3)


def test_config_json_is_nested_and_flattens_back():
    config = ac_flags.config_from_flags(_parse("--train_data=t*", "--num_classes=4"))
    saved = json.loads(config.to_json())
    assert set(saved) == {"data", "model", "training", "runtime"}
    assert saved["training"]["fused_optimizer"] is True
    flat = ac_config.flat_config_dict(saved)
    assert flat == json.loads(json.dumps(config.flat()))
    # An older run's flat config.json reads the same way.
    assert ac_config.flat_config_dict(flat) == flat


def test_enumerations_are_defined_once_at_the_lowest_layer():
    from ac_keras import layers, model, schema
    from ac_keras.data import parser, stats

    assert ac_config.LABEL_MODES is schema.LABEL_MODES is model.LABEL_MODES
    assert "LABEL_MODES = " not in pathlib.Path(parser.__file__).read_text()
    assert ac_config.AGGREGATORS is layers.AGGREGATORS
    assert ac_config.WEIGHTINGS is layers.WEIGHTINGS
    assert ac_config.MISSING_MODALITY is stats.MISSING_MODALITY


def test_speed_paths_are_config_options():
    config = ac_flags.config_from_flags(
        _parse("--train_data=t*", "--num_classes=4", "--nofused_optimizer", "--nofused_shift")
    )
    assert (config.training.fused_optimizer, config.training.fused_head, config.training.fused_shift) == (
        False,
        True,
        False,
    )
    assert "--nofused_optimizer" in config.to_flags()
