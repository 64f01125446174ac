"""`python -m tfrecords.extract`: video files made here -> Beam pipeline -> records the readers take.

Two classes of clips that differ in picture (bright vs dark, moving vs still) and in sound (a low vs a high
tone) go through the whole command (DirectRunner); the records are read by `make_dataset`, by a reader of
the YouTube-8M starter's layout, and a tiny attention-cluster model learns the classes from them.
"""

import concurrent.futures
import csv
import json
import os
import pathlib
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from ac_keras import schema
from ac_keras.data import make_dataset
from ac_keras.extraction import extractor as extractor_lib
from ac_keras.extraction import pipeline
from ac_keras.testing import videos

ROOT = pathlib.Path(__file__).resolve().parents[2]
SIZE = (48, 32)  # width, height of the clips


def _picture(bright, moving):
    def frame_fn(t):
        height, width = SIZE[1], SIZE[0]
        rows, cols = np.mgrid[0:height, 0:width]
        shift = int(round(4 * t)) if moving else 0
        pattern = (((cols + shift) // 4 + rows // 4) % 2).astype(np.float32)
        level = 200.0 if bright else 40.0
        picture = level + 40.0 * pattern
        return np.repeat(picture[..., None], 3, axis=2).clip(0, 255).astype(np.uint8)

    return frame_fn


def make_clips(directory, per_class=3):
    """Clips of two classes (two codecs/containers, with and without audio); returns the labels CSV path."""
    directory.mkdir(parents=True, exist_ok=True)
    rows = ["path,labels"]
    for index in range(2 * per_class):
        label = index % 2
        name = f"clip{index}.{'mp4' if index % 3 else 'webm'}"
        codec = "libx264" if name.endswith("mp4") else "libvpx-vp9"
        audio_codec = "aac" if name.endswith("mp4") else "libopus"
        tone = (300.0 if label == 0 else 3000.0) if index != 3 else None  # clip3 has no audio stream
        videos.encode_clip(
            str(directory / name),
            seconds=3.3,
            fps=7.5,
            codec=codec,
            size=SIZE,
            audio_tone_hz=tone,
            audio_codec=audio_codec,
            frame_fn=_picture(bright=label == 0, moving=label == 1),
        )
        rows.append(f"{name},{label}")
    (directory / "labels.csv").write_text("\n".join(rows) + "\n")
    return directory / "labels.csv", rows


def tiny_models(directory):
    """Small .keras models: rgb over 32 x 32 RGB, flow over 32 x 32 flow images, audio over log-mels."""
    keras.utils.set_random_seed(0)
    rgb = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(6, 3, strides=2),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    flow = keras.Sequential(
        [
            keras.Input((32, 32, 2)),
            keras.layers.Rescaling(1 / 127.5, offset=-1),
            keras.layers.Conv2D(4, 3),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    audio = keras.Sequential(
        [keras.Input((96, 64, 1)), keras.layers.AveragePooling2D((96, 8)), keras.layers.Flatten()]
    )
    paths = {}
    for name, model in (("rgb", rgb), ("flow", flow), ("audio", audio)):
        paths[name] = str(directory / f"{name}.keras")
        model.save(paths[name])
    return paths


def run_extract(*args, check=True, program=("-m", "tfrecords.extract")):
    """Runs the command (or `program`: other arguments to the interpreter, e.g. ("-c", code)) with `args`."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, *program, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"extract failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def extracted(tmp_path_factory):
    root = tmp_path_factory.mktemp("extract")
    csv_path, rows = make_clips(root / "videos")
    # Bad files are listed in the CSV too: each must land in errors.csv, and the job go on without them.
    videos.write_zero_bytes(str(root / "videos" / "empty.mp4"))
    videos.write_text_as_video(str(root / "videos" / "notes.mp4"))
    videos.write_truncated(str(root / "videos" / "clip1.mp4"), str(root / "videos" / "cut.mp4"))
    rows += ["empty.mp4,0", "notes.mp4,1", "cut.mp4,1"]
    csv_path.write_text("\n".join(rows) + "\n")
    models = tiny_models(root)
    output = root / "records"
    # What was extracted and how, but where to and on which engine.
    settings = (
        f"--labels_csv={csv_path}",
        "--modalities=rgb,audio,flow",
        f"--rgb_model={models['rgb']}",
        f"--audio_model={models['audio']}",
        f"--flow_model={models['flow']}",
        "--fps=2",
        "--num_shards=2",
        "--batch_size=8",
    )
    result = run_extract(*settings, f"--output_dir={output}", "--num_workers=2")
    return {
        "root": root,
        "output": output,
        "models": models,
        "result": result,
        "csv": csv_path,
        "settings": settings,
    }


@pytest.mark.slow  # runs the command (Beam workers, TensorFlow start-up)
def test_writes_shards_extraction_errors_and_stats(extracted):
    output = extracted["output"]
    names = sorted(os.listdir(output))
    assert [name for name in names if name.endswith(".tfrecord")] == [
        "train-00000-of-00002.tfrecord",
        "train-00001-of-00002.tfrecord",
    ]
    assert {"extraction.json", "errors.csv", "stats.json"} <= set(names)
    assert not [name for name in names if "temp" in name or name.startswith(".")]
    with open(output / "errors.csv") as handle:
        errors = {row["video"]: row for row in csv.DictReader(handle)}
    assert set(errors) == {"empty", "notes", "cut"}
    assert errors["empty"]["kind"] == "zero_bytes"
    assert errors["notes"]["kind"] == "unreadable"
    assert errors["cut"]["path"].endswith("cut.mp4") and errors["cut"]["detail"]
    description = json.loads((output / "extraction.json").read_text())
    assert description["features"] == "rgb:6:float,audio:8:float,flow:4:float"
    assert description["sampling"]["fps"] == 2.0
    rgb_model = description["modalities"]["rgb"]["model"]
    assert any(
        isinstance(value, str) and len(value) == 64
        for value in json.dumps(rgb_model).replace('"', " ").split()
    ), rgb_model  # the .keras file's SHA-256
    stats = json.loads((output / "stats.json").read_text())
    assert stats["num_videos"] == 6 and stats["class_counts"] == [3, 3]
    assert stats["modalities"]["audio"]["num_videos_missing"] == 1  # clip3 has no audio stream
    stdout = extracted["result"].stdout
    assert "--features=rgb:6:float,audio:8:float,flow:4:float" in stdout
    assert "3 video(s) could not be used" in stdout and "python -m ac_keras.train" in stdout


# Run before a command in the same interpreter (`run_extract(program=("-c", ...))`): connections anywhere but
# this machine, and Beam's Prism runner (which would download its binary), fail loudly.
_NO_NETWORK = textwrap.dedent(
    """
    import runpy, socket, sys
    from apache_beam.runners.portability import prism_runner

    _connect = socket.socket.connect

    def connect(self, address):
        host = address[0] if isinstance(address, tuple) else str(address)
        if self.family in (socket.AF_INET, socket.AF_INET6) and host not in ("localhost", "127.0.0.1", "::1"):
            raise AssertionError(f"outbound connection to {address}")
        return _connect(self, address)

    def no_prism(*args, **kwargs):
        raise AssertionError("the Prism runner was started")

    socket.socket.connect = connect
    prism_runner.PrismRunner.run_pipeline = no_prism
    sys.argv = ["tfrecords.extract", *sys.argv[1:]]
    runpy.run_module("tfrecords.extract", run_name="__main__")
    """
)


@pytest.mark.slow  # a worker pool and the command in subprocesses
def test_the_portable_runner_with_a_worker_pool_writes_what_the_default_engine_wrote(extracted, tmp_path):
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    # The pool starts each worker as `python` from PATH: this interpreter's, with ac_keras importable.
    environment = dict(
        os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", PYTHONPATH=str(ROOT)
    )
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        cwd=ROOT,
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        output = tmp_path / "portable"
        result = run_extract(
            *extracted["settings"],
            f"--output_dir={output}",
            "--",
            "--runner=PortableRunner",
            "--job_endpoint=embed",
            "--environment_type=EXTERNAL",
            f"--environment_config=localhost:{port}",
            program=("-c", _NO_NETWORK),
        )
    finally:
        pool.terminate()
        pool.wait(timeout=30)
    assert "Extracted 6 of 9 video(s)" in result.stdout and "3 video(s) could not be used" in result.stdout
    default, portable = _records(extracted["output"]), _records(output)
    assert sorted(portable) == sorted(default)
    for video_id, record in default.items():
        assert portable[video_id].context == record.context, video_id
        assert portable[video_id].feature_lists == record.feature_lists, video_id
    with open(extracted["output"] / "errors.csv") as first, open(output / "errors.csv") as second:
        assert sorted(first) == sorted(second)


def test_the_default_engine_is_named_and_downloads_nothing(monkeypatch):
    import socket as socket_module

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability import prism_runner
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.testing.util import assert_that, equal_to

    args = pipeline._beam_options([], num_workers=1, verbose=False)
    assert "--runner=FnApiRunner" in args and pipeline.LOCAL_ENGINE == "FnApiRunner"
    options = PipelineOptions(args)
    runner = pipeline.make_runner(options)
    assert isinstance(runner, fn_runner.FnApiRunner)

    attempts = []

    def refuse(*args, **kwargs):  # Beam's DirectRunner would catch this and fall back: it is counted too
        attempts.append(args)
        raise AssertionError("the local engine must not reach the network or start Prism")

    monkeypatch.setattr(prism_runner.PrismRunner, "run_pipeline", refuse)
    monkeypatch.setattr(socket_module, "create_connection", refuse)
    with beam.Pipeline(runner=runner, options=options) as run:
        doubled = run | beam.Create([1, 2, 3]) | beam.Map(lambda value: 2 * value)
        assert_that(doubled, equal_to([2, 4, 6]))
    assert not attempts
    # Other runners are Beam's to create from the options; which of them hold a run in this process's memory.
    assert pipeline.make_runner(PipelineOptions(["--runner=PortableRunner"])) is None
    assert pipeline.runs_locally([]) and pipeline.runs_locally(["--runner=DirectRunner"])
    assert pipeline.runs_locally(["--runner=PortableRunner", "--job_endpoint=embed"])
    assert not pipeline.runs_locally(["--runner=PortableRunner", "--job_endpoint=localhost:8099"])
    assert not pipeline.runs_locally(["--runner", "DataflowRunner"])


def _records(output):
    files = sorted(str(path) for path in output.glob("train-*.tfrecord"))
    return {
        example.context.feature["id"].bytes_list.value[0].decode(): example
        for example in (
            tf.train.SequenceExample.FromString(record.numpy()) for record in tf.data.TFRecordDataset(files)
        )
    }


@pytest.mark.slow  # runs the command (Beam workers, TensorFlow start-up)
def test_records_hold_frames_per_fps_and_equal_the_extractor_on_each_video(extracted):
    records = _records(extracted["output"])
    assert sorted(records) == [f"clip{index}" for index in range(6)]
    description = json.loads((extracted["output"] / "extraction.json").read_text())
    extractor = extractor_lib.Extractor.from_description(description)
    for video_id, example in records.items():
        lists = example.feature_lists.feature_list
        # 3.3 s at 2 fps: frames at 0, 0.5, ..., 3.0 -> 7; flow between consecutive frames -> 6;
        # audio: 3.3 s of 0.96 s patches -> 3 (clip3: no audio stream, left missing).
        assert len(lists["rgb"].feature) == 7
        assert len(lists["flow"].feature) == 6
        assert len(lists["audio"].feature) == (0 if video_id == "clip3" else 3)
        assert ("mean_audio" in example.context.feature) == (video_id != "clip3")
        label = int(video_id[-1]) % 2
        assert list(example.context.feature["labels"].int64_list.value) == [label]
        arrays = extractor.extract(str(extracted["root"] / "videos" / _file_of(video_id)))
        for name, array in arrays.items():
            stored = np.array([list(feature.float_list.value) for feature in lists[name].feature], np.float32)
            np.testing.assert_allclose(stored, array, rtol=1e-5, atol=1e-5, err_msg=f"{video_id} {name}")
            np.testing.assert_allclose(
                example.context.feature[f"mean_{name}"].float_list.value,
                array.mean(axis=0),
                rtol=1e-5,
                atol=1e-5,
            )


def _file_of(video_id):
    index = int(video_id[len("clip") :])
    return f"{video_id}.{'mp4' if index % 3 else 'webm'}"


@pytest.mark.slow  # runs the command (Beam workers, TensorFlow start-up)
def test_a_tiny_model_learns_the_classes_from_the_extracted_records(extracted):
    from ac_keras.model import build_model, dense_inputs

    features = "rgb:6:float,audio:8:float,flow:4:float"
    pattern = str(extracted["output"] / "train-*.tfrecord")
    dataset = make_dataset(
        pattern,
        features,
        batch_size=6,
        training=False,
        num_classes=2,
        num_frames=4,
        missing_fill={"audio": np.zeros(8, np.float32)},
    )

    def dense(inputs, labels):  # Keras `fit` takes the dense + mask input format
        return dense_inputs(inputs, num_frames=4), labels

    keras.utils.set_random_seed(1)
    model = build_model(
        features, {"rgb": 2, "audio": 2, "flow": 2}, 2, fc2_units=4, dropout=0.0, input_format="dense"
    )
    model.compile(
        optimizer=keras.optimizers.Adam(0.05), loss="categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(dataset.map(dense).repeat(), steps_per_epoch=10, epochs=4, verbose=0)
    assert history.history["accuracy"][-1] == 1.0


@pytest.mark.slow  # runs the command (Beam workers, TensorFlow start-up)
def test_existing_output_is_refused_before_any_work(extracted):
    result = run_extract(
        f"--labels_csv={extracted['csv']}",
        f"--output_dir={extracted['output']}",
        "--modalities=rgb",
        f"--rgb_model={extracted['models']['rgb']}",
        check=False,
    )
    assert result.returncode == 2
    assert "already exists" in result.stderr and "--overwrite" in result.stderr
    assert "Traceback" not in result.stderr


_BAD_FLAGS = [
    (["--videos=/nonexistent/*.mp4"], "matches no file"),
    (["--videos=X", "--modalities=rgb,smell"], "unknown modality 'smell'"),
    (["--videos=X", "--rgb_model=/nowhere/model.keras"], "/nowhere/model.keras"),
    (["--videos=X", "--modalities=audio", "--audio_weights=/nowhere/vggish_model.ckpt"], "vggish_model.ckpt"),
    (["--videos=X", "--modalities=rgb", "--yt8m_model_dir=/nowhere/yt8m"], "classify_image_graph_def.pb"),
]


@pytest.mark.slow  # one process each (one per core at a time)
def test_bad_flags_and_missing_model_files_give_a_short_message(tmp_path):
    clip = videos.encode_clip(str(tmp_path / "a.mp4"), seconds=1.0, fps=4, size=SIZE)

    def problems(case):
        index, (args, message) = case
        output = tmp_path / f"out{index}"
        args = [arg.replace("--videos=X", f"--videos={clip}") for arg in args]
        result = run_extract(*args, f"--output_dir={output}", check=False)
        found = []
        if result.returncode != 2 or message not in result.stderr or "Traceback" in result.stderr:
            found.append(
                f"{args}: exit status {result.returncode}, expected 2 and {message!r}:\n{result.stderr}"
            )
        if output.exists() and os.listdir(output):
            found.append(f"{args}: wrote {os.listdir(output)}")
        return found

    with concurrent.futures.ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        found = [problem for case in pool.map(problems, enumerate(_BAD_FLAGS)) for problem in case]
    assert not found, "\n".join(found)


def test_labels_csv_reader(tmp_path):
    from tfrecords import extract

    (tmp_path / "l.csv").write_text("id,path,labels\nv1,a.mp4,3;1\nv2,/abs/b.webm,\n")
    tasks = extract.read_labels_csv(str(tmp_path / "l.csv"))
    assert [(t.video_id, t.path, t.labels) for t in tasks] == [
        ("v1", str(tmp_path / "a.mp4"), (1, 3)),
        ("v2", "/abs/b.webm", ()),
    ]
    (tmp_path / "m.csv").write_text("a.mp4,2 5\nsub/c.mkv,7\n")
    tasks = extract.read_labels_csv(str(tmp_path / "m.csv"))
    assert [(t.video_id, t.labels) for t in tasks] == [("a", (2, 5)), ("c", (7,))]
    (tmp_path / "bad.csv").write_text("a.mp4,x\n")
    with pytest.raises(ValueError, match=r"bad.csv:1: labels must be integers"):
        extract.read_labels_csv(str(tmp_path / "bad.csv"))


@pytest.mark.slow  # runs the command (Beam workers, TensorFlow start-up)
def test_quantized_records_read_as_the_starter_reads_them(tmp_path):
    """--pca_dims: PCA fitted on the features, bytes per frame; parsed the starter's way (decode_raw)."""
    csv_path, _ = make_clips(tmp_path / "videos", per_class=2)
    models = tiny_models(tmp_path)
    output = tmp_path / "records"
    run_extract(
        f"--labels_csv={csv_path}",
        f"--output_dir={output}",
        "--modalities=rgb",
        f"--rgb_model={models['rgb']}",
        "--pca_dims=3",
        "--num_frames=5",
        "--num_workers=1",
    )
    description = json.loads((output / "extraction.json").read_text())
    assert description["features"] == "rgb:3"
    assert (output / "pca_rgb.npz").exists()
    # The starter's frame-level reader: context id/labels, feature list of one byte string per frame.
    for record in tf.data.TFRecordDataset(sorted(str(p) for p in output.glob("train-*.tfrecord"))):
        context, sequence = tf.io.parse_single_sequence_example(
            record,
            context_features={
                "id": tf.io.FixedLenFeature([], tf.string),
                "labels": tf.io.VarLenFeature(tf.int64),
            },
            sequence_features={"rgb": tf.io.FixedLenSequenceFeature([], dtype=tf.string)},
        )
        frames = tf.reshape(tf.cast(tf.io.decode_raw(sequence["rgb"], tf.uint8), tf.float32), [-1, 3])
        assert frames.shape[0] == 5
        values = schema.dequantize(frames.numpy().astype(np.uint8))
        assert np.all(np.abs(values) <= 2.01)


@pytest.mark.slow  # runs the command with the full-size VGGish stand-in (290 MB checkpoint)
def test_yt8m_and_vggish_records_are_the_released_recipes_bit_for_bit(tmp_path):
    """--rgb_model=yt8m and --audio_model=vggish on stand-ins with the released file names and layouts: each
    stored byte equals the released recipe computed here outside the pipeline (graph + PCA + nearest
    rounding for rgb; VGGish + PCA + truncation for audio), and mean_rgb is the mean of the float features."""
    from ac_keras.extraction import audio, video, yt8m
    from ac_keras.testing import vggish_standin, yt8m_standin

    model_dir = yt8m_standin.write_standin_model_dir(str(tmp_path / "yt8m"))
    checkpoint, _ = vggish_standin.write_vggish_checkpoint(str(tmp_path / "vggish"))
    pca_path = vggish_standin.write_vggish_pca(str(tmp_path / "vggish"))
    clip = videos.encode_clip(
        str(tmp_path / "tone.mp4"), seconds=2.5, fps=30000 / 1001, size=(64, 48), audio_tone_hz=1000.0
    )
    output = tmp_path / "records"
    result = run_extract(
        f"--videos={clip}",
        f"--output_dir={output}",
        f"--yt8m_model_dir={model_dir}",
        f"--audio_weights={checkpoint}",
        "--num_workers=1",
    )
    assert "--features=rgb:1024,audio:128" in result.stdout
    (record,) = _records(output).values()
    lists = record.feature_lists.feature_list
    stored_rgb = np.stack([np.frombuffer(f.bytes_list.value[0], np.uint8) for f in lists["rgb"].feature])
    stored_audio = np.stack([np.frombuffer(f.bytes_list.value[0], np.uint8) for f in lists["audio"].feature])

    _, frames = video.read_frames(clip, video.Sampling(fps=1.0, max_frames=300))
    assert len(frames) == 3  # 0, 1, 2 s
    rgb = yt8m.Yt8mEmbedder(model_dir).embed(frames)
    np.testing.assert_array_equal(stored_rgb, schema.quantize(rgb))  # the extractor's quantize(), nearest
    np.testing.assert_allclose(
        record.context.feature["mean_rgb"].float_list.value, rgb.mean(axis=0), rtol=1e-5, atol=1e-5
    )

    waveform = video.read_audio(clip)
    reference = audio.AudioEmbedder.from_vggish(checkpoint, pca_path).embed_waveform(waveform)
    assert stored_audio.shape == (2, 128)  # 2.5 s: two 0.96 s patches
    np.testing.assert_array_equal(stored_audio, reference)
    description = json.loads((output / "extraction.json").read_text())
    assert description["modalities"]["audio"]["quantization"]["rounding"] == "truncate"
    assert description["modalities"]["rgb"]["quantization"]["rounding"] == "nearest"


def test_training_copies_extraction_json_beside_the_records_into_the_model_dir(tmp_path):
    from ac_keras import artifacts

    records = tmp_path / "records"
    records.mkdir()
    (records / "train-00000-of-00001.tfrecord").write_bytes(b"")
    assert (
        artifacts.copy_extraction_description(str(tmp_path / "run"), str(records / "train-*.tfrecord"))
        is None
    )
    (records / "extraction.json").write_text('{"format": "x"}\n')
    copied = artifacts.copy_extraction_description(str(tmp_path / "run"), f"/nowhere/*,{records}/train-*")
    assert copied == str(tmp_path / "run" / "extraction.json")
    assert json.loads(pathlib.Path(copied).read_text()) == {"format": "x"}


def test_plan_waves_splits_videos_and_shards():
    tasks = [pipeline.VideoTask(f"v{index}", f"/v{index}.mp4") for index in range(10)]
    waves = pipeline.plan_waves(tasks, videos_per_run=4, num_shards=7)
    assert [len(wave.tasks) for wave in waves] == [4, 3, 3]
    assert [(wave.first_shard, wave.num_shards) for wave in waves] == [(0, 3), (3, 2), (5, 2)]
    assert sorted(task.video_id for wave in waves for task in wave.tasks) == sorted(t.video_id for t in tasks)
    assert [task.video_id for task in waves[0].tasks] != ["v0", "v1", "v2", "v3"]  # shuffled: random samples
    assert pipeline.plan_waves(tasks, videos_per_run=4, num_shards=7) == waves  # the same every time
    # Each run gets at least one shard and at most one per video.
    assert [w.num_shards for w in pipeline.plan_waves(tasks, videos_per_run=4, num_shards=1)] == [1, 1, 1]
    assert [w.num_shards for w in pipeline.plan_waves(tasks[:3], videos_per_run=2, num_shards=9)] == [2, 1]
    (single,) = pipeline.plan_waves(tasks, videos_per_run=10, num_shards=2)
    assert single.tasks == tuple(tasks) and single.num_shards == 2  # one run: the order is kept


def test_default_videos_per_run_follows_the_features_held():
    spec = extractor_lib.ExtractionSpec((extractor_lib.ModalitySpec("rgb", "m.keras"),))  # max_frames 300
    youtube8m = pipeline.default_videos_per_run(spec, {"rgb": 1024, "audio": 128})
    # 300 frames x 1,152 floats x 4 bytes, held about 10 times: ~13.8 MB per video within the 2 GB budget.
    assert youtube8m == 2 * 10**9 // (300 * 1152 * 4 * 10) == 144
    assert pipeline.default_videos_per_run(spec, {"rgb": 50}) == 3333  # Flash-MNIST's 50-d features
    few_frames = extractor_lib.ExtractionSpec(spec.modalities, num_frames=30)
    assert pipeline.default_videos_per_run(few_frames, {"rgb": 1024, "audio": 128}) == 1446
    assert pipeline.default_videos_per_run(spec, {"rgb": 10**7}) == 16  # never fewer
    assert pipeline.runs_locally([]) and pipeline.runs_locally(["--runner=DirectRunner"])
    assert not pipeline.runs_locally(["--runner=DataflowRunner", "--project=p"])


_INTERRUPTED_EXTRACT = """
import sys
from ac_keras.extraction import pipeline
from tfrecords import extract, run_command

real_run_wave = pipeline._run_wave


def interrupted(spec, wave, *args):
    if wave.index == 1:
        raise KeyboardInterrupt  # as Ctrl-C between two runs
    return real_run_wave(spec, wave, *args)


pipeline._run_wave = interrupted
sys.argv = ["extract", *sys.argv[1:]]
run_command(extract.main, extract.define_flags)
"""


@pytest.mark.slow  # runs the command twice (Beam, TensorFlow start-up)
def test_runs_of_videos_resume_after_an_interruption_and_share_one_pca(tmp_path):
    """--videos_per_run: an interrupted extraction keeps its finished runs; the same command finishes it.
    Every run quantizes with the PCA the first one fitted, shards are numbered across runs, errors merged."""
    csv_path, rows = make_clips(tmp_path / "videos", per_class=2)
    videos.write_text_as_video(str(tmp_path / "videos" / "notes.mp4"))
    csv_path.write_text("\n".join([*rows, "notes.mp4,1"]) + "\n")
    models = tiny_models(tmp_path)
    output = tmp_path / "records"
    args = [
        f"--labels_csv={csv_path}",
        f"--output_dir={output}",
        "--modalities=rgb",
        f"--rgb_model={models['rgb']}",
        "--pca_dims=3",
        "--fps=2",
        "--num_shards=2",
        "--num_workers=1",
        "--videos_per_run=2",
        "--nostats",
    ]
    first = run_extract(*args, check=False, program=("-c", _INTERRUPTED_EXTRACT))
    assert first.returncode != 0
    progress = output / ".extract-progress"
    assert (progress / "run-00000.done.json").exists() and not (progress / "run-00001.done.json").exists()
    pca_file = output / "pca_rgb.npz"
    fitted = pca_file.read_bytes()

    # Other settings are refused, naming what differs (the command exits 2 with it, as for existing output).
    plan = json.loads((progress / "plan.json").read_text())
    with pytest.raises(FileExistsError, match=r"other settings \(differing: videos_per_run\).*--overwrite"):
        pipeline._Progress(str(output)).start({**plan, "videos_per_run": 3})

    second = run_extract(*args)
    assert "Run 1 of 3: done before, skipped" in second.stderr
    assert pca_file.read_bytes() == fitted  # fitted once, by the first run
    names = sorted(os.listdir(output))
    assert [name for name in names if name.endswith(".tfrecord")] == [
        f"train-0000{index}-of-00003.tfrecord" for index in range(3)
    ]
    assert not [name for name in names if name.startswith(".") or "tmp" in name]
    with open(output / "errors.csv") as handle:
        assert [row["video"] for row in csv.DictReader(handle)] == ["notes"]
    description = json.loads((output / "extraction.json").read_text())
    extractor = extractor_lib.Extractor.from_description(description)
    stored = _records(output)
    assert sorted(stored) == [f"clip{index}" for index in range(4)]
    for video_id, example in stored.items():
        frames = [f.bytes_list.value[0] for f in example.feature_lists.feature_list["rgb"].feature]
        expected = extractor.extract(str(tmp_path / "videos" / _file_of(video_id)))["rgb"]
        np.testing.assert_array_equal(np.stack([np.frombuffer(f, np.uint8) for f in frames]), expected)
