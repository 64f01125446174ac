"""Fake videos with a learnable signal, for end-to-end training tests and benchmarks.

Each video is a set of noise frames; in the first modality one frame carries its class prototype (multi-label:
one frame per label). Averaging dilutes the signal and attention finds it, so a few epochs separate a working
training loop from a broken one.
"""

import numpy as np

from ac_keras import schema


def learnable_videos(
    features,
    num_videos,
    *,
    num_classes=4,
    labels_per_video=1,
    min_frames=4,
    max_frames=12,
    seed=0,
    task_seed=7,
):
    """Videos in the format of `ac_keras.testing.records.write_videos`.

    Args:
        features: feature spec string or sequence of `schema.FeatureSpec`.
        num_videos: int.
        num_classes: int. Defaults to 4.
        labels_per_video: int, distinct labels per video (multi-label data when > 1). Defaults to 1.
        min_frames: int, fewest frames per video and modality. Defaults to 4.
        max_frames: int, most frames. Defaults to 12.
        seed: int, seed of the videos. Defaults to 0.
        task_seed: int, seed of the class prototypes; training and evaluation sets must share it.

    Returns:
        A list of dicts with "video_id", "labels" and "frames" (modality -> `(num_frames, dim)` array,
        uint8 for quantized modalities, float32 otherwise).
    """
    specs = schema.to_feature_specs(features)
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(task_seed).normal(size=(num_classes, specs[0].dim)) * 1.5
    videos = []
    for index in range(num_videos):
        labels = sorted(rng.choice(num_classes, size=labels_per_video, replace=False).tolist())
        frames = {}
        for position, spec in enumerate(specs):
            num_frames = int(rng.integers(max(min_frames, labels_per_video), max_frames + 1))
            values = rng.normal(scale=0.5, size=(num_frames, spec.dim))
            if position == 0:
                slots = rng.choice(num_frames, size=len(labels), replace=False)
                values[slots] += prototypes[labels]
            if spec.quantized:
                frames[spec.name] = schema.quantize(np.clip(values, -1.9, 1.9))
            else:
                frames[spec.name] = values.astype(np.float32)
        videos.append({"video_id": f"vid{seed}-{index:05d}", "labels": labels, "frames": frames})
    return videos
