"""Input pipeline: TFRecord files -> decoder (parse) -> parser (dequantize, select frames) -> batches.

`make_dataset` builds the training / evaluation `tf.data.Dataset`; `shard_for_workers` splits it between
workers; `parse_serialized` is the pure-TF batch parser that a serving SavedModel calls on its input strings;
`resolve_stats` reads the statistics JSON of `python -m tfrecords.stats` once into the values they feed.
"""

from ac_keras.data.decoder import decode_batch
from ac_keras.data.files import (
    SkipCounter,
    file_sizes,
    list_files,
    mean_record_bytes,
    read_serialized_batches,
)
from ac_keras.data.parser import parse_batch, parse_serialized, select_and_fill, select_frame_indices
from ac_keras.data.pipeline import make_dataset, shard_for_workers
from ac_keras.data.stats import (
    MISSING_MODALITY,
    STATS_FORMAT,
    ClassWeights,
    ResolvedStats,
    class_weights_from_stats,
    load_stats,
    modality_means,
    resolve_stats,
)

__all__ = [
    "MISSING_MODALITY",
    "STATS_FORMAT",
    "ClassWeights",
    "ResolvedStats",
    "SkipCounter",
    "class_weights_from_stats",
    "decode_batch",
    "file_sizes",
    "list_files",
    "load_stats",
    "make_dataset",
    "mean_record_bytes",
    "modality_means",
    "parse_batch",
    "parse_serialized",
    "read_serialized_batches",
    "resolve_stats",
    "select_and_fill",
    "select_frame_indices",
    "shard_for_workers",
]
