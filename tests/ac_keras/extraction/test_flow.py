"""Tests of ac_keras.extraction.flow: flow of a shifted texture, TSN quantization, flow images."""

import cv2
import numpy as np
import pytest

from ac_keras.extraction import flow
from ac_keras.testing import videos

SIZE = (128, 96)  # (width, height)
SIDE = 32


def shifted_pair(shift=3):
    """Two frames of a textured square on grey, the second with the square `shift` pixels to the right."""
    first = videos.moving_square(0, SIZE, side=SIDE, speed=shift)
    second = videos.moving_square(1, SIZE, side=SIDE, speed=shift)
    return first, second


def reference_image(values, bound):
    """TSN's quantization, written out one value at a time."""
    out = []
    for value in np.ravel(values):
        clipped = min(max(float(value), -bound), bound)
        out.append(round((clipped + bound) * 255 / (2 * bound)))
    return np.asarray(out, np.uint8).reshape(np.shape(values))


def test_flow_method_here():
    expected = "tvl1" if hasattr(getattr(cv2, "optflow", None), "DualTVL1OpticalFlow_create") else "dis"
    assert flow.flow_method() == expected == "dis"


def test_flow_of_shifted_square():
    first, second = shifted_pair(shift=3)
    field = flow.compute_flow(first, second)
    assert field.dtype == np.float32 and field.shape == (96, 128, 2)
    top = (SIZE[1] - SIDE) // 2
    # The square's left edge is at x = 4; leave a margin of 2 pixels where the motion boundary blurs the flow.
    inside = field[top + 2 : top + SIDE - 2, 4 + 2 : 4 + SIDE - 2].reshape(-1, 2)
    np.testing.assert_allclose(inside.mean(axis=0), [3.0, 0.0], atol=0.3)
    np.testing.assert_array_equal(flow.compute_flow(first, second, method="dis"), field)


def test_compute_flow_checks_its_inputs():
    first, second = shifted_pair()
    with pytest.raises(ValueError, match="differ in size"):
        flow.compute_flow(first, second[:, :64])
    with pytest.raises(ValueError, match="uint8"):
        flow.compute_flow(first.astype(np.float32), second)
    with pytest.raises(ValueError, match="method"):
        flow.compute_flow(first, second, method="farneback")
    if flow.flow_method() == "dis":
        with pytest.raises(ValueError, match="optflow"):
            flow.compute_flow(first, second, method="tvl1")


@pytest.mark.parametrize("bound", [flow.FLOW_BOUND, 5.0])
def test_flow_to_image_matches_reference(bound):
    values = np.array([-100, -bound, -bound / 2, -0.04, 0.0, 0.04, 0.1, 1.0, bound - 0.01, bound, 33.3])
    field = np.stack([values, values[::-1]], axis=-1).astype(np.float32)
    image = flow.flow_to_image(field, bound)
    assert image.dtype == np.uint8 and image.shape == field.shape
    np.testing.assert_array_equal(image, reference_image(field, bound))
    assert flow.flow_to_image(np.array([-bound, 0.0, bound]), bound).tolist() == [0, 128, 255]
    restored = flow.image_to_flow(image, bound)
    np.testing.assert_allclose(restored, np.clip(field, -bound, bound), atol=bound / 255 + 1e-5)
    with pytest.raises(ValueError, match="bound"):
        flow.flow_to_image(field, 0.0)


def test_flow_xym_formula():
    images = np.random.default_rng(1).integers(0, 256, (2, 5, 7, 2), dtype=np.uint8)
    images[0, 0, 0] = (128, 128)  # no motion, up to quantization
    images[0, 0, 1] = (255, 255)  # beyond the bound diagonally: saturates
    xym = flow.flow_xym(images)
    assert xym.dtype == np.uint8 and xym.shape == (2, 5, 7, 3)
    np.testing.assert_array_equal(xym[..., :2], images)
    dx = images[..., 0].astype(np.float64) * 40 / 255 - 20
    dy = images[..., 1].astype(np.float64) * 40 / 255 - 20
    expected = np.round(np.minimum(np.sqrt(dx**2 + dy**2), 20) * 255 / 20)
    np.testing.assert_array_equal(xym[..., 2], expected)
    assert xym[0, 0, 0, 2] <= 2 and xym[0, 0, 1, 2] == 255
    with pytest.raises(ValueError, match="flow images"):
        flow.flow_xym(images[..., :1])


@pytest.mark.parametrize("count", [0, 1, 2, 4])
def test_flow_images_shapes(count):
    frames = np.zeros((count, 96, 128, 3), np.uint8)
    for index in range(count):
        frames[index] = videos.moving_square(index, SIZE, side=SIDE, speed=3)
    images = flow.flow_images(frames)
    assert images.dtype == np.uint8 and images.shape == (max(count - 1, 0), 96, 128, 2)
    for index in range(count - 1):
        expected = flow.flow_to_image(flow.compute_flow(frames[index], frames[index + 1]))
        np.testing.assert_array_equal(images[index], expected)


def test_flow_state_streams_the_same_images():
    frames = np.stack([videos.moving_square(t, SIZE, side=SIDE, speed=3) for t in range(3)])
    state = flow.FlowState()
    assert state.update(frames[0]) is None
    streamed = [state.update(frame) for frame in frames[1:]]
    np.testing.assert_array_equal(np.stack(streamed), flow.flow_images(frames))
    state.reset()
    assert state.update(frames[2]) is None
    with pytest.raises(ValueError, match="frames must be uint8"):
        flow.flow_images(frames[0])
