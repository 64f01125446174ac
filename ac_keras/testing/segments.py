"""Fake YouTube-8M 2019 segment-rated records, with a signal a model trained on video-level labels can find.

Each video is noise frames; a class of the video shows in some of its `segment_size`-frame segments (one
frame of such a segment carries the class prototype, as in `ac_keras.testing.learnable`). The records hold
the video-level labels (the classes shown) and the 2019 ratings: for each class of the video, its segments
that show it (rating 1) and some that do not (rating 0), and a few segments rated 0 for a class the video
does not have. Segments are `[k * segment_size, (k + 1) * segment_size)`; a video's last segment may be
partial and is never rated.
"""

import os

import numpy as np

from ac_keras import schema
from ac_keras.testing import records


def segment_rated_videos(
    features,
    num_videos,
    *,
    num_classes=6,
    segment_size=5,
    min_segments=2,
    max_segments=6,
    classes_per_video=2,
    seed=0,
    task_seed=7,
    id_prefix="seg",
):
    """Videos with segment ratings.

    Args:
        features: feature spec string or sequence of `schema.FeatureSpec`; the prototypes go into the first
            modality, the others are noise.
        num_videos: int.
        num_classes: int. Defaults to 6.
        segment_size: int, frames per segment. Defaults to 5.
        min_segments, max_segments: int, full segments per video (plus sometimes a partial one).
        classes_per_video: int, distinct classes shown per video. Defaults to 2.
        seed: int, seed of the videos. Defaults to 0.
        task_seed: int, seed of the class prototypes (training and evaluation sets must share it).
        id_prefix: str, ids are f"{id_prefix}{index:04d}".

    Returns:
        A list of dicts: "video_id", "labels" (the classes shown), "frames" (modality -> `(frames, dim)`,
        uint8 for quantized modalities, float32 otherwise), "ratings" (a list of `(start, end, class,
        rating)`).
    """
    specs = schema.to_feature_specs(features)
    rng = np.random.default_rng(seed)
    prototypes = np.random.default_rng(task_seed).normal(size=(num_classes, specs[0].dim)) * 1.5
    videos = []
    for index in range(num_videos):
        num_full = int(rng.integers(min_segments, max_segments + 1))
        num_frames = num_full * segment_size + int(rng.integers(0, segment_size))
        labels = sorted(rng.choice(num_classes, size=classes_per_video, replace=False).tolist())
        shown = {
            label: sorted(
                rng.choice(
                    num_full, size=int(rng.integers(1, num_full)) if num_full > 1 else 1, replace=False
                ).tolist()
            )
            for label in labels
        }
        frames = {}
        for position, spec in enumerate(specs):
            values = rng.normal(scale=0.5, size=(num_frames, spec.dim))
            if position == 0:
                for label, segments in shown.items():
                    for segment in segments:
                        values[segment * segment_size + int(rng.integers(0, segment_size))] += prototypes[
                            label
                        ]
            if spec.quantized:
                frames[spec.name] = schema.quantize(np.clip(values, -1.9, 1.9))
            else:
                frames[spec.name] = values.astype(np.float32)
        ratings = []
        for label, segments in shown.items():
            others = [segment for segment in range(num_full) if segment not in segments]
            negatives = rng.choice(others, size=min(len(others), 1), replace=False).tolist() if others else []
            for segment in sorted(segments + negatives):
                start = segment * segment_size
                ratings.append((start, start + segment_size, label, 1.0 if segment in segments else 0.0))
        absent = [label for label in range(num_classes) if label not in labels]
        segment = int(rng.integers(0, num_full))
        ratings.append((segment * segment_size, (segment + 1) * segment_size, int(rng.choice(absent)), 0.0))
        videos.append(
            {"video_id": f"{id_prefix}{index:04d}", "labels": labels, "frames": frames, "ratings": ratings}
        )
    return videos


def write_segment_rated_videos(path, videos, *, with_labels=True):
    """Writes videos of `segment_rated_videos` as 2019-style records into one TFRecord file; returns the path.

    Args:
        path: the file.
        videos: dicts of `segment_rated_videos`.
        with_labels: bool, store the video-level `labels` (False: as the 2019 test records, without).
    """
    examples = []
    for video in videos:
        example = records.sequence_example(
            video["video_id"], video["labels"] if with_labels else None, video["frames"]
        )
        starts, ends, labels, scores = zip(*video["ratings"], strict=True) if video["ratings"] else ((),) * 4
        records.add_segment_ratings(example, starts=starts, ends=ends, labels=labels, scores=scores)
        examples.append(example)
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    return records.write_records(path, examples)
