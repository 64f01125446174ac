"""Fake YouTube-8M-style TFRecords for tests.

Records are built directly with `tf.train.SequenceExample` / `tf.train.Example`, the way the YouTube-8M
starter code writes them, not through `ac_keras.data.writer`, so that tests of the reader check it against the
layout itself. The builders take the stored values as they are (uint8 arrays become byte strings, float
arrays become FloatLists) and check nothing, so tests can also write deliberately broken records.
"""

import os
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from ac_keras import schema


def sequence_example(
    video_id,
    labels: Sequence[int] | None,
    frames: Mapping[str, Sequence],
) -> tf.train.SequenceExample:
    """Builds a frame-level record as the YouTube-8M starter code does.

    Args:
        video_id: str or bytes, stored in the context under `id`.
        labels: label ids stored under `labels`; None leaves the key out (serving-style records).
        frames: modality name -> frames, either a 2-D array `(num_frames, dim)` or a sequence of 1-D
            arrays (frames of different lengths make bad records). uint8 frames are stored as one byte
            string per frame, float frames as a FloatList per frame.

    Returns:
        A `tf.train.SequenceExample`.
    """
    example = tf.train.SequenceExample()
    video_id = video_id.encode() if isinstance(video_id, str) else bytes(video_id)
    example.context.feature[schema.ID_KEY].bytes_list.value.append(video_id)
    if labels is not None:
        example.context.feature[schema.LABELS_KEY].int64_list.value.extend(int(x) for x in labels)
    for name, modality_frames in frames.items():
        feature_list = example.feature_lists.feature_list[name]
        for frame in modality_frames:
            values = np.asarray(frame)
            if values.dtype == np.uint8:
                feature_list.feature.add().bytes_list.value.append(values.tobytes())
            else:
                feature_list.feature.add().float_list.value.extend(values.astype(np.float32).tolist())
    return example


def add_segment_ratings(example: tf.train.SequenceExample, *, starts, ends, labels, scores):
    """Adds the YouTube-8M 2019 segment rating lists to a record's context, as given (lists of unequal length
    make bad records).

    Args:
        example: a `tf.train.SequenceExample` (changed in place).
        starts, ends: int sequences, `segment_start_times` and `segment_end_times` (seconds = frames).
        labels: int sequence, `segment_labels` (class ids).
        scores: float sequence, `segment_scores` (1.0 = the class is in the segment, 0.0 = it is not).

    Returns:
        `example`.
    """
    context = example.context.feature
    context[schema.SEGMENT_START_TIMES_KEY].int64_list.value.extend(int(x) for x in starts)
    context[schema.SEGMENT_END_TIMES_KEY].int64_list.value.extend(int(x) for x in ends)
    context[schema.SEGMENT_LABELS_KEY].int64_list.value.extend(int(x) for x in labels)
    context[schema.SEGMENT_SCORES_KEY].float_list.value.extend(float(x) for x in scores)
    return example


def video_level_example(video_id, labels: Sequence[int] | None, means: Mapping[str, Sequence[float]]):
    """Builds a video-level `tf.train.Example` (YouTube-8M layout: `id`, `labels`, `mean_<name>`).

    Args:
        video_id: str or bytes.
        labels: label ids, or None to leave the key out.
        means: modality name -> 1-D float vector, stored under `mean_<name>`.

    Returns:
        A `tf.train.Example`.
    """
    example = tf.train.Example()
    video_id = video_id.encode() if isinstance(video_id, str) else bytes(video_id)
    example.features.feature[schema.ID_KEY].bytes_list.value.append(video_id)
    if labels is not None:
        example.features.feature[schema.LABELS_KEY].int64_list.value.extend(int(x) for x in labels)
    for name, vector in means.items():
        values = np.asarray(vector, np.float32).tolist()
        example.features.feature[schema.VIDEO_LEVEL_PREFIX + name].float_list.value.extend(values)
    return example


def write_records(path, records: Iterable) -> str:
    """Writes protos (or already serialized bytes) to one TFRecord file.

    Args:
        path: output file path (str or `os.PathLike`).
        records: iterable of `tf.train.SequenceExample`, `tf.train.Example` or bytes.

    Returns:
        The path, as a str.
    """
    path = os.fspath(path)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record if isinstance(record, bytes) else record.SerializeToString())
    return path


def random_videos(
    features,
    num_videos: int,
    *,
    num_classes: int = 10,
    min_frames: int = 1,
    max_frames: int = 8,
    labels_per_video: int = 1,
    seed: int = 0,
    id_prefix: str = "video",
) -> list[dict]:
    """Random videos: uint8 frames for quantized modalities, float32 frames for float ones.

    Args:
        features: feature spec string or sequence of `schema.FeatureSpec`.
        num_videos: int.
        num_classes: int, labels are drawn from [0, num_classes). Defaults to 10.
        min_frames: int, fewest frames per video. Defaults to 1.
        max_frames: int, most frames per video. Defaults to 8.
        labels_per_video: int, distinct labels per video. Defaults to 1.
        seed: int, NumPy seed. Defaults to 0.
        id_prefix: str, ids are f"{id_prefix}{index:05d}". Defaults to "video".

    Returns:
        A list of dicts with keys "video_id" (str), "labels" (list of int) and "frames" (dict modality ->
        array `(num_frames, dim)`); all modalities of a video have the same number of frames.
    """
    specs = schema.to_feature_specs(features)
    rng = np.random.default_rng(seed)
    videos = []
    for index in range(num_videos):
        num_frames = int(rng.integers(min_frames, max_frames + 1))
        frames = {}
        for spec in specs:
            if spec.quantized:
                frames[spec.name] = rng.integers(0, 256, (num_frames, spec.dim), dtype=np.uint8)
            else:
                frames[spec.name] = rng.normal(size=(num_frames, spec.dim)).astype(np.float32)
        labels = sorted(rng.choice(num_classes, size=labels_per_video, replace=False).tolist())
        videos.append({"video_id": f"{id_prefix}{index:05d}", "labels": labels, "frames": frames})
    return videos


def write_videos(directory, videos: Sequence[Mapping], *, num_shards: int = 1, prefix: str = "train"):
    """Writes videos from `random_videos` as SequenceExamples, round-robin over shard files.

    Args:
        directory: output directory (created if needed).
        videos: dicts with "video_id", "labels" (None to omit) and "frames".
        num_shards: int, number of files. Defaults to 1.
        prefix: str, file names are f"{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord". Defaults to "train".

    Returns:
        The list of file paths.
    """
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    paths = [
        os.path.join(directory, f"{prefix}-{shard:05d}-of-{num_shards:05d}.tfrecord")
        for shard in range(num_shards)
    ]
    for shard, path in enumerate(paths):
        write_records(
            path,
            (
                sequence_example(video["video_id"], video["labels"], video["frames"])
                for video in videos[shard::num_shards]
            ),
        )
    return paths


def fake_dataset(directory, features, num_videos: int, *, num_shards: int = 1, **kwargs):
    """Writes `num_videos` random videos and returns `(file_pattern, videos)`.

    Args:
        directory: output directory.
        features: feature spec string or sequence of `schema.FeatureSpec`.
        num_videos: int.
        num_shards: int, number of files. Defaults to 1.
        **kwargs: passed to `random_videos` (num_classes, min_frames, max_frames, labels_per_video, seed).

    Returns:
        A glob pattern matching the written files, and the videos as returned by `random_videos`.
    """
    videos = random_videos(features, num_videos, **kwargs)
    write_videos(directory, videos, num_shards=num_shards)
    return os.path.join(os.fspath(directory), "train-*.tfrecord"), videos
