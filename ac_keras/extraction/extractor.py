"""What to extract (`ExtractionSpec`), the `extraction.json` that records it, and the `Extractor` it builds.

An `ExtractionSpec` names, per modality, the model and its weights, and the frame sampling. The `Extractor`
built from it turns one video file into the per-modality arrays a record stores, in stages the Beam
pipeline runs apart (decode -> batched embedding -> PCA/quantization), or in one call (`extract`) for a
command that classifies a few videos. `describe()` gives `extraction.json`: the spec plus every model file's
SHA-256, the random-initialization seeds, the PCA files and the library versions, so that
`Extractor.from_description` rebuilds the same extractor later and refuses when a recorded file is missing
or has changed.

Modalities and what each stores per feature:
- rgb: one feature per sampled frame. `yt8m`: the YouTube-8M frame features (1024 bytes, nearest rounding);
  a `keras.applications` backbone or a `.keras` model: its pooled output as floats, or `--pca_dims` bytes.
- flow: one feature per pair of consecutive sampled frames (TSN flow images, `flow.py`), through a backbone
  on (x, y, magnitude) images or a `.keras` flow model (2 channels: the flow images as they are).
- audio: one feature per 0.96 s of the 16 kHz mono track. `vggish`: the AudioSet features (128 bytes,
  truncating quantization as the released postprocessor); a `.keras` model over log-mel patches: floats.
"""

import dataclasses
import itertools
import json
import os
import platform
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from ac_keras import schema
from ac_keras.data.files import file_sha256
from ac_keras.errors import DataError, MissingDataError, UsageError

MODALITIES = ("rgb", "audio", "flow")
EXTRACTION_FILE = "extraction.json"
FORMAT = "ac_keras.extraction/1"
PCA_FILE_TEMPLATE = "pca_{modality}.npz"
WEIGHTS_KEYWORDS = ("imagenet", "none")


@dataclasses.dataclass(frozen=True)
class ModalitySpec:
    """How one modality is extracted.

    Args:
        name: "rgb", "audio" or "flow".
        model: rgb/flow: "yt8m" (rgb only), a `backbones.BACKBONES` name, or a `.keras` path; audio: "vggish"
            or a `.keras` path.
        weights: "imagenet" (backbones), "none" (random initialization from `seed`: tests only) or a weights
            file path (a backbone's `.weights.h5`, VGGish's `vggish_model.ckpt`). Ignored for "yt8m" and
            `.keras` models, whose files carry their weights.
        seed: int, the seed of a random initialization.
        model_dir: for "yt8m", the directory with the Inception graph and PCA files.
        pca_file: for "vggish", `vggish_pca_params.npz` (None with random weights: no PCA, floats
            quantized as they come); for the others, the `--pca_dims` PCA written beside the records.
        pca_dims: int or None, `--pca_dims` (backbones and `.keras` models only).
    """

    name: str
    model: str
    weights: str = "imagenet"
    seed: int = 0
    model_dir: str | None = None
    pca_file: str | None = None
    pca_dims: int | None = None

    def __post_init__(self):
        if self.name not in MODALITIES:
            raise UsageError(
                f"--modalities: unknown modality {self.name!r}; choose from {', '.join(MODALITIES)}."
            )
        if self.model == "yt8m" and self.name != "rgb":
            raise UsageError(f"--{self.name}_model=yt8m: the YouTube-8M extractor makes rgb features only.")
        if self.name == "audio" and self.model != "vggish" and not self.model.endswith(".keras"):
            raise UsageError(
                f"--audio_model={self.model!r}: expected 'vggish' or a .keras model over 96 x 64 "
                "log-mel patches."
            )
        if self.name != "audio" and self.model == "vggish":
            raise UsageError(f"--{self.name}_model=vggish: VGGish makes audio features only.")
        if self.pca_dims is not None and (self.model in ("yt8m", "vggish") or self.pca_dims < 1):
            raise UsageError(
                f"--pca_dims={self.pca_dims} applies to keras.applications backbones and .keras models; "
                f"{self.model} has its own released PCA."
            )

    @property
    def quantized(self) -> bool:
        """Whether records store this modality as bytes (uint8) rather than floats."""
        return self.model in ("yt8m", "vggish") or self.pca_dims is not None

    @property
    def rounding(self) -> str:
        """The quantization's rounding: "truncate" for VGGish (its postprocessor), else "nearest"."""
        return "truncate" if self.model == "vggish" else "nearest"


@dataclasses.dataclass(frozen=True)
class ExtractionSpec:
    """Everything that decides the features: modalities in record order, and the frame sampling.

    Args:
        modalities: tuple of `ModalitySpec`, one per modality, in the order of the feature spec.
        fps: float, frames per second sampled (YouTube-8M: 1). Defaults to 1.0.
        max_frames: int, at most this many frames (and audio features) per video. Defaults to 300.
        num_frames: int or None; K frames at equal intervals over the whole video instead of `fps`.
        batch_size: int, frames (or audio patches) per inference batch. Defaults to 64.
    """

    modalities: tuple[ModalitySpec, ...]
    fps: float = 1.0
    max_frames: int = 300
    num_frames: int | None = None
    batch_size: int = 64

    def __post_init__(self):
        if not self.modalities:
            raise UsageError("--modalities: name at least one of rgb, audio, flow.")
        names = [modality.name for modality in self.modalities]
        if len(set(names)) != len(names):
            raise UsageError(f"--modalities names a modality twice: {','.join(names)}.")
        if not self.fps > 0:
            raise UsageError(f"--fps must be positive, got {self.fps}.")
        if self.max_frames < 1:
            raise UsageError(f"--max_frames must be positive, got {self.max_frames}.")
        if self.num_frames is not None and self.num_frames < 1:
            raise UsageError(f"--num_frames must be positive, got {self.num_frames}.")
        if self.batch_size < 1:
            raise UsageError(f"--batch_size must be positive, got {self.batch_size}.")
        if "flow" in names and (self.num_frames or self.max_frames) < 2:
            raise UsageError(
                "--modalities=flow needs at least 2 frames per video (--max_frames/--num_frames)."
            )

    def modality(self, name: str) -> ModalitySpec:
        """The `ModalitySpec` called `name`."""
        for modality in self.modalities:
            if modality.name == name:
                return modality
        raise KeyError(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(modality.name for modality in self.modalities)

    def sampling(self):
        """The `video.Sampling` of the frames."""
        from ac_keras.extraction import video

        return video.Sampling(fps=self.fps, max_frames=self.max_frames, num_frames=self.num_frames)


def _is_keras_file(model: str) -> bool:
    return model.endswith(".keras")


class Extractor:
    """Builds a spec's models (lazily, once) and runs the stages of the extraction.

    Stages (the pipeline runs them apart; `extract` runs them in a row):
    1. `inputs(path)`: decodes one video and yields `(modality, index, model_input)` one frame or flow image
       or log-mel patch at a time (memory: one frame), then nothing; raises `video.VideoError`.
    2. `embed(modality, inputs)`: a batch of model inputs -> features `(B, D)` (float32, or uint8 for
       VGGish whose postprocessor quantizes).
    3. `finish(modality, features, pca)`: one video's features -> the stored array (PCA applied for
       `--pca_dims`, quantized for byte modalities) and the video-level mean (`mean_<modality>`).

    Args:
        spec: the `ExtractionSpec`.
        pcas: optional dict modality -> `pca.PcaParams` for `--pca_dims` modalities (fitted later otherwise;
            `finish` then needs them passed).
    """

    def __init__(self, spec: ExtractionSpec, pcas: Mapping | None = None):
        self.spec = spec
        self._embedders = {}
        self._pcas = dict(pcas or {})
        for name, pca in self._pcas.items():
            self._check_pca(name, pca)

    def _check_pca(self, name: str, pca) -> None:
        """Raises DataError unless `pca` projects to modality `name`'s `--pca_dims` values."""
        modality = self.spec.modality(name)
        dims = int(np.shape(pca.components)[0])
        if modality.pca_dims != dims:
            source = f" (file {modality.pca_file})" if modality.pca_file else ""
            raise DataError(
                f"Modality {name}: the PCA{source} projects to {dims} values, but --pca_dims is "
                f"{modality.pca_dims}."
            )

    # --- models -------------------------------------------------------------------------------------------

    def embedder(self, name: str):
        """The embedder of modality `name` (built on first use)."""
        if name not in self._embedders:
            self._embedders[name] = self._build_embedder(self.spec.modality(name))
        return self._embedders[name]

    def _build_embedder(self, modality: ModalitySpec):
        if modality.name == "audio":
            from ac_keras.extraction import audio

            if _is_keras_file(modality.model):
                return audio.AudioEmbedder.from_keras_file(modality.model)
            if modality.weights == "none":
                return audio.AudioEmbedder.random_vggish(modality.seed, pca_path=modality.pca_file)
            if modality.weights == "imagenet":
                raise UsageError(
                    "--audio_weights: VGGish has no ImageNet weights; give the released vggish_model.ckpt "
                    "(see docs/extract.md) or 'none' for a random network (tests only)."
                )
            if modality.pca_file is None:
                raise UsageError(
                    "--vggish_pca: the released vggish_pca_params.npz is needed with real weights."
                )
            return audio.AudioEmbedder.from_vggish(modality.weights, modality.pca_file)
        if modality.model == "yt8m":
            from ac_keras.extraction import yt8m

            if not modality.model_dir:
                raise UsageError(
                    "--yt8m_model_dir: name the directory with the Inception graph and PCA files."
                )
            return yt8m.Yt8mEmbedder(os.path.expanduser(modality.model_dir))
        from ac_keras.extraction import backbones

        channels = 3
        if modality.name == "flow" and _is_keras_file(modality.model):
            channels = 2
        return backbones.make_frame_embedder(
            modality.model, weights=modality.weights, seed=modality.seed, channels=channels
        )

    def output_dim(self, name: str) -> int:
        """Values per stored feature of modality `name` (`--pca_dims` when given)."""
        modality = self.spec.modality(name)
        return modality.pca_dims or self.embedder(name).output_dim

    def feature_spec(self) -> str:
        """The `--features=` spec of the records, e.g. "rgb:1024,audio:128" or "rgb:2048:float"."""
        parts = []
        for modality in self.spec.modalities:
            dtype = "" if modality.quantized else ":float"
            parts.append(f"{modality.name}:{self.output_dim(modality.name)}{dtype}")
        return ",".join(parts)

    def frame_size(self, name: str) -> tuple[int, int] | None:
        """(height, width) that frames are resized to for modality `name`; None keeps them as decoded."""
        size = getattr(self.embedder(name), "input_size", None)
        if size is None or any(side is None for side in size):
            return None
        return tuple(int(side) for side in size)

    # --- stage 1: decoding --------------------------------------------------------------------------------

    def inputs(self, path: str) -> Iterator[tuple[str, int, np.ndarray]]:
        """Decodes `path` and yields `(modality, index, model_input)` in order; see the class docstring.

        Raises:
            video.VideoError: the file cannot be used (its `kind` says why).
        """
        from ac_keras.extraction import video

        names = self.spec.names
        if "rgb" in names or "flow" in names:
            yield from self._frame_inputs(path)
        if "audio" in names:
            from ac_keras.extraction import audio

            waveform = video.read_audio(path, sample_rate=audio.SAMPLE_RATE)
            if waveform is not None:
                patches = audio.log_mel_patches(waveform)
                for index, patch_index in enumerate(self._audio_indices(len(patches))):
                    yield "audio", index, patches[patch_index]

    def _audio_indices(self, num_patches: int) -> list[int]:
        """Patches kept: the first `max_frames`, or `num_frames` at the centres of equal segments."""
        if self.spec.num_frames is None:
            return list(range(min(num_patches, self.spec.max_frames)))
        count = self.spec.num_frames
        if num_patches <= count:
            return list(range(num_patches))
        return [((2 * k + 1) * num_patches) // (2 * count) for k in range(count)]

    def _frame_inputs(self, path: str) -> Iterator[tuple[str, int, np.ndarray]]:
        for name, index, _, model_input in self.timed_frame_inputs(path, self.spec.sampling()):
            yield name, index, model_input

    def timed_frame_inputs(self, path: str, sampling=None) -> Iterator[tuple[str, int, float, np.ndarray]]:
        """The rgb and flow inputs of `inputs`, one decoded frame at a time, with their time.

        Args:
            path: the video file.
            sampling: a `video.Sampling`; None: the spec's (`max_frames=None` reads the whole video).

        Yields:
            `(modality, index, seconds, model_input)`: rgb's input of frame `index` at its time; flow's input
            from frame `index` to the next at the time of frame `index`.

        Raises:
            video.VideoError: the file cannot be used.
        """
        from ac_keras.extraction import flow as flow_lib
        from ac_keras.extraction import video

        names = self.spec.names
        rgb_size = self.frame_size("rgb") if "rgb" in names else None
        flow_size = self.frame_size("flow") if "flow" in names else None
        flow_channels = getattr(self.embedder("flow"), "channels", 3) if "flow" in names else 3
        previous = None
        previous_time = None
        count = 0
        for index, (timestamp, frame) in enumerate(video.iter_frames(path, sampling or self.spec.sampling())):
            count += 1
            if "rgb" in names:
                yield "rgb", index, timestamp, _resize(frame, rgb_size)
            if "flow" in names:
                current = _resize(frame, flow_size)
                if previous is not None:
                    image = _flow_image(previous, current)
                    flow_input = image if flow_channels == 2 else flow_lib.flow_xym(image)
                    yield "flow", index - 1, previous_time, flow_input
                previous, previous_time = current, timestamp
        if count == 0:
            raise video.VideoError(path, "no_frames", "no frame could be decoded")

    def timed_audio_inputs(
        self, path: str, patches_per_piece: int = 64
    ) -> Iterator[tuple[int, float, np.ndarray]]:
        """The audio inputs of `inputs` for the whole track, decoded and turned into log-mel patches a piece
        at a time (memory: `patches_per_piece` patches of waveform, whatever the length of the track).

        The waveform is cut at patch boundaries (`audio.PATCH_FRAMES` STFT hops), each piece with the STFT
        window's overhang, so the patches are those of the whole waveform (`audio.log_mel_patches`).

        Yields:
            `(index, seconds, patch)`: patch `index` starts at `index * audio.PATCH_SECONDS`. Nothing for a
            file without an audio stream.

        Raises:
            video.VideoError: the file cannot be used.
        """
        from ac_keras.extraction import audio, video

        hop = audio.PATCH_FRAMES * audio.STFT_HOP_SAMPLES  # samples per patch
        overhang = audio.STFT_WINDOW_SAMPLES - audio.STFT_HOP_SAMPLES
        pieces = video.iter_audio(path, sample_rate=audio.SAMPLE_RATE)
        if next(pieces) is None:
            return
        waiting, num_waiting = [], 0  # decoded samples not yet in a patch, as decoded
        index = 0
        for piece in itertools.chain(pieces, [None]):
            final = piece is None
            if not final:
                waiting.append(piece)
                num_waiting += len(piece)
                if num_waiting < patches_per_piece * hop + overhang:
                    continue
            buffer = np.concatenate(waiting) if waiting else np.zeros((0,), np.float32)
            count = max(0, (len(buffer) - overhang) // hop) if final else patches_per_piece
            while count:
                patches = audio.log_mel_patches(buffer[: count * hop + overhang].astype(np.float64))
                for patch in patches:
                    yield index, index * audio.PATCH_SECONDS, patch
                    index += 1
                buffer = buffer[count * hop :]
                available = max(0, (len(buffer) - overhang) // hop)
                count = available if final else (patches_per_piece if available >= patches_per_piece else 0)
            waiting, num_waiting = [buffer], len(buffer)

    def flow_images(self, frames) -> np.ndarray:
        """The 2-channel flow images the extraction computes from a video's sampled frames.

        The client's part of the exported `classify_frames` signature for a model with a flow modality
        (optical flow is OpenCV, not a TensorFlow op): each frame is resized to the flow model's size
        (`resize_frames`), then the flow between consecutive frames is stored as a uint8 image
        (`flow.compute_flow`, `flow.flow_to_image`), exactly as `inputs` does.

        Args:
            frames: uint8 `(T, H, W, 3)` RGB frames, sampled as the extraction samples them.

        Returns:
            uint8 `(T - 1, h, w, 2)` (`(0, h, w, 2)` for fewer than 2 frames), `(h, w)` the flow model's
            frame size (the decoded size for a model that takes any).
        """
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (T, H, W, 3) RGB, got {frames.dtype} {frames.shape}.")
        size = self.frame_size("flow")
        resized = [_resize(frame, size) for frame in frames]
        images = [_flow_image(resized[index - 1], resized[index]) for index in range(1, len(resized))]
        if not images:
            height, width = size or frames.shape[1:3]
            return np.zeros((0, height, width, 2), np.uint8)
        return np.stack(images)

    # --- stage 2: inference -------------------------------------------------------------------------------

    def embed(self, name: str, inputs: Sequence[np.ndarray]) -> np.ndarray:
        """Features `(B, D)` of a batch of model inputs of modality `name` (all of one size)."""
        embedder = self.embedder(name)
        if not len(inputs):
            dtype = np.uint8 if getattr(embedder, "quantized", False) else np.float32
            return np.zeros([0, embedder.output_dim], dtype)
        if name == "audio":
            return np.asarray(embedder.embed_patches(np.stack(inputs)))
        if self.spec.modality(name).model == "yt8m":
            # The 2015 graph resizes each frame itself; frames of one batch may differ in size.
            return np.concatenate([embedder.embed(frame[None]) for frame in inputs])
        return np.asarray(embedder.embed(np.stack(inputs), batch_size=self.spec.batch_size))

    # --- stage 3: per-video finishing ---------------------------------------------------------------------

    def finish(self, name: str, features: np.ndarray, pca=None) -> tuple[np.ndarray, np.ndarray]:
        """One video's features `(T, D)` of modality `name` -> (stored array, video-level mean).

        The stored array is uint8 for byte modalities (quantized here unless the embedder already did, as
        VGGish's postprocessor does) and float32 otherwise. The mean is that of the float features before
        quantization (the released extractor's `mean_rgb`), or of the dequantized bytes when the embedder
        quantized. The `--pca_dims` PCA runs as TensorFlow ops (`pca.apply_pca_tensor`), the ones the
        exported `classify_frames` signature runs: its whitening scales up the directions of least variance,
        and with them the float rounding in which two implementations differ, enough to move bytes.
        """
        modality = self.spec.modality(name)
        features = np.asarray(features)
        if modality.pca_dims is not None:
            from ac_keras.extraction import pca as pca_lib

            pca = pca if pca is not None else self._pcas.get(name)
            if pca is None:
                raise ValueError(f"Modality {name}: --pca_dims needs the fitted PCA.")
            self._check_pca(name, pca)
            if len(features):
                features = pca_lib.apply_pca_tensor(pca, features).numpy()
            else:
                features = np.zeros([0, modality.pca_dims], np.float32)
        if features.dtype == np.uint8:
            mean = schema.dequantize(features).mean(axis=0) if len(features) else None
            return features, mean
        features = features.astype(np.float32)
        mean = features.mean(axis=0) if len(features) else None
        if modality.quantized:
            return schema.quantize(features, rounding=modality.rounding), mean
        return features, mean

    def extract(self, path: str) -> dict[str, np.ndarray]:
        """The stored arrays of one video, modality -> `(T, D)`; a modality with no features (e.g. no audio
        stream) is left out. Raises `video.VideoError` when the file cannot be used."""
        collected = {name: [] for name in self.spec.names}
        for name, _, model_input in self.inputs(path):
            collected[name].append(model_input)
        arrays = {}
        for name, inputs in collected.items():
            if not inputs:
                continue
            batches = [
                self.embed(name, inputs[start : start + self.spec.batch_size])
                for start in range(0, len(inputs), self.spec.batch_size)
            ]
            arrays[name], _ = self.finish(name, np.concatenate(batches))
        return arrays

    # --- the same stages in TensorFlow ops (the exported `classify_frames` signature) ----------------------

    def features_tensor(self, name: str, raw):
        """One video's stored features of modality `name`, computed with TensorFlow ops for a serving graph.

        The stages of `extract` after decoding: frame resizing (`resize_frames`), the flow images' magnitude
        channel for a 3-channel flow model (`flow.flow_xym_tensor`), the log-mel patches and the patches kept
        (`audio.log_mel_patches_tensor`), the model, the PCA (`--pca_dims`, the YouTube-8M and VGGish ones)
        and the quantization of byte modalities (`schema.quantize_tensor`). Its features equal `extract`'s
        up to float rounding: the `--pca_dims` PCA is the same TensorFlow op in both, but the YouTube-8M and
        VGGish PCAs are NumPy in `extract` (the released recipes), so there a quantized value at a rounding
        boundary may differ by one step.

        Args:
            name: "rgb", "flow" or "audio".
            raw: rgb: the sampled frames, uint8 `(T, H, W, 3)`; flow: the flow images of `flow_images`,
                uint8 `(T - 1, h, w, 2)`; audio: the 16 kHz mono waveform, float32 `(num_samples,)`.

        Returns:
            `(num_features, dim)`: uint8 for a byte modality, else float32.

        Build the embedder (`embedder(name)`) before tracing a function that calls this: a model loaded
        while a function is traced keeps its initial weights in that function.
        """
        modality = self.spec.modality(name)
        embedder = self.embedder(name)
        if name == "audio":
            from ac_keras.extraction import audio

            patches = audio.log_mel_patches_tensor(tf.cast(raw, tf.float32))
            patches = tf.gather(patches, self._audio_indices_tensor(tf.shape(patches)[0]))
            features = embedder.embed_tensor(patches)
        elif name == "flow":
            from ac_keras.extraction import flow as flow_lib

            images = raw if getattr(embedder, "channels", 3) == 2 else flow_lib.flow_xym_tensor(raw)
            features = embedder.embed_tensor(images)
        else:
            features = embedder.embed_tensor(resize_frames(raw, self.frame_size(name)))
        if modality.pca_dims is not None:
            from ac_keras.extraction import pca as pca_lib

            features = pca_lib.apply_pca_tensor(self._pcas[name], features)
        if features.dtype == tf.uint8:
            return features
        if modality.quantized:
            return schema.quantize_tensor(features, rounding=modality.rounding)
        return tf.cast(features, tf.float32)

    def _audio_indices_tensor(self, num_patches):
        """`_audio_indices` in TensorFlow ops: int32 indices of the patches kept."""
        if self.spec.num_frames is None:
            return tf.range(tf.minimum(num_patches, self.spec.max_frames))
        count = self.spec.num_frames
        centres = ((2 * tf.range(count) + 1) * num_patches) // (2 * count)
        return tf.cond(num_patches <= count, lambda: tf.range(num_patches), lambda: centres)

    # --- extraction.json ----------------------------------------------------------------------------------

    def describe(self) -> dict:
        """The `extraction.json` content (JSON-serializable)."""
        modalities = {}
        for modality in self.spec.modalities:
            embedder = self.embedder(modality.name)
            entry = {
                "spec": dataclasses.asdict(modality),
                "model": dict(embedder.description),
                "dim": self.output_dim(modality.name),
                "dtype": "uint8" if modality.quantized else "float",
                "quantization": (
                    {
                        "rounding": modality.rounding,
                        "min": schema.MIN_QUANTIZED_VALUE,
                        "max": schema.MAX_QUANTIZED_VALUE,
                    }
                    if modality.quantized
                    else None
                ),
            }
            if modality.pca_dims is not None and modality.pca_file:
                entry["pca"] = {"file": modality.pca_file, "sha256": _sha256_or_none(modality.pca_file)}
            modalities[modality.name] = entry
        return {
            "format": FORMAT,
            "features": self.feature_spec(),
            "sampling": {
                "fps": self.spec.fps,
                "max_frames": self.spec.max_frames,
                "num_frames": self.spec.num_frames,
                "rule": (
                    "num_frames at the centres of equal segments"
                    if self.spec.num_frames
                    else "k / fps for k = 0, 1, ..."
                ),
            },
            "batch_size": self.spec.batch_size,
            "modalities": modalities,
            "libraries": library_versions(),
        }

    @classmethod
    def from_description(cls, description: Mapping, *, source: str = EXTRACTION_FILE) -> "Extractor":
        """Rebuilds the extractor that `describe()` recorded, checking every recorded file's SHA-256.

        Args:
            description: the `extraction.json` dict.
            source: where it was read, for messages.

        Raises:
            DataError: an unknown format or a file whose hash differs; MissingDataError: a recorded file
                that is missing.
        """
        if description.get("format") != FORMAT:
            raise DataError(f"{source}: unknown format {description.get('format')!r}; expected {FORMAT!r}.")
        modalities = []
        for name, entry in description["modalities"].items():
            modalities.append(ModalitySpec(**entry["spec"]))
            for file_entry in _recorded_files(entry):
                _check_file(file_entry["path"], file_entry.get("sha256"), name, source)
        sampling = description["sampling"]
        spec = ExtractionSpec(
            modalities=tuple(modalities),
            fps=sampling["fps"],
            max_frames=sampling["max_frames"],
            num_frames=sampling["num_frames"],
            batch_size=description.get("batch_size", 64),
        )
        pcas = {}
        for modality in spec.modalities:
            if modality.pca_dims is not None:
                from ac_keras.extraction import pca as pca_lib

                pcas[modality.name] = pca_lib.load_pca(modality.pca_file)
        return cls(spec, pcas)


def _recorded_files(entry: Mapping) -> list[dict]:
    """The `{path, sha256}` of every file one modality's entry records (model files, weights, PCA)."""
    model = entry.get("model", {})
    found = []
    if model.get("model_dir") and isinstance(model.get("files"), Mapping):  # yt8m
        found += [
            {"path": os.path.join(model["model_dir"], name), "sha256": sha256}
            for name, sha256 in model["files"].items()
        ]
    if model.get("model_sha256"):  # a .keras model
        found.append({"path": model["model"], "sha256": model["model_sha256"]})
    if model.get("weights_sha256"):  # a backbone's weights file
        found.append({"path": model["weights"], "sha256": model["weights_sha256"]})
    found += [dict(item) for item in model.get("weight_files") or ()]  # VGGish checkpoint or .keras
    if model.get("pca_path"):  # VGGish PCA
        found.append({"path": model["pca_path"], "sha256": model.get("pca_sha256")})
    if entry.get("pca", {}).get("file"):  # --pca_dims
        found.append({"path": entry["pca"]["file"], "sha256": entry["pca"].get("sha256")})
    return found


def _check_file(path: str, sha256: str | None, modality: str, source: str) -> None:
    if not tf.io.gfile.exists(path):
        raise MissingDataError(
            f"{source}: the {modality} features were extracted with {path}, which is missing; restore it "
            "(the same file) to extract features the model was trained on."
        )
    if sha256 is not None:
        actual = file_sha256(path)
        if actual != sha256:
            raise DataError(
                f"{source}: {path} ({modality}) has changed since the features were extracted "
                f"(SHA-256 {actual[:12]}..., recorded {sha256[:12]}...); features from it would differ."
            )


def _flow_image(previous: np.ndarray, current: np.ndarray) -> np.ndarray:
    """The uint8 flow image `(H, W, 2)` from one resized frame to the next."""
    from ac_keras.extraction import flow as flow_lib

    return flow_lib.flow_to_image(flow_lib.compute_flow(previous, current))


def _sha256_or_none(path: str) -> str | None:
    return file_sha256(path) if tf.io.gfile.exists(path) else None


def resize_frames(frames, size: tuple[int, int] | None):
    """Frames `(..., H, W, C)` uint8 resized to `size` (height, width) by area averaging, rounded to uint8.

    TensorFlow ops (`tf.image.resize(method="area")`), so the exported frames signature
    (`ac_keras.export --with_extractor`) resizes exactly as the extraction did. None keeps the frames.
    """
    if size is None or tuple(frames.shape[-3:-1]) == tuple(size):
        return frames
    resized = tf.image.resize(tf.cast(frames, tf.float32), size, method="area")
    return tf.cast(tf.clip_by_value(tf.round(resized), 0.0, 255.0), tf.uint8)


def _resize(frame: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """One decoded frame through `resize_frames`, as a NumPy array."""
    return np.asarray(resize_frames(frame, size))


def library_versions() -> dict:
    """Versions of the libraries that decide the features."""
    import importlib.metadata

    versions = {"python": platform.python_version()}
    for package in (
        "ac_keras",
        "tensorflow",
        "keras",
        "numpy",
        "av",
        "opencv-python-headless",
        "apache-beam",
    ):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def write_description(description: Mapping, path: str) -> None:
    """Writes `extraction.json` (local or `gs://`)."""
    with tf.io.gfile.GFile(path, "w") as handle:
        json.dump(description, handle, indent=1, sort_keys=True)
        handle.write("\n")


def read_description(path: str) -> dict:
    """Reads `extraction.json`; MissingDataError / DataError naming the file."""
    if not tf.io.gfile.exists(path):
        raise MissingDataError(f"{path} does not exist.")
    try:
        with tf.io.gfile.GFile(path, "r") as handle:
            return json.load(handle)
    except json.JSONDecodeError as error:
        raise DataError(f"{path} is not valid JSON: {error}.") from None
