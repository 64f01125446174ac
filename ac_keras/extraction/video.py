"""Decoding video files with PyAV: frames sampled by presentation time, the audio track, and `VideoError`.

Frames are sampled at times measured in seconds from the start of the video stream (its `start_time`, or its
first frame's presentation time where the container gives none), in one of two ways (`Sampling`):
- `fps` (YouTube-8M): the times `k / fps` for `k = 0, 1, ...`, at most `max_frames` of them (1 per second,
  at most 300, by default);
- `num_frames=K` (the paper's Kinetics protocol): the centres `(2k + 1) * duration / (2K)` of K equal
  segments of the video, `k = 0 .. K-1`, the times at which the reader's evaluation sampling also looks.

With `fps`, the frame taken for a sample time `t` is the first decoded frame, in presentation order, whose
time is at least `t - TIME_TOLERANCE`, provided it comes before the next sample time (less the same
tolerance); the timestamps returned lie at or after the sample times, by less than one frame interval when
the frame rate is steady. With `num_frames`, it is the frame shown at `t`: the last one whose time is at
most `t + TIME_TOLERANCE` (so a 25-frame clip sampled with `num_frames=25` gives all its 25 frames, the
first included). Either way no frame is taken twice: a sample time without a frame of its own takes none,
so a video with fewer frames than sample times (a 0.5 fps video sampled at `fps=1`, a 2-second clip at
25 fps sampled with `num_frames=64`) gives fewer frames than sample times (a 0.5 fps video at `fps=1` gives
its frames at 0, 2, 4, ... s).

This matches the released YouTube-8M extractor (OpenCV; the first frame, then the first frame whose time is
at least the last one taken + 1 s) but for one thing: here the sample times are fixed in advance, where the
extractor counts each second from the frame it last took, so at frame rates such as 29.97 its frames drift
later (by one frame interval about every 33 s) while these stay on the grid.

Files are opened through `tf.io.gfile`, so `gs://` and any other filesystem TensorFlow knows work: a local
path is opened by FFmpeg directly, any other is read as a `tf.io.gfile.GFile`. Whatever is wrong with a file
raises a `VideoError` with a `kind` from `ERROR_KINDS`; a video stream whose frames end well before the
duration its header states (a truncated download) is "corrupt".
"""

import contextlib
import dataclasses
import itertools
import math
import re
from collections.abc import Iterator

import av
import numpy as np
import tensorflow as tf

from ac_keras.errors import DataError, MissingDataError

ERROR_KINDS = ("zero_bytes", "unreadable", "corrupt", "no_video_stream", "no_frames", "unsupported_codec")
# Seconds by which a frame may come before a sample time and still be taken for it: presentation times are
# rounded to the stream's time base (1/1000 s in Matroska/WebM), so a frame meant for 1.0 s may say 0.9995 s.
TIME_TOLERANCE = 1e-3
AUDIO_SAMPLE_RATE = 16000
# A video stream that decodes to an end earlier than its header states by more than this many seconds (or
# this fraction of the stated duration, whichever is more) is taken for a truncated file.
TRUNCATION_SECONDS = 0.5
TRUNCATION_FRACTION = 0.02
_MATROSKA_DURATION = re.compile(r"(\d+):(\d{2}):(\d{2}(?:\.\d+)?)")


class VideoError(DataError):
    """A video file cannot give what was asked of it; `kind` says why, for counting and reports.

    Args:
        path: str, the file.
        kind: str, one of `ERROR_KINDS`:
            "zero_bytes": the file is empty;
            "unreadable": it does not exist, cannot be read, or FFmpeg cannot open it (not a media file, or
                one cut short before its index, as an MP4 whose "moov" box comes last);
            "corrupt": the container opened but its data failed to decode, or its frames end well before
                the duration its header states (cut short);
            "no_video_stream": it holds no video stream (an audio file, say);
            "no_frames": its video stream decoded to no frame, or none at the sample times;
            "unsupported_codec": FFmpeg has no decoder for its codec.
        detail: str, what was found and what was expected, for the message.

    Attributes:
        path, kind, detail: as given. `str(error)` is "Video <path>: <detail>".
    """

    def __init__(self, path: str, kind: str, detail: str):
        if kind not in ERROR_KINDS:
            raise ValueError(f"VideoError kind must be one of {ERROR_KINDS}, got {kind!r}.")
        self.path = path
        self.kind = kind
        self.detail = detail
        super().__init__(f"Video {path}: {detail}")

    def __reduce__(self):
        # Exceptions pickle as `cls(*args)`; ours take three arguments (Beam pickles errors across workers).
        return type(self), (self.path, self.kind, self.detail)


class MissingVideoError(VideoError, MissingDataError):
    """A video file that does not exist: a `VideoError` of kind "unreadable" and a `FileNotFoundError`."""

    def __init__(self, path: str, kind: str = "unreadable", detail: str = "no such file"):
        super().__init__(path, kind, detail)


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Which frames to take from a video: by rate (YouTube-8M) or a fixed number at equal intervals.

    Args:
        fps: float, sample times per second of video. Defaults to 1.0 (YouTube-8M).
        max_frames: int, at most this many frames at `fps`; None: every sample time of the whole video (a
            timeline of a long video; `iter_frames` then decodes to the end). Defaults to 300 (YouTube-8M).
        num_frames: int or None, take this many frames at the centres of equal segments of the whole video
            instead (the paper's Kinetics protocol); `fps` and `max_frames` are then unused. Defaults to None.

    Raises:
        ValueError: naming the argument that is not positive (or not finite, or not an int).
    """

    fps: float = 1.0
    max_frames: int | None = 300
    num_frames: int | None = None

    def __post_init__(self):
        if (
            isinstance(self.fps, bool)
            or not isinstance(self.fps, int | float | np.integer | np.floating)
            or not 0 < self.fps < math.inf
        ):
            raise ValueError(f"Sampling fps must be a positive finite number, got {self.fps!r}.")
        if not (_is_positive_int(self.max_frames) or (self.max_frames is None and self.num_frames is None)):
            raise ValueError(
                "Sampling max_frames must be a positive int (or None without num_frames), got "
                f"{self.max_frames!r}."
            )
        if self.num_frames is not None and not _is_positive_int(self.num_frames):
            raise ValueError(f"Sampling num_frames must be a positive int or None, got {self.num_frames!r}.")


def _is_positive_int(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | np.integer) and value > 0


def sample_times(sampling: Sampling, duration: float) -> np.ndarray:
    """The times at which `sampling` looks for frames in a video of `duration` seconds.

    Args:
        sampling: a `Sampling`.
        duration: float >= 0, seconds (`math.inf` in fps mode gives `max_frames` times).

    Returns:
        float64 array of seconds from the start of the stream, increasing: in fps mode `k / fps` for every
        `k >= 0` with `k / fps < duration`, at most `max_frames`; with `num_frames=K`, the K times
        `(2k + 1) * duration / (2K)` (finite `duration` only).

    Raises:
        ValueError: `duration` is negative or NaN, or infinite with `num_frames` or `max_frames=None`.
    """
    unbounded = sampling.num_frames is not None or sampling.max_frames is None
    if not duration >= 0 or (unbounded and math.isinf(duration)):
        raise ValueError(f"duration must be a finite number of seconds >= 0, got {duration!r}.")
    if sampling.num_frames is not None:
        count = sampling.num_frames
        return (2 * np.arange(count, dtype=np.float64) + 1) * duration / (2 * count)
    count = sampling.max_frames if sampling.max_frames is not None else math.ceil(duration * sampling.fps) + 1
    times = np.arange(count, dtype=np.float64) / sampling.fps
    return times[times < duration]


@dataclasses.dataclass(frozen=True)
class VideoInfo:
    """What `probe` found in a video file.

    Attributes:
        path: str, the file.
        duration: float, seconds of the video stream (see `probe`).
        width: int, pixels, as coded (sample aspect ratio and rotation metadata are not applied).
        height: int, pixels.
        frame_rate: float or None, the stream's average frame rate, None when the container gives none.
        video_codec: str, FFmpeg's name of the video decoder, e.g. "h264".
        audio_codec: str or None, the decoder of the first audio stream; None when there is none, or when
            FFmpeg has no decoder for it.
        has_audio: bool, whether the file has an audio stream.
    """

    path: str
    duration: float
    width: int
    height: int
    frame_rate: float | None
    video_codec: str
    audio_codec: str | None
    has_audio: bool


def probe(path: str) -> VideoInfo:
    """Reads a video file's header: its duration, size, frame rate and codecs.

    The duration is the one the header states for the video stream (Matroska and WebM: its "DURATION" tag),
    else the container's (from the stream's start to the end of the longest stream). When none is stated
    (WebM or Matroska written live, for instance), the whole file is read, without decoding, for the end of
    the last video packet.

    Args:
        path: str, a local path or any URL `tf.io.gfile` reads (`gs://...`).

    Returns:
        A `VideoInfo`.

    Raises:
        VideoError: kind "zero_bytes", "unreadable", "no_video_stream" or "unsupported_codec"
            (`MissingVideoError` when the file does not exist); when the whole file is read for the
            duration, "corrupt" if it fails part way and "no_frames" if no video packet has a time.
    """
    with _opened(path) as container:
        stream = _video_stream(container, path)
        duration = _stored_duration(container, stream)
        audio = container.streams.audio[0] if container.streams.audio else None
        info = dict(
            width=stream.codec_context.width,
            height=stream.codec_context.height,
            frame_rate=float(stream.average_rate) if stream.average_rate else None,
            video_codec=stream.codec_context.name,
            audio_codec=audio.codec_context.name if audio is not None and audio.codec_context else None,
            has_audio=audio is not None,
        )
    if duration is None:
        duration = _demuxed_duration(path)
    return VideoInfo(path=path, duration=duration, **info)


def iter_frames(
    path: str, sampling: Sampling, *, size: tuple[int, int] | None = None
) -> Iterator[tuple[float, np.ndarray]]:
    """Decodes a video and yields its frames at the sample times of `sampling` (see the module docstring).

    Frames are decoded one at a time and converted as they are taken, so memory holds one frame whatever
    the length of the video; decoding stops once the last sample time has its frame (after `max_frames`
    seconds at `fps=1`, so at most the first 300 s are decoded by default; with `max_frames=None` the whole
    video). Nothing is read before the first `next()`; closing the iterator early closes the file.

    Args:
        path: str, a local path or any URL `tf.io.gfile` reads (`gs://...`).
        sampling: a `Sampling`. With `num_frames` the duration is needed first (see `probe`).
        size: (height, width) to resize each frame to while converting it (FFmpeg's swscale, bilinear),
            or None to keep the coded size. Defaults to None.

    Yields:
        (timestamp, frame): float seconds from the start of the stream, of the frame taken; uint8 array
        (height, width, 3), RGB.

    Raises:
        VideoError: of any kind (see `VideoError`): "no_frames" when the video stream decodes to no frame
            at all; "corrupt" when decoding fails part way, or when the stream runs to its end more than
            `max(TRUNCATION_SECONDS, TRUNCATION_FRACTION * duration)` before the duration its header states
            (both after the frames before were yielded). The file is checked on the first `next()`.
        ValueError: `size` is not two positive ints (at the call, before anything is read).
    """
    return _iter_frames(path, sampling, _check_size(size))


def _iter_frames(path, sampling, size):
    if sampling.num_frames is not None:
        times = _SampleTimes(sample_times(sampling, probe(path).duration))
    else:  # computed as they are needed: with max_frames=None there is no last one
        times = _SampleTimes(None, fps=sampling.fps, count=sampling.max_frames)
    # The frame for times[k] must come before times[k + 1] (less the tolerance); the last has no end.
    ends = times.ends
    with _opened(path) as container:
        stream = _video_stream(container, path)
        stream.codec_context.thread_type = "AUTO"
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else None
        period = 1 / float(stream.average_rate) if stream.average_rate else 0.0
        index = 0
        previous = None
        shown = None  # num_frames: the latest frame at or before times[index], not yet taken
        for frame in _decode(container, stream, path):
            if frame.pts is not None:
                absolute = float(frame.pts * frame.time_base)
            else:
                absolute = (previous + period) if previous is not None else (origin or 0.0)
            previous = absolute
            if origin is None:
                origin = absolute
            timestamp = absolute - origin
            if sampling.num_frames is not None:
                # The frame shown at each centre: the last one at or before it, each frame at most once.
                while timestamp > times[index] + TIME_TOLERANCE:
                    if shown is not None:
                        yield shown[0], _to_rgb(shown[1], size)
                        shown = None
                    index += 1
                    if index == times.count:
                        return
                shown = (timestamp, frame)
                continue
            # Sample times whose interval holds no frame take none (ends[-1] is infinite: index stays valid).
            while timestamp >= ends[index]:
                index += 1
            if timestamp >= times[index] - TIME_TOLERANCE:
                yield timestamp, _to_rgb(frame, size)
                index += 1
                if index == times.count:
                    return
        if previous is None:
            raise VideoError(path, "no_frames", "its video stream decoded to no frame")
        _check_complete(path, stream, previous - origin + period)
        if shown is not None:
            yield shown[0], _to_rgb(shown[1], size)


class _SampleTimes:
    """The sample times `times[k]` and their ends `ends[k]` (the next time less the tolerance; the last one
    infinite), from an array, or `k / fps` computed as asked for (`count` of them, None: no end), the same
    float64 values `sample_times` gives."""

    def __init__(self, times, *, fps=None, count=None):
        self._times = times
        self._fps = fps
        self.count = len(times) if times is not None else count
        self.ends = _SampleEnds(self)

    def __getitem__(self, index):
        if self._times is not None:
            return float(self._times[index])
        return index / self._fps


class _SampleEnds:
    def __init__(self, times):
        self._times = times

    def __getitem__(self, index):
        if self._times.count is not None and index + 1 >= self._times.count:
            return math.inf
        return self._times[index + 1] - TIME_TOLERANCE


def read_frames(
    path: str, sampling: Sampling, *, size: tuple[int, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """All the frames `iter_frames` yields, stacked.

    Args:
        path: str, a local path or any URL `tf.io.gfile` reads.
        sampling: a `Sampling`.
        size: (height, width) to resize to, or None. Defaults to None.

    Returns:
        (timestamps, frames): float64 (T,) seconds from the start of the stream; uint8 (T, H, W, 3) RGB,
        with T >= 1.

    Raises:
        VideoError: as `iter_frames`, and "no_frames" when no frame falls at the sample times.
    """
    timestamps, frames = [], []
    for timestamp, frame in iter_frames(path, sampling, size=size):
        timestamps.append(timestamp)
        frames.append(frame)
    if not frames:
        raise VideoError(path, "no_frames", f"no frame decoded at the sample times of {sampling}")
    return np.asarray(timestamps, np.float64), np.stack(frames)


def read_audio(path: str, sample_rate: int = AUDIO_SAMPLE_RATE) -> np.ndarray | None:
    """Decodes the first audio stream as a mono waveform at `sample_rate` (16 kHz for VGGish).

    The whole track is decoded and held in memory (4 bytes a sample: under 4 MB a minute at 16 kHz).
    FFmpeg's swresample resamples each channel, and the mono waveform is their mean, as in VGGish's
    `waveform_to_examples`.

    Args:
        path: str, a local path or any URL `tf.io.gfile` reads; a file without a video stream is fine.
        sample_rate: int, the output rate in Hz. Defaults to 16000.

    Returns:
        float32 (samples,) in [-1, 1] from the first decoded sample, or None when the file has no audio
        stream (not an error).

    Raises:
        VideoError: kind "zero_bytes" or "unreadable" as for video; "unsupported_codec" when FFmpeg has no
            decoder for the audio; "corrupt" when decoding fails.
    """
    chunks = iter_audio(path, sample_rate)
    first = next(chunks)
    if first is None:
        return None
    chunks = [first, *chunks]
    if not any(len(chunk) for chunk in chunks):
        return np.zeros((0,), np.float32)
    return np.concatenate(chunks)


def iter_audio(path: str, sample_rate: int = AUDIO_SAMPLE_RATE) -> Iterator[np.ndarray | None]:
    """`read_audio` one decoded piece at a time (memory: a piece, whatever the length of the track).

    The first item is None when the file has no audio stream (and the only one); otherwise the items are
    float32 `(samples,)` pieces in [-1, 1] whose concatenation is what `read_audio` returns (the first piece
    may be empty). The file is checked on the first `next()`.

    Args:
        path: str, a local path or any URL `tf.io.gfile` reads.
        sample_rate: int, the output rate in Hz. Defaults to 16000.

    Raises:
        VideoError: as `read_audio`, when the piece that fails is reached.
    """
    if not _is_positive_int(sample_rate):
        raise ValueError(f"sample_rate must be a positive int, got {sample_rate!r}.")
    return _iter_audio(path, sample_rate)


def _iter_audio(path, sample_rate):
    with _opened(path) as container:
        if not container.streams.audio:
            yield None
            return
        stream = container.streams.audio[0]
        if stream.codec_context is None:
            raise VideoError(path, "unsupported_codec", "FFmpeg has no decoder for its audio codec")
        # Planar float at the new rate, channels kept: their mean is VGGish's mono mix (swresample's own
        # mono mix weighs each side of a stereo pair by 1/sqrt(2), not 1/2).
        resampler = av.AudioResampler(format="fltp", rate=sample_rate)
        yield np.zeros((0,), np.float32)
        try:
            for frame in itertools.chain(_decode(container, stream, path), [None]):
                for resampled in resampler.resample(frame):
                    mono = resampled.to_ndarray().mean(axis=0)
                    yield np.clip(mono, -1.0, 1.0).astype(np.float32, copy=False)
        except VideoError:
            raise
        except (ValueError, av.error.FFmpegError) as error:
            # PyAV's resampler refuses frames whose format, layout or rate differ from the first frame's.
            raise VideoError(path, "corrupt", f"its audio failed to resample ({error})") from error


def _check_size(size):
    if size is None:
        return None
    if (
        not isinstance(size, tuple | list)
        or len(size) != 2
        or not all(_is_positive_int(value) for value in size)
    ):
        raise ValueError(f"size must be (height, width) in positive ints, or None; got {size!r}.")
    return int(size[0]), int(size[1])


def _to_rgb(frame, size) -> np.ndarray:
    # One swscale thread: for the small frames of a sampled video, its thread pool costs more than it saves.
    if size is None:
        return frame.reformat(format="rgb24", threads=1).to_ndarray()
    height, width = size
    return frame.reformat(format="rgb24", width=width, height=height, threads=1).to_ndarray()


def _is_local(path: str) -> bool:
    return "://" not in path


@contextlib.contextmanager
def _opened(path: str):
    """Opens `path` as an input container, raising `VideoError` for a missing, empty or unreadable file."""
    try:
        stat = tf.io.gfile.stat(path)
    except tf.errors.NotFoundError:
        raise MissingVideoError(path) from None
    except tf.errors.OpError as error:
        raise VideoError(path, "unreadable", f"cannot be read ({error.message})") from error
    if stat.is_directory:
        raise VideoError(path, "unreadable", "is a directory, expected a video file")
    if stat.length == 0:
        raise VideoError(path, "zero_bytes", "zero bytes (an empty file, expected a video)")
    with contextlib.ExitStack() as stack:
        source = path if _is_local(path) else stack.enter_context(tf.io.gfile.GFile(path, "rb"))
        try:
            container = av.open(source, mode="r")
        except (av.error.FFmpegError, tf.errors.OpError, OSError) as error:
            raise VideoError(
                path,
                "unreadable",
                f"FFmpeg cannot open it as a media file ({_reason(error)}); expected a complete video file",
            ) from error
        stack.enter_context(container)
        yield container


def _reason(error) -> str:
    """The short reason of a PyAV or TensorFlow error, without the file name FFmpeg repeats."""
    if isinstance(error, av.error.FFmpegError) and error.strerror:
        return error.strerror
    if isinstance(error, tf.errors.OpError):
        return error.message
    return str(error)


def _video_stream(container, path: str):
    """The first video stream that is not a cover picture, with a decoder; raises `VideoError` otherwise."""
    streams = [
        stream
        for stream in container.streams.video
        if not stream.disposition & av.stream.Disposition.attached_pic
    ]
    if not streams:
        found = ", ".join(sorted({stream.type for stream in container.streams})) or "no stream"
        raise VideoError(path, "no_video_stream", f"no video stream (found {found}), expected a video")
    stream = streams[0]
    if stream.codec_context is None:
        raise VideoError(path, "unsupported_codec", "FFmpeg has no decoder for its video codec")
    return stream


def _decode(container, stream, path: str):
    """Decodes `stream`'s frames in presentation order; a decoding failure raises `VideoError("corrupt")`."""
    try:
        yield from container.decode(stream)
    except av.error.FFmpegError as error:
        raise VideoError(path, "corrupt", f"its {stream.type} failed to decode ({_reason(error)})") from error


def _stated_stream_duration(stream) -> float | None:
    """Seconds of the stream as its header states them, or None."""
    if stream.duration:
        return float(stream.duration * stream.time_base)
    # Matroska states each stream's duration in a tag; its container duration may be the audio's.
    return _matroska_duration(stream.metadata.get("DURATION"))


def _stored_duration(container, stream) -> float | None:
    """Seconds from the stream's start to its end as the file states it, or None when it does not."""
    stream_duration = _stated_stream_duration(stream)
    if stream_duration is not None:
        return stream_duration
    if container.duration:
        start = container.start_time or 0
        end = (start + container.duration) / av.time_base
        if stream.start_time is not None:
            return max(0.0, end - float(stream.start_time * stream.time_base))
        return max(0.0, end - start / av.time_base)
    return None


def _check_complete(path: str, stream, decoded_end: float) -> None:
    """Raises `VideoError("corrupt")` when the decoded frames end well before the stream's stated duration."""
    stated = _stated_stream_duration(stream)
    if stated is not None and stated - decoded_end > max(TRUNCATION_SECONDS, TRUNCATION_FRACTION * stated):
        raise VideoError(
            path,
            "corrupt",
            f"its video stream decodes to {decoded_end:.2f} s of the {stated:.2f} s its header states "
            "(a truncated file?)",
        )


def _matroska_duration(text: str | None) -> float | None:
    """Seconds of a Matroska stream's "DURATION" tag ("00:00:03.520000000"), or None."""
    match = _MATROSKA_DURATION.fullmatch(text.strip()) if text else None
    if match is None:
        return None
    hours, minutes, seconds = match.groups()
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _demuxed_duration(path: str) -> float:
    """The end of the last video packet, from the first packet's time: reads the file without decoding."""
    first, last = None, None
    with _opened(path) as container:
        stream = _video_stream(container, path)
        try:
            for packet in container.demux(stream):
                if packet.pts is None:
                    continue
                start = float(packet.pts * packet.time_base)
                end = start + float((packet.duration or 0) * packet.time_base)
                first = start if first is None else min(first, start)
                last = end if last is None else max(last, end)
        except av.error.FFmpegError as error:
            raise VideoError(path, "corrupt", f"its packets failed to read ({_reason(error)})") from error
        origin = float(stream.start_time * stream.time_base) if stream.start_time is not None else first
    if last is None:
        raise VideoError(path, "no_frames", "its video stream holds no packet with a time")
    return max(0.0, last - origin)
