"""`--aggregator`: the Table 4 comparison models through config, builder, training step, export, serving."""

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

from ac_keras import config as ac_config
from ac_keras import data as ac_data
from ac_keras import flags as ac_flags
from ac_keras import layers as ac_layers
from ac_keras.export import export_saved_model
from ac_keras.model import build_model
from ac_keras.task import Task
from ac_keras.testing.isolation import BLOCK_AC_KERAS
from ac_keras.testing.records import sequence_example
from tests.ac_keras.layers.layer_test_utils import ragged_frames

ROOT = pathlib.Path(__file__).resolve().parents[2]
FEATURES = "rgb:6:float,audio:3:float"
DIMS = {"rgb": 6, "audio": 3}
FRAMES = 4  # train_frames = eval_frames = flatten_frames
OTHER_AGGREGATORS = ("average", "flatten", "bilstm", "ts_lstm", "temporal_inception")
SMALL = {"lstm_units": 4, "flatten_frames": FRAMES, "inception_filters": 3}
# Concatenated aggregator outputs (the classifier's input size) for SMALL.
CONCAT_DIMS = {
    "average": 6 + 3,
    "flatten": FRAMES * (6 + 3),
    "bilstm": 2 * 4 + 2 * 4,
    "ts_lstm": 4 + 4,
    "temporal_inception": 2 * 3 + 2 * 3,
}


def _inputs(lengths=((4, 1, 7), (2, 2, 0))):
    return {
        name: ragged_frames(batch_lengths, dim, seed=i)
        for i, ((name, dim), batch_lengths) in enumerate(zip(DIMS.items(), lengths, strict=True))
    }


def _config(aggregator, **overrides):
    values = {
        "train_data": None,
        "eval_data": None,
        "features": FEATURES,
        "num_classes": 5,
        "cluster_sizes": (("rgb", 2), ("audio", 2)),
        "train_frames": FRAMES,
        "eval_frames": FRAMES,
        "top_k": 3,
        "aggregator": aggregator,
        "lstm_units": (("rgb", 4), ("audio", 4)),
    }
    values.update(overrides)
    return ac_config.validate(ac_config.Config.from_values(**values), need_train_data=False)


def _parse(*args):
    flag_values = copy.deepcopy(flags.FLAGS)
    flag_values.unparse_flags()
    flag_values(["prog", *args])
    return flag_values


# Config and flags.


def test_aggregator_names_agree():
    assert ac_config.AGGREGATORS == ac_layers.AGGREGATORS


def test_default_is_attention_clusters():
    config = ac_flags.config_from_flags(_parse("--train_data=t*", "--num_classes=4"))
    model = config.model
    assert (model.aggregator, model.lstm_units, model.flatten_frames) == ("attention_cluster", (), 0)


def test_aggregator_flags_parse_and_round_trip():
    config = ac_flags.config_from_flags(
        _parse(
            "--train_data=t*",
            "--num_classes=4",
            "--features=rgb:8,flow:8,audio:4",
            "--aggregator=bilstm",
            "--lstm_units=rgb:1024,flow:512,audio:512",
        )
    )
    assert config.model.aggregator == "bilstm"
    assert dict(config.model.lstm_units) == {"rgb": 1024, "flow": 512, "audio": 512}
    assert ac_flags.config_from_flags(_parse(*config.to_flags().split())) == config
    one = ac_flags.config_from_flags(_parse("--train_data=t*", "--num_classes=4", "--lstm_units=64"))
    assert one.model.lstm_units == (("rgb", 64), ("audio", 64))
    flat = ac_flags.config_from_flags(
        _parse(
            "--train_data=t*",
            "--num_classes=4",
            "--aggregator=flatten",
            "--train_frames=7",
            "--eval_frames=7",
        )
    )
    assert flat.flatten_frame_count == 7
    assert ac_flags.config_from_flags(_parse(*flat.to_flags().split())) == flat


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--aggregator=flatten"],
            r"--aggregator: =flatten .* --train_frames=20 and --eval_frames=25 differ",
        ),
        (
            ["--aggregator=flatten", "--train_frames=0", "--eval_frames=0"],
            r"--flatten_frames: --aggregator=flatten with --train_frames=0 \(all frames\) needs",
        ),
        (["--flatten_frames=-1"], r"--flatten_frames: must be >= 0"),
        (["--lstm_units=rgb:8"], r"--lstm_units: needs one N for each modality .* missing \['audio'\]"),
        (["--lstm_units=rgb:8,audio:x"], r"--lstm_units: 'audio:x' is not name:N"),
        (["--lstm_units=0"], r"--lstm_units: N of 'rgb' must be >= 1"),
    ],
)
def test_bad_aggregator_flags_name_the_flag(args, message):
    base = ["--train_data=t*", "--num_classes=4", "--features=rgb:8,audio:4"]
    with pytest.raises(ac_config.ConfigError, match=message):
        ac_flags.config_from_flags(_parse(*base, *args))


def test_unknown_aggregator_is_refused():
    with pytest.raises(flags.IllegalFlagValueError, match="lstm"):
        _parse("--aggregator=lstm")
    with pytest.raises(ac_config.ConfigError, match=r"--aggregator: must be one of"):
        _config("lstm")


def test_flatten_with_all_frames_and_a_fixed_count():
    config = _config("flatten", train_frames=0, eval_frames=0, flatten_frames=30)
    assert config.flatten_frame_count == 30
    assert Task(config).build_model().get_layer("rgb_flatten").num_frames == 30


# The builder.


@pytest.mark.parametrize("aggregator", OTHER_AGGREGATORS)
def test_model_per_aggregator(aggregator, tmp_path):
    model = build_model(DIMS, None, num_classes=5, aggregator=aggregator, **SMALL)
    assert model.get_layer("concat").output.shape[-1] == CONCAT_DIMS[aggregator]
    assert type(model.get_layer(f"rgb_{aggregator}")).__module__ == "ac_keras.layers.aggregators"
    inputs = _inputs()
    probabilities = model(inputs).numpy()
    assert probabilities.shape == (3, 5)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)

    dense_model = build_model(DIMS, None, num_classes=5, aggregator=aggregator, input_format="dense", **SMALL)
    dense_model.set_weights(model.get_weights())
    dense_inputs = {}
    for name, frames in inputs.items():
        dense_inputs[name] = frames.to_tensor(default_value=7.0)
        dense_inputs[name + "_mask"] = tf.sequence_mask(frames.row_lengths(), tf.shape(dense_inputs[name])[1])
    np.testing.assert_allclose(dense_model(dense_inputs).numpy(), probabilities, rtol=1e-5, atol=1e-7)

    path = tmp_path / "model.keras"
    model.save(path)
    np.testing.assert_array_equal(keras.models.load_model(path)(inputs).numpy(), probabilities)


def test_attention_cluster_path_is_unchanged():
    keras.utils.set_random_seed(3)
    default = build_model(DIMS, {"rgb": 4, "audio": 2}, num_classes=5, weighting="fc2")
    keras.utils.set_random_seed(3)
    explicit = build_model(
        DIMS, {"rgb": 4, "audio": 2}, num_classes=5, weighting="fc2", aggregator="attention_cluster", **SMALL
    )
    assert [w.path for w in default.weights] == [w.path for w in explicit.weights]
    for a, b in zip(default.get_weights(), explicit.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert [layer.name for layer in default.layers] == [layer.name for layer in explicit.layers]


def test_paper_lstm_sizes_are_the_default():
    model = build_model({"rgb": 4, "flow": 4, "audio": 2}, None, num_classes=3, aggregator="bilstm")
    units = {name: model.get_layer(f"{name}_bilstm").units for name in ("rgb", "flow", "audio")}
    assert units == {"rgb": 1024, "flow": 512, "audio": 512}
    ts = build_model(DIMS, None, num_classes=3, aggregator="ts_lstm", lstm_units={"rgb": 5, "audio": 2})
    assert ts.get_layer("rgb_ts_lstm").lstm.units == 5 and ts.get_layer("audio_ts_lstm").num_segments == 5


def test_mixed_precision_aggregator_model():
    policy = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(DIMS, None, num_classes=5, aggregator="bilstm", lstm_units=4)
    finally:
        keras.mixed_precision.set_global_policy(policy)
    probabilities = model(_inputs())
    assert probabilities.dtype == tf.float32
    np.testing.assert_allclose(probabilities.numpy().sum(axis=1), 1.0, rtol=1e-3)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"aggregator": "lstm"}, "aggregator"),
        ({"aggregator": "average", "return_attention": True}, "return_attention"),
        ({"aggregator": "flatten"}, "flatten_frames"),
        ({"aggregator": "bilstm", "lstm_units": {"rgb": 4}}, r"lstm_units.*missing \['audio'\]"),
        ({"aggregator": "ts_lstm", "lstm_units": 0}, "lstm_units"),
        ({"aggregator": "average", "dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_model(DIMS, None, num_classes=3, **kwargs)


# Training step, export and serving (the workflow around the builder is unchanged).


@pytest.mark.parametrize("aggregator", OTHER_AGGREGATORS)
def test_training_step_updates_every_weight(aggregator):
    """The training loop's shape of step: ragged inputs, logits model, gradients for all weights."""
    config = _config(aggregator)
    model = Task(config).build_model()
    logits_model = keras.Model(model.inputs, model.get_layer("classifier").output)
    optimizer = keras.optimizers.Adam(0.01)
    labels = tf.one_hot([0, 3, 1], 5)

    @tf.function
    def step(features):
        with tf.GradientTape() as tape:
            logits = logits_model(features, training=True)
            loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(labels, logits))
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply(gradients, model.trainable_variables)
        return loss, gradients

    loss, gradients = step(_inputs())
    assert np.isfinite(loss.numpy())
    missing = [v.path for v, g in zip(model.trainable_variables, gradients, strict=True) if g is None]
    assert not missing, missing


SERVE_WITHOUT_AC_KERAS = BLOCK_AC_KERAS + textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    paths, arrays, records = json.loads(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
    serialized = [r.numpy() for r in tf.data.TFRecordDataset(records)]
    result = {}
    for aggregator, path in paths.items():
        loaded = tf.saved_model.load(path)
        features = loaded.signatures["predict_features"](**{k: tf.constant(arrays[k]) for k in arrays.files})
        served = loaded.signatures["serving_default"](inputs=tf.constant(serialized))
        result[aggregator] = {
            "probabilities": features["probabilities"].numpy().tolist(),
            "scores": served["scores"].numpy().tolist(),
            "classes": served["classes"].numpy().tolist(),
        }
    result["modules"] = sorted(m for m in sys.modules if m.startswith("ac_keras"))
    print(json.dumps(result))
    """
)


@pytest.mark.slow
def test_export_and_serve_without_ac_keras(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {
        "rgb": rng.normal(size=(3, 6, 6)).astype("float32"),
        "rgb_num_frames": np.array([6, 2, 1], "int32"),
        "audio": rng.normal(size=(3, 4, 3)).astype("float32"),
        "audio_num_frames": np.array([4, 1, 0], "int32"),
    }
    np.savez(tmp_path / "arrays.npz", **arrays)
    videos = [
        {
            "rgb": rng.normal(size=(9, 6)).astype("float32"),
            "audio": rng.normal(size=(2, 3)).astype("float32"),
        },
        {
            "rgb": rng.normal(size=(3, 6)).astype("float32"),
            "audio": rng.normal(size=(5, 3)).astype("float32"),
        },
    ]
    serialized = [
        sequence_example(f"v{i}", None, frames).SerializeToString() for i, frames in enumerate(videos)
    ]
    with tf.io.TFRecordWriter(str(tmp_path / "records.tfrecord")) as writer:
        for record in serialized:
            writer.write(record)
    ragged = {
        name: tf.RaggedTensor.from_tensor(arrays[name], lengths=arrays[name + "_num_frames"]) for name in DIMS
    }

    # The attention cluster with --center_features: the SavedModel must subtract the stats' mean itself.
    stats = {
        "format": ac_data.STATS_FORMAT,
        "modalities": {name: {"mean": rng.uniform(0, 2, size=dim).tolist()} for name, dim in DIMS.items()},
    }
    (tmp_path / "stats.json").write_text(json.dumps(stats))
    centered = {
        "stats": str(tmp_path / "stats.json"),
        "center_features": True,
        "missing_modality": "zeros",
    }
    paths, expected = {}, {}
    for aggregator in (*OTHER_AGGREGATORS, "centered_attention_cluster"):
        if aggregator == "centered_attention_cluster":
            config = _config("attention_cluster", **centered)
        else:
            config = _config(aggregator)
        task = Task(config)
        model = task.build_model()
        paths[aggregator] = export_saved_model(model, task, str(tmp_path / aggregator))
        parsed, _ = ac_data.parse_serialized(
            tf.constant(serialized),
            config.data.feature_specs,
            training=False,
            num_frames=config.data.eval_frames,
        )
        expected[aggregator] = (
            model(ragged).numpy(),
            model({name: parsed[name] for name in DIMS}).numpy(),
        )

    result = subprocess.run(
        [
            sys.executable,
            "-c",
            SERVE_WITHOUT_AC_KERAS,
            json.dumps(paths),
            str(tmp_path / "arrays.npz"),
            str(tmp_path / "records.tfrecord"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,  # not the repository root, so `import ac_keras` could not even succeed
    )
    assert result.returncode == 0, result.stderr[-3000:]
    served = json.loads(result.stdout.strip().splitlines()[-1])
    assert served.pop("modules") == []
    for aggregator, (features_want, records_want) in expected.items():
        got = served[aggregator]
        np.testing.assert_allclose(
            got["probabilities"], features_want, rtol=1e-5, atol=1e-7, err_msg=aggregator
        )
        top = np.sort(records_want, axis=1)[:, ::-1][:, :3]
        np.testing.assert_allclose(got["scores"], top, rtol=1e-5, atol=1e-7, err_msg=aggregator)
        np.testing.assert_array_equal(got["classes"], np.argsort(-records_want, axis=1, kind="stable")[:, :3])
