"""Decoding a long video a piece at a time: `Sampling(max_frames=None)`, `video.iter_audio` and
`Extractor.timed_*_inputs` give what the whole-file readers give."""

import numpy as np
import pytest

from ac_keras.extraction import audio, video
from ac_keras.extraction import extractor as extractor_lib
from ac_keras.testing import model_dirs, videos


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    root = tmp_path_factory.mktemp("streaming")
    return videos.encode_clip(str(root / "clip.mp4"), seconds=6.3, fps=5, size=(32, 24), audio_tone_hz=330.0)


def test_unbounded_sampling_reads_the_whole_video_as_a_long_bounded_one(clip):
    whole = video.read_frames(clip, video.Sampling(fps=2, max_frames=None))
    bounded = video.read_frames(clip, video.Sampling(fps=2, max_frames=1000))
    first = video.read_frames(clip, video.Sampling(fps=2, max_frames=4))
    np.testing.assert_array_equal(whole[0], bounded[0])
    np.testing.assert_array_equal(whole[1], bounded[1])
    assert len(whole[0]) == 13 and np.array_equal(first[1], whole[1][:4])
    np.testing.assert_allclose(whole[0], np.arange(13) / 2, atol=0.21)
    times = video.sample_times(video.Sampling(fps=2, max_frames=None), 6.3)
    np.testing.assert_array_equal(times, np.arange(13) / 2)
    with pytest.raises(ValueError, match="max_frames must be a positive int"):
        video.Sampling(max_frames=None, num_frames=4)
    with pytest.raises(ValueError, match="finite number of seconds"):
        video.sample_times(video.Sampling(max_frames=None), float("inf"))


def test_streamed_audio_and_patches_equal_the_whole_track(clip, tmp_path):
    pieces = list(video.iter_audio(clip))
    assert len(pieces) > 3
    np.testing.assert_array_equal(np.concatenate(pieces), video.read_audio(clip))
    silent = videos.encode_clip(str(tmp_path / "silent.mp4"), seconds=1, fps=5, size=(32, 24))
    assert list(video.iter_audio(silent)) == [None] and video.read_audio(silent) is None
    models = model_dirs.feature_models(tmp_path / "models")
    spec = extractor_lib.ExtractionSpec(modalities=(extractor_lib.ModalitySpec("audio", models["audio"]),))
    extractor = extractor_lib.Extractor(spec)
    whole = audio.log_mel_patches(video.read_audio(clip))
    for per_piece in (1, 2, 64):  # pieces end inside the track, or the track is one piece
        streamed = list(extractor.timed_audio_inputs(clip, patches_per_piece=per_piece))
        assert [index for index, _, _ in streamed] == list(range(len(whole)))
        assert [seconds for _, seconds, _ in streamed] == pytest.approx(np.arange(len(whole)) * 0.96)
        np.testing.assert_array_equal(np.stack([patch for _, _, patch in streamed]), whole)
    assert list(extractor.timed_audio_inputs(silent)) == []
