"""Classifying a video with an exported LiteRT model, with NumPy and `ai_edge_litert` only.

`python -m ac_keras.export --format=litert --litert_file=FILE` writes FILE (the model) and FILE.json (its
description: the inputs, the frame selection, the fill of a missing modality, the class names). This module
reads the description and turns a video's frames into the model's inputs exactly as the SavedModel's
`serving_default` signature turns a record into its model's inputs; it imports neither TensorFlow nor any
other part of ac_keras, so it can be copied to a device on its own (docs/serving.md, "LiteRT").

The rules, which FILE.json also states:

- Frames: a video with `L > max_frames` frames of a modality keeps frames `floor((2 i + 1) L / (2 T))`,
  `i = 0 .. T - 1`, `T = max_frames` (the centres of T equal segments: evaluation's selection,
  `ac_keras.data.parser.select_frame_indices`); a shorter video keeps all its frames, in order.
- Layout: the kept frames go first in `<modality>` `[1, T, dim]` (uint8, the records' bytes, for a quantized
  modality; float32 otherwise), zeros after them; `<modality>_mask` int32 `[1, T]` is 1 for the kept frames.
- A video without frames of a modality gets the description's `fill` vector as its one frame (mask
  `[1, 0, ..., 0]`), as the SavedModel fills a record that lacks the modality (the training mean of the
  run's statistics, else zeros). An all-zero mask is allowed too: the model then pools that modality to zero,
  as the Keras model does for a video without frames, which differs from what the SavedModel's records give.
"""

import json

import numpy as np

FORMAT = "ac_keras.litert.v1"
SIGNATURE = "serving_default"
OUTPUT = "probabilities"
# `ac_keras.model.MASK_SUFFIX`, repeated so that this file stands alone (a test checks they agree).
MASK_SUFFIX = "_mask"
DESCRIPTION_SUFFIX = ".json"


def description_path(model_path):
    """The description JSON written beside a LiteRT model: `<model_path>.json`."""
    return str(model_path) + DESCRIPTION_SUFFIX


def load_description(path):
    """The description JSON of a LiteRT model export (see the module docstring).

    Raises:
        FileNotFoundError: no file at `path`.
        ValueError: the file is not an ac_keras LiteRT description (the message names it).
    """
    with open(path, encoding="utf-8") as handle:
        try:
            description = json.load(handle)
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not JSON: {error}") from None
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        raise ValueError(f'{path} is not an ac_keras LiteRT description (expected "format": "{FORMAT}").')
    return description


def select_frames(num_frames, max_frames):
    """The indices of the frames kept of a video with `num_frames` frames: evaluation's equal-interval rule.

    Args:
        num_frames: int L >= 0, the video's frames.
        max_frames: int T >= 1, the model's frames per modality.

    Returns:
        int64 indices, `floor((2 i + 1) L / (2 T))` for `i < T` when `L > T`, else `0 .. L - 1`.

    Example:
    >>> select_frames(10, 4).tolist()
    [1, 3, 6, 8]
    """
    if max_frames < 1:
        raise ValueError(f"max_frames must be at least 1, got {max_frames}.")
    if num_frames <= max_frames:
        return np.arange(num_frames, dtype=np.int64)
    positions = np.arange(max_frames, dtype=np.int64)
    return ((2 * positions + 1) * num_frames) // (2 * max_frames)


def prepare_inputs(description, frames):
    """The model's inputs for one video: frame selection, missing-modality fill, padding and masks.

    Args:
        description: the loaded description JSON (`load_description`).
        frames: dict modality -> array `(num_frames, dim)` of the video's frames: uint8 (the records' bytes)
            for a quantized modality, float for the others. A modality that is absent or has no frames gets
            its fill vector as its one frame.

    Returns:
        dict input name -> array: `<modality>` `[1, T, dim]` and `<modality>_mask` int32 `[1, T]`.

    Raises:
        ValueError: an unknown modality, or frames of the wrong shape or dtype (the message names the
            modality).
    """
    max_frames = int(description["max_frames"])
    inputs = {}
    known = {modality["name"] for modality in description["inputs"]}
    unknown = sorted(set(frames) - known)
    if unknown:
        raise ValueError(
            f"frames of modalities {unknown} that the model does not take (it takes {sorted(known)})."
        )
    for modality in description["inputs"]:
        name, dim, dtype = modality["name"], int(modality["dim"]), np.dtype(modality["dtype"])
        given = frames.get(name)
        values = np.zeros([0, dim], dtype) if given is None else np.asarray(given)
        if values.ndim != 2 or values.shape[1] != dim:
            raise ValueError(
                f"modality {name!r}: frames must have shape (num_frames, {dim}), got {values.shape}."
            )
        if dtype == np.uint8 and values.dtype != np.uint8:
            raise ValueError(
                f"modality {name!r} is quantized: give its frames as uint8 (the records' bytes), got "
                f"{values.dtype}."
            )
        if len(values) == 0:
            values = np.asarray([modality["fill"]], dtype)
        values = values[select_frames(len(values), max_frames)].astype(dtype)
        padded = np.zeros([1, max_frames, dim], dtype)
        padded[0, : len(values)] = values
        mask = np.zeros([1, max_frames], np.int32)
        mask[0, : len(values)] = 1
        inputs[name] = padded
        inputs[name + MASK_SUFFIX] = mask
    return inputs


class LiteRTClassifier:
    """A LiteRT model exported by ac_keras, run with `ai_edge_litert`'s interpreter.

    Args:
        model_path: the model file; its description is `<model_path>.json`.
        num_threads: CPU threads of the interpreter; None for its default. Defaults to None.

    Attributes:
        description: the loaded description JSON.
        class_names: one name per class ("" for a class without one), or None when the run had none.

    Example:
    >>> classifier = LiteRTClassifier("model.tflite")  # doctest: +SKIP
    >>> classifier({"rgb": rgb_bytes, "audio": audio_bytes})  # doctest: +SKIP
    array([0.01, 0.93, ...], dtype=float32)
    """

    def __init__(self, model_path, *, num_threads=None):
        from ai_edge_litert.interpreter import Interpreter

        self.description = load_description(description_path(model_path))
        self.class_names = self.description.get("class_names")
        self._interpreter = Interpreter(model_path=str(model_path), num_threads=num_threads)
        self._runner = self._interpreter.get_signature_runner(SIGNATURE)

    def run(self, inputs):
        """The class probabilities `(num_classes,)` of prepared inputs (`prepare_inputs`' layout)."""
        return self._runner(**inputs)[OUTPUT][0]

    def __call__(self, frames):
        """The class probabilities `(num_classes,)` of one video's frames (see `prepare_inputs`)."""
        return self.run(prepare_inputs(self.description, frames))

    def top_k(self, frames, k=5):
        """The `k` most probable classes of one video: a list of `(class, probability, name)`."""
        probabilities = self(frames)
        best = np.argsort(-probabilities, kind="stable")[:k]
        names = self.class_names or [""] * len(probabilities)
        return [(int(index), float(probabilities[index]), names[index]) for index in best]
