"""The LiteRT export (`python -m ac_keras.export --format=litert`): builtin operators only, the SavedModel's
probabilities on records (run in a process without TensorFlow), the description JSON, quantization, errors."""

import copy
import json
import pathlib
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from ai_edge_litert.interpreter import Interpreter

from ac_keras import artifacts, export, litert, litert_client, model, schema
from ac_keras import config as ac_config
from ac_keras import data as ac_data
from ac_keras import flags as ac_flags
from ac_keras.errors import UsageError
from ac_keras.task import Task
from ac_keras.testing.isolation import BLOCK_AC_KERAS
from ac_keras.testing.records import sequence_example, write_records

ROOT = pathlib.Path(__file__).resolve().parents[2]
FEATURES = "rgb:6:float,audio:4"  # a float modality and a quantized one
NUM_CLASSES = 5
EVAL_FRAMES = 6
# (rgb frames, audio frames) per video: shorter than T (padding masked), exactly T, longer than T (sampled
# at equal intervals), and without frames of one modality (filled with the training mean).
FRAME_COUNTS = [(3, 2), (6, 6), (14, 9), (1, 0), (0, 5), (9, 1), (25, 0), (2, 17)]


def _video(rng, index, rgb_frames, audio_frames):
    frames = {}
    if rgb_frames:
        frames["rgb"] = rng.normal(size=(rgb_frames, 6)).astype(np.float32)
    if audio_frames:
        frames["audio"] = rng.integers(0, 256, size=(audio_frames, 4)).astype(np.uint8)
    return sequence_example(f"v{index}", [index % NUM_CLASSES], frames)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A model_dir as training leaves it (config.json, best model, class names, statistics), with weights
    drawn large enough that the probabilities depend on every input."""
    root = tmp_path_factory.mktemp("litert")
    rng = np.random.default_rng(0)
    records = root / "train-00000.tfrecord"
    videos = [_video(rng, index, *counts) for index, counts in enumerate(FRAME_COUNTS * 3)]
    write_records(str(records), videos)
    stats_file = root / "stats.json"
    ac_data.stats.write_stats(ac_data.stats.compute_stats(str(records), FEATURES), str(stats_file))
    names = root / "names.csv"
    names.write_text("".join(f"{index},class {index}\n" for index in range(NUM_CLASSES)))
    config = ac_config.validate(
        ac_config.Config.from_values(
            train_data=str(records),
            features=FEATURES,
            num_classes=NUM_CLASSES,
            cluster_sizes=(("rgb", 3), ("audio", 2)),
            eval_frames=EVAL_FRAMES,
            stats=str(stats_file),
            center_features=True,
            class_names=str(names),
            top_k=NUM_CLASSES,
            model_dir=str(root / "model"),
            strategy="default",
        )
    )
    task = Task(config)
    classifier = task.build_model()
    weights_rng = np.random.default_rng(1)
    for weight in classifier.trainable_weights:
        weight.assign(weights_rng.normal(scale=1.5, size=weight.shape).astype(np.float32))
    artifacts.write_config(config.runtime.model_dir, config)
    artifacts.write_best_model(config.runtime.model_dir, classifier, {"step": 0})
    artifacts.write_class_names(config.runtime.model_dir, task.class_names)
    return {"root": root, "config": config, "task": task, "model": classifier, "records": records}


def _parse(*args):
    flag_values = copy.deepcopy(flags.FLAGS)
    flag_values.unparse_flags()
    flag_values(["prog", *args])
    return flag_values


def _export_command(run, *args):
    """`python -m ac_keras.export` in this process, with the run's settings and `args`."""
    flagfile = run["root"] / "run.flags"
    flagfile.write_text(run["config"].to_flags())
    with flagsaver.flagsaver():
        flags.FLAGS.unparse_flags()
        flags.FLAGS(["ac_keras.export", f"--flagfile={flagfile}", *args])
        export.main(["ac_keras.export"])


def _raw_frames(records):
    """Every frame of every record (no selection, no fill), as the client would read them."""
    serialized = tf.constant([record.numpy() for record in tf.data.TFRecordDataset(str(records))])
    parsed = ac_data.parse_batch(
        serialized, FEATURES, training=False, num_frames=None, fill_missing=False, dequantize=False
    )
    return [
        {name: parsed.features[name][index].numpy() for name in ("rgb", "audio")}
        for index in range(int(serialized.shape[0]))
    ]


CLIENT_WITHOUT_TENSORFLOW = BLOCK_AC_KERAS + textwrap.dedent(
    """
    import importlib.util, json, sys
    import numpy as np
    client_file, model_file, frames_file = sys.argv[1:]
    # The client file on its own, as copied to a device: not as a module of ac_keras (which is blocked).
    spec = importlib.util.spec_from_file_location("litert_client", client_file)
    client = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(client)
    classifier = client.LiteRTClassifier(model_file)
    arrays = np.load(frames_file)
    count = len({key.split("/")[0] for key in arrays.files})
    videos = [{name: arrays[f"{index}/{name}"] for name in ("rgb", "audio")} for index in range(count)]
    print(json.dumps({
        "probabilities": [classifier(frames).tolist() for frames in videos],
        "top": classifier.top_k(videos[0], k=2),
        "tensorflow": sorted(name for name in sys.modules if name.split(".")[0] == "tensorflow"),
    }))
    """
)


@pytest.mark.slow  # starts a process
def test_litert_model_gives_the_saved_models_probabilities_without_tensorflow(run, tmp_path):
    litert_file = tmp_path / "model.tflite"
    _export_command(run, "--format=litert", f"--litert_file={litert_file}")
    saved_model = export.export_saved_model(run["model"], run["task"], str(tmp_path / "export"))
    records = [record.numpy() for record in tf.data.TFRecordDataset(str(run["records"]))]
    served = tf.saved_model.load(saved_model).signatures["serving_default"](inputs=tf.constant(records))
    expected = np.zeros([len(records), NUM_CLASSES], np.float32)
    np.put_along_axis(expected, served["classes"].numpy(), served["scores"].numpy(), axis=1)

    videos = _raw_frames(run["records"])
    assert max(len(video["rgb"]) for video in videos) > EVAL_FRAMES  # sampled as evaluation samples
    assert min(len(video["audio"]) for video in videos) == 0  # filled as the SavedModel fills
    arrays = {
        f"{index}/{name}": frames for index, video in enumerate(videos) for name, frames in video.items()
    }
    np.savez(tmp_path / "frames.npz", **arrays)
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            CLIENT_WITHOUT_TENSORFLOW,
            str(ROOT / "ac_keras" / "litert_client.py"),
            str(litert_file),
            str(tmp_path / "frames.npz"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout.splitlines()[-1])
    assert output["tensorflow"] == []
    probabilities = np.asarray(output["probabilities"])
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-4)
    assert np.ptp(expected[:, 0]) > 0.1  # the probabilities depend on the video
    best = int(np.argmax(expected[0]))
    assert output["top"][0][0] == best and output["top"][0][2] == f"class {best}"


def _assert_matches_keras(task, classifier, max_frames=8):
    flatbuffer = litert.convert(classifier, task, max_frames=max_frames)
    runner = Interpreter(model_content=flatbuffer).get_signature_runner(litert.SIGNATURE)
    details = runner.get_input_details()
    assert (details["audio"]["dtype"], details["rgb"]["dtype"]) == (np.uint8, np.float32)
    assert list(details["rgb"]["shape"]) == [1, 8, 6] and list(details["rgb_mask"]["shape"]) == [1, 8]
    rng = np.random.default_rng(2)
    for rgb_length, audio_length in [(8, 8), (5, 3), (0, 4), (2, 0), (0, 0)]:
        rgb = rng.normal(size=(1, 8, 6)).astype(np.float32)
        audio = rng.integers(0, 256, size=(1, 8, 4)).astype(np.uint8)
        inputs = {
            "rgb": rgb,
            "audio": audio,
            "rgb_mask": (np.arange(8) < rgb_length).astype(np.int32)[None],
            "audio_mask": (np.arange(8) < audio_length).astype(np.int32)[None],
        }
        ragged = {
            "rgb": tf.RaggedTensor.from_tensor(rgb, lengths=[rgb_length]),
            "audio": tf.RaggedTensor.from_tensor(audio, lengths=[audio_length]),
        }
        expected = classifier(ragged, training=False).numpy()
        got = runner(**inputs)[litert.OUTPUT]
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
        inputs["rgb"][0, rgb_length:] = 1e30  # padding is never read
        np.testing.assert_allclose(runner(**inputs)[litert.OUTPUT], got, rtol=0, atol=1e-6)


def test_dense_masked_inputs_match_the_keras_model(run):
    """Any mask, a modality with no real frame included (it pools to zero, as the Keras model does for a
    video without frames), uint8 and float inputs; padded positions may hold anything."""
    _assert_matches_keras(run["task"], run["model"])


@pytest.mark.parametrize(
    "settings",
    [
        {"weighting": "fc2"},
        {"weighting": "average", "shift": False},
        {"aggregator": "average"},
        {"aggregator": "ts_lstm", "lstm_units": (("rgb", 4), ("audio", 3))},
    ],
    ids=["fc2", "average_weighting_no_shift", "average_aggregator", "ts_lstm"],
)
def test_other_models_that_convert_match_the_keras_model(run, settings):
    task = Task(run["config"].replace(**settings))
    keras.utils.set_random_seed(3)
    classifier = task.build_model()
    rng = np.random.default_rng(4)
    for weight in classifier.trainable_weights:
        weight.assign(rng.normal(scale=1.0, size=weight.shape).astype(np.float32))
    _assert_matches_keras(task, classifier)


def test_builtin_operators_only_and_no_variables(run):
    flatbuffer = litert.convert(run["model"], run["task"], max_frames=4)
    used = litert.operators(flatbuffer)
    # Unfrozen Keras variables became VAR_HANDLE / READ_VARIABLE, read uninitialized (issue 28's NaN).
    assert not {"VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE", "CALL_ONCE"} & set(used), used
    assert {"BATCH_MATMUL", "EXP", "SOFTMAX"} <= set(used)


@pytest.mark.parametrize(
    "quantize, stored",
    [("float16", np.float16), pytest.param("int8", np.int8, marks=pytest.mark.slow)],  # int8 calibrates
)
def test_quantized_models_store_quantized_weights_and_keep_the_interface(run, quantize, stored):
    task, classifier = run["task"], run["model"]
    float_model = litert.convert(classifier, task, max_frames=EVAL_FRAMES)
    quantized = litert.convert(classifier, task, max_frames=EVAL_FRAMES, quantize=quantize)
    assert "CUSTOM" not in litert.operators(quantized)
    interpreter = Interpreter(model_content=quantized)
    assert stored in {detail["dtype"] for detail in interpreter.get_tensor_details()}
    runner = interpreter.get_signature_runner(litert.SIGNATURE)
    reference = Interpreter(model_content=float_model).get_signature_runner(litert.SIGNATURE)
    assert runner.get_input_details()["audio"]["dtype"] == np.uint8  # the interface is unchanged
    samples = litert.calibration_inputs(task, EVAL_FRAMES, num_videos=8)
    got = np.concatenate([runner(**sample)[litert.OUTPUT] for sample in samples])
    expected = np.concatenate([reference(**sample)[litert.OUTPUT] for sample in samples])
    assert np.isfinite(got).all()
    if quantize == "float16":
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-3)
    else:
        # Activations are int8 too, the softmax's output included: probabilities in steps of 1/256.
        np.testing.assert_allclose(got.sum(axis=1), 1, atol=0.02)
        np.testing.assert_allclose(got * 256, np.round(got * 256), atol=1e-3)
        # A coarse model of the float one (docs/benchmarks.md measures its top-1 on Flash-MNIST).
        assert np.mean(np.argmax(got, axis=1) == np.argmax(expected, axis=1)) >= 0.75


def test_description_and_class_names_beside_the_model(run, tmp_path):
    litert_file = tmp_path / "sub" / "model.tflite"
    _export_command(run, "--format=litert", f"--litert_file={litert_file}", "--max_frames=4")
    description = litert_client.load_description(litert_client.description_path(litert_file))
    task = run["task"]
    assert description["max_frames"] == 4 and description["eval_frames"] == EVAL_FRAMES
    assert description["class_names"] == [f"class {index}" for index in range(NUM_CLASSES)]
    assert description["output"] == {
        "name": "probabilities",
        "shape": [1, NUM_CLASSES],
        "dtype": "float32",
        "activation": "softmax",
    }
    rgb, audio = description["inputs"]
    assert (rgb["name"], rgb["dtype"], rgb["dim"], rgb["mask"]) == ("rgb", "float32", 6, "rgb_mask")
    assert (audio["name"], audio["dtype"], audio["dim"]) == ("audio", "uint8", 4)
    fill = task.stats.missing_fill
    np.testing.assert_allclose(rgb["fill"], fill["rgb"], rtol=1e-6)
    # The fill of a quantized modality is quantized, as the reader quantizes it for a uint8 model.
    assert audio["fill"] == schema.quantize(fill["audio"]).tolist()
    interpreter = Interpreter(model_path=str(litert_file))
    assert list(interpreter.get_signature_runner().get_input_details()["rgb"]["shape"]) == [1, 4, 6]


def test_client_frame_selection_is_evaluations(run):
    lengths = np.arange(0, 40)
    for max_frames in (1, 3, 6, 25):
        splits = tf.constant(np.concatenate([[0], np.cumsum(lengths)]), tf.int64)
        indices, new_splits = ac_data.select_frame_indices(splits, training=False, num_frames=max_frames)
        indices, new_splits = indices.numpy(), new_splits.numpy()
        for row, length in enumerate(lengths):
            chosen = indices[new_splits[row] : new_splits[row + 1]] - splits.numpy()[row]
            np.testing.assert_array_equal(litert_client.select_frames(int(length), max_frames), chosen)
    assert litert_client.MASK_SUFFIX == model.MASK_SUFFIX


def test_client_prepares_inputs_and_refuses_bad_frames(run, tmp_path):
    task = run["task"]
    description = litert.describe(task, max_frames=3, quantize="none", model_file="m.tflite")
    rgb = np.arange(7 * 6, dtype=np.float32).reshape(7, 6)
    inputs = litert_client.prepare_inputs(description, {"rgb": rgb})
    np.testing.assert_array_equal(inputs["rgb"][0], rgb[[1, 3, 5]])
    np.testing.assert_array_equal(inputs["audio"][0, 0], description["inputs"][1]["fill"])
    np.testing.assert_array_equal(inputs["audio_mask"], [[1, 0, 0]])
    assert inputs["audio"].dtype == np.uint8 and inputs["rgb_mask"].dtype == np.int32
    with pytest.raises(ValueError, match="modality 'audio' is quantized"):
        litert_client.prepare_inputs(description, {"audio": np.zeros([2, 4], np.float32)})
    with pytest.raises(ValueError, match=r"modality 'rgb': frames must have shape \(num_frames, 6\)"):
        litert_client.prepare_inputs(description, {"rgb": np.zeros([2, 5], np.float32)})
    with pytest.raises(ValueError, match=r"modalities \['flow'\]"):
        litert_client.prepare_inputs(description, {"flow": np.zeros([2, 5], np.float32)})
    (tmp_path / "other.json").write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="is not an ac_keras LiteRT description"):
        litert_client.load_description(tmp_path / "other.json")


def test_user_errors_name_the_flag(run, tmp_path):
    with pytest.raises(flags.IllegalFlagValueError, match="quantize"):
        _parse("--quantize=int4")
    with pytest.raises(flags.IllegalFlagValueError, match="max_frames"):
        _parse("--max_frames=0")
    options = ac_flags.options_from_flags(_parse("--format=litert"))
    with pytest.raises(UsageError, match="--format=litert needs --litert_file"):
        export.check_litert_options(options)
    options = ac_flags.options_from_flags(_parse("--quantize=int8"))
    with pytest.raises(UsageError, match="--quantize: only for --format=litert"):
        export.check_litert_options(options)
    with pytest.raises(UsageError, match="--max_frames must be a positive"):
        litert.convert(run["model"], run["task"], max_frames=0)
    with pytest.raises(UsageError, match="--quantize must be one of none, float16, int8"):
        litert.convert(run["model"], run["task"], max_frames=2, quantize="int4")

    existing = tmp_path / "model.tflite"
    existing.write_bytes(b"mine")
    with pytest.raises(UsageError, match=f"{existing} exists; pass --overwrite"):
        _export_command(run, "--format=litert", f"--litert_file={existing}")
    with pytest.raises(UsageError, match=f"{existing} exists; pass --overwrite"):  # the library refuses too
        litert.export_litert(run["model"], run["task"], str(existing))
    assert existing.read_bytes() == b"mine"
    description = tmp_path / "other.tflite.json"
    description.write_text("mine")
    with pytest.raises(UsageError, match=f"{description} exists; pass --overwrite"):
        _export_command(run, "--format=litert", f"--litert_file={tmp_path / 'other.tflite'}")
    assert description.read_text() == "mine" and not (tmp_path / "other.tflite").exists()
    _export_command(run, "--format=litert", f"--litert_file={existing}", "--overwrite")
    assert litert.operators(existing.read_bytes())


def test_default_frames(run, tmp_path):
    config = run["config"]
    assert litert.default_max_frames(config)[0] == EVAL_FRAMES
    # A run that evaluates every frame: the longest training video of its statistics.
    every_frame = config.replace(eval_frames=0)
    assert litert.default_max_frames(every_frame) == (
        25,
        f"the longest training video in {config.data.stats} (--eval_frames=0)",
    )
    with pytest.raises(UsageError, match="--max_frames: the run evaluates every frame"):
        litert.default_max_frames(every_frame.replace(stats=None))


def test_an_aggregator_without_builtin_operators_is_refused(run):
    config = run["config"].replace(aggregator="flatten", flatten_frames=4, center_features=False)
    task = Task(config)
    keras.utils.set_random_seed(0)
    with pytest.raises(
        UsageError, match="aggregator=flatten.*LiteRT's builtin set lacks: RaggedTensorToTensor"
    ):
        litert.convert(task.build_model(), task, max_frames=4)
