"""Optical flow between consecutive sampled frames, stored as TSN-style uint8 flow images.

The paper's flow features come from a CNN over flow images stacking the horizontal and vertical fields, as in
TSN. Flow is computed with OpenCV on grayscale frames: TV-L1 (`cv2.optflow.DualTVL1OpticalFlow`, as TSN's
`dense_flow`) where the OpenCV build has the contrib module, else DIS (`cv2.DISOpticalFlow`, preset MEDIUM),
which every build has. The two give different fields, so features extracted with one do not match a model
trained on the other; `flow_method()` says which one is used and the extraction spec records it.

Each field is stored as a uint8 image the way TSN stores it: clipped to `[-FLOW_BOUND, FLOW_BOUND]` pixels
and mapped linearly onto [0, 255] (`flow_to_image`). For ImageNet backbones, which take 3 channels,
`flow_xym` adds the magnitude of the flow as a third channel.

Flow is computed between consecutive *sampled* frames (1 s apart at the YouTube-8M rate), not between
consecutive frames of the video: T sampled frames give T - 1 flow images.
"""

import cv2
import numpy as np

# Pixels of flow at which the uint8 flow images saturate (TSN's bound).
FLOW_BOUND = 20.0
FLOW_METHODS = ("tvl1", "dis")


def flow_method() -> str:
    """The flow algorithm this OpenCV build offers: "tvl1" with the contrib `optflow` module, else "dis"."""
    optflow = getattr(cv2, "optflow", None)
    return "tvl1" if hasattr(optflow, "DualTVL1OpticalFlow_create") else "dis"


def _create(method: str):
    if method == "tvl1":
        if flow_method() != "tvl1":
            raise ValueError("Flow method 'tvl1' needs OpenCV's contrib module cv2.optflow, absent here.")
        return cv2.optflow.DualTVL1OpticalFlow_create()
    if method == "dis":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    raise ValueError(f"Flow method must be one of {FLOW_METHODS} or None, got {method!r}.")


def _gray(rgb: np.ndarray, name: str) -> np.ndarray:
    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[-1] != 3:
        raise ValueError(f"{name} must be a uint8 (H, W, 3) RGB frame, got {rgb.dtype} {rgb.shape}.")
    return cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)


def compute_flow(previous_rgb: np.ndarray, next_rgb: np.ndarray, method: str | None = None) -> np.ndarray:
    """Dense optical flow from one RGB frame to the next, on their grayscale versions.

    Args:
        previous_rgb: uint8 (H, W, 3) RGB frame.
        next_rgb: uint8 (H, W, 3) RGB frame of the same size.
        method: "tvl1", "dis" or None for `flow_method()`. Defaults to None.

    Returns:
        float32 (H, W, 2): (dx, dy) in pixels, the displacement of each pixel of `previous_rgb` to
        `next_rgb` (x to the right, y down). The same inputs give the same output.

    Raises:
        ValueError: frames not uint8 (H, W, 3) of one size, or an unknown or unavailable method.
    """
    algorithm = _create(method or flow_method())
    return _compute(algorithm, _gray(previous_rgb, "previous_rgb"), _gray(next_rgb, "next_rgb"))


def _compute(algorithm, previous_gray, next_gray) -> np.ndarray:
    if previous_gray.shape != next_gray.shape:
        raise ValueError(f"Frames differ in size: {previous_gray.shape} and {next_gray.shape}.")
    return algorithm.calc(previous_gray, next_gray, None).astype(np.float32, copy=False)


def flow_to_image(flow: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Quantizes flow fields to uint8 images, TSN style.

    `image = round((clip(flow, -bound, bound) + bound) * 255 / (2 * bound))`, rounding half to even
    (as OpenCV's `cvRound` in TSN's `dense_flow`): -bound gives 0, +bound gives 255, 0 gives 128.

    Args:
        flow: float (..., 2) flow in pixels (any leading shape).
        bound: float > 0, pixels at which the image saturates. Defaults to `FLOW_BOUND`.

    Returns:
        uint8 array of the shape of `flow`.
    """
    _check_bound(bound)
    clipped = np.clip(np.asarray(flow, np.float32), -bound, bound)
    return np.round((clipped + bound) * (255.0 / (2 * bound))).astype(np.uint8)


def image_to_flow(images: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Inverts `flow_to_image` up to its quantization: `images * 2 * bound / 255 - bound`, float32 pixels."""
    _check_bound(bound)
    return np.asarray(images, np.float32) * (2 * bound / 255.0) - bound


def flow_xym(images: np.ndarray, bound: float = FLOW_BOUND) -> np.ndarray:
    """Adds the flow magnitude as a third channel, for backbones that take 3-channel images.

    With `(dx, dy) = image_to_flow(images, bound)`, the third channel is
    `round(min(sqrt(dx**2 + dy**2), bound) * 255 / bound)`: 0 for no motion (up to the quantization of dx and
    dy: half a step, 0.08 pixels at the default bound, reads as a magnitude of 1 or 2), 255 at `bound`
    pixels or more.

    Args:
        images: uint8 (..., H, W, 2) flow images from `flow_to_image`.
        bound: float, the bound they were made with. Defaults to `FLOW_BOUND`.

    Returns:
        uint8 (..., H, W, 3): x, y (as given) and magnitude.

    Raises:
        ValueError: `images` is not uint8 with 2 channels last.
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim < 3 or images.shape[-1] != 2:
        raise ValueError(
            f"images must be uint8 (..., H, W, 2) flow images, got {images.dtype} {images.shape}."
        )
    flow = image_to_flow(images, bound)
    magnitude = np.minimum(np.sqrt(np.sum(np.square(flow), axis=-1)), bound)
    magnitude_image = np.round(magnitude * (255.0 / bound)).astype(np.uint8)
    return np.concatenate([images, magnitude_image[..., np.newaxis]], axis=-1)


def flow_xym_tensor(images, bound: float = FLOW_BOUND):
    """`flow_xym` in TensorFlow ops (float32, ties to even), for a serving graph.

    Args:
        images: uint8 tensor `(..., H, W, 2)` of flow images.
        bound: float, the bound they were made with. Defaults to `FLOW_BOUND`.

    Returns:
        uint8 tensor `(..., H, W, 3)`, equal to `flow_xym` of the same images.
    """
    import tensorflow as tf

    _check_bound(bound)
    flow = tf.cast(images, tf.float32) * np.float32(2 * bound / 255.0) - np.float32(bound)
    magnitude = tf.minimum(tf.sqrt(tf.reduce_sum(tf.square(flow), axis=-1)), np.float32(bound))
    magnitude_image = tf.cast(tf.round(magnitude * np.float32(255.0 / bound)), tf.uint8)
    return tf.concat([images, magnitude_image[..., tf.newaxis]], axis=-1)


def flow_images(frames: np.ndarray, method: str | None = None, bound: float = FLOW_BOUND) -> np.ndarray:
    """Flow images between each pair of consecutive frames.

    Args:
        frames: uint8 (T, H, W, 3) RGB frames, in time order.
        method: "tvl1", "dis" or None for `flow_method()`. Defaults to None.
        bound: float, see `flow_to_image`. Defaults to `FLOW_BOUND`.

    Returns:
        uint8 (T - 1, H, W, 2): image t is the flow from frame t to frame t + 1; (0, H, W, 2) when T < 2.

    Raises:
        ValueError: `frames` is not uint8 (T, H, W, 3), or a bad method or bound.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 (T, H, W, 3) RGB, got {frames.dtype} {frames.shape}.")
    state = FlowState(method, bound)
    images = [state.update(frame) for frame in frames][1:]
    if not images:
        return np.zeros((0, *frames.shape[1:3], 2), np.uint8)
    return np.stack(images)


class FlowState:
    """Flow images of a stream of frames, one frame at a time, holding only the previous (grayscale) frame.

    Args:
        method: "tvl1", "dis" or None for `flow_method()`. Defaults to None.
        bound: float, see `flow_to_image`. Defaults to `FLOW_BOUND`.

    Example:
        >>> state = FlowState()
        >>> for timestamp, frame in video.iter_frames(path, sampling):
        ...     image = state.update(frame)  # None for the first frame
        ...     if image is not None:
        ...         write(timestamp, image)

    Raises:
        ValueError: an unknown or unavailable method, or a bound that is not positive.
    """

    def __init__(self, method: str | None = None, bound: float = FLOW_BOUND):
        _check_bound(bound)
        self.method = method or flow_method()
        self.bound = float(bound)
        self._algorithm = _create(self.method)
        self._previous = None

    def update(self, rgb: np.ndarray) -> np.ndarray | None:
        """Takes the next frame (uint8 (H, W, 3) RGB); returns the flow image (H, W, 2) from the previous
        frame to this one, or None for the first frame since construction or `reset()`."""
        gray = _gray(rgb, "rgb")
        previous, self._previous = self._previous, gray
        if previous is None:
            return None
        return flow_to_image(_compute(self._algorithm, previous, gray), self.bound)

    def reset(self) -> None:
        """Forgets the previous frame, to start another video."""
        self._previous = None


def _check_bound(bound) -> None:
    if isinstance(bound, bool) or not isinstance(bound, int | float) or not 0 < bound < np.inf:
        raise ValueError(f"Flow bound must be a positive number of pixels, got {bound!r}.")
