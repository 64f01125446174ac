"""Classifies video files: `python -m ac_keras.classify VIDEO [VIDEO ...] --model_dir=D` (or --saved_model).

Each video is decoded and its features are extracted the way the model's training features were: with the
settings of the extraction.json that training copied into the model_dir (an export carries a copy in
`assets.extra/`), the same frame sampling, models, PCA and quantization, every file they need checked
against its recorded SHA-256. The features then get what evaluation gives a record (`--eval_frames` frames
at equal intervals; a modality the video lacks, such as audio of a video without an audio stream, filled
with the training mean of the run's `--stats`, or zeros) and go through the classifier in batches of
`--batch_size` videos.

Prints, per video, the top `--top_k` classes with their scores and names (`--class_names`, else the names
stored with the model); `--output_json` writes a list with one object per video, in the order given:
`{"video": path, "classes": [ids], "scores": [probabilities], "names": [names]}` ("" for a class without a
name), or `{"video": path, "error": message}` for a video that could not be used. Globs are expanded. A video
that cannot be used (missing, empty, not a video, cut short, without frames) is reported and the others are
classified; the exit status is then 1.

The model's settings come from the run's config.json; of the shared flags, classify reads `--model_dir`,
`--saved_model`, `--top_k`, `--class_names`, `--stats` (when the run's file has moved), `--batch_size`,
`--output_json` and `--overwrite` (a training flagfile's other flags are ignored).

With `--window_seconds=S [--window_stride=T]` each video also gets a timeline (`ac_keras.timeline`,
docs/segments.md): the top classes of every window of S seconds (starting every T seconds), printed and, in
`--output_json`, `"windows": [{"start": s, "end": s, "classes": [...], "scores": [...], "names": [...]},
...]`; `--timeline_png=FILE` draws the whole video's best classes' scores over time. The video is decoded
once and memory is bounded by a window, not by the length of the video; the whole-video classes are the same
as without a timeline.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import dataclasses
import glob
import json
import os
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf
from absl import app

from ac_keras import artifacts
from ac_keras import data as ac_data
from ac_keras import flags as _flags  # noqa: F401  (defines the shared flags)
from ac_keras import timeline as timeline_lib
from ac_keras.errors import UsageError
from ac_keras.extraction import video
from ac_keras.task import Task

# Settings of a run's Config that classify takes from its command line instead of the run's config.json.
OVERRIDES = ("top_k", "class_names", "stats", "batch_size")


@dataclasses.dataclass(frozen=True)
class VideoResult:
    """What classify found for one video: its top classes, or why it could not be used.

    Attributes:
        video: str, the path as given (a glob's match).
        classes: tuple of int class ids, best first (empty on error).
        scores: tuple of float probabilities of those classes.
        names: tuple of str, their names ("" for a class without one).
        error: str or None, why the video could not be used.
        timeline: the `timeline.Timeline` of the video when one was asked for (`--window_seconds`), else None.
    """

    video: str
    classes: tuple[int, ...] = ()
    scores: tuple[float, ...] = ()
    names: tuple[str, ...] = ()
    error: str | None = None
    timeline: timeline_lib.Timeline | None = dataclasses.field(default=None, compare=False, repr=False)

    def to_json(self) -> dict:
        if self.error is not None:
            return {"video": self.video, "error": self.error}
        result = {
            "video": self.video,
            "classes": list(self.classes),
            "scores": list(self.scores),
            "names": list(self.names),
        }
        if self.timeline is not None:
            result["windows"] = [window.to_json() for window in self.timeline.windows]
        return result


class Classifier:
    """A trained model with the feature extractor of its training data: video files in, top classes out.

    Build it with `Classifier.load` from a model_dir or an export.

    Args:
        task: the run's `Task` (its config; the statistics, read once: the fill of a missing modality).
        extractor: the `Extractor` of the run's extraction.json.
        predictor: a function from features (modality -> ragged frames) to probabilities, as
            `artifacts.load_predictor` gives.
        class_names: one name per class ("" for none), or None when the model has none.
    """

    def __init__(self, task, extractor, predictor, class_names=None):
        self.task = task
        self.config = task.config
        self.specs = self.config.data.feature_specs
        self.extractor = extractor
        self.class_names = class_names
        self._predictor = predictor

    @classmethod
    def load(cls, *, model_dir=None, saved_model=None, **overrides) -> "Classifier":
        """The classifier of a model_dir's best model (else its latest checkpoint) or of an export.

        Args:
            model_dir: training directory: its best model (else its latest checkpoint), config.json,
                extraction.json, class_names.csv.
            saved_model: an exported SavedModel version (its `predict_features` signature and the run's
                files in `assets.extra/`); takes precedence over `model_dir`.
            **overrides: settings replacing the run's, by flag name (`OVERRIDES`).

        Raises:
            UsageError: neither `model_dir` nor `saved_model`, or an override that is not in `OVERRIDES`.
            MissingDataError: no config.json or extraction.json, the statistics or a file the extraction
                used missing, no trained model in model_dir, no SavedModel.
            DataError: a file the extraction used has changed, or the extraction does not fit the model.
        """
        if not model_dir and not saved_model:
            raise UsageError(
                "Give --model_dir (its best model, else its latest checkpoint) or --saved_model."
            )
        unknown = sorted(set(overrides) - set(OVERRIDES))
        if unknown:
            raise UsageError(f"classify takes the model's own settings; it cannot change {unknown}.")
        overrides.setdefault("class_names", None)  # the stored copy, below, not the path training read
        location = {"model_dir": model_dir, "saved_model": saved_model}
        task = Task(artifacts.load_run_config(**location, **overrides))
        extractor = artifacts.load_extractor(task.config.data.feature_specs, **location)
        predictor = artifacts.load_predictor(model_dir, saved_model)
        class_names = task.class_names or artifacts.load_class_names(task.config.data.num_classes, **location)
        return cls(task, extractor, predictor, class_names)

    def extract(self, path: str) -> dict[str, np.ndarray]:
        """One video's features, modality -> `(T, dim)` (a modality without features left out).

        Raises:
            video.VideoError: the file cannot be used.
        """
        return self.extractor.extract(path)

    def probabilities(self, videos: Sequence[dict]) -> np.ndarray:
        """Class probabilities `(len(videos), num_classes)` of videos' features (dicts as `extract` gives)."""
        frames = {}
        for spec in self.specs:
            dtype = np.uint8 if spec.quantized else np.float32
            arrays = [
                np.asarray(features.get(spec.name, np.zeros([0, spec.dim], dtype))) for features in videos
            ]
            values = np.concatenate(arrays).astype(dtype, copy=False).reshape([-1, spec.dim])
            lengths = np.array([len(array) for array in arrays], np.int64)
            frames[spec.name] = tf.RaggedTensor.from_row_lengths(values, lengths)
        prepared = ac_data.select_and_fill(
            frames,
            self.specs,
            num_frames=self.config.data.eval_frames or None,
            missing_fill=self.task.stats.missing_fill,
        )
        return np.asarray(self._predictor(prepared))

    def top_classes(self, probabilities: np.ndarray) -> list[tuple[tuple, tuple, tuple]]:
        """`(classes, scores, names)` of the top `--top_k` classes of each row of `probabilities`."""
        k = min(self.config.runtime.top_k, probabilities.shape[-1])
        scores, classes = tf.math.top_k(probabilities, k=k)
        names = self.class_names or ("",) * probabilities.shape[-1]
        return [
            (
                tuple(int(c) for c in row_classes),
                tuple(float(s) for s in row_scores),
                tuple(names[c] for c in row_classes),
            )
            for row_classes, row_scores in zip(classes.numpy(), scores.numpy(), strict=True)
        ]

    def classify_timeline(
        self, path: str, window_seconds: float, window_stride: float | None = None
    ) -> VideoResult:
        """One video's classes and those of each window of it (`ac_keras.timeline.classify_timeline`); a
        video that cannot be used gets an error.

        Raises:
            UsageError: the run's extraction is not by rate (no times to window).
        """
        try:
            found = timeline_lib.classify_timeline(
                self.extractor,
                self.probabilities,
                self.top_classes,
                path,
                window_seconds=window_seconds,
                window_stride=window_stride,
                batch_size=self.config.training.batch_size,
            )
        except video.VideoError as error:
            return VideoResult(path, error=str(error))
        return VideoResult(path, *found.whole, timeline=found)

    def classify(self, paths: Sequence[str], on_result: Callable | None = None) -> list[VideoResult]:
        """Classifies video files, `--batch_size` at a time; a video that cannot be used gets an error.

        Args:
            paths: video files.
            on_result: optional function called with each `VideoResult` as soon as it is known.

        Returns:
            One `VideoResult` per path, in order.
        """
        results = []
        batch_size = self.config.training.batch_size
        for start in range(0, len(paths), batch_size):
            batch = list(paths[start : start + batch_size])
            found = []  # per video: its features, or its VideoResult with the error
            for path in batch:
                try:
                    found.append(self.extract(path))
                except video.VideoError as error:
                    found.append(VideoResult(path, error=str(error)))
            usable = [index for index, value in enumerate(found) if not isinstance(value, VideoResult)]
            if usable:
                probabilities = self.probabilities([found[index] for index in usable])
                for index, top in zip(usable, self.top_classes(probabilities), strict=True):
                    found[index] = VideoResult(batch[index], *top)
            for result in found:
                results.append(result)
                if on_result is not None:
                    on_result(result)
        return results


def expand_videos(arguments: Sequence[str]) -> list[str]:
    """The video paths of the command line: globs expanded (sorted; directories skipped), other paths
    kept as given (a missing one is reported as that video's error)."""
    paths = []
    for argument in arguments:
        pattern = os.path.expanduser(argument)
        if glob.has_magic(pattern):
            matched = [path for path in sorted(tf.io.gfile.glob(pattern)) if not tf.io.gfile.isdir(path)]
            if matched:
                paths += matched
                continue
        paths.append(pattern)
    return paths


def format_result(result: VideoResult) -> str:
    """The lines `python -m ac_keras.classify` prints for one video."""
    if result.error is not None:
        return f"{result.video}: error: {result.error}"
    width = max(len(str(c)) for c in result.classes)
    lines = [result.video]
    for c, score, name in zip(result.classes, result.scores, result.names, strict=True):
        lines.append(f"  {c:>{width}}  {score:.4f}  {name}".rstrip())
    if result.timeline is not None:
        lines.append(f"  timeline ({len(result.timeline.windows)} windows):")
        lines += timeline_lib.format_windows(result.timeline.windows)
    return "\n".join(lines)


def main(argv):
    if len(argv) < 2:
        raise app.UsageError(
            "Name the videos: python -m ac_keras.classify VIDEO [VIDEO ...] --model_dir=D "
            "(or --saved_model=S)."
        )
    _, options = cli.command_from_argv(argv, max_arguments=len(argv) - 1, run_config=False)
    given = dict(options.given)
    model_dir = given.get("model_dir")
    if not model_dir and not options.saved_model:
        raise app.UsageError("--model_dir or --saved_model: one is required (the model to classify with).")
    output_json = options.output_json
    for flag, path in (("output_json", output_json), ("timeline_png", options.timeline_png)):
        if path and tf.io.gfile.exists(path) and not options.overwrite:
            raise app.UsageError(f"--{flag}: {path} exists; pass --overwrite to replace it.")
    overrides = {name: given[name] for name in OVERRIDES if name in given}
    classifier = Classifier.load(model_dir=model_dir, saved_model=options.saved_model, **overrides)
    paths = expand_videos(argv[1:])
    show = lambda result: print(format_result(result), flush=True)  # noqa: E731
    if options.window_seconds:
        timeline_lib.check_extraction(classifier.extractor)
        results = []
        for path in paths:
            results.append(classifier.classify_timeline(path, options.window_seconds, options.window_stride))
            show(results[-1])
    else:
        results = classifier.classify(paths, on_result=show)
    if options.timeline_png:
        drawn = [(result.video, result.timeline) for result in results if result.timeline is not None]
        timeline_lib.draw(drawn, options.timeline_png, classifier.class_names)
    if output_json:
        payload = json.dumps([result.to_json() for result in results], indent=2)
        artifacts.write_text_atomically(output_json, payload + "\n")
    failed = sum(result.error is not None for result in results)
    summary = f"Classified {len(results) - failed} of {len(results)} video(s)"
    print(summary + (f"; {failed} could not be used." if failed else "."), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    cli.run(main)
