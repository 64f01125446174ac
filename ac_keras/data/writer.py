"""Writers of YouTube-8M-style frame-level TFRecords, in the layout of `ac_keras.schema`.

A record is a `tf.train.SequenceExample`: context `id` (bytes) and `labels` (int64 list); one feature list
per modality, one entry per frame: a BytesList holding one string of `dim` quantized bytes for a "uint8"
modality, a FloatList of `dim` floats for a "float" modality.

Example:
    >>> with ShardedWriter("/data/train", "rgb:1024,audio:128", num_shards=4) as writer:
    ...     writer.write("video0", [3, 17], {"rgb": rgb_frames, "audio": audio_frames})
"""

import os
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow as tf

from ac_keras import schema


def make_sequence_example(
    video_id: str,
    labels: Sequence[int],
    frames: Mapping[str, np.ndarray],
    features,
    *,
    allow_missing: bool = False,
    video_level: Mapping[str, np.ndarray] | None = None,
) -> tf.train.SequenceExample:
    """Builds one frame-level record.

    Args:
        video_id: str (or bytes), stored under the context key `id`.
        labels: label ids (non-negative ints), stored under `labels`; may be empty.
        frames: modality name -> array `(num_frames, dim)`. For a "uint8" modality, uint8 arrays are stored
            as they are and float arrays are quantized (`schema.quantize`); for a "float" modality the
            values are stored as float32 FloatLists.
        features: feature spec string (e.g. "rgb:1024,audio:128") or sequence of `schema.FeatureSpec`.
        allow_missing: bool; True writes the modalities absent from `frames` as empty feature lists (zero
            frames: the YouTube-8M starter's reader requires every list it reads, and ac_keras's reader fills
            an empty one as a missing modality), False raises. Defaults to False.
        video_level: optional dict modality name -> float vector `(dim,)` stored in the context as
            `mean_<name>` (the released extractor's `mean_rgb`: the mean of a video's frame features). The
            reader uses it only for a record without frames of that modality.

    Returns:
        A `tf.train.SequenceExample`.

    Raises:
        ValueError: a modality missing from `frames` (unless allow_missing) or not in the spec, frames
            that are not 2-D `(num_frames, dim)` with the declared dim, NaN/Inf frames, integer frames
            other than uint8, or labels that are not non-negative ints.
    """
    specs = schema.to_feature_specs(features)
    declared = {spec.name for spec in specs}
    unknown = sorted(set(frames) - declared)
    if unknown:
        raise ValueError(
            f"Video {video_id!r}: frames hold modality {unknown[0]!r}, which the feature spec "
            f"{','.join(str(spec) for spec in specs)!r} does not declare."
        )
    example = tf.train.SequenceExample()
    id_bytes = video_id if isinstance(video_id, bytes) else str(video_id).encode("utf-8")
    example.context.feature[schema.ID_KEY].bytes_list.value.append(id_bytes)
    example.context.feature[schema.LABELS_KEY].int64_list.value.extend(_check_labels(video_id, labels))
    for spec in specs:
        if spec.name not in frames:
            if allow_missing:
                example.feature_lists.feature_list.get_or_create(spec.name)
                continue
            raise ValueError(
                f"Video {video_id!r} has no frames for modality {spec.name!r} (declared "
                f"{spec}); pass allow_missing=True to write it without that modality."
            )
        values = _check_frames(video_id, spec, frames[spec.name])
        feature_list = example.feature_lists.feature_list[spec.name].feature
        if spec.quantized:
            quantized = values if values.dtype == np.uint8 else schema.quantize(values)
            for frame in quantized:
                feature_list.add().bytes_list.value.append(frame.tobytes())
        else:
            for frame in values.astype(np.float32).tolist():
                feature_list.add().float_list.value.extend(frame)
    for name, given in (video_level or {}).items():
        spec = next((spec for spec in specs if spec.name == name), None)
        vector = np.asarray(given, np.float32).reshape(-1)
        if spec is None or vector.size != spec.dim or not np.all(np.isfinite(vector)):
            raise ValueError(
                f"Video {video_id!r}: video-level mean_{name} must be {spec.dim if spec else '?'} finite "
                f"floats of a declared modality, got {vector.size} values."
            )
        example.context.feature[spec.video_level_key].float_list.value.extend(vector.tolist())
    return example


def shard_path(output_dir: str, prefix: str, shard: int, num_shards: int) -> str:
    """The path of a shard: f"{output_dir}/{prefix}-{shard:05d}-of-{num_shards:05d}.tfrecord"."""
    return f"{os.fspath(output_dir).rstrip('/')}/{prefix}-{shard:05d}-of-{num_shards:05d}.tfrecord"


class ShardedWriter:
    """Writes records round-robin to `num_shards` TFRecord files; a context manager.

    Shards are named f"{output_dir}/{prefix}-{i:05d}-of-{num_shards:05d}.tfrecord". They are written under
    temporary names and renamed when the writer closes without an exception, so a crash never leaves a
    half-written shard under a final name (an exception deletes the temporary files). Paths go through
    `tf.io.gfile`, so `gs://` works.

    Args:
        output_dir: str, directory for the shards (created if needed).
        features: feature spec string or sequence of `schema.FeatureSpec`.
        prefix: str, shard name prefix such as "train" or "validate". Defaults to "train".
        num_shards: int, number of files. Defaults to 1.
        overwrite: bool, replace existing shards; False raises FileExistsError naming the first existing
            shard. Defaults to False.
        shard_indices: optional subset of shard indices that this writer writes (round-robin among
            them), so parallel workers can each write their own shards of one sharded output. Defaults
            to all shards.
    """

    def __init__(
        self,
        output_dir: str,
        features,
        *,
        prefix: str = "train",
        num_shards: int = 1,
        overwrite: bool = False,
        shard_indices: Sequence[int] | None = None,
    ):
        if isinstance(num_shards, bool) or not isinstance(num_shards, int) or num_shards < 1:
            raise ValueError(f"num_shards must be a positive int, got {num_shards!r}.")
        if shard_indices is None:
            shard_indices = range(num_shards)
        shard_indices = list(shard_indices)
        if not shard_indices or any(not 0 <= index < num_shards for index in shard_indices):
            raise ValueError(
                f"shard_indices must be a non-empty subset of range({num_shards}), got {shard_indices}."
            )
        if not prefix or "/" in prefix:
            raise ValueError(f"prefix must be a non-empty file name prefix, got {prefix!r}.")
        self._specs = schema.to_feature_specs(features)
        output_dir = os.fspath(output_dir)
        self._paths = [shard_path(output_dir, prefix, shard, num_shards) for shard in shard_indices]
        self._overwrite = overwrite
        if not overwrite:
            for path in self._paths:
                if tf.io.gfile.exists(path):
                    raise FileExistsError(
                        f"Shard {path} already exists; pass overwrite=True (--overwrite) to replace it."
                    )
        tf.io.gfile.makedirs(output_dir)
        run_id = uuid.uuid4().hex[:8]
        self._temp_paths = [f"{path}.tmp-{run_id}" for path in self._paths]
        self._writers = [tf.io.TFRecordWriter(path) for path in self._temp_paths]
        self._num_written = 0
        self._closed = False

    @property
    def paths(self) -> list[str]:
        """The final shard paths."""
        return list(self._paths)

    @property
    def num_written(self) -> int:
        """Number of records written so far."""
        return self._num_written

    def write(self, video_id: str, labels: Sequence[int], frames: Mapping[str, np.ndarray]) -> None:
        """Builds a record with `make_sequence_example` and writes it to the next shard."""
        example = make_sequence_example(video_id, labels, frames, self._specs)
        self.write_serialized(example.SerializeToString())

    def write_serialized(self, record: bytes) -> None:
        """Writes an already serialized record to the next shard (round-robin)."""
        if self._closed:
            raise ValueError("ShardedWriter is closed.")
        self._writers[self._num_written % len(self._writers)].write(record)
        self._num_written += 1

    def close(self) -> None:
        """Closes the shards and renames them to their final names."""
        if self._closed:
            return
        self._closed = True
        for writer in self._writers:
            writer.close()
        for temp_path, path in zip(self._temp_paths, self._paths, strict=True):
            tf.io.gfile.rename(temp_path, path, overwrite=self._overwrite)

    def abort(self) -> None:
        """Closes the shards and deletes them; no final file is created."""
        if self._closed:
            return
        self._closed = True
        for writer in self._writers:
            writer.close()
        for temp_path in self._temp_paths:
            if tf.io.gfile.exists(temp_path):
                tf.io.gfile.remove(temp_path)

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, exc_type, exc_value, traceback) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def _check_labels(video_id, labels) -> list[int]:
    checked = []
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, int | np.integer) or label < 0:
            raise ValueError(f"Video {video_id!r}: labels must be non-negative ints, got {list(labels)!r}.")
        checked.append(int(label))
    return checked


def _check_frames(video_id, spec, frames) -> np.ndarray:
    values = np.asarray(frames)
    if values.ndim != 2 or values.shape[1] != spec.dim:
        raise ValueError(
            f"Video {video_id!r}, modality {spec.name!r}: frames must have shape (num_frames, {spec.dim}) "
            f"(declared dim {spec.dim}), got shape {values.shape}."
        )
    if values.dtype == np.uint8:
        if not spec.quantized:
            raise ValueError(
                f"Video {video_id!r}, modality {spec.name!r}: uint8 frames for a float modality; "
                "dequantize them first or declare the modality uint8."
            )
        return values
    if not np.issubdtype(values.dtype, np.floating):
        raise ValueError(
            f"Video {video_id!r}, modality {spec.name!r}: frames must be float or uint8, got {values.dtype}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError(f"Video {video_id!r}, modality {spec.name!r}: frames hold NaN or Inf values.")
    return values
