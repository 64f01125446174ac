"""Timelines: a video's classes window by window, from one decode of the file, in memory bounded by a window.

`python -m ac_keras.classify VIDEO --window_seconds=S [--window_stride=T]` classifies, besides the whole
video, each window `[k T, k T + S)` seconds of it (`k = 0, 1, ...` while the window starts before the end of
the video's features; the last one cut there, as the last segment of a record is). A window is to the model a
smaller set of the same frame features: its features are those whose time falls inside it (a frame's
presentation time; a flow image's first frame; an audio patch's start, `index * 0.96 s`), and evaluation's
frame selection and fill make its input, as they make a whole video's (`eval_frames` at equal intervals).

The video is decoded once, by two streams (frames; the audio track), each pulled only as far as the current
window needs: frames one at a time at the extraction's rate (`video.iter_frames` without `max_frames`),
audio a piece at a time (`Extractor.timed_audio_inputs`). Inputs are embedded `batch_size` at a time, as
`Extractor.extract` embeds them (the same batches for the first `max_frames`, so the whole video's result is
`classify`'s without a timeline), and features are dropped once no later window can hold them. Memory holds
the features of a window (plus a batch), the whole-video set (the first `max_frames` features per modality,
what classify reads without a timeline) and, until the whole video's top classes are known, the class scores
of the windows before (at most `max_frames / fps / stride` vectors): bounded by the window and the
extraction, not by the length of the video (docs/benchmarks.md measures a 1-hour video against 1 minute).

Needs an extraction by rate (`tfrecords.extract --fps`): one that takes `num_frames` frames over the whole
video has no times to window.
"""

import collections
import dataclasses
import io
import os
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from ac_keras.errors import UsageError

# Classes drawn per video in the timeline picture (the whole video's best, at most `top_k`).
PLOTTED_CLASSES = 5
# Classes printed per window.
PRINTED_CLASSES = 3


@dataclasses.dataclass(frozen=True)
class Window:
    """One window of a timeline and its top classes.

    Attributes:
        start, end: float seconds from the start of the video (the end cut at the end of its features).
        classes: tuple of int class ids, best first (`top_k`).
        scores: tuple of float probabilities.
        names: tuple of str names ("" for a class without one).
    """

    start: float
    end: float
    classes: tuple[int, ...]
    scores: tuple[float, ...]
    names: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "start": self.start,
            "end": self.end,
            "classes": list(self.classes),
            "scores": list(self.scores),
            "names": list(self.names),
        }


@dataclasses.dataclass(frozen=True)
class Timeline:
    """What `classify_timeline` found for one video.

    Attributes:
        whole: `(classes, scores, names)` of the whole video (as classify gives them without a timeline).
        windows: tuple of `Window`, in time order.
        plotted: tuple of the class ids drawn (the whole video's best `PLOTTED_CLASSES`).
        plotted_scores: float32 `(windows, len(plotted))`, their probabilities in each window.
    """

    whole: tuple
    windows: tuple[Window, ...]
    plotted: tuple[int, ...]
    plotted_scores: np.ndarray


def check_extraction(extractor) -> None:
    """Raises UsageError when the run's extraction samples no rate (a timeline needs times)."""
    if extractor.spec.num_frames is not None:
        raise UsageError(
            "--window_seconds: the model's features were extracted as "
            f"num_frames={extractor.spec.num_frames} frames over each whole video (tfrecords.extract "
            "--num_frames); a timeline needs features sampled by rate (--fps)."
        )


class _Stream:
    """One modality's features in time order, embedded `batch_size` inputs at a time."""

    def __init__(self, extractor, name, whole_limit):
        self.extractor = extractor
        self.name = name
        self.whole_limit = whole_limit
        self.batch_size = extractor.spec.batch_size
        self.pending = collections.deque()  # (seconds, model input), not embedded yet
        self.ready = collections.deque()  # (seconds, stored feature)
        self.whole = []  # the first `whole_limit` features: the whole-video set
        self.embedded = 0
        self.ended = False  # no input will come any more
        self.last_time = None

    def add(self, seconds, model_input):
        self.pending.append((seconds, model_input))
        self.last_time = seconds

    @property
    def finished(self):
        return self.ended and not self.pending

    @property
    def whole_done(self):
        return self.embedded >= self.whole_limit or self.finished

    def embed_batches(self) -> bool:
        """Embeds the complete batches waiting (every input once ended); returns whether it embedded any.

        Batches are those of `Extractor.extract`: `batch_size` inputs, the first `whole_limit` apart."""
        embedded = False
        while self.pending:
            size = self.batch_size
            if self.embedded < self.whole_limit:
                size = min(size, self.whole_limit - self.embedded)
            if len(self.pending) < size and not self.ended:
                break
            batch = [self.pending.popleft() for _ in range(min(size, len(self.pending)))]
            stored, _ = self.extractor.finish(
                self.name, self.extractor.embed(self.name, [x for _, x in batch])
            )
            for (seconds, _), row in zip(batch, stored, strict=True):
                if self.embedded < self.whole_limit:
                    self.whole.append(row)
                self.ready.append((seconds, row))
                self.embedded += 1
            embedded = True
        return embedded


class _Source:
    """A decoding stream (frames, or the audio track) that feeds its modalities' `_Stream`s."""

    def __init__(self, items, route, streams):
        self._items = items
        self._route = route  # item -> (stream name, seconds, model input)
        self._streams = streams

    def pull(self) -> None:
        try:
            name, seconds, model_input = self._route(next(self._items))
            self._streams[name].add(seconds, model_input)
        except StopIteration:
            for stream in self._streams.values():
                stream.ended = True


def classify_timeline(
    extractor,
    probabilities: Callable[[Sequence[Mapping]], np.ndarray],
    top_classes: Callable[[np.ndarray], list],
    path: str,
    *,
    window_seconds: float,
    window_stride: float | None = None,
    batch_size: int = 64,
    plotted: int = PLOTTED_CLASSES,
) -> Timeline:
    """Classifies a video and each window of it, from one decode (see the module docstring).

    Args:
        extractor: the run's `Extractor` (by rate: `check_extraction`).
        probabilities: videos' features (dicts modality -> `(T, dim)` array, as `Extractor.extract` gives) ->
            class probabilities `(videos, num_classes)`, with evaluation's frame selection and fill
            (`classify.Classifier.probabilities`).
        top_classes: probabilities -> per row `(classes, scores, names)` (`classify.Classifier.top_classes`).
        path: the video file.
        window_seconds: float > 0, the length of a window.
        window_stride: float > 0, seconds between window starts; None: `window_seconds`.
        batch_size: int, windows classified at a time.
        plotted: int, the whole video's best classes whose scores `Timeline.plotted_scores` keeps.

    Returns:
        A `Timeline`.

    Raises:
        video.VideoError: the file cannot be used (also part way through a long video).
        UsageError: the extraction is not by rate.
    """
    from ac_keras.extraction import audio, video

    check_extraction(extractor)
    stride = window_stride or window_seconds
    spec = extractor.spec
    names = spec.names
    whole_limits = {"rgb": spec.max_frames, "flow": spec.max_frames - 1, "audio": spec.max_frames}
    streams = {name: _Stream(extractor, name, whole_limits[name]) for name in names}
    periods = {"rgb": 1.0 / spec.fps, "flow": 1.0 / spec.fps, "audio": audio.PATCH_SECONDS}
    source_of = {}
    frame_streams = {name: streams[name] for name in names if name in ("rgb", "flow")}
    if frame_streams:
        frames = extractor.timed_frame_inputs(path, video.Sampling(fps=spec.fps, max_frames=None))
        source = _Source(frames, lambda item: (item[0], item[2], item[3]), frame_streams)
        source_of.update(dict.fromkeys(frame_streams, source))
    if "audio" in names:
        patches = extractor.timed_audio_inputs(path)
        source = _Source(patches, lambda item: ("audio", item[1], item[2]), {"audio": streams["audio"]})
        source_of["audio"] = source

    def advance(stream, until):
        """Until `stream` holds a feature at or after `until`, or has no more."""
        while not stream.finished and not (
            stream.ready and stream.ready[-1][0] + video.TIME_TOLERANCE >= until
        ):
            if not stream.embed_batches():
                source_of[stream.name].pull()

    whole = None
    early = []  # (window index, probabilities) of the windows before the whole video's classes are known
    plotted_classes = None
    windows, plotted_rows = [], []
    waiting = []  # (start, end, features) of windows not classified yet

    def classify_waiting():
        nonlocal plotted_classes
        if not waiting:
            return
        scores = np.asarray(probabilities([features for _, _, features in waiting]))
        for (start, end, _), top, row in zip(waiting, top_classes(scores), scores, strict=True):
            windows.append(Window(start, end, *top))
            if plotted_classes is None:
                early.append(row)
            else:
                plotted_rows.append(row[list(plotted_classes)])
        waiting.clear()

    def whole_video():
        nonlocal whole, plotted_classes
        features = {name: np.stack(stream.whole) for name, stream in streams.items() if stream.whole}
        scores = np.asarray(probabilities([features]))
        whole = top_classes(scores)[0]
        plotted_classes = tuple(whole[0][:plotted])
        plotted_rows.extend(row[list(plotted_classes)] for row in early)
        early.clear()
        for stream in streams.values():
            stream.whole = []

    index = 0
    while True:
        start = index * stride
        end = start + window_seconds
        for stream in streams.values():
            advance(stream, end)
        if all(stream.finished for stream in streams.values()):
            ends = [
                stream.last_time + periods[name]
                for name, stream in streams.items()
                if stream.last_time is not None
            ]
            video_end = max(ends, default=0.0)
            if start >= video_end - video.TIME_TOLERANCE:
                break
            end = min(end, video_end)
        features = {}
        next_start = (index + 1) * stride
        for name, stream in streams.items():
            rows = [row for seconds, row in stream.ready if start <= seconds + video.TIME_TOLERANCE < end]
            if rows:
                features[name] = np.stack(rows)
            while stream.ready and stream.ready[0][0] + video.TIME_TOLERANCE < next_start:
                stream.ready.popleft()
        waiting.append((start, end, features))
        if whole is None and all(stream.whole_done for stream in streams.values()):
            whole_video()
        if len(waiting) >= batch_size:
            classify_waiting()
        index += 1
    if whole is None:
        for stream in streams.values():
            while not stream.whole_done:
                if not stream.embed_batches():
                    source_of[stream.name].pull()
        whole_video()
    classify_waiting()
    scores = np.asarray(plotted_rows, np.float32).reshape(len(windows), len(plotted_classes))
    return Timeline(whole, tuple(windows), plotted_classes, scores)


def format_windows(windows: Sequence[Window]) -> list[str]:
    """The printed lines of a timeline: per window its seconds and its best `PRINTED_CLASSES` classes."""
    lines = []
    for window in windows:
        best = zip(window.classes, window.scores, window.names, strict=True)
        shown = ", ".join(
            f"{c} {score:.4f} {name}".rstrip() for c, score, name in list(best)[:PRINTED_CLASSES]
        )
        lines.append(f"  {window.start:9.2f} - {window.end:9.2f} s  {shown}")
    return lines


def draw(timelines: Sequence[tuple[str, Timeline]], path: str, class_names=None) -> None:
    """Draws each video's timeline (the plotted classes' probabilities per window, at the window's centre)
    into one PNG, a panel per video; written via a temporary file (local or `gs://`).

    Args:
        timelines: `(video path, Timeline)` pairs.
        path: the PNG file.
        class_names: one name per class, or None.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    count = max(1, len(timelines))
    figure, axes = pyplot.subplots(count, 1, figsize=(10, 2.6 * count), squeeze=False)
    for axis, (video_path, timeline) in zip(axes[:, 0], timelines, strict=False):
        centres = [(window.start + window.end) / 2 for window in timeline.windows]
        for column, class_id in enumerate(timeline.plotted):
            name = class_names[class_id] if class_names and class_names[class_id] else ""
            axis.plot(
                centres, timeline.plotted_scores[:, column], marker=".", label=f"{class_id} {name}".strip()
            )
        axis.set_title(os.path.basename(video_path), fontsize=9)
        axis.set_xlabel("seconds (window centre)")
        axis.set_ylabel("probability")
        axis.set_ylim(0, 1)
        axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    picture = io.BytesIO()
    figure.savefig(picture, format="png", dpi=100)
    pyplot.close(figure)
    temporary = f"{path}.tmp"
    with tf.io.gfile.GFile(temporary, "wb") as handle:
        handle.write(picture.getvalue())
    tf.io.gfile.rename(temporary, path, overwrite=True)
