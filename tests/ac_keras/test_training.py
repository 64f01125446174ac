"""End-to-end tests of the training workflow: train, evaluate, predict, export, serve, resume, distribute."""

import csv
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras import artifacts
from ac_keras import config as ac_config
from ac_keras.export import export_saved_model, first_records
from ac_keras.model import uint8_modalities
from ac_keras.task import Task
from ac_keras.testing.isolation import BLOCK_AC_KERAS
from ac_keras.testing.learnable import learnable_videos
from ac_keras.testing.records import write_videos
from ac_keras.trainer import Trainer, TrainingDivergedError

ROOT = pathlib.Path(__file__).resolve().parents[2]
FEATURES = "rgb:8:float,audio:4"
NUM_CLASSES = 4


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    directory = tmp_path_factory.mktemp("records")
    write_videos(directory, learnable_videos(FEATURES, 512, seed=0), num_shards=2, prefix="train")
    write_videos(directory, learnable_videos(FEATURES, 96, seed=1), num_shards=1, prefix="eval")
    return directory


def _config(data_dir, run_dir, **overrides):
    values = {
        "train_data": str(data_dir / "train-*"),
        "eval_data": str(data_dir / "eval-*"),
        "features": FEATURES,
        "num_classes": NUM_CLASSES,
        "cluster_sizes": (("rgb", 4), ("audio", 2)),
        "dropout": 0.1,
        "optimizer": "adam",
        "learning_rate": 0.01,
        "batch_size": 32,
        "epochs": 2,
        "train_frames": 6,
        "eval_frames": 0,
        "model_dir": str(run_dir / "model"),
        "export_dir": str(run_dir / "export"),
        "checkpoint_every": 5,
        "top_k": 3,
        "strategy": "default",
    }
    values.update(overrides)
    return ac_config.validate(ac_config.Config.from_values(**values))


def _cli_flags(config):
    return [line for line in config.to_flags().splitlines() if line]


def _run(module, *args, timeout=300):
    result = subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT
    )
    assert result.returncode == 0, f"{module} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


SERVE_WITHOUT_AC_KERAS = BLOCK_AC_KERAS + textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, records_file = sys.argv[1], sys.argv[2]
    records = [r.numpy() for r in tf.data.TFRecordDataset(records_file)]
    loaded = tf.saved_model.load(path)
    out = loaded.signatures["serving_default"](inputs=tf.constant(records))
    result = {"tf2": {k: v.numpy().tolist() for k, v in out.items() if k != "video_id"},
              "ids": [v.decode() for v in out["video_id"].numpy()]}
    # The TF1 session loader is how TF Serving and `saved_model_cli run` load models.
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta.signature_def["serving_default"]
        fetches = {k: v.name for k, v in signature.outputs.items()}
        feed = {signature.inputs["inputs"].name: records}
        out1 = session.run(fetches, feed_dict=feed)
    result["tf1"] = {k: np.asarray(v).tolist() for k, v in out1.items() if k != "video_id"}
    result["modules"] = sorted(m for m in sys.modules if m.startswith("ac_keras"))
    print(json.dumps(result))
    """
)


@pytest.mark.slow
def test_train_evaluate_predict_export_serve(data_dir, tmp_path):
    config = _config(data_dir, tmp_path)
    output = _run("ac_keras.train", *_cli_flags(config))
    assert "Epoch 2/2 evaluation" in output
    best = json.loads((tmp_path / "model" / "best" / "metrics.json").read_text())
    assert best["metric"] == "top1"
    assert best["top1"] > 0.6, best  # chance is 0.25
    assert (tmp_path / "export" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "export" / "1" / "assets.extra" / "tf_serving_warmup_requests").exists()
    assert list((tmp_path / "model").glob("train/events.out.tfevents*"))

    metrics_path = tmp_path / "metrics.json"
    _run("ac_keras.evaluate", *_cli_flags(config), f"--output_json={metrics_path}")
    metrics = json.loads(metrics_path.read_text())
    assert set(metrics) >= {"top1", "top5", "mean_class_accuracy"}
    assert metrics["top1"] == pytest.approx(best["top1"], abs=1e-6)
    exported = _run(
        "ac_keras.evaluate",
        *_cli_flags(config),
        f"--saved_model={tmp_path / 'export' / '1'}",
        f"--output_json={tmp_path / 'saved.json'}",
    )
    assert json.loads((tmp_path / "saved.json").read_text())["top1"] == pytest.approx(metrics["top1"])
    assert "top1" in exported

    csv_path = tmp_path / "predictions.csv"
    _run("ac_keras.predict", *_cli_flags(config), f"--output_csv={csv_path}")
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["VideoId", "LabelConfidencePairs"]
    assert len(rows) == 1 + 96
    pairs = rows[1][1].split()
    assert len(pairs) == 2 * 3
    scores = [float(score) for score in pairs[1::2]]
    assert scores == sorted(scores, reverse=True)
    # An existing output is not overwritten without --overwrite.
    refused = subprocess.run(
        [sys.executable, "-m", "ac_keras.predict", *_cli_flags(config), f"--output_csv={csv_path}"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert refused.returncode != 0 and "--overwrite" in refused.stderr

    # `ac_keras.export` of the finished run without --export_dir: a new version under <model_dir>/export.
    flags_without_export_dir = [flag for flag in _cli_flags(config) if not flag.startswith("--export_dir=")]
    output = _run("ac_keras.export", *flags_without_export_dir)
    assert f"Exported SavedModel to {tmp_path / 'model' / 'export' / '1'}" in output
    assert (tmp_path / "model" / "export" / "1" / "saved_model.pb").exists()

    # Serve the export in a fresh process that never imports ac_keras, through the TF2 and TF1 loaders.
    records = first_records(config.data.eval_data, 7)
    records_file = tmp_path / "requests.tfrecord"
    with tf.io.TFRecordWriter(str(records_file)) as writer:
        for record in records:
            writer.write(record)
    served = subprocess.run(
        [sys.executable, "-c", SERVE_WITHOUT_AC_KERAS, str(tmp_path / "export" / "1"), str(records_file)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={name: value for name, value in os.environ.items() if name != "PYTHONPATH"},
    )
    assert served.returncode == 0, served.stderr
    result = json.loads(served.stdout.strip().splitlines()[-1])
    assert result["modules"] == []
    model = artifacts.load_best_model(config.runtime.model_dir)
    from ac_keras import data as ac_data

    # The quantized modality (audio) goes to the model as the records' bytes; the model dequantizes it.
    assert uint8_modalities(model) == ("audio",)
    features, _ = ac_data.parse_serialized(
        tf.constant(records), FEATURES, training=False, num_frames=None, dequantize=False
    )
    assert features["audio"].dtype == tf.uint8
    probabilities = model({k: v for k, v in features.items() if k in ("rgb", "audio")}).numpy()
    want_scores = -np.sort(-probabilities, axis=1)[:, :3]
    np.testing.assert_allclose(result["tf2"]["scores"], want_scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result["tf1"]["scores"], want_scores, rtol=1e-5, atol=1e-6)
    assert result["tf2"]["classes"] == np.argsort(-probabilities, axis=1, kind="stable")[:, :3].tolist()
    assert result["ids"] == [f"vid1-{index:05d}" for index in range(7)]


def test_export_never_overwrites_a_version(data_dir, tmp_path):
    task = Task(_config(data_dir, tmp_path))
    export_dir = task.config.runtime.export_dir
    model = task.build_model()
    first = export_saved_model(model, task, export_dir)
    before = {p: p.read_bytes() for p in pathlib.Path(first).rglob("*") if p.is_file()}
    second = export_saved_model(model, task, export_dir)
    assert pathlib.Path(first).name == "1" and pathlib.Path(second).name == "2"
    assert {p: p.read_bytes() for p in pathlib.Path(first).rglob("*") if p.is_file()} == before
    assert sorted(os.listdir(export_dir)) == ["1", "2"]


def test_export_stores_each_weight_once(data_dir, tmp_path):
    # A bigger classifier, so that the weights dominate the variables' size (2.4 MB of weights).
    config = _config(data_dir, tmp_path, num_classes=500, cluster_sizes=(("rgb", 100), ("audio", 50)))
    task = Task(config)
    model = task.build_model()
    path = pathlib.Path(export_saved_model(model, task, task.config.runtime.export_dir))
    weight_bytes = sum(np.asarray(weight).nbytes for weight in model.weights)
    variable_bytes = sum(file.stat().st_size for file in (path / "variables").iterdir())
    assert weight_bytes <= variable_bytes < 1.1 * weight_bytes, (weight_bytes, variable_bytes)


@pytest.mark.slow
def test_predict_features_signature_matches_model(data_dir, tmp_path):
    task = Task(_config(data_dir, tmp_path))
    model = task.build_model()
    path = export_saved_model(model, task, task.config.runtime.export_dir)
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(0)
    rgb = rng.normal(size=(3, 5, 8)).astype("float32")
    audio = rng.integers(0, 256, size=(3, 4, 4)).astype("uint8")  # the quantized modality: its bytes
    rgb_frames, audio_frames = np.array([5, 2, 1], "int32"), np.array([4, 1, 0], "int32")
    out = loaded.signatures["predict_features"](
        rgb=rgb, rgb_num_frames=rgb_frames, audio=audio, audio_num_frames=audio_frames
    )["probabilities"].numpy()
    ragged = {
        "rgb": tf.RaggedTensor.from_tensor(rgb, lengths=rgb_frames),
        "audio": tf.RaggedTensor.from_tensor(audio, lengths=audio_frames),
    }
    np.testing.assert_allclose(out, model(ragged).numpy(), rtol=1e-5, atol=1e-7)

    # `saved_model_cli run` loads the model through the TF1 session loader, as TF Serving does.
    arrays = {
        "rgb": rgb,
        "rgb_num_frames": rgb_frames,
        "audio": audio,
        "audio_num_frames": audio_frames,
    }
    for name, array in arrays.items():
        np.save(tmp_path / f"{name}.npy", array)
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run(
        [
            str(cli),
            "run",
            f"--dir={path}",
            "--tag_set=serve",
            "--signature_def=predict_features",
            "--inputs=" + ";".join(f"{name}={tmp_path / name}.npy" for name in arrays),
            f"--outdir={tmp_path / 'cli'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "cli" / "probabilities.npy"), out, rtol=1e-6)


def _losses(config, strategy):
    trainer = Trainer(Task(config), strategy=strategy, progress=False)
    trainer.train()
    weights = {weight.path: np.asarray(weight) for weight in trainer.model.weights}
    return np.array([loss for _, loss in trainer.loss_history]), weights


# No dropout and all frames, so every strategy sees exactly the same computation.
SAME_COMPUTATION = {"dropout": 0.0, "train_frames": 0, "epochs": 1, "eval_data": None}


def _assert_same_run(got_losses, got_weights, want_losses, want_weights):
    """Same losses and weights (dicts weight path -> array). The fc1 attention biases are no-ops under the
    softmax: their gradients are float noise (~1e-9) that Adam rescales to arbitrary steps, so they are only
    checked to be finite."""
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-4, atol=1e-5)
    assert sorted(got_weights) == sorted(want_weights)
    for path, want in want_weights.items():
        if path.endswith("attention/bias"):
            assert np.all(np.isfinite(got_weights[path])), path
            continue
        np.testing.assert_allclose(got_weights[path], want, rtol=1e-3, atol=1e-4, err_msg=path)


@pytest.mark.slow
def test_mirrored_strategy_matches_default(data_dir, tmp_path):
    default_losses, default_weights = _losses(
        _config(data_dir, tmp_path / "default", **SAME_COMPUTATION), tf.distribute.get_strategy()
    )
    devices = [device.name for device in tf.config.list_logical_devices("CPU")][:2]
    # Reduction through one device: collective all-reduce instance keys clash between the several
    # MirroredStrategy objects one pytest process creates.
    mirrored = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    assert mirrored.num_replicas_in_sync == 2
    mirrored_losses, mirrored_weights = _losses(
        _config(data_dir, tmp_path / "mirrored", **SAME_COMPUTATION), mirrored
    )
    assert len(default_losses) == len(mirrored_losses) == 16
    _assert_same_run(mirrored_losses, mirrored_weights, default_losses, default_weights)


class _DivergingTask(Task):
    """A task whose loss turns NaN from step 8 on, as a diverging run's would (`step` set by the test: the
    optimizer's iteration count, 7 when step 8 runs)."""

    step = None

    def per_example_loss(self, labels, logits):
        loss = super().per_example_loss(labels, logits)
        return tf.where(self.step >= 7, tf.fill(tf.shape(loss), float("nan")), loss)


@pytest.mark.slow
def test_nan_loss_stops_with_clear_message_and_keeps_last_checkpoint(data_dir, tmp_path):
    config = _config(data_dir, tmp_path, epochs=3)
    task = _DivergingTask(config)
    trainer = Trainer(task, progress=False)
    task.step = trainer.optimizer.iterations
    with pytest.raises(TrainingDivergedError, match=r"loss became nan at step 8 \(epoch 1\)") as error:
        trainer.train()
    assert "ckpt-5" in str(error.value)
    latest = tf.train.latest_checkpoint(os.path.join(config.runtime.model_dir, "checkpoints"))
    assert latest.endswith("ckpt-5")
    reader = tf.train.load_checkpoint(latest)
    for name in reader.get_variable_to_shape_map():
        value = np.asarray(reader.get_tensor(name))
        if np.issubdtype(value.dtype, np.floating):
            assert not np.any(np.isnan(value)), name


@pytest.mark.slow
def test_each_checkpoint_is_written_once_and_the_epoch_end_holds_the_best_value(data_dir, tmp_path):
    # 16 steps per epoch and a checkpoint every 8: the step checkpoint, the epoch's end and an improved best
    # model all fall on step 16 and 32; each step is written once.
    config = _config(data_dir, tmp_path, epochs=2, checkpoint_every=8, export=False)
    trainer = Trainer(Task(config), progress=False)
    written = []
    save = trainer.manager.save

    def counting_save(*args, **kwargs):
        written.append(int(trainer.step.numpy()))
        return save(*args, **kwargs)

    trainer.manager.save = counting_save
    trainer.train()
    assert written == [8, 16, 24, 32]
    assert [epoch for epoch, _ in trainer.eval_history] == [1, 2]
    best = max(results["top1"] for _, results in trainer.eval_history)
    latest = tf.train.load_checkpoint(trainer.manager.latest_checkpoint)
    assert latest.get_tensor("best_value/.ATTRIBUTES/VARIABLE_VALUE") == pytest.approx(best)
    assert latest.get_tensor("epoch/.ATTRIBUTES/VARIABLE_VALUE") == 2
    assert [step for step, _ in trainer.loss_history] == list(range(1, 33))


class _RegularizedTask(Task):
    """A task whose model has an L2 penalty on the attention kernels (`build_model(kernel_regularizer=)`)."""

    l2 = 0.5

    def build_model(self, *, mixed_precision=None):
        from ac_keras.model import build_model

        config = self.config
        return build_model(
            config.data.feature_specs,
            dict(config.model.cluster_sizes),
            config.data.num_classes,
            dropout=config.model.dropout,
            kernel_regularizer=keras.regularizers.L2(self.l2),
            uint8_inputs=self.uint8_inputs,
        )


@pytest.mark.slow
def test_kernel_regularizer_penalties_are_in_the_training_loss_and_gradient(data_dir, tmp_path):
    config = _config(data_dir, tmp_path, epochs=1, eval_data=None, dropout=0.0, steps_per_epoch=20)
    batch = next(iter(Task(config).train_dataset(0)))
    devices = [device.name for device in tf.config.list_logical_devices("CPU")][:2]
    mirrored = tf.distribute.MirroredStrategy(devices, cross_device_ops=tf.distribute.ReductionToOneDevice())
    for strategy in (tf.distribute.get_strategy(), mirrored):
        plain = Trainer(Task(config), strategy=strategy, progress=False, checkpoints=False)
        regularized = Trainer(_RegularizedTask(config), strategy=strategy, progress=False, checkpoints=False)
        kernels = [w for w in regularized.model.trainable_weights if w.path.endswith("attention/kernel")]
        assert len(kernels) == 2
        penalty = sum(0.5 * float(tf.reduce_sum(tf.square(kernel))) for kernel in kernels)
        plain.model.set_weights(regularized.model.get_weights())
        distributed = strategy.experimental_distribute_values_from_function(lambda _: batch)
        # The first step's loss (at the same weights): the data loss plus the penalty, once over replicas.
        plain_loss = float(plain.make_train_step()(distributed)[0])
        regularized_loss = float(regularized.make_train_step()(distributed)[0])
        assert regularized_loss == pytest.approx(plain_loss + penalty, rel=1e-5)
    # In the gradient: Adam's first update moves each weight by the learning rate against its gradient's
    # sign. A penalty that dominates the data gradient points every attention kernel weight at zero.
    strong = _RegularizedTask(config)
    strong.l2 = 100.0
    trainer = Trainer(strong, progress=False, checkpoints=False)
    plain = Trainer(Task(config), progress=False, checkpoints=False)
    plain.model.set_weights(trainer.model.get_weights())
    before = [kernel.numpy() for kernel in _attention_kernels(trainer)]
    trainer.make_train_step()(batch)
    plain.make_train_step()(batch)
    learning_rate = config.training.learning_rate
    moved = zip(before, _attention_kernels(trainer), _attention_kernels(plain), strict=True)
    for start, after, unpenalized in moved:
        np.testing.assert_allclose(after.numpy(), start - learning_rate * np.sign(start), atol=1e-5)
        toward_zero = np.mean(np.abs(unpenalized.numpy()) < np.abs(start))
        assert 0.1 < toward_zero < 0.9, "without the penalty the data gradient alone moves them"


def _attention_kernels(trainer):
    return [w for w in trainer.model.trainable_weights if w.path.endswith("attention/kernel")]


def _free_ports(count):
    """Ports free right now. Another process may take one before the workers bind it, so callers retry
    the whole start on a bind failure (`_start_workers`); TensorFlow's gRPC server refuses SO_REUSEPORT, so
    the ports cannot be held while it binds."""
    sockets = [socket.socket() for _ in range(count)]
    for sock in sockets:
        sock.bind(("localhost", 0))
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


MULTI_WORKER_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from ac_keras import config as ac_config
    from ac_keras.task import Task
    from ac_keras.trainer import Trainer
    config = ac_config.validate(ac_config.Config.from_values(**json.loads(sys.argv[2])))
    trainer = Trainer(Task(config), progress=False)
    results = trainer.train()
    np.savez(sys.argv[3], **{w.path.replace("/", "|"): np.asarray(w) for w in trainer.model.weights})
    losses = [loss for _, loss in trainer.loss_history]
    print(json.dumps({"step": int(trainer.step.numpy()), "results": results, "losses": losses}))
    """
)
_BIND_FAILURES = ("address already in use", "failed to add port", "could not start grpc server")


def _start_workers(payload, tmp_path, attempts=3):
    """Runs two localhost workers to the end; a start lost to a port taken meanwhile is retried."""
    for _ in range(attempts):
        ports = _free_ports(2)
        cluster = {"worker": [f"localhost:{port}" for port in ports]}
        processes = []
        for index in range(2):
            env = {
                **os.environ,
                "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
            }
            command = [sys.executable, "-c", MULTI_WORKER_SCRIPT, str(ROOT), payload]
            processes.append(
                subprocess.Popen(
                    [*command, str(tmp_path / f"w{index}.npz")],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )
        outputs = [process.communicate(timeout=300) for process in processes]
        failed = [
            stderr for process, (_, stderr) in zip(processes, outputs, strict=True) if process.returncode
        ]
        if failed and any(marker in err.lower() for err in failed for marker in _BIND_FAILURES):
            continue
        assert not failed, failed[0][-3000:]
        return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]
    raise AssertionError(f"the workers could not bind free ports in {attempts} attempts")


@pytest.mark.slow
def test_multi_worker_training_matches_the_default_strategy(data_dir, tmp_path):
    config = _config(data_dir, tmp_path, strategy="multi_worker", **SAME_COMPUTATION)
    payload = json.dumps(json.loads(json.dumps(config.flat())))
    reports = _start_workers(payload, tmp_path)
    assert reports[0]["step"] == reports[1]["step"] == 16  # 512 videos / global batch 32
    assert reports[0]["losses"] == reports[1]["losses"]
    first, second = np.load(tmp_path / "w0.npz"), np.load(tmp_path / "w1.npz")
    for key in first.files:
        np.testing.assert_array_equal(first[key], second[key])
    # Only the chief's checkpoints are kept; the other worker's scratch directory is gone.
    model_dir = config.runtime.model_dir
    assert tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints")).endswith("-16")
    assert not [name for name in os.listdir(model_dir) if name.startswith(".worker_scratch")]
    # The same data on one worker with the default strategy: the same losses and weights.
    single = _config(data_dir, tmp_path / "single", strategy="default", **SAME_COMPUTATION)
    default_losses, default_weights = _losses(single, tf.distribute.get_strategy())
    _assert_same_run(
        np.array(reports[0]["losses"]),
        {key.replace("|", "/"): first[key] for key in first.files},
        default_losses,
        default_weights,
    )


def _checkpoint_steps(model_dir):
    state = tf.train.get_checkpoint_state(os.path.join(model_dir, "checkpoints"))
    if state is None:
        return []
    return [int(path.rsplit("-", 1)[1]) for path in state.all_model_checkpoint_paths]


def _checkpoint_values(path):
    reader = tf.train.load_checkpoint(path)
    return {name: np.asarray(reader.get_tensor(name)) for name in reader.get_variable_to_shape_map()}


def _assert_same_checkpoint(got_path, want_path):
    got, want = _checkpoint_values(got_path), _checkpoint_values(want_path)
    assert sorted(got) == sorted(want)
    for name, value in want.items():
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(got[name], value, rtol=1e-5, atol=1e-6, err_msg=name)
        else:
            np.testing.assert_array_equal(got[name], value, err_msg=name)


@pytest.mark.slow
def test_resume_after_sigkill_mid_epoch_equals_the_uninterrupted_run(data_dir, tmp_path):
    # 300 steps per epoch, a checkpoint every 20: a kill once a checkpoint past step 300 exists is mid-epoch.
    options = {
        "steps_per_epoch": 300,
        "epochs": 2,
        "checkpoint_every": 20,
        "keep_checkpoints": 100,
        "eval_data": None,
        "export": False,
    }
    whole = _config(data_dir, tmp_path / "whole", **options)
    whole_dir = whole.runtime.model_dir
    _run("ac_keras.train", *_cli_flags(whole))

    config = _config(data_dir, tmp_path / "killed", **options)
    model_dir = config.runtime.model_dir
    command = [sys.executable, "-m", "ac_keras.train", *_cli_flags(config)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline:
        steps = _checkpoint_steps(model_dir)
        if steps and steps[-1] > 300:
            break
        assert process.poll() is None, "training ended before it could be killed"
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = _checkpoint_steps(model_dir)
    assert before and 300 < before[-1] < 600 and before[-1] % 300, before
    killed_at = before[-1]
    # What the kill left (weights, optimizer slots and iterations, step counters) equals the uninterrupted
    # run's checkpoint at the same step.
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    _assert_same_checkpoint(latest, os.path.join(whole_dir, "checkpoints", f"ckpt-{killed_at}"))

    resumed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming at step {killed_at % 300}" in resumed.stdout
    after = _checkpoint_steps(model_dir)
    assert after[-1] == 600
    assert after[: len(before)] == before, "checkpoints written before the kill must survive"
    final = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    values = _checkpoint_values(final)
    assert values["step/.ATTRIBUTES/VARIABLE_VALUE"] == 600
    assert values["epoch/.ATTRIBUTES/VARIABLE_VALUE"] == 2
    assert values["step_in_epoch/.ATTRIBUTES/VARIABLE_VALUE"] == 0
    _assert_same_checkpoint(final, os.path.join(whole_dir, "checkpoints", "ckpt-600"))


def test_missing_data_pattern_is_named(tmp_path):
    config = _config(pathlib.Path("/nonexistent"), tmp_path, eval_data=None)
    with pytest.raises(FileNotFoundError, match="/nonexistent/train-"):
        Trainer(Task(config), progress=False).train()


@pytest.mark.slow
def test_checkpoint_restores_optimizer_state(data_dir, tmp_path):
    config = _config(data_dir, tmp_path, epochs=1, eval_data=None)
    trainer = Trainer(Task(config), progress=False)
    trainer.train()
    saved = [v.numpy().copy() for v in trainer.optimizer.variables]
    keras.backend.clear_session()
    again = Trainer(Task(config), progress=False)
    assert again.restore()
    assert int(again.step.numpy()) == 16
    restored = [v.numpy() for v in again.optimizer.variables]
    assert len(saved) == len(restored)
    for want, got in zip(saved, restored, strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_training_learns(data_dir, tmp_path, policy):
    before = keras.mixed_precision.global_policy().name
    config = _config(data_dir, tmp_path, mixed_precision=policy, epochs=4, eval_data=None)
    trainer = Trainer(Task(config), progress=False)
    assert keras.mixed_precision.global_policy().name == before, "the process-wide policy is left alone"
    assert trainer.model.get_layer("rgb_cluster").compute_dtype == policy.split("_")[1]
    trainer.train()
    losses = np.array([loss for _, loss in trainer.loss_history])
    assert np.all(np.isfinite(losses))
    assert losses[-4:].mean() < 0.8 * losses[:4].mean(), losses
    if policy == "mixed_float16":
        assert isinstance(trainer.optimizer, keras.optimizers.LossScaleOptimizer)
    # The trained mixed-precision model's probabilities are close to the same weights run in float32.
    float32 = Task(config).build_model(mixed_precision="none")
    float32.set_weights([np.asarray(weight, "float32") for weight in trainer.model.get_weights()])
    batch = next(iter(Task(config).eval_dataset(str(data_dir / "eval-*"))))[0]
    np.testing.assert_allclose(trainer.model(batch), float32(batch), atol=0.03)
