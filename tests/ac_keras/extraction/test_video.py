"""Tests of ac_keras.extraction.video on tiny clips written by ac_keras.testing.videos."""

import fractions
import math
import pickle

import av
import numpy as np
import pytest
import tensorflow as tf

from ac_keras.errors import DataError, MissingDataError
from ac_keras.extraction import video
from ac_keras.testing import videos

NTSC = fractions.Fraction(30000, 1001)
# (file name, codec, frame rate): containers, codecs and frame rates that are not multiples of 1 or 2 fps.
CLIPS = (
    ("h264.mp4", "libx264", NTSC),
    ("vp9.webm", "libvpx-vp9", 25),
    ("mpeg4.avi", "mpeg4", 7.5),
    ("mjpeg.mkv", "mjpeg", 10),
)
SECONDS = 3.5


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("clips")


@pytest.fixture(scope="module")
def clips(clip_dir):
    """File name -> (path, frame rate) of each clip of CLIPS, 3.5 s of the default colour per second."""
    return {
        name: (videos.encode_clip(str(clip_dir / name), seconds=SECONDS, fps=rate, codec=codec), float(rate))
        for name, codec, rate in CLIPS
    }


def assert_colours(frames, timestamps):
    """Each frame is the flat colour of the second it was shown in, channels in RGB order."""
    for frame, timestamp in zip(frames, timestamps, strict=True):
        expected = np.asarray(videos.colour_at(timestamp), np.float64)
        np.testing.assert_allclose(frame.reshape(-1, 3).mean(axis=0), expected, atol=12)


def assert_taken_at(timestamps, times, frame_rate):
    """Each timestamp is the first frame at or after its sample time: less than one frame interval later."""
    assert len(timestamps) == len(times)
    assert np.all(timestamps >= times - video.TIME_TOLERANCE)
    assert np.all(timestamps < times + 1 / frame_rate + video.TIME_TOLERANCE)


@pytest.mark.parametrize("name", [name for name, _, _ in CLIPS])
@pytest.mark.parametrize(("fps", "expected"), [(1.0, [0, 1, 2, 3]), (2.0, [0, 0.5, 1, 1.5, 2, 2.5, 3])])
def test_frames_at_fps(clips, name, fps, expected):
    path, frame_rate = clips[name]
    timestamps, frames = video.read_frames(path, video.Sampling(fps=fps))
    assert timestamps.dtype == np.float64
    assert frames.dtype == np.uint8 and frames.shape == (len(expected), 48, 64, 3)
    assert_taken_at(timestamps, np.asarray(expected, np.float64), frame_rate)
    assert_colours(frames, timestamps)


@pytest.mark.parametrize("name", [name for name, _, _ in CLIPS])
def test_num_frames_at_segment_centres(clips, name):
    path, frame_rate = clips[name]
    duration = video.probe(path).duration
    timestamps, frames = video.read_frames(path, video.Sampling(num_frames=5))
    centres = (2 * np.arange(5) + 1) * duration / 10
    assert frames.shape == (5, 48, 64, 3)
    # The frame shown at each centre: at most the tolerance after it, less than one frame interval before.
    assert np.all(timestamps <= centres + video.TIME_TOLERANCE)
    assert np.all(timestamps > centres - 1 / frame_rate - video.TIME_TOLERANCE)
    assert_colours(frames, timestamps)


def test_num_frames_equal_to_the_frame_count_takes_every_frame(tmp_path):
    path = videos.encode_clip(str(tmp_path / "25.mp4"), seconds=1.0, fps=25)
    timestamps, _ = video.read_frames(path, video.Sampling(num_frames=25))
    np.testing.assert_allclose(timestamps, np.arange(25) / 25, atol=1e-6)


def test_max_frames_caps_the_count(clips):
    path, _ = clips["h264.mp4"]
    timestamps, frames = video.read_frames(path, video.Sampling(fps=2, max_frames=3))
    assert len(frames) == 3
    assert_taken_at(timestamps, np.array([0, 0.5, 1.0]), float(NTSC))


def test_frame_rate_below_fps_takes_each_frame_once(tmp_path):
    # Frames at 0 s (red) and 2 s (blue), 4 s long: sample times 1 s and 3 s hold no frame of their own.
    path = videos.encode_clip(str(tmp_path / "slow.mp4"), seconds=4, fps=0.5)
    timestamps, frames = video.read_frames(path, video.Sampling(fps=1))
    np.testing.assert_allclose(timestamps, [0.0, 2.0])
    assert_colours(frames, timestamps)
    # Four segment centres (0.5, 1.5, 2.5, 3.5 s): the frame shown at 0.5 s is the one of 0 s (shown again
    # at 1.5 s, not taken twice), at 2.5 s the one of 2 s (again at 3.5 s).
    timestamps, _ = video.read_frames(path, video.Sampling(num_frames=4))
    np.testing.assert_allclose(timestamps, [0.0, 2.0])


def test_probe(clips, tmp_path):
    info = video.probe(clips["h264.mp4"][0])
    assert info.duration == pytest.approx(105 / float(NTSC))
    assert (info.width, info.height) == (64, 48)
    assert info.frame_rate == pytest.approx(float(NTSC))
    assert (info.video_codec, info.audio_codec, info.has_audio) == ("h264", None, False)
    path = videos.encode_clip(
        str(tmp_path / "tone.webm"),
        seconds=2,
        fps=25,
        codec="libvpx-vp9",
        audio_tone_hz=440,
        audio_codec="libopus",
    )
    info = video.probe(path)
    assert info.duration == pytest.approx(2.0)
    assert (info.video_codec, info.audio_codec, info.has_audio) == ("vp9", "opus", True)


def test_duration_found_by_reading_when_not_stated(tmp_path):
    path = videos.encode_clip(
        str(tmp_path / "live.webm"), seconds=3, fps=25, codec="libvpx-vp9", options={"live": "1"}
    )
    with av.open(path) as container:
        assert container.duration is None and container.streams.video[0].duration is None
    assert video.probe(path).duration == pytest.approx(3.0)
    timestamps, _ = video.read_frames(path, video.Sampling(num_frames=3))
    # Centres 0.5, 1.5, 2.5 s fall between frames (k / 25 s): the frames shown then are 0.48, 1.48, 2.48 s.
    np.testing.assert_allclose(timestamps, [0.48, 1.48, 2.48], atol=1e-3)


def test_sample_times():
    np.testing.assert_allclose(video.sample_times(video.Sampling(), 3.5), [0, 1, 2, 3])
    np.testing.assert_allclose(video.sample_times(video.Sampling(), 3.0), [0, 1, 2])
    np.testing.assert_allclose(video.sample_times(video.Sampling(fps=2, max_frames=3), 10), [0, 0.5, 1])
    assert len(video.sample_times(video.Sampling(), math.inf)) == 300
    assert len(video.sample_times(video.Sampling(), 0.0)) == 0
    centres = video.sample_times(video.Sampling(fps=5, max_frames=1, num_frames=4), 8.0)
    np.testing.assert_allclose(centres, [1, 3, 5, 7])
    assert centres.dtype == np.float64
    for duration in (-1.0, math.nan):
        with pytest.raises(ValueError, match="duration"):
            video.sample_times(video.Sampling(), duration)
    with pytest.raises(ValueError, match="duration"):
        video.sample_times(video.Sampling(num_frames=3), math.inf)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"fps": 0}, "fps"),
        ({"fps": -1.0}, "fps"),
        ({"fps": math.inf}, "fps"),
        ({"fps": True}, "fps"),
        ({"max_frames": 0}, "max_frames"),
        ({"max_frames": 2.5}, "max_frames"),
        ({"num_frames": 0}, "num_frames"),
    ],
)
def test_sampling_validation(kwargs, field):
    with pytest.raises(ValueError, match=f"Sampling {field}"):
        video.Sampling(**kwargs)


def test_iter_frames_is_lazy(clips, tmp_path):
    frames = video.iter_frames(str(tmp_path / "missing.mp4"), video.Sampling())
    with pytest.raises(video.VideoError):
        next(frames)
    frames = video.iter_frames(clips["h264.mp4"][0], video.Sampling(fps=10))
    timestamp, frame = next(frames)
    assert timestamp == 0.0 and frame.shape == (48, 64, 3)
    frames.close()


def test_resize_while_converting(clips):
    timestamps, frames = video.read_frames(clips["vp9.webm"][0], video.Sampling(), size=(24, 32))
    assert frames.shape == (4, 24, 32, 3)
    assert_colours(frames, timestamps)
    with pytest.raises(ValueError, match="size"):
        video.iter_frames(clips["vp9.webm"][0], video.Sampling(), size=(24,))


def test_reads_through_gfile(clips):
    path = clips["h264.mp4"][0]
    remote = "ram://test_video/h264.mp4"
    tf.io.gfile.copy(path, remote, overwrite=True)
    local_times, local_frames = video.read_frames(path, video.Sampling())
    remote_times, remote_frames = video.read_frames(remote, video.Sampling())
    np.testing.assert_array_equal(remote_times, local_times)
    np.testing.assert_array_equal(remote_frames, local_frames)
    assert video.probe(remote).duration == video.probe(path).duration


@pytest.mark.parametrize(
    ("container", "codec", "sample_rate", "tone_hz"),
    [("mp4", "aac", 44100, 1000.0), ("webm", "libopus", 48000, 440.0)],
)
def test_read_audio_tone(tmp_path, container, codec, sample_rate, tone_hz):
    path = videos.encode_clip(
        str(tmp_path / f"tone.{container}"),
        seconds=2,
        fps=25,
        codec="libx264" if container == "mp4" else "libvpx-vp9",
        audio_tone_hz=tone_hz,
        audio_codec=codec,
        sample_rate=sample_rate,
    )
    waveform = video.read_audio(path)
    assert waveform.dtype == np.float32 and waveform.ndim == 1
    assert len(waveform) == pytest.approx(2 * video.AUDIO_SAMPLE_RATE, rel=0.03)
    assert np.abs(waveform).max() <= 1.0
    spectrum = np.abs(np.fft.rfft(waveform))
    dominant_hz = np.argmax(spectrum) * video.AUDIO_SAMPLE_RATE / len(waveform)
    assert dominant_hz == pytest.approx(tone_hz, abs=3)
    middle = waveform[len(waveform) // 4 : -len(waveform) // 4]
    assert np.abs(middle).max() == pytest.approx(videos.TONE_AMPLITUDE, abs=0.05)


def test_read_audio_none_without_audio_stream(clips):
    assert video.read_audio(clips["h264.mp4"][0]) is None


def test_read_audio_of_audio_only_file(tmp_path):
    path = videos.encode_audio_only(str(tmp_path / "tone.m4a"), seconds=1, tone_hz=440)
    waveform = video.read_audio(path, sample_rate=8000)
    assert len(waveform) == pytest.approx(8000, rel=0.03)


def test_read_audio_mixes_channels_by_their_mean(tmp_path):
    path = str(tmp_path / "left.wav")
    left_only = np.zeros((1, 2 * 16000), np.int16)
    left_only[0, 0::2] = 16384  # packed stereo: left at half of full scale, right silent
    with av.open(path, "w") as output:
        stream = output.add_stream("pcm_s16le", rate=16000)
        stream.layout = "stereo"
        frame = av.AudioFrame.from_ndarray(left_only, format="s16", layout="stereo")
        frame.sample_rate, frame.pts = 16000, 0
        output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    np.testing.assert_allclose(video.read_audio(path), 0.25)


def _truncated(directory, name, **clip):
    source = videos.encode_clip(str(directory / f"source_{name}"), seconds=3, fps=25, **clip)
    return videos.write_truncated(source, str(directory / name))


BAD_FILES = {
    "zero_bytes": (lambda directory: videos.write_zero_bytes(str(directory / "empty.mp4")), "zero bytes"),
    "text": (
        lambda directory: videos.write_text_as_video(str(directory / "text.mp4")),
        "cannot open it as a media file",
    ),
    # An MP4 keeps its index (moov) at the end: its first half cannot be opened.
    "truncated_mp4": (lambda directory: _truncated(directory, "half.mp4"), "expected a complete video file"),
    # With the index first ("faststart", as served for streaming), the frames run out part way.
    "truncated_faststart_mp4": (
        lambda directory: _truncated(directory, "half.mp4", options={"movflags": "faststart"}),
        "",
    ),
    "truncated_webm": (lambda directory: _truncated(directory, "half.webm", codec="libvpx-vp9"), "truncated"),
    "audio_only": (
        lambda directory: videos.encode_audio_only(str(directory / "tone.m4a"), seconds=1),
        "no video stream",
    ),
    "unknown_codec": (
        lambda directory: videos.encode_unknown_codec(str(directory / "zzzz.avi")),
        "no decoder",
    ),
}
BAD_FILE_KINDS = {
    "zero_bytes": "zero_bytes",
    "text": "unreadable",
    "truncated_mp4": "unreadable",
    "truncated_faststart_mp4": "corrupt",
    "truncated_webm": "corrupt",
    "audio_only": "no_video_stream",
    "unknown_codec": "unsupported_codec",
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_files_raise_video_error(tmp_path, case):
    make, words = BAD_FILES[case]
    path = make(tmp_path)
    with pytest.raises(video.VideoError) as caught:
        video.read_frames(path, video.Sampling())
    error = caught.value
    assert (error.kind, error.path) == (BAD_FILE_KINDS[case], path)
    assert str(error).startswith(f"Video {path}: ")
    assert words in str(error)
    assert isinstance(error, DataError)


@pytest.mark.parametrize(
    "read", [video.probe, video.read_audio, lambda path: video.read_frames(path, video.Sampling())]
)
def test_missing_file(tmp_path, read):
    path = str(tmp_path / "missing.mp4")
    with pytest.raises(MissingDataError, match="missing.mp4: no such file") as caught:
        read(path)
    assert isinstance(caught.value, video.VideoError) and caught.value.kind == "unreadable"
    assert isinstance(caught.value, FileNotFoundError)


def test_video_error_pickles_and_checks_its_kind():
    error = pickle.loads(pickle.dumps(video.VideoError("a.mp4", "corrupt", "bad")))
    assert (type(error), error.path, error.kind, error.detail, str(error)) == (
        video.VideoError,
        "a.mp4",
        "corrupt",
        "bad",
        "Video a.mp4: bad",
    )
    assert type(pickle.loads(pickle.dumps(video.MissingVideoError("a.mp4")))) is video.MissingVideoError
    with pytest.raises(ValueError, match="kind"):
        video.VideoError("a.mp4", "broken", "bad")
