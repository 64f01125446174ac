"""Quantized modalities stay uint8 from the record to the model; models made before that still work."""

import numpy as np
import pytest
import tensorflow as tf

from ac_keras import artifacts, evaluation, schema
from ac_keras import config as ac_config
from ac_keras.data import make_dataset, parse_serialized
from ac_keras.export import export_saved_model
from ac_keras.model import uint8_modalities
from ac_keras.task import Task
from ac_keras.testing import records
from ac_keras.testing.learnable import learnable_videos
from ac_keras.testing.records import write_videos
from ac_keras.trainer import Trainer

FEATURES = "rgb:8,audio:4:float"


def _config(tmp_path, **overrides):
    values = {
        "train_data": str(tmp_path / "train-*"),
        "eval_data": str(tmp_path / "eval-*"),
        "features": FEATURES,
        "num_classes": 4,
        "cluster_sizes": "rgb:4,audio:2",
        "optimizer": "adam",
        "learning_rate": 0.01,
        "batch_size": 32,
        "epochs": 1,
        "train_frames": 6,
        "eval_frames": 0,
        "model_dir": str(tmp_path / "model"),
        "export_dir": str(tmp_path / "export"),
        "strategy": "default",
        "top_k": 3,
    }
    values.update(overrides)
    return ac_config.from_values(**values)


class _FloatInputsTask(Task):
    """Builds the models and datasets of ac_keras before uint8 inputs: every modality dequantized by the
    pipeline and a float input of the model."""

    def __init__(self, config):
        super().__init__(config)
        self.uint8_inputs = ()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("records")
    write_videos(directory, learnable_videos(FEATURES, 512, seed=0), num_shards=2, prefix="train")
    write_videos(directory, learnable_videos(FEATURES, 64, seed=1), num_shards=1, prefix="eval")
    return directory


def test_the_pipeline_hands_over_the_records_bytes(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(3, 8)).astype(np.uint8)
    audio = rng.normal(size=(3, 4)).astype(np.float32)
    missing_rgb = records.sequence_example("norgb", [0], {"audio": audio})
    records.write_records(
        str(tmp_path / "x.tfrecord"),
        [records.sequence_example("v", [1], {"rgb": rgb, "audio": audio}), missing_rgb],
    )
    fill = {"rgb": np.full(8, 0.3, np.float32), "audio": np.zeros(4, np.float32)}
    dataset = make_dataset(
        str(tmp_path / "x.tfrecord"),
        FEATURES,
        batch_size=2,
        training=False,
        missing_fill=fill,
        dequantize=False,
    )
    features = next(iter(dataset))
    assert features["rgb"].dtype == tf.uint8 and features["audio"].dtype == tf.float32
    np.testing.assert_array_equal(features["rgb"][0].numpy(), rgb)
    np.testing.assert_array_equal(features["audio"][0].numpy(), audio)
    # A missing quantized modality gets its fill vector quantized, as the extractor would store it.
    np.testing.assert_array_equal(features["rgb"][1].numpy(), schema.quantize(fill["rgb"])[None])
    dequantized = next(
        iter(make_dataset(str(tmp_path / "x.tfrecord"), FEATURES, batch_size=2, training=False))
    )
    np.testing.assert_array_equal(
        schema.dequantize(features["rgb"][0].numpy()), dequantized["rgb"][0].numpy()
    )


def test_the_model_dequantizes_exactly_as_the_pipeline_did(data_dir, tmp_path):
    task = Task(_config(data_dir))
    model = task.build_model()
    assert uint8_modalities(model) == ("rgb",)
    old = _FloatInputsTask(_config(data_dir)).build_model()
    assert uint8_modalities(old) == ()
    old.set_weights(model.get_weights())
    serialized = tf.constant(
        [
            record.numpy()
            for record in tf.data.TFRecordDataset(str(data_dir / "eval-00000-of-00001.tfrecord")).take(8)
        ]
    )
    as_bytes, _ = parse_serialized(serialized, FEATURES, training=False, num_frames=None, dequantize=False)
    as_floats, _ = parse_serialized(serialized, FEATURES, training=False, num_frames=None)
    inputs = ("rgb", "audio")
    np.testing.assert_array_equal(
        model({name: as_bytes[name] for name in inputs}).numpy(),
        old({name: as_floats[name] for name in inputs}).numpy(),
    )


@pytest.mark.slow
def test_runs_and_exports_made_before_uint8_inputs_still_load_evaluate_and_export(data_dir, tmp_path):
    config = _config(data_dir, model_dir=str(tmp_path / "old"), export_dir=str(tmp_path / "old_export"))
    # A run of the old code: float inputs for every modality, its checkpoint and its best model.
    old_trainer = Trainer(_FloatInputsTask(config), progress=False)
    old_results = old_trainer.train()
    old_best = artifacts.load_best_model(config.runtime.model_dir)
    assert uint8_modalities(old_best) == ()

    # Evaluate (the command's path): the pipeline yields uint8, the predictor dequantizes for the old model.
    task = Task(config)
    predictor = artifacts.load_predictor(config.runtime.model_dir)
    results = evaluation.evaluate(
        task.eval_dataset(), evaluation.predictor_step(predictor), task.make_metrics()
    )
    assert results["top1"] == pytest.approx(old_results["top1"], abs=1e-6)

    # Export of the old model: predict_features keeps float32 inputs; evaluating through it agrees.
    path = export_saved_model(old_best, task, config.runtime.export_dir)
    signature = tf.saved_model.load(path).signatures["predict_features"]
    assert signature.structured_input_signature[1]["rgb"].dtype == tf.float32
    saved = artifacts.load_predictor(saved_model=path)
    exported = evaluation.evaluate(task.eval_dataset(), evaluation.predictor_step(saved), task.make_metrics())
    assert exported["top1"] == pytest.approx(old_results["top1"], abs=1e-6)

    # Resuming the old run's checkpoint with today's model (uint8 input, Dequantize layer) restores it whole.
    resumed = Trainer(Task(config.replace(epochs=3)), progress=False)
    assert resumed.restore()
    for got, want in zip(resumed.model.get_weights(), old_trainer.model.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)
    assert resumed.train()["top1"] > 0.5  # chance is 0.25

    # A new export takes the quantized modality as uint8.
    new_path = export_saved_model(resumed.model, task, str(tmp_path / "new_export"))
    new_signature = tf.saved_model.load(new_path).signatures["predict_features"]
    assert new_signature.structured_input_signature[1]["rgb"].dtype == tf.uint8
