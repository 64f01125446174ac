"""The seeded random streams of a Flash-MNIST dataset.

Each part of the generation draws from its own stream, so that changing one part (e.g. the number of CNN
epochs) leaves the others' draws unchanged. A stream is cut into chunks that each seed their own draws.
"""

import numpy as np

STREAM_SPLIT, STREAM_CNN, STREAM_CNN_EVAL = range(3)
STREAM_LABELS = {"train": 3, "test": 4}
STREAM_VIDEOS = {"train": 5, "test": 6}


def chunk_rng(seed: int, stream: int, chunk: int) -> np.random.Generator:
    """Returns the generator of chunk ``chunk`` of stream ``stream`` of the dataset seeded with ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, stream, chunk]))
