"""Tiny synthetic video and audio files for tests, written with PyAV, and deliberately broken files.

The default picture of `encode_clip` is one flat colour per second, `COLOURS[int(t) % len(COLOURS)]` (red
during second 0, green during second 1, blue during second 2, ...), so a test can tell which second a decoded
frame comes from, and that channels come out in RGB order, even after lossy coding. `moving_square` draws a
textured square that moves at a constant speed, for optical flow. The audio track, when asked for, is a sine
tone at half of full scale.

Every writer takes the output path and returns it; the container is chosen from the extension.
"""

import fractions
import os

import av
import numpy as np

# RGB colours of seconds 0, 1, 2, ... of the default picture (repeating after the last).
COLOURS = (
    (255, 0, 0),
    (0, 255, 0),
    (0, 0, 255),
    (255, 255, 0),
    (255, 0, 255),
    (0, 255, 255),
    (255, 255, 255),
    (0, 0, 0),
)
# Container (FFmpeg muxer name) by file extension.
CONTAINERS = {
    ".mp4": "mp4",
    ".m4a": "mp4",
    ".mov": "mov",
    ".webm": "webm",
    ".mkv": "matroska",
    ".avi": "avi",
    ".ogg": "ogg",
    ".wav": "wav",
}
TONE_AMPLITUDE = 0.5
# Pixels per second the square of `moving_square` moves to the right.
SQUARE_SPEED = 8.0


def colour_at(t: float) -> tuple[int, int, int]:
    """The RGB colour of the default picture at `t` seconds."""
    return COLOURS[int(t) % len(COLOURS)]


def colour_frame(t: float, size: tuple[int, int]) -> np.ndarray:
    """The default picture at `t` seconds: the whole frame filled with `colour_at(t)`.

    Args:
        t: float, seconds from the start of the clip.
        size: (width, height) in pixels.

    Returns:
        uint8 array (height, width, 3), RGB.
    """
    width, height = size
    return np.broadcast_to(np.asarray(colour_at(t), np.uint8), (height, width, 3)).copy()


def moving_square(
    t: float, size: tuple[int, int], *, side: int = 16, speed: float = SQUARE_SPEED
) -> np.ndarray:
    """A grey frame with a textured square whose left edge is at `round(4 + speed * t)` pixels.

    The texture is fixed random noise (seed 0), so consecutive frames differ only by the shift.

    Args:
        t: float, seconds from the start of the clip.
        size: (width, height) in pixels; the square is vertically centred.
        side: int, the side of the square in pixels. Defaults to 16.
        speed: float, pixels per second to the right. Defaults to `SQUARE_SPEED`.

    Returns:
        uint8 array (height, width, 3), RGB.
    """
    width, height = size
    frame = np.full((height, width, 3), 128, np.uint8)
    texture = np.random.default_rng(0).integers(0, 256, (side, side, 3), dtype=np.uint8)
    left = int(round(4 + speed * t))
    top = (height - side) // 2
    right = min(left + side, width)
    if left < width:
        frame[top : top + side, left:right] = texture[:, : right - left]
    return frame


def _container(path: str) -> str:
    extension = os.path.splitext(path)[1].lower()
    if extension not in CONTAINERS:
        raise ValueError(
            f"Unknown container for {path!r}: the extension must be one of {sorted(CONTAINERS)}."
        )
    return CONTAINERS[extension]


def _tone(seconds: float, tone_hz: float, sample_rate: int) -> np.ndarray:
    """A mono sine tone as float32 (1, samples), at `TONE_AMPLITUDE`."""
    samples = int(round(seconds * sample_rate))
    phase = 2 * np.pi * tone_hz * np.arange(samples) / sample_rate
    return (TONE_AMPLITUDE * np.sin(phase)).astype(np.float32)[np.newaxis]


def _add_audio_stream(output, codec: str, sample_rate: int):
    stream = output.add_stream(codec, rate=sample_rate)
    stream.layout = "mono"
    if codec == "libopus":
        # Opus in a container needs no experimental flag, but FFmpeg's native opus encoder would.
        stream.codec_context.options = {"application": "audio"}
    return stream


def _encode_tone(output, stream, waveform: np.ndarray, sample_rate: int) -> None:
    """Encodes a float32 (1, samples) waveform; PyAV converts the format and re-frames to the codec's size."""
    chunk = 1024
    for start in range(0, waveform.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(waveform[:, start : start + chunk]), format="fltp", layout="mono"
        )
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = fractions.Fraction(1, sample_rate)
        output.mux(stream.encode(frame))
    output.mux(stream.encode(None))


def encode_clip(
    path: str,
    *,
    seconds: float,
    fps,
    codec: str = "libx264",
    size: tuple[int, int] = (64, 48),
    audio_tone_hz: float | None = None,
    audio_codec: str = "aac",
    sample_rate: int | None = None,
    frame_fn=None,
    options: dict[str, str] | None = None,
) -> str:
    """Writes a small synthetic video file.

    Frame `i` is shown at `i / fps` seconds (stream time base `1 / fps`), for every `i` with `i / fps <
    seconds`; its picture is `frame_fn(i / fps)`.

    Args:
        path: str, the output file; its extension picks the container (.mp4, .mov, .webm, .mkv, .avi).
        seconds: float, the length of the clip.
        fps: the frame rate: an int, a float or a `fractions.Fraction` (`Fraction(30000, 1001)` for NTSC's
            29.97; a float is made a fraction with denominator at most 1001).
        codec: str, an FFmpeg video encoder: "libx264" (yuv420p), "mpeg4", "libvpx-vp9", "mjpeg" (yuvj420p).
            Defaults to "libx264".
        size: (width, height) in pixels; even for the yuv420p codecs. Defaults to (64, 48).
        audio_tone_hz: float or None, a sine tone of this frequency as a mono audio track lasting `seconds`;
            None writes no audio stream. Defaults to None.
        audio_codec: str, the audio encoder: "aac" or "libopus". Defaults to "aac".
        sample_rate: int or None, the audio sample rate; None means 48000 for "libopus" and 44100
            otherwise.
        frame_fn: callable `t -> uint8 (height, width, 3)` RGB, or None for `colour_frame`.
        options: dict or None, options of the FFmpeg muxer, e.g. `{"live": "1"}` for a WebM or Matroska
            file that states no duration (as one recorded live).

    Returns:
        `path`.
    """
    rate = fractions.Fraction(fps).limit_denominator(1001)
    width, height = size
    frame_fn = frame_fn or (lambda t: colour_frame(t, size))
    if sample_rate is None:
        sample_rate = 48000 if audio_codec == "libopus" else 44100
    with av.open(path, "w", format=_container(path), options=options or {}) as output:
        video = output.add_stream(codec, rate=rate)
        video.width, video.height = width, height
        video.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        video.time_base = 1 / rate
        if codec == "libx264":
            video.codec_context.options = {"preset": "ultrafast", "crf": "18"}
        audio = _add_audio_stream(output, audio_codec, sample_rate) if audio_tone_hz is not None else None
        num_frames = 0
        while num_frames / rate < seconds:
            picture = np.ascontiguousarray(frame_fn(float(num_frames / rate)), dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts = num_frames
            output.mux(video.encode(frame))
            num_frames += 1
        output.mux(video.encode(None))
        if audio is not None:
            _encode_tone(output, audio, _tone(seconds, audio_tone_hz, sample_rate), sample_rate)
    return path


def encode_audio_only(
    path: str,
    *,
    seconds: float,
    tone_hz: float = 440.0,
    codec: str = "aac",
    sample_rate: int | None = None,
) -> str:
    """Writes a file holding only an audio stream (a sine tone), no video stream.

    Args:
        path: str, the output file; its extension picks the container (.m4a, .mp4, .ogg, .webm, .mkv, .wav).
        seconds: float, the length of the tone.
        tone_hz: float, the frequency of the tone. Defaults to 440.
        codec: str, the audio encoder ("aac", "libopus", "pcm_s16le" for .wav). Defaults to "aac".
        sample_rate: int or None; None means 48000 for "libopus" and 44100 otherwise.

    Returns:
        `path`.
    """
    if sample_rate is None:
        sample_rate = 48000 if codec == "libopus" else 44100
    with av.open(path, "w", format=_container(path)) as output:
        stream = _add_audio_stream(output, codec, sample_rate)
        _encode_tone(output, stream, _tone(seconds, tone_hz, sample_rate), sample_rate)
    return path


def encode_unknown_codec(path: str, *, seconds: float = 1.0, fps=10) -> str:
    """Writes an AVI file whose video codec FFmpeg does not know (MPEG-4 video under the fourcc "ZZZZ").

    Args:
        path: str, the output file (.avi).
        seconds: float, the length of the clip. Defaults to 1.
        fps: the frame rate. Defaults to 10.

    Returns:
        `path`.
    """
    encode_clip(path, seconds=seconds, fps=fps, codec="mpeg4")
    with open(path, "rb") as file:
        data = file.read()
    # FFmpeg's AVI muxer names MPEG-4 video "FMP4" in the stream header and the bitmap header.
    if data.count(b"FMP4") != 2:
        raise RuntimeError(f"Expected the fourcc FMP4 twice in {path}, found {data.count(b'FMP4')}.")
    with open(path, "wb") as file:
        file.write(data.replace(b"FMP4", b"ZZZZ"))
    return path


def write_text_as_video(path: str, text: str = "This is a text file, not a video.\n") -> str:
    """Writes a text file (under a video name such as `clip.mp4`) that no demuxer can read. Returns `path`."""
    with open(path, "w", encoding="utf-8") as file:
        file.write(text * 20)
    return path


def write_truncated(source: str, path: str, fraction: float = 0.5) -> str:
    """Writes the first `fraction` of the bytes of `source` to `path`, as an interrupted download would.

    Returns:
        `path`.
    """
    with open(source, "rb") as file:
        data = file.read()
    with open(path, "wb") as file:
        file.write(data[: int(len(data) * fraction)])
    return path


def write_zero_bytes(path: str) -> str:
    """Writes an empty file. Returns `path`."""
    with open(path, "wb"):
        pass
    return path
