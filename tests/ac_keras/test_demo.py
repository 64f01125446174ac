"""The synthetic demo (`python -m ac_keras.demo`) trains and shows attention beating averaging."""

import re
import subprocess
import sys

import pytest

# Trains two models for 8 epochs in a subprocess.
pytestmark = pytest.mark.slow


def test_demo_attention_beats_average_and_chance():
    result = subprocess.run(
        [sys.executable, "-m", "ac_keras.demo", "--epochs=8"],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    match = re.search(r"attention \(fc1\) ([\d.]+), average ([\d.]+), chance ([\d.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    attention, average, chance = map(float, match.groups())
    assert attention > 0.9
    assert attention > average + 0.2
    assert average > chance
