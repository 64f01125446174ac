"""`python -m ac_keras.classify`, class names and the `classify_frames` export: videos in, named classes out.

One module fixture makes clips of two classes (bright and still with a low tone, dark and moving with a high
tone), extracts them with `python -m tfrecords.extract` (tiny .keras models; `--pca_dims` makes rgb and flow
bytes, audio stays float), trains a small model with class names on them, exports it with the extractor and
classifies new clips (one without audio, one that is not a video) through the command. The tests then check
the command's results against the export, the names through training, export, prediction and serving, the
`classify_frames` signature against the command, and the messages for a missing or changed model file.
"""

import csv
import json
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras import artifacts, classify, export, schema
from ac_keras import config as ac_config
from ac_keras import data as ac_data
from ac_keras.data import writer
from ac_keras.errors import DataError, MissingDataError
from ac_keras.extraction import extractor as extractor_lib
from ac_keras.extraction import flow as flow_lib
from ac_keras.extraction import pca as pca_lib
from ac_keras.extraction import video
from ac_keras.layers import AGGREGATORS
from ac_keras.task import Task
from ac_keras.testing import videos
from ac_keras.testing.isolation import BLOCK_AC_KERAS
from ac_keras.trainer import Trainer
from tests.tfrecords.test_extract import SIZE, _picture, run_extract, tiny_models

ROOT = pathlib.Path(__file__).resolve().parents[2]
NAMES_CSV = "index,name\n0,bright\n1,dark\n"
NAMES = ("bright", "dark")
# New clips to classify: name -> (class, seconds, with audio). broken.mp4 is a text file.
NEW_CLIPS = {
    "a.mp4": (0, 2.6, True),
    "b.webm": (1, 3.8, True),
    "c.mp4": (0, 3.0, False),
    "d.mp4": (1, 2.2, True),
}


def _clip(path, label, *, seconds=3.3, audio=True):
    webm = str(path).endswith(".webm")
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    return videos.encode_clip(
        str(path),
        seconds=seconds,
        fps=7.5,
        codec="libvpx-vp9" if webm else "libx264",
        size=SIZE,
        audio_tone_hz=(300.0 if label == 0 else 3000.0) if audio else None,
        audio_codec="libopus" if webm else "aac",
        frame_fn=_picture(bright=label == 0, moving=label == 1),
    )


def _command(module, *args, check_status=None):
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check_status is not None:
        assert result.returncode == check_status, f"{result.stdout}\n{result.stderr}"
    return result


def _decoded(extractor, path):
    """A client's classify_frames inputs for one video: frames at the recorded sampling, waveform, flow."""
    _, frames = video.read_frames(path, extractor.spec.sampling())
    waveform = video.read_audio(path)
    return {
        "frames": frames,
        "waveform": np.zeros([0], np.float32) if waveform is None else waveform,
        "flow_images": extractor.flow_images(frames),
    }


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("classify")
    rows = ["path,labels"]
    for index in range(6):
        label = index % 2
        name = f"train{index}.{'mp4' if index % 3 else 'webm'}"
        _clip(root / "videos" / name, label, audio=index != 3)  # train3: no audio stream
        rows.append(f"{name},{label}")
    (root / "videos" / "labels.csv").write_text("\n".join(rows) + "\n")
    models = tiny_models(root)
    records = root / "records"
    run_extract(
        f"--labels_csv={root / 'videos' / 'labels.csv'}",
        f"--output_dir={records}",
        "--modalities=rgb,audio,flow",
        f"--rgb_model={models['rgb']}",
        f"--audio_model={models['audio']}",
        f"--flow_model={models['flow']}",
        "--fps=2",
        "--pca_dims=3",
        "--num_workers=1",
        "--batch_size=16",
    )
    description = json.loads((records / "extraction.json").read_text())
    (root / "names.csv").write_text(NAMES_CSV)
    pattern = str(records / "train-*.tfrecord")
    config = ac_config.from_values(
        train_data=pattern,
        eval_data=pattern,
        features=description["features"],
        num_classes=2,
        cluster_sizes="2",
        fc2_units=4,
        dropout=0.0,
        optimizer="adam",
        learning_rate=0.05,
        batch_size=6,
        epochs=3,
        steps_per_epoch=10,
        train_frames=0,
        eval_frames=4,
        stats=str(records / "stats.json"),
        class_names=str(root / "names.csv"),
        model_dir=str(root / "model"),
        export_dir=str(root / "export"),
        top_k=2,
        strategy="default",
        checkpoint_every=100,
    )
    task = Task(config)
    trainer = Trainer(task, progress=False)
    trainer.train()
    saved_model = export.export_saved_model(
        trainer.best_or_final_model(), task, config.runtime.export_dir, with_extractor=True
    )
    new = root / "new"
    for name, (label, seconds, audio) in NEW_CLIPS.items():
        _clip(new / name, label, seconds=seconds, audio=audio)
    videos.write_text_as_video(str(new / "broken.mp4"))
    output_json = root / "classified.json"
    classified = _command(
        "ac_keras.classify",
        str(new / "*"),
        f"--model_dir={config.runtime.model_dir}",
        f"--output_json={output_json}",
    )
    return {
        "root": root,
        "config": config,
        "models": models,
        "records": records,
        "saved_model": saved_model,
        "new": new,
        "classified": classified,
        "results": json.loads(output_json.read_text()) if output_json.exists() else None,
    }


def _by_name(results):
    return {pathlib.Path(entry["video"]).name: entry for entry in results}


@pytest.mark.slow  # extracts, trains and runs the command (module fixture)
def test_new_videos_are_classified_by_name_and_a_bad_one_is_reported(run):
    classified = run["classified"]
    assert classified.returncode == 1, classified.stderr  # one video could not be used
    assert "Traceback" not in classified.stderr
    results = _by_name(run["results"])
    assert [entry["video"] for entry in run["results"]] == sorted(str(run["new"] / name) for name in results)
    assert set(results) == {*NEW_CLIPS, "broken.mp4"}
    for name, (label, _, _) in NEW_CLIPS.items():
        entry = results[name]
        assert entry["classes"][0] == label, entry
        assert entry["names"] == [NAMES[c] for c in entry["classes"]]
        assert sorted(entry["classes"]) == [0, 1] and entry["scores"] == sorted(entry["scores"], reverse=True)
        assert sum(entry["scores"]) == pytest.approx(1.0, abs=1e-5)
    broken = results["broken.mp4"]
    assert set(broken) == {"video", "error"} and "broken.mp4" in broken["error"]
    stdout = classified.stdout
    assert f"{run['new'] / 'broken.mp4'}: error: Video" in stdout
    assert "Classified 4 of 5 video(s); 1 could not be used." in stdout
    assert f"{run['new'] / 'a.mp4'}\n  0  " in stdout and "  bright" in stdout


@pytest.mark.slow  # module fixture
def test_the_export_classifies_as_the_model_dir(run):
    classifier = classify.Classifier.load(saved_model=run["saved_model"])
    assert classifier.class_names == NAMES  # from the export's assets.extra, no flag
    paths = [str(run["new"] / name) for name in sorted(NEW_CLIPS)]
    want = _by_name(run["results"])
    for result in classifier.classify(paths):
        entry = want[pathlib.Path(result.video).name]
        assert list(result.classes) == entry["classes"] and list(result.names) == entry["names"]
        np.testing.assert_allclose(result.scores, entry["scores"], rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # module fixture
def test_class_names_round_trip_through_training_export_prediction_and_serving(run, tmp_path):
    config = run["config"]
    model_dir = pathlib.Path(config.runtime.model_dir)
    stored = "index,name\n0,bright\n1,dark\n"
    assert (model_dir / "class_names.csv").read_text() == stored
    assets = pathlib.Path(run["saved_model"]) / "assets.extra"
    assert (assets / "class_names.csv").read_text() == stored
    assert {"config.json", "stats.json", "extraction.json"} <= set(os.listdir(assets))

    from ac_keras import predict

    # predict without --class_names: the names stored in the model_dir.
    no_flag = config.replace(class_names=None)
    names = artifacts.load_class_names(2, model_dir=str(model_dir))
    assert names == NAMES
    csv_path = tmp_path / "predictions.csv"
    dataset = Task(no_flag).eval_dataset(labels=False, keep_ids=True)
    predictor = artifacts.load_predictor(str(model_dir))
    assert predict.predict_to_csv(predictor, dataset, str(csv_path), 2, class_names=names) == 6
    rows = list(csv.reader(csv_path.open()))
    assert rows[0] == ["VideoId", "LabelConfidencePairs", "LabelNames"]
    for _, pairs, label_names in rows[1:]:
        assert label_names.split(";") == [NAMES[int(c)] for c in pairs.split()[0::2]]

    # serving_default returns the names of its top classes.
    loaded = tf.saved_model.load(run["saved_model"])
    records = export.first_records(config.data.train_data, 6)
    out = loaded.signatures["serving_default"](inputs=tf.constant(records))
    served = [[name.decode() for name in row] for row in out["names"].numpy()]
    assert served == [[NAMES[c] for c in row] for row in out["classes"].numpy()]


SERVE_FRAMES_WITHOUT_AC_KERAS = BLOCK_AC_KERAS + textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    path, *inputs = sys.argv[1:]
    signature = tf.saved_model.load(path).signatures["classify_frames"]
    results = []
    for name in inputs:
        with np.load(name) as arrays:
            out = signature(**{key: tf.constant(arrays[key]) for key in arrays.files})
        results.append({"classes": out["classes"].numpy().tolist(), "scores": out["scores"].numpy().tolist(),
                        "names": [n.decode() for n in out["names"].numpy()]})
    results.append(sorted(m for m in sys.modules if m.startswith("ac_keras")))
    print(json.dumps(results))
    """
)


@pytest.mark.slow  # module fixture, and two processes
def test_classify_frames_equals_classify_on_the_same_frames(run, tmp_path):
    saved_model = run["saved_model"]
    extractor = artifacts.load_extractor(run["config"].data.feature_specs, saved_model=saved_model)
    want = _by_name(run["results"])
    names = ["a.mp4", "c.mp4"]  # c.mp4 has no audio: an empty waveform
    files = []
    for name in names:
        inputs = _decoded(extractor, str(run["new"] / name))
        files.append(tmp_path / f"{name}.npz")
        np.savez(files[-1], **inputs)
    assert np.load(files[1])["waveform"].shape == (0,)
    served = subprocess.run(
        [sys.executable, "-c", SERVE_FRAMES_WITHOUT_AC_KERAS, saved_model, *map(str, files)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
        env={name: value for name, value in os.environ.items() if name != "PYTHONPATH"},
    )
    assert served.returncode == 0, served.stderr[-3000:]
    *results, modules = json.loads(served.stdout.strip().splitlines()[-1])
    assert modules == []
    for name, result in zip(names, results, strict=True):
        assert result["classes"] == want[name]["classes"] and result["names"] == want[name]["names"]
        np.testing.assert_allclose(result["scores"], want[name]["scores"], rtol=1e-5, atol=1e-6)

    # `saved_model_cli run` loads the model through the TF1 session loader, as TF Serving does.
    with np.load(files[1]) as arrays:
        for key in arrays.files:
            np.save(tmp_path / f"{key}.npy", arrays[key])
        inputs = ";".join(f"{key}={tmp_path / key}.npy" for key in arrays.files)
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    result = subprocess.run(
        [
            str(cli),
            "run",
            f"--dir={saved_model}",
            "--tag_set=serve",
            "--signature_def=classify_frames",
            f"--inputs={inputs}",
            f"--outdir={tmp_path / 'cli'}",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "cli" / "scores.npy"), want["c.mp4"]["scores"], rtol=1e-5)
    assert np.load(tmp_path / "cli" / "classes.npy").tolist() == want["c.mp4"]["classes"]
    cli_names = np.load(tmp_path / "cli" / "names.npy", allow_pickle=True)
    assert [name.decode() for name in cli_names] == want["c.mp4"]["names"]


@pytest.mark.slow  # module fixture, and one process
def test_a_missing_or_changed_extractor_file_is_named(run, tmp_path):
    """The model_dir is copied with its extraction.json pointing at a copy of the rgb model, which is then
    deleted or changed (the fixture's own files stay as they are)."""
    model_dir = tmp_path / "model"
    shutil.copytree(run["config"].runtime.model_dir, model_dir)
    rgb_model = tmp_path / "rgb_copy.keras"
    shutil.copy(run["models"]["rgb"], rgb_model)
    extraction = model_dir / "extraction.json"
    extraction.write_text(extraction.read_text().replace(run["models"]["rgb"], str(rgb_model)))
    rgb_model.unlink()
    result = _command(
        "ac_keras.classify", str(run["new"] / "a.mp4"), f"--model_dir={model_dir}", check_status=2
    )
    assert "Traceback" not in result.stderr
    message = result.stderr.strip()
    assert len(message.splitlines()) <= 3, message
    assert str(rgb_model) in message and "missing" in message, message

    rgb_model.write_bytes(pathlib.Path(run["models"]["rgb"]).read_bytes() + b"changed")
    with pytest.raises(DataError, match="rgb_copy.keras .rgb. has changed since the features were extracted"):
        classify.Classifier.load(model_dir=str(model_dir))


@pytest.mark.slow  # builds and calls eight models
def test_every_aggregator_and_modality_subset_classifies_frames_as_classify(run):
    config = run["config"]
    extractor = artifacts.load_extractor(config.data.features, model_dir=config.runtime.model_dir)
    paths = [str(run["new"] / "c.mp4"), str(run["new"] / "d.mp4")]  # c.mp4 has no audio: it is filled
    decoded = {
        path: {key: tf.constant(value) for key, value in _decoded(extractor, path).items()} for path in paths
    }
    cases = [(aggregator, config.data.features) for aggregator in AGGREGATORS]
    cases += [("attention_cluster", "audio:8:float"), ("attention_cluster", "rgb:3,flow:3")]
    for aggregator, features in cases:
        names = [spec.name for spec in schema.parse_features(features)]
        task = Task(
            config.replace(
                features=features,
                cluster_sizes=tuple((name, 2) for name in names),
                aggregator=aggregator,
                lstm_units=tuple((name, 3) for name in names),
                train_frames=4,
            )
        )
        model = task.build_model()
        subset = artifacts.load_extractor(features, model_dir=config.runtime.model_dir)
        classifier = classify.Classifier(task, subset, lambda features, model=model: model(features))
        serve = export.frames_classifier(model, task, subset, NAMES)
        signature = export.frames_input_signature(task.config.data.feature_specs)
        for path, result in zip(paths, classifier.classify(paths), strict=True):
            served = serve({key: decoded[path][key] for key in signature})
            case = f"{aggregator} {features} {path}"
            assert served["classes"].numpy().tolist() == list(result.classes), case
            np.testing.assert_allclose(
                served["scores"].numpy(), result.scores, rtol=1e-5, atol=1e-6, err_msg=case
            )


@pytest.mark.slow  # builds the stand-in YouTube-8M graph and exports it
def test_the_youtube8m_graph_exports_into_classify_frames(tmp_path):
    from ac_keras.testing.yt8m_standin import write_standin_model_dir

    clip = _clip(tmp_path / "clip.mp4", 1, seconds=1.6)
    keras.utils.set_random_seed(0)
    flow_model = keras.Sequential(  # 3 channels: the flow images get their magnitude channel
        [keras.Input((16, 16, 3)), keras.layers.Conv2D(3, 3), keras.layers.GlobalAveragePooling2D()]
    )
    models = tiny_models(tmp_path)
    flow_model.save(tmp_path / "flow3.keras")
    spec = extractor_lib.ExtractionSpec(
        modalities=(
            extractor_lib.ModalitySpec(
                "rgb", "yt8m", model_dir=write_standin_model_dir(str(tmp_path / "yt8m"))
            ),
            extractor_lib.ModalitySpec("audio", models["audio"]),
            extractor_lib.ModalitySpec("flow", str(tmp_path / "flow3.keras")),
        ),
        fps=2,
    )
    extractor = extractor_lib.Extractor(spec)
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    extractor_lib.write_description(extractor.describe(), str(model_dir / "extraction.json"))
    config = ac_config.from_values(
        features=extractor.feature_spec(),
        num_classes=3,
        cluster_sizes="2",
        eval_frames=0,
        top_k=3,
        model_dir=str(model_dir),
        need_train_data=False,
    )
    assert config.data.features == "rgb:1024,audio:8:float,flow:3:float"
    task = Task(config)
    path = export.export_saved_model(task.build_model(), task, str(tmp_path / "export"), with_extractor=True)
    predictor = artifacts.load_predictor(saved_model=path)
    (want,) = classify.Classifier(task, extractor, predictor).classify([clip])
    inputs = _decoded(extractor, clip)
    assert inputs["frames"].shape == (4, 32, 48, 3) and inputs["flow_images"].shape == (3, 16, 16, 2)
    out = tf.saved_model.load(path).signatures["classify_frames"](**inputs)
    assert out["classes"].numpy().tolist() == list(want.classes)
    np.testing.assert_allclose(out["scores"].numpy(), want.scores, rtol=1e-5, atol=1e-6)
    assert out["names"].numpy().tolist() == [b""] * 3
    # The TF1 session loader (TF Serving's) runs the imported 2015 graph too.
    with tf.compat.v1.Session(graph=tf.Graph()) as session:
        meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
        signature = meta.signature_def["classify_frames"]
        feed = {signature.inputs[key].name: value for key, value in inputs.items()}
        scores = session.run(signature.outputs["scores"].name, feed_dict=feed)
    np.testing.assert_allclose(scores, want.scores, rtol=1e-5, atol=1e-6)


# --- fast tests ---------------------------------------------------------------------------------------------


def test_class_names_csv_is_read_and_checked(tmp_path):
    good = tmp_path / "names.csv"
    good.write_text('index,name\n2,"walking, fast"\n0,run\n\n')
    assert artifacts.read_class_names(str(good), 3) == ("run", "", "walking, fast")
    (tmp_path / "bare.csv").write_text("0,a\n1,b\n")
    assert artifacts.read_class_names(str(tmp_path / "bare.csv"), 2) == ("a", "b")
    path = artifacts.write_class_names(str(tmp_path / "model"), ("run", "", "walking, fast"))
    assert artifacts.read_class_names(path, 3) == ("run", "", "walking, fast")
    cases = {
        "0,a\n3,b\n": r"bad.csv:2: class index 3 is out of range 0..2 \(--num_classes=3\)",
        "0,a\n0,b\n": r"bad.csv:2: class 0 is named again \(first on line 1\)",
        "0,a\n1,a\n": r"bad.csv:2: the name 'a' is given again",
        "index,name\n0,a\nx,b\n": r"bad.csv:3: the class index 'x' is not an integer",
        "0,a,extra\n": r"bad.csv:1: expected two columns",
        "0,\n": r"bad.csv:1: class 0 has an empty name",
        "index,name\n": r"bad.csv names no class",
    }
    for text, message in cases.items():
        (tmp_path / "bad.csv").write_text(text)
        with pytest.raises(DataError, match=message):
            artifacts.read_class_names(str(tmp_path / "bad.csv"), 3)
    with pytest.raises(MissingDataError, match="--class_names: .*nowhere.csv does not exist"):
        artifacts.read_class_names(str(tmp_path / "nowhere.csv"), 3)
    with pytest.raises(ac_config.ConfigError, match="--class_names: must be the path"):
        ac_config.from_values(num_classes=3, class_names=" ", need_train_data=False)


def test_a_run_config_is_rebuilt_from_its_json(tmp_path):
    config = ac_config.from_values(
        features="rgb:8:float,audio:4",
        num_classes=3,
        cluster_sizes="rgb:2,audio:3",
        lstm_units="5",
        devices=["/cpu:0"],
        class_names="n.csv",
        need_train_data=False,
    )
    rebuilt = ac_config.from_saved(json.loads(config.to_json()), top_k=2)
    assert rebuilt == config.replace(top_k=2)
    with pytest.raises(MissingDataError, match="--model_dir .*elsewhere does not exist"):
        artifacts.load_run_config(model_dir=str(tmp_path / "elsewhere"))
    with pytest.raises(MissingDataError, match="has no .*config.json: it was not made by"):
        artifacts.load_run_config(model_dir=str(tmp_path))
    with pytest.raises(MissingDataError, match="not trained on features of `python -m tfrecords.extract`"):
        artifacts.load_extractor("rgb:8:float", model_dir=str(tmp_path))
    (tmp_path / "extraction.json").write_text(json.dumps({"features": "rgb:6:float", "modalities": {}}))
    with pytest.raises(DataError, match="the model takes rgb:8:float, the extraction made rgb:6:float"):
        artifacts.load_extractor("rgb:8:float", model_dir=str(tmp_path))
    (tmp_path / "config.json").write_text(config.to_json())
    with pytest.raises(MissingDataError, match=r"statistics file s.json .*Pass --stats=PATH"):
        (tmp_path / "config.json").write_text(config.replace(stats="s.json").to_json())
        artifacts.load_run_config(model_dir=str(tmp_path))


def test_select_and_fill_equals_the_reader_on_the_same_frames():
    features = "rgb:3:float,audio:2"
    rng = np.random.default_rng(0)
    videos_frames = [
        {
            "rgb": rng.normal(size=(7, 3)).astype(np.float32),
            "audio": rng.integers(0, 256, (5, 2)).astype(np.uint8),
        },
        {"rgb": rng.normal(size=(2, 3)).astype(np.float32)},  # no audio
        {"audio": rng.integers(0, 256, (1, 2)).astype(np.uint8)},  # no rgb
    ]
    fill = {"rgb": np.array([0.5, -1.0, 2.0], np.float32), "audio": np.array([0.3, -0.7], np.float32)}
    records = [
        writer.make_sequence_example(
            f"v{index}", [], frames, features, allow_missing=True
        ).SerializeToString()
        for index, frames in enumerate(videos_frames)
    ]
    want, _ = ac_data.parse_serialized(
        tf.constant(records), features, training=False, num_frames=4, missing_fill=fill, dequantize=False
    )
    ragged = {}
    for spec in schema.parse_features(features):
        dtype = np.uint8 if spec.quantized else np.float32
        arrays = [frames.get(spec.name, np.zeros([0, spec.dim], dtype)) for frames in videos_frames]
        ragged[spec.name] = tf.RaggedTensor.from_row_lengths(np.concatenate(arrays), [len(a) for a in arrays])
    got = ac_data.select_and_fill(ragged, features, num_frames=4, missing_fill=fill)
    for name in ("rgb", "audio"):
        assert got[name].dtype == want[name].dtype
        assert got[name].to_list() == want[name].to_list(), name


def test_the_tensorflow_stages_equal_the_numpy_ones(tmp_path):
    from ac_keras.extraction import audio
    from ac_keras.testing.vggish_standin import write_vggish_pca

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 5, 6, 2)).astype(np.uint8)
    np.testing.assert_array_equal(flow_lib.flow_xym_tensor(images).numpy(), flow_lib.flow_xym(images))
    values = rng.normal(0, 1.5, (50, 7))
    for rounding in schema.ROUNDINGS:
        np.testing.assert_array_equal(
            schema.quantize_tensor(values, rounding=rounding).numpy(),
            schema.quantize(values, rounding=rounding),
        )
    params = pca_lib.fit_pca(rng.normal(size=(40, 6)), 3)
    features = rng.normal(size=(5, 6)).astype(np.float32)
    np.testing.assert_allclose(
        pca_lib.apply_pca_tensor(params, features).numpy(),
        pca_lib.apply_pca(params, features),
        rtol=1e-5,
        atol=1e-5,
    )
    # VGGish's postprocessor (PCA, truncating quantization) behind a small 128-d model over log-mel patches.
    model = keras.Sequential([keras.Input((96, 64)), keras.layers.Flatten(), keras.layers.Dense(128)])
    pca = audio.VggishPca.from_npz(write_vggish_pca(tmp_path))
    embedder = audio.AudioEmbedder(model, pca, description={"model": "test"})
    patches = rng.normal(size=(3, 96, 64)).astype(np.float32)
    got, want = embedder.embed_tensor(patches).numpy(), embedder.embed_patches(patches)
    assert got.dtype == want.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 1 and np.mean(got == want) > 0.99
    # The audio features kept: the first max_frames, or num_frames at the centres of equal segments.
    for spec in (
        extractor_lib.ExtractionSpec((extractor_lib.ModalitySpec("audio", "a.keras"),), max_frames=4),
        extractor_lib.ExtractionSpec((extractor_lib.ModalitySpec("audio", "a.keras"),), num_frames=3),
    ):
        extractor = extractor_lib.Extractor(spec)
        for count in (0, 2, 3, 4, 11):
            got = extractor._audio_indices_tensor(tf.constant(count)).numpy().tolist()
            assert got == extractor._audio_indices(count), (spec, count)


def test_video_arguments_are_expanded_and_results_formatted(tmp_path):
    for name in ("b.mp4", "a.mp4", "c.txt"):
        (tmp_path / name).write_text("x")
    (tmp_path / "d.mp4").mkdir()
    missing = str(tmp_path / "missing.webm")
    assert classify.expand_videos([str(tmp_path / "*.mp4"), missing, str(tmp_path / "*.mkv")]) == [
        str(tmp_path / "a.mp4"),
        str(tmp_path / "b.mp4"),
        missing,
        str(tmp_path / "*.mkv"),  # a glob that matches nothing is reported as that video's error
    ]
    result = classify.VideoResult("v.mp4", (12, 3), (0.75, 0.25), ("dancing", ""))
    assert classify.format_result(result) == "v.mp4\n  12  0.7500  dancing\n   3  0.2500"
    assert result.to_json() == {
        "video": "v.mp4",
        "classes": [12, 3],
        "scores": [0.75, 0.25],
        "names": ["dancing", ""],
    }
    failed = classify.VideoResult("x.mp4", error="Video x.mp4: no such file")
    assert failed.to_json() == {"video": "x.mp4", "error": "Video x.mp4: no such file"}
    assert classify.format_result(failed) == "x.mp4: error: Video x.mp4: no such file"
