"""Tests of the dataset tools: convert, stats, inspect, and their command lines."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from ac_keras import schema
from ac_keras.data import make_dataset, resolve_stats
from ac_keras.data import stats as data_stats
from ac_keras.testing import records
from tfrecords import convert, inspect

ROOT = pathlib.Path(__file__).resolve().parents[2]
FEATURES = "rgb:6,audio:3:float"


def write_npz_dataset(directory, num_videos=5, seed=0):
    """Per-video .npz files (float rgb, float audio) and a labels CSV; returns (csv path, videos)."""
    rng = np.random.default_rng(seed)
    npz_dir = directory / "npz"
    npz_dir.mkdir()
    videos = {}
    lines = ["video_id,labels"]
    for index in range(num_videos):
        video_id = f"clip{index}"
        num_frames = int(rng.integers(1, 6))
        rgb = rng.uniform(-2, 2, (num_frames, 6)).astype(np.float32)
        audio = rng.normal(size=(num_frames, 3)).astype(np.float32)
        np.savez(npz_dir / f"{video_id}.npz", rgb=rgb, audio=audio)
        labels = sorted(rng.choice(4, size=index % 3, replace=False).tolist())
        videos[video_id] = {"rgb": rgb, "audio": audio, "labels": labels}
        lines.append(f"{video_id},{' '.join(str(label) for label in labels)}")
    csv_path = directory / "labels.csv"
    csv_path.write_text("\n".join(lines) + "\n")
    return csv_path, npz_dir, videos


def test_convert_npz_and_csv_reads_back_equal(tmp_path):
    csv_path, npz_dir, videos = write_npz_dataset(tmp_path)
    output = tmp_path / "records"
    paths = convert.convert(
        csv_path=str(csv_path),
        features=FEATURES,
        output_dir=str(output),
        npz_dir=str(npz_dir),
        num_shards=2,
        show_progress=False,
    )
    assert [os.path.basename(path) for path in paths] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    dataset = make_dataset(
        str(output / "train-*"), FEATURES, batch_size=2, training=False, num_classes=4, label_mode="multi"
    )
    seen = set()
    for features, labels in dataset:
        for index, video_id in enumerate(features[schema.VIDEO_ID_KEY].numpy()):
            video = videos[video_id.decode()]
            seen.add(video_id.decode())
            np.testing.assert_allclose(
                features["rgb"][index].numpy(),
                schema.dequantize(schema.quantize(video["rgb"])),
                rtol=0,
                atol=1e-6,
            )
            np.testing.assert_array_equal(features["audio"][index].numpy(), video["audio"])
            assert np.flatnonzero(labels[index].numpy()).tolist() == video["labels"]
    assert seen == set(videos)
    with pytest.raises(FileExistsError, match="train-00000-of-00002.tfrecord"):
        convert.convert(
            csv_path=str(csv_path),
            features=FEATURES,
            output_dir=str(output),
            npz_dir=str(npz_dir),
            num_shards=2,
            show_progress=False,
        )


@pytest.mark.slow
def test_convert_npy_dirs_in_parallel_workers_with_overwrite(tmp_path, capfd):
    csv_path, npz_dir, videos = write_npz_dataset(tmp_path, num_videos=4, seed=1)
    audio_dir = tmp_path / "audio_npy"
    audio_dir.mkdir()
    for video_id, video in videos.items():
        np.save(audio_dir / f"{video_id}.npy", video["audio"] + 1.0)
    output = tmp_path / "records"
    (output).mkdir()
    (output / "train-00000-of-00001.tfrecord").write_bytes(b"")  # an earlier run's shard
    with pytest.raises(FileExistsError, match="train-00000-of-00001.tfrecord"):
        convert.convert(
            csv_path=str(csv_path),
            features=FEATURES,
            output_dir=str(output),
            npz_dir=str(npz_dir),
            show_progress=False,
        )
    convert.convert(
        csv_path=str(csv_path),
        features=FEATURES,
        output_dir=str(output),
        npz_dir=str(npz_dir),
        npy_dirs={"audio": str(audio_dir)},
        num_shards=2,
        num_workers=2,
        overwrite=True,
    )
    assert sorted(os.listdir(output)) == ["train-00000-of-00002.tfrecord", "train-00001-of-00002.tfrecord"]
    assert "converted 4/4 videos" in capfd.readouterr().err
    features, _ = next(
        iter(
            make_dataset(
                str(output / "train-*"),
                FEATURES,
                batch_size=4,
                training=False,
                num_classes=4,
                label_mode="multi",
            )
        )
    )
    for index, video_id in enumerate(features[schema.VIDEO_ID_KEY].numpy()):
        np.testing.assert_array_equal(
            features["audio"][index].numpy(), videos[video_id.decode()]["audio"] + 1.0
        )


def test_convert_reports_bad_csv_rows_and_missing_modalities(tmp_path):
    csv_path, npz_dir, _ = write_npz_dataset(tmp_path, num_videos=2)
    bad_csv = tmp_path / "bad.csv"
    bad_csv.write_text("clip0,1 x\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: labels must be space-separated ints"):
        convert.read_labels_csv(str(bad_csv))
    with pytest.raises(ValueError, match=r"no frames for modality 'flow'.*--allow_missing"):
        convert.convert(
            csv_path=str(csv_path),
            features=FEATURES + ",flow:2:float",
            output_dir=str(tmp_path / "out"),
            npz_dir=str(npz_dir),
            show_progress=False,
        )
    assert not list((tmp_path / "out").glob("*.tfrecord"))  # no half-written shard


def test_stats_means_counts_and_histogram_match_numpy(tmp_path):
    videos = records.random_videos(
        "rgb:6,audio:3:float", 9, num_classes=4, labels_per_video=2, min_frames=1, max_frames=5, seed=4
    )
    del videos[0]["frames"]["audio"]  # a video without audio
    records.write_videos(tmp_path, videos, num_shards=2)
    result = data_stats.compute_stats(str(tmp_path / "train-*"), FEATURES, batch_size=4, num_classes=6)
    rgb = np.concatenate([schema.dequantize(v["frames"]["rgb"]) for v in videos]).astype(np.float64)
    audio = np.concatenate([v["frames"]["audio"] for v in videos[1:]]).astype(np.float64)
    np.testing.assert_allclose(result["modalities"]["rgb"]["mean"], rgb.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(result["modalities"]["audio"]["mean"], audio.mean(axis=0), rtol=1e-6)
    expected_counts = np.bincount(np.concatenate([v["labels"] for v in videos]), minlength=6)
    assert result["class_counts"] == expected_counts.tolist()
    assert result["num_videos"] == 9 and result["num_classes"] == 6
    assert result["modalities"]["audio"]["num_videos_missing"] == 1
    lengths = [len(v["frames"]["rgb"]) for v in videos]
    assert result["modalities"]["rgb"]["frame_count_histogram"] == {
        str(length): lengths.count(length) for length in sorted(set(lengths))
    }
    assert result["modalities"]["rgb"]["num_frames"] == sum(lengths)
    path = tmp_path / "stats.json"
    data_stats.write_stats(result, str(path))
    # The reader consumes the file: the video without audio gets the audio mean.
    resolved = resolve_stats(str(path), FEATURES, num_classes=6, class_balance=True)
    features, _, weights = next(
        iter(
            make_dataset(
                str(tmp_path / "train-*"),
                FEATURES,
                batch_size=9,
                training=False,
                num_classes=6,
                label_mode="multi",
                missing_fill=resolved.missing_fill,
                class_weights=resolved.class_weights,
            )
        )
    )
    row = [v.decode() for v in features[schema.VIDEO_ID_KEY].numpy()].index(videos[0]["video_id"])
    np.testing.assert_allclose(features["audio"][row].numpy(), [audio.mean(axis=0)], rtol=1e-6)
    assert weights.shape == (9,)
    assert json.loads(path.read_text())["format"] == "ac_keras.stats.v1"


def test_inspect_prints_id_labels_and_frame_counts(tmp_path):
    videos = records.random_videos(FEATURES, 2, num_classes=4, min_frames=3, max_frames=3, seed=2)
    path = records.write_videos(tmp_path, videos)[0]
    text = inspect.describe_record(path, index=1, features=FEATURES)
    assert "id: video00001" in text
    assert f"labels: {videos[1]['labels']}" in text
    assert "modality rgb: 3 frames of 6 bytes (uint8)" in text
    assert "modality audio: 3 frames of 3 floats (float)" in text
    assert "dequantized min" in text and "[matches spec rgb:6]" in text
    assert "MISMATCH" in inspect.describe_record(path, features="rgb:8,audio:3:float")
    with pytest.raises(IndexError, match="holds 2 records"):
        inspect.describe_record(path, index=5)


# Runs each command as `python -m` would (runpy, run_name="__main__"), all in ONE interpreter so that
# TensorFlow is imported once; the flags a command defines are deleted before the next one.
_DRIVER = """
import json, runpy, sys
from absl import app, flags, logging
app.define_help_flags()  # absl's own flags stay; only the commands' flags are deleted
codes = []
for argv in json.loads(sys.argv[1]):
    defined = set(flags.FLAGS)
    sys.argv = list(argv)
    try:
        runpy.run_module(argv[0], run_name="__main__", alter_sys=True)
        codes.append(0)
    except SystemExit as request:
        codes.append(request.code or 0)
    for name in set(flags.FLAGS) - defined:
        delattr(flags.FLAGS, name)
    print("@@", flush=True)
print("@@codes", json.dumps(codes), flush=True)
"""


@pytest.mark.slow
def test_command_lines_show_help_and_inspect_runs(tmp_path):
    videos = records.random_videos(FEATURES, 1, num_classes=4, min_frames=2, max_frames=2, seed=3)
    path = records.write_videos(tmp_path, videos)[0]
    commands = [[f"tfrecords.{tool}", "--help"] for tool in ("convert", "stats", "inspect")]
    commands.append(["tfrecords.inspect", path])
    result = subprocess.run(
        [sys.executable, "-c", _DRIVER, json.dumps(commands)],
        cwd=ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    *outputs, codes = result.stdout.split("@@")
    assert json.loads(codes.removeprefix("codes")) == [0, 0, 0, 0], result.stderr[-3000:]
    assert "--output_dir" in outputs[0] and "--npy_dirs" in outputs[0]
    assert "--data" in outputs[1] and "--num_classes" in outputs[1]
    assert "--index" in outputs[2]
    assert "id: video00000" in outputs[3] and "2 frames" in outputs[3]
