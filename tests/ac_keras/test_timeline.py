"""`python -m ac_keras.classify VIDEO --window_seconds=S`: a timeline of each video (`ac_keras.timeline`)."""

import dataclasses
import json

import numpy as np
import pytest
from absl import app, flags
from absl.testing import flagsaver

from ac_keras import classify, timeline
from ac_keras.errors import UsageError
from ac_keras.extraction import audio, video
from ac_keras.extraction import extractor as extractor_lib
from ac_keras.testing import model_dirs, videos

FPS = 2.0


def _picture(t):
    rows, cols = np.mgrid[0:32, 0:48]
    return np.repeat(((cols + int(8 * t)) % 16 * 16 + rows)[..., None], 3, axis=2).astype(np.uint8)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A model_dir (rgb at 2 frames a second, at most 6 for the whole video, batches of 4; audio), a clip of
    9.5 s with sound, one of 4 s without, and a file that is not a video."""
    root = tmp_path_factory.mktemp("timeline")
    model_dir = model_dirs.classify_model_dir(
        root / "model", fps=FPS, max_frames=6, batch_size=4, num_classes=3, eval_frames=3
    )
    clips = {
        "sound": videos.encode_clip(
            str(root / "sound.mp4"), seconds=9.5, fps=6, size=(48, 32), audio_tone_hz=440.0, frame_fn=_picture
        ),
        "silent": videos.encode_clip(
            str(root / "silent.mp4"), seconds=4.0, fps=4, size=(48, 32), frame_fn=_picture
        ),
        "broken": videos.write_text_as_video(str(root / "broken.mp4")),
    }
    return {"root": root, "model_dir": model_dir, "clips": clips}


def _main(*args):
    with flagsaver.flagsaver():
        return classify.main(flags.FLAGS(["classify", *args]))


def _reference_windows(classifier, path, window_seconds, stride):
    """The windows from every feature of the video extracted at once, cut by their times."""
    spec = dataclasses.replace(classifier.extractor.spec, max_frames=10_000)
    features = extractor_lib.Extractor(spec).extract(path)
    times = {"rgb": video.read_frames(path, video.Sampling(fps=FPS, max_frames=None))[0]}
    periods = {"rgb": 1 / FPS}
    if "audio" in features:
        times["audio"] = np.arange(len(features["audio"])) * audio.PATCH_SECONDS
        periods["audio"] = audio.PATCH_SECONDS
    end_of_video = max(times[name][-1] + periods[name] for name in times)
    expected = []
    start = 0.0
    index = 0
    while start < end_of_video - video.TIME_TOLERANCE:
        end = min(start + window_seconds, end_of_video)
        inside = {
            name: features[name][
                (times[name] + video.TIME_TOLERANCE >= start)
                & (times[name] + video.TIME_TOLERANCE < start + window_seconds)
            ]
            for name in times
        }
        expected.append((start, end, {name: values for name, values in inside.items() if len(values)}))
        index += 1
        start = index * stride
    scores = classifier.probabilities([window for _, _, window in expected])
    return [(start, end, row) for (start, end, _), row in zip(expected, scores, strict=True)]


@pytest.mark.slow  # trains or runs a command in-process for seconds (the fast tier skips it)
def test_windows_and_whole_video_equal_the_features_cut_by_time(run, tmp_path, capsys):
    output = tmp_path / "out.json"
    picture = tmp_path / "timeline.png"
    paths = [run["clips"]["sound"], run["clips"]["silent"], run["clips"]["broken"]]
    status = _main(
        *paths,
        f"--model_dir={run['model_dir']}",
        "--window_seconds=2",
        "--window_stride=1.5",
        f"--output_json={output}",
        f"--timeline_png={picture}",
    )
    assert status == 1  # the broken file
    printed = capsys.readouterr().out
    results = json.loads(output.read_text())
    classifier = classify.Classifier.load(model_dir=run["model_dir"])
    without_timeline = classifier.classify(paths[:2])
    for result, plain in zip(results[:2], without_timeline, strict=True):
        # The whole video as classify gives it without a timeline (the same features, the same batches).
        assert result["classes"] == list(plain.classes)
        assert result["scores"] == pytest.approx(list(plain.scores), abs=1e-6)
        expected = _reference_windows(classifier, result["video"], 2.0, 1.5)
        bounds = [value for window in result["windows"] for value in (window["start"], window["end"])]
        assert bounds == pytest.approx([float(value) for start, end, _ in expected for value in (start, end)])
        for window, (_, _, scores) in zip(result["windows"], expected, strict=True):
            assert window["scores"] == pytest.approx(list(scores[window["classes"]]), abs=1e-5)
            assert window["scores"] == sorted(window["scores"], reverse=True) and len(window["classes"]) == 3
    assert len(results[0]["windows"]) == 7 and results[0]["windows"][-1]["end"] == pytest.approx(9.5)
    assert "error" in results[2] and "broken.mp4" in results[2]["error"]
    assert "  timeline (7 windows):\n       0.00 -      2.00 s  " in printed
    assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # trains or runs a command in-process for seconds (the fast tier skips it)
def test_memory_holds_a_window_not_the_video(run, tmp_path, monkeypatch):
    """The features held at once stay at a window's and a batch's, on a video 30 times the window."""
    path = videos.encode_clip(
        str(tmp_path / "long.mp4"), seconds=60, fps=2, size=(48, 32), audio_tone_hz=300.0, frame_fn=_picture
    )
    held = {}
    add = timeline._Stream.add

    def counting_add(self, seconds, model_input):
        add(self, seconds, model_input)
        held[self.name] = max(held.get(self.name, 0), len(self.pending) + len(self.ready) + len(self.whole))

    monkeypatch.setattr(timeline._Stream, "add", counting_add)
    classifier = classify.Classifier.load(model_dir=run["model_dir"])
    result = classifier.classify_timeline(path, 2.0)
    assert len(result.timeline.windows) == 30
    # rgb: 4 frames a window, a batch of 4 ahead, the whole-video set of 6: never the video's 120 frames.
    assert held["rgb"] <= 4 + 4 + 6 + 2, held
    assert held["audio"] <= 3 + 4 + 6 + 2, held


def test_timeline_flags_are_checked(run, tmp_path):
    clip = run["clips"]["silent"]
    with pytest.raises(app.UsageError, match="--window_stride: needs --window_seconds"):
        _main(clip, f"--model_dir={run['model_dir']}", "--window_stride=2")
    with pytest.raises(app.UsageError, match="--window_seconds: must be > 0"):
        _main(clip, f"--model_dir={run['model_dir']}", "--window_seconds=0")
    existing = tmp_path / "t.png"
    existing.write_bytes(b"mine")
    with pytest.raises(app.UsageError, match="--timeline_png: .*t.png exists; pass --overwrite"):
        _main(clip, f"--model_dir={run['model_dir']}", "--window_seconds=2", f"--timeline_png={existing}")
    by_count = model_dirs.classify_model_dir(
        tmp_path / "by_count", modalities=("rgb",), num_frames=8, num_classes=3
    )
    with pytest.raises(UsageError, match="--window_seconds: .*num_frames=8 .* by rate"):
        _main(clip, f"--model_dir={by_count}", "--window_seconds=2")
