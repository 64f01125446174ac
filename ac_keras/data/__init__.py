"""Input pipeline: TFRecord files -> decoder (parse) -> parser (dequantize, select frames) -> batches.

`make_dataset` builds the training / evaluation `tf.data.Dataset`; `parse_serialized` is the pure-TF batch
parser that a serving SavedModel calls on its input strings.
"""

from ac_keras.data.decoder import decode_batch
from ac_keras.data.parser import parse_batch, parse_serialized, select_frame_indices
from ac_keras.data.pipeline import (
    STATS_FORMAT,
    SkipCounter,
    class_weights_from_stats,
    list_files,
    load_stats,
    make_dataset,
    modality_means,
    read_serialized_batches,
)

__all__ = [
    "STATS_FORMAT",
    "SkipCounter",
    "class_weights_from_stats",
    "decode_batch",
    "list_files",
    "load_stats",
    "make_dataset",
    "modality_means",
    "parse_batch",
    "parse_serialized",
    "read_serialized_batches",
    "select_frame_indices",
]
