"""Frame feature extractors: `keras.applications` backbones by name, and `.keras` models (paper section 5.2).

A `FrameEmbedder` maps uint8 frames `(batch, height, width, channels)` to float32 features `(batch, dim)`:
the frames are converted to float32, to the model's channel count (3 -> 1 by the luma weights of
`tf.image.rgb_to_grayscale`, 1 -> 3 by repetition; other changes are refused), resized to the model's input
size (`tf.image.resize`, bilinear with half-pixel centers and `antialias=False`: each output pixel
interpolates its 2 x 2 nearest source pixels, like OpenCV's `INTER_LINEAR`, so strong downscaling aliases),
then, for a backbone, passed through the backbone's own `preprocess_input`, and the model runs inside a
`tf.function` with `training=False`.

- A backbone name (`BACKBONES`) builds `keras.applications.<Constructor>(include_top=False, pooling="avg")`
  with ImageNet weights (Keras downloads them on first use, on a machine with internet), a weights file of
  the same architecture, or random weights from a seed ("none": for tests only).
- A path ending in `.keras` loads that model (`keras.saving.load_model(path, compile=False)`); it carries its
  own preprocessing (e.g. a `Rescaling` layer) and receives the resized frames as float32 values in 0..255.
  Its custom layers, if any, must be registered (import their module) before loading.
"""

import dataclasses
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from ac_keras.data.files import file_sha256
from ac_keras.errors import DataError, MissingDataError, UsageError

KERAS_SUFFIX = ".keras"
WEIGHTS_CHOICES = ("imagenet", "none")  # or a path to a weights file
RESIZE_METHOD = "bilinear (tf.image.resize, half-pixel centers, antialias=False)"


@dataclasses.dataclass(frozen=True)
class BackboneInfo:
    """A `keras.applications` backbone.

    Args:
        constructor: str, the `keras.applications` function, e.g. "ResNet50".
        module: str, the `keras.applications` module whose `preprocess_input` the backbone takes, e.g.
            "resnet".
        input_size: int, the default height and width (the size of its ImageNet training images).
        feature_dim: int, the number of channels of its last feature map, the length of the pooled feature.
    """

    constructor: str
    module: str
    input_size: int
    feature_dim: int

    @property
    def build(self) -> Callable:
        """The `keras.applications` constructor."""
        return getattr(keras.applications, self.constructor)

    @property
    def preprocess_input(self) -> Callable:
        """The backbone's own `keras.applications.<module>.preprocess_input`."""
        return getattr(keras.applications, self.module).preprocess_input

    @property
    def preprocessing_name(self) -> str:
        """`preprocess_input`'s qualified name, e.g. "keras.applications.resnet.preprocess_input"."""
        return f"keras.applications.{self.module}.preprocess_input"


BACKBONES = {
    "inception_v3": BackboneInfo("InceptionV3", "inception_v3", 299, 2048),
    "inception_resnet_v2": BackboneInfo("InceptionResNetV2", "inception_resnet_v2", 299, 1536),
    "resnet50": BackboneInfo("ResNet50", "resnet", 224, 2048),
    "resnet101": BackboneInfo("ResNet101", "resnet", 224, 2048),
    "resnet152": BackboneInfo("ResNet152", "resnet", 224, 2048),
    "resnet50_v2": BackboneInfo("ResNet50V2", "resnet_v2", 224, 2048),
    "resnet152_v2": BackboneInfo("ResNet152V2", "resnet_v2", 224, 2048),
    "efficientnet_b0": BackboneInfo("EfficientNetB0", "efficientnet", 224, 1280),
    "efficientnet_v2_s": BackboneInfo("EfficientNetV2S", "efficientnet_v2", 384, 1280),
    "efficientnet_v2_m": BackboneInfo("EfficientNetV2M", "efficientnet_v2", 480, 1280),
    "mobilenet_v2": BackboneInfo("MobileNetV2", "mobilenet_v2", 224, 1280),
    "xception": BackboneInfo("Xception", "xception", 299, 2048),
    "convnext_tiny": BackboneInfo("ConvNeXtTiny", "convnext", 224, 768),
    "densenet121": BackboneInfo("DenseNet121", "densenet", 224, 1024),
}


def _identity(images):
    return images


class FrameEmbedder:
    """A frame model with its input conversion: uint8 frames -> float32 features; see `make_frame_embedder`.

    Args:
        model: a single-input `keras.Model` whose output is `(batch, dim)`.
        name: str, the backbone's name or the `.keras` path.
        input_size: `(height, width)` frames are resized to, or None to feed frames at their own size.
        channels: int, the channel count the model takes.
        squeeze_channel: bool, whether the model takes `(batch, height, width)` frames with no channel axis
            (then `channels` is 1). Defaults to False.
        preprocess_input: the function applied to the resized float32 frames before the model. Defaults to
            None: none.
        description: JSON-serializable dict describing the extractor. Defaults to None: `{"model": name}`.

    Attributes:
        name, input_size, channels, description, model: as given.
        output_dim: int, the feature length.
    """

    def __init__(
        self,
        model,
        *,
        name: str,
        input_size: tuple[int, int] | None,
        channels: int,
        squeeze_channel: bool = False,
        preprocess_input: Callable | None = None,
        description: dict | None = None,
    ):
        self.model = model
        self.name = name
        self.input_size = None if input_size is None else (int(input_size[0]), int(input_size[1]))
        self.channels = int(channels)
        self.output_dim = int(model.output_shape[-1])
        self.description = dict(description) if description is not None else {"model": name}
        self._squeeze_channel = squeeze_channel
        self._preprocess_input = preprocess_input or _identity
        self._forwards = {}

    def _forward(self, frame_channels: int):
        """The traced forward pass for frames of `frame_channels` channels (one trace per channel count)."""
        if frame_channels in self._forwards:
            return self._forwards[frame_channels]
        if frame_channels != self.channels and (frame_channels, self.channels) not in ((3, 1), (1, 3)):
            raise UsageError(
                f"Model {self.name} takes {self.channels}-channel frames; {frame_channels}-channel frames "
                "cannot be converted to it (only RGB to grayscale and grayscale to RGB are)."
            )

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, frame_channels], tf.uint8)])
        def forward(frames):
            images = tf.cast(frames, tf.float32)
            if frame_channels == 3 and self.channels == 1:
                images = tf.image.rgb_to_grayscale(images)
            elif frame_channels == 1 and self.channels == 3:
                images = tf.repeat(images, 3, axis=-1)
            if self.input_size is not None:
                images = tf.image.resize(images, self.input_size, method="bilinear", antialias=False)
            images = self._preprocess_input(images)
            if self._squeeze_channel:
                images = images[..., 0]
            return tf.cast(self.model(images, training=False), tf.float32)

        self._forwards[frame_channels] = forward
        return forward

    def embed_tensor(self, frames):
        """`embed` in TensorFlow ops, for a serving graph: uint8 tensor `(batch, height, width, channels)`
        with a known channel count -> float32 `(batch, output_dim)`, all frames in one forward pass."""
        channels = frames.shape[-1]
        if channels is None:
            raise ValueError("FrameEmbedder.embed_tensor needs frames with a known channel count.")
        return self._forward(int(channels))(frames)

    def embed(self, frames, batch_size: int = 32) -> np.ndarray:
        """Computes one feature vector per frame.

        Args:
            frames: uint8 array `(batch, height, width, channels)`; channels 3 (RGB), 1 or 2 (flow images).
            batch_size: int >= 1, frames per forward pass. Defaults to 32.

        Returns:
            float32 array `(batch, output_dim)`.

        Raises:
            ValueError: `frames` is not a uint8 array of rank 4.
            UsageError: the frames' channel count cannot be converted to the model's.
        """
        frames = np.asarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4:
            raise ValueError(
                "FrameEmbedder.embed takes uint8 frames (batch, height, width, channels), got "
                f"{frames.dtype} {frames.shape}."
            )
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
        forward = self._forward(frames.shape[-1])
        features = np.zeros((frames.shape[0], self.output_dim), np.float32)
        for start in range(0, frames.shape[0], batch_size):
            features[start : start + batch_size] = forward(frames[start : start + batch_size]).numpy()
        return features


def _check_channels(channels) -> int:
    if isinstance(channels, bool) or not isinstance(channels, int | np.integer) or channels < 1:
        raise UsageError(
            f"channels must be a positive int (3 for RGB, 2 for flow, 1 for gray), got {channels!r}."
        )
    return int(channels)


def _size_pair(input_size) -> tuple[int, int]:
    if isinstance(input_size, int | np.integer) and not isinstance(input_size, bool):
        input_size = (input_size, input_size)
    try:
        height, width = (int(value) for value in input_size)
    except (TypeError, ValueError):
        raise UsageError(f"input_size must be an int or (height, width), got {input_size!r}.") from None
    if height < 1 or width < 1:
        raise UsageError(f"input_size must be positive, got {input_size!r}.")
    return height, width


def _make_backbone(name, info: BackboneInfo, weights, seed, channels, input_size) -> FrameEmbedder:
    height, width = _size_pair(info.input_size if input_size is None else input_size)
    description = {
        "model": name,
        "keras_application": f"keras.applications.{info.constructor}",
        "keras_version": keras.__version__,
        "weights": weights,
        "random_init": weights == "none",
        "input_size": [height, width],
        "channels": channels,
        "resize": RESIZE_METHOD,
        "preprocessing": info.preprocessing_name,
        "pooling": "avg",
    }
    if weights == "imagenet":
        if channels != 3:
            raise UsageError(
                f"ImageNet weights of {name} take 3-channel (RGB) frames, not channels={channels}."
            )
        keras_weights = "imagenet"
    elif weights == "none":
        logging.warning(
            "RANDOM WEIGHTS (weights='none'): backbone %s is randomly initialized (seed %d); its features "
            "are for tests only.",
            name,
            seed,
        )
        description["seed"] = seed
        # The applications take no initializer seeds; the global seeds make the weights a function of `seed`.
        keras.utils.set_random_seed(seed)
        keras_weights = None
    else:
        description["weights_sha256"] = file_sha256(weights)
        keras_weights = weights
    probe = tf.zeros([1, 2, 2, channels])
    try:
        preprocessed_shape = info.preprocess_input(probe).shape
    except (ValueError, tf.errors.InvalidArgumentError):
        preprocessed_shape = None
    if preprocessed_shape != probe.shape:
        raise UsageError(
            f"{info.preprocessing_name} of {name} takes 3-channel frames, not channels={channels}."
        )
    try:
        model = info.build(
            include_top=False, weights=keras_weights, input_shape=(height, width, channels), pooling="avg"
        )
    except ValueError as error:
        if keras_weights not in ("imagenet", None):
            raise DataError(
                f"Weights file {weights} does not fit {name} at {height}x{width}x{channels}: {error}"
            ) from None
        raise UsageError(
            f"keras.applications.{info.constructor} refuses input_size/channels: {error}"
        ) from None
    return FrameEmbedder(
        model,
        name=name,
        input_size=(height, width),
        channels=channels,
        preprocess_input=info.preprocess_input,
        description=description,
    )


def _make_keras_model(path, weights, input_size, output_layer) -> FrameEmbedder:
    if weights != "imagenet":
        raise UsageError(
            f"weights={weights!r} applies to keras.applications backbones; the .keras model {path} carries "
            "its own weights."
        )
    sha256 = file_sha256(path)
    try:
        model = keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, OSError) as error:
        raise DataError(f"Cannot load the .keras model {path}: {error}") from None
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise DataError(
            f"{path}: a frame model takes one input and gives one output, this one has "
            f"{len(model.inputs)} and {len(model.outputs)}."
        )
    if output_layer is not None:
        try:
            layer = model.get_layer(output_layer)
        except ValueError:
            names = ", ".join(layer.name for layer in model.layers)
            raise UsageError(f"{path} has no layer {output_layer!r}; its layers: {names}.") from None
        model = keras.Model(model.inputs, layer.output, name=f"{model.name}_{output_layer}")
    output_shape = tuple(model.outputs[0].shape)
    if len(output_shape) != 2 or output_shape[-1] is None:
        advice = (
            " End it with pooling (e.g. keras.layers.GlobalAveragePooling2D) or pick a 2-D layer with "
            "output_layer."
            if len(output_shape) == 4
            else ""
        )
        raise DataError(
            f"{path}: a frame model's output must be (batch, dim), this one's is {output_shape}.{advice}"
        )
    input_shape = tuple(model.inputs[0].shape)
    if len(input_shape) == 3:  # (batch, height, width): one gray channel without its axis
        squeeze_channel, channels = True, 1
    elif len(input_shape) == 4 and input_shape[-1] is not None:
        squeeze_channel, channels = False, input_shape[-1]
    else:
        raise DataError(
            f"{path}: a frame model takes (batch, height, width[, channels]) with a known channel count, "
            f"this one takes {input_shape}."
        )
    model_size = input_shape[1:3]
    if None not in model_size:
        if input_size is not None and _size_pair(input_size) != model_size:
            raise UsageError(
                f"{path} takes {model_size[0]}x{model_size[1]} frames; input_size={input_size!r} "
                "cannot change that."
            )
        size = model_size
    elif input_size is not None:
        size = _size_pair(input_size)
    else:
        size = None
    description = {
        "model": path,
        "model_sha256": sha256,
        "output_layer": output_layer,
        "weights": "file",
        "random_init": False,
        "input_size": None if size is None else list(size),
        "channels": channels,
        "resize": RESIZE_METHOD if size is not None else None,
        "preprocessing": "none (the model's own layers)",
        "pooling": None,
    }
    return FrameEmbedder(
        model,
        name=path,
        input_size=size,
        channels=channels,
        squeeze_channel=squeeze_channel,
        description=description,
    )


def make_frame_embedder(
    model: str,
    *,
    weights: str = "imagenet",
    seed: int = 0,
    channels: int = 3,
    input_size: int | tuple[int, int] | None = None,
    output_layer: str | None = None,
) -> FrameEmbedder:
    """Builds the frame feature extractor for a backbone name or a `.keras` model file.

    Args:
        model: str, a `BACKBONES` name (e.g. "resnet152", "inception_resnet_v2") or a path ending in
            `.keras`.
        weights: str, for a backbone: "imagenet" (Keras's ImageNet weights, downloaded by Keras on first use),
            "none" (random weights from `seed`: for tests only, logged as a warning) or the path of a weights
            file of the same architecture, input size and channel count (e.g. saved by `save_weights` to
            `x.weights.h5`). A `.keras` model carries its own weights and accepts only the default.
            Defaults to "imagenet".
        seed: int, the seed of random weights (weights="none"); the same seed gives the same weights. It
            reseeds Python's, NumPy's and TensorFlow's global generators (`keras.utils.set_random_seed`).
            Defaults to 0.
        channels: int, for a backbone, the channel count the model takes: 3 (RGB, the only choice with
            ImageNet weights), 1, or 2 (flow images; backbones whose `preprocess_input` is per-channel
            ImageNet mean subtraction, such as the ResNets and DenseNets, take 3 only). A `.keras` model's
            own input sets it. Defaults to 3.
        input_size: int or `(height, width)`, the size frames are resized to. Defaults to None: a backbone's
            default size (`BACKBONES[name].input_size`), a `.keras` model's input size. A `.keras` model with
            unknown spatial size and no input_size receives the frames at their own size.
        output_layer: str, for a `.keras` model, the layer whose output is the feature (e.g. "features" for
            the Flash-MNIST frame CNN, whose output is class probabilities). Defaults to None: the model's
            output.

    Returns:
        A `FrameEmbedder`.

    Raises:
        UsageError: an unknown backbone name (the message lists the names), a bad weights, channels,
            input_size or output_layer.
        MissingDataError: the `.keras` file or the weights file does not exist.
        DataError: the file cannot be loaded, the weights do not fit the architecture, or the `.keras`
            model's output is not `(batch, dim)`.
    """
    if not isinstance(model, str) or not model:
        raise UsageError(f"model must be a backbone name or a .keras path, got {model!r}.")
    if model.endswith(KERAS_SUFFIX):
        if not tf.io.gfile.exists(model):
            raise MissingDataError(f"Frame model file {model} does not exist.")
        return _make_keras_model(model, weights, input_size, output_layer)
    if model not in BACKBONES:
        raise UsageError(
            f"Unknown frame model {model!r}: give one of {', '.join(sorted(BACKBONES))} or the path of a "
            f"{KERAS_SUFFIX} model."
        )
    if output_layer is not None:
        raise UsageError(
            "output_layer applies to .keras models; a backbone gives its pooled last feature map."
        )
    if weights not in WEIGHTS_CHOICES:
        if not isinstance(weights, str) or not weights:
            raise UsageError(f"weights must be 'imagenet', 'none' or a weights file path, got {weights!r}.")
        if not tf.io.gfile.exists(weights):
            raise MissingDataError(
                f"Weights file {weights} does not exist (weights is 'imagenet', 'none' or a path)."
            )
    return _make_backbone(model, BACKBONES[model], weights, seed, _check_channels(channels), input_size)
