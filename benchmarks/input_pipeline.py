"""Input pipeline throughput: ac_keras.data.make_dataset against raw reading and a per-example reader.

Writes `--num_records` synthetic YouTube-8M frame-level records (300 frames, rgb 1024 + audio 128,
quantized) to a temporary directory, then prints records/s and MB/s (of TFRecord bytes) for:
  raw         tf.data.TFRecordDataset iterated record by record (the ceiling: reading only);
  ours eval   make_dataset, evaluation mode, all frames, batch 64, quantized modalities handed over as
              uint8 (`dequantize=False`, what training, evaluation and serving use: the model dequantizes);
  ours train  make_dataset, training mode, 20 random frames of 300, batch 64, uint8;
  ours eval, float32  the same as ours eval with `dequantize=True` (float32 frames, the pipeline before);
  ours eval, unchecked  ours eval with its checks (`parser._assert_all`) and its corrupt-file bookkeeping
              (`files.check_pass`, record names) patched out while the pipeline is built: what the
              validation and the bookkeeping cost, from the CPU time per record;
  ours train, unchecked  the same for ours train, whose records the locator reads: its check of every
              frame's header (`locator._frame_headers_ok`) patched out too;
  lean        interleaved reads, batch 64, one parse_sequence_example per batch with RaggedFeature and one
              decode_raw per modality (uint8 ragged frames): the floor of a batched parse, no checks, no
              ids fallback, no fill, no labels encoding;
  per-example the YouTube-8M starter reader: parse_single_sequence_example + decode_raw + cast +
              dequantize + pad to 300 frames + concatenate modalities per record, map with AUTOTUNE
              parallelism, then batch 64;
  Model Garden  with --model_garden_dir: tensorflow/models' YouTube-8M reader (its own code, run as it
              is; eval and train mode: its train mode also yields all 300 float32 frames per video);
and the ratios measured in the same run. Each reader runs `--passes` passes over the records in one iterator
(as an epoch of a large data set does) after an untimed iteration; records/s and CPU-us/record count from
the first batch to the last (steady state), and the time from creating the iterator to its first batch is
printed beside them (tf.data optimizes and instantiates a pipeline's functions for every new iterator: a fixed
cost per epoch, not per record). Every reader is measured once per round (`--rounds`); the median round is
reported.

    TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.input_pipeline --num_records=1000
"""

import contextlib
import os
import shutil
import statistics
import tempfile
import time
from unittest import mock

import numpy as np
import tensorflow as tf
from absl import flags

from ac_keras import schema
from ac_keras.data import files as data_files
from ac_keras.data import locator as data_locator
from ac_keras.data import make_dataset
from ac_keras.data import parser as data_parser
from ac_keras.data.writer import ShardedWriter
from tfrecords import run_command

FEATURES = "rgb:1024,audio:128"
MAX_FRAMES = 300


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program)."""
    flags.DEFINE_integer("num_records", 1000, "Synthetic records to write.")
    flags.DEFINE_integer("num_shards", 8, "TFRecord files to spread them over.")
    flags.DEFINE_integer("batch_size", 64, "Batch size of the batched pipelines.")
    flags.DEFINE_integer("train_num_frames", 20, "Frames sampled per video in training mode.")
    flags.DEFINE_integer("passes", 5, "Passes over the records in the one iterator of a measurement.")
    flags.DEFINE_integer("rounds", 3, "Rounds over all readers; the median round is reported.")
    flags.DEFINE_string("data_dir", None, "Where to write the records; a temporary directory by default.")
    flags.DEFINE_string(
        "model_garden_dir",
        None,
        "A directory holding Model Garden's `official` package with official/projects/yt8m/dataloaders/"
        "{yt8m_input,utils}.py (docs/benchmarks.md says how to set it up); adds Model Garden's reader as a "
        "peer. Not set: that peer is skipped.",
    )


def write_records(directory: str, num_records: int, num_shards: int) -> list[str]:
    """Writes synthetic records (random frames, varied per record) and returns the shard paths."""
    rng = np.random.default_rng(0)
    pool = {
        spec.name: rng.integers(0, 256, (2 * MAX_FRAMES, spec.dim), dtype=np.uint8)
        for spec in schema.parse_features(FEATURES)
    }
    with ShardedWriter(directory, FEATURES, num_shards=num_shards, overwrite=True) as writer:
        for index in range(num_records):
            offset = index % MAX_FRAMES
            frames = {name: values[offset : offset + MAX_FRAMES] for name, values in pool.items()}
            writer.write(f"video{index:06d}", [index % 3862], frames)
        return writer.paths


def lean_reader(files: list[str], batch_size: int) -> tf.data.Dataset:
    """The floor of a batched parse: read, batch, one parse and one decode_raw per modality, nothing else."""
    specs = schema.parse_features(FEATURES)

    def parse(serialized):
        context, sequences, _ = tf.io.parse_sequence_example(
            serialized,
            context_features={
                "id": tf.io.FixedLenFeature([], tf.string, default_value=""),
                "labels": tf.io.RaggedFeature(tf.int64, row_splits_dtype=tf.int64),
            },
            sequence_features={
                spec.name: tf.io.RaggedFeature(tf.string, row_splits_dtype=tf.int64) for spec in specs
            },
        )
        features = {"id": context["id"], "labels": context["labels"]}
        for spec in specs:
            frames = sequences[spec.name]
            values = tf.reshape(tf.io.decode_raw(frames.flat_values, tf.uint8), [-1, spec.dim])
            features[spec.name] = tf.RaggedTensor.from_row_splits(values, frames.row_splits, validate=False)
        return features

    dataset = tf.data.Dataset.from_tensor_slices(files).interleave(
        tf.data.TFRecordDataset, cycle_length=8, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return (
        dataset.batch(batch_size).map(parse, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
    )


@contextlib.contextmanager
def without_checks_and_bookkeeping():
    """While a pipeline is built (tf.data traces its functions then): no assertions, no byte accounting,
    no record names, no check of the frame headers of located records. For measuring what they cost; never
    for reading real data."""

    def unchecked_pass(batches, files, sizes, *, skip_corrupt, skip_counter):
        del files, sizes, skip_corrupt, skip_counter
        empty = (tf.zeros([0], tf.string), tf.zeros([0], tf.int64), tf.zeros([0], tf.int64))
        return batches.concatenate(tf.data.Dataset.from_tensors(empty))

    with (
        mock.patch.object(data_parser, "_assert_all", lambda checks: []),
        mock.patch.object(data_files, "check_pass", unchecked_pass),
        mock.patch.object(data_files, "record_names", lambda *args: None),
        mock.patch.object(data_locator, "_frame_headers_ok", lambda *args: tf.constant(True)),
    ):
        yield


def per_example_reader(files: list[str], batch_size: int) -> tf.data.Dataset:
    """The YouTube-8M starter code's frame-level reader: parse, decode and pad one record at a time.

    A transcription of `YT8MFrameFeatureReader.prepare_serialized_examples` and `get_video_matrix`
    (google/youtube-8m `readers.py`, `utils.Dequantize`): parse_single_sequence_example, decode_raw, cast to
    float32, dequantize as `x * scalar + bias`, resize to 300 frames (pad with zeros / cut), concatenate the
    modalities along the feature axis, labels scattered into a dense vector; mapped with AUTOTUNE
    parallelism over parallel reads, then batched.
    """
    specs = schema.parse_features(FEATURES)
    quantized_range = schema.MAX_QUANTIZED_VALUE - schema.MIN_QUANTIZED_VALUE
    scalar = quantized_range / 255.0
    bias = (quantized_range / 512.0) + schema.MIN_QUANTIZED_VALUE

    def resize_axis(tensor, new_size):
        # readers.resize_axis on axis 0: cut to new_size rows, or pad with zero rows.
        shape = tf.unstack(tf.shape(tensor))
        pad_shape = shape[:]
        pad_shape[0] = tf.maximum(0, new_size - shape[0])
        shape[0] = tf.minimum(shape[0], new_size)
        shape = tf.stack(shape)
        return tf.concat(
            [tf.slice(tensor, tf.zeros_like(shape), shape), tf.fill(tf.stack(pad_shape), 0.0)], axis=0
        )

    def parse_one(serialized):
        context, sequences = tf.io.parse_single_sequence_example(
            serialized,
            context_features={
                "id": tf.io.FixedLenFeature([], tf.string),
                "labels": tf.io.VarLenFeature(tf.int64),
            },
            sequence_features={
                spec.name: tf.io.FixedLenSequenceFeature([], dtype=tf.string) for spec in specs
            },
        )
        labels = tf.scatter_nd(
            context["labels"].values[:, None], tf.ones_like(context["labels"].values, tf.float32), [3862]
        )
        matrices = []
        num_frames = MAX_FRAMES
        for spec in specs:
            decoded = tf.reshape(
                tf.cast(tf.io.decode_raw(sequences[spec.name], tf.uint8), tf.float32), [-1, spec.dim]
            )
            num_frames = tf.minimum(tf.shape(decoded)[0], num_frames)
            matrices.append(resize_axis(decoded * scalar + bias, MAX_FRAMES))
        video_matrix = tf.concat(matrices, axis=1)
        return context["id"], video_matrix, num_frames, tf.minimum(labels, 1.0)

    dataset = tf.data.TFRecordDataset(files, num_parallel_reads=tf.data.AUTOTUNE)
    dataset = dataset.map(parse_one, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def model_garden_reader(
    files: list[str], batch_size: int, training: bool, model_garden_dir: str, num_records: int, passes: int
):
    """Model Garden's YouTube-8M reader (tensorflow/models official/projects/yt8m), its own code as it is:
    `yt8m_input.Decoder`, `Parser`, `TransformBatcher` and `PostBatchProcessor` composed by
    `official.core.input_reader.InputReader` exactly as `YT8MTask.build_inputs` composes them, on its
    `yt8m.DataConfig` defaults (rgb 1024 + audio 128 uint8, 300 frames, float32 dequantized output).
    Imported from `model_garden_dir`, never from this repository. Its training mode repeats the data
    (shuffled) forever: `num_records` records' worth of batches is taken; evaluation mode is repeated
    `passes` times."""
    import sys
    import types

    sys.path.insert(0, model_garden_dir)
    # Its input_reader imports tensorflow_datasets for TFDS sources, which this benchmark does not use.
    sys.modules.setdefault("tensorflow_datasets", types.ModuleType("tensorflow_datasets"))
    from official.core import input_reader
    from official.projects.yt8m.configs import yt8m as yt8m_config
    from official.projects.yt8m.dataloaders import yt8m_input

    params = yt8m_config.DataConfig(
        input_path=",".join(files),
        global_batch_size=batch_size,
        is_training=training,
        num_classes=3862,
        drop_remainder=False,
        include_video_id=True,
    )
    reader = input_reader.InputReader(
        params,
        dataset_fn=tf.data.TFRecordDataset,
        decoder_fn=yt8m_input.Decoder(input_params=params).decode,
        parser_fn=yt8m_input.Parser(input_params=params).parse_fn(params.is_training),
        postprocess_fn=yt8m_input.PostBatchProcessor(input_params=params).post_fn,
        transform_and_batch_fn=yt8m_input.TransformBatcher(input_params=params).batch_fn,
    )
    dataset = reader.read()
    return dataset.take(-(-num_records // batch_size)) if training else dataset.repeat(passes)


def ours_reader(
    files: list[str], batch_size: int, passes: int, num_records: int, **options
) -> tf.data.Dataset:
    """`make_dataset` over `passes` passes of the records (`repeat`, each pass ending with its own partial
    batch), multi-hot labels of 3,862 classes."""
    dataset = make_dataset(
        files, FEATURES, batch_size=batch_size, num_classes=3862, label_mode="multi", repeat=True, **options
    )
    return dataset.take(passes * -(-num_records // batch_size))


def measure(dataset: tf.data.Dataset, count_records) -> tuple[float, float, float]:
    """Steady-state records per second and CPU microseconds per record (all threads), both from the first
    batch to the end of one iterator over `dataset`, and the milliseconds from creating that iterator to its
    first batch (the per-iterator start-up: tf.data optimizes and instantiates the pipeline's functions for
    every new iterator). One untimed iteration comes first."""
    for _ in dataset:
        pass
    start = time.perf_counter()
    iterator = iter(dataset)
    count_records(next(iterator))
    first, cpu_start = time.perf_counter(), os.times()
    num_records = 0
    for element in iterator:
        num_records += count_records(element)
    elapsed, cpu_end = time.perf_counter() - first, os.times()
    cpu = (cpu_end.user - cpu_start.user) + (cpu_end.system - cpu_start.system)
    return num_records / elapsed, cpu / num_records * 1e6, (first - start) * 1e3


def main(argv) -> None:
    del argv
    config = flags.FLAGS
    directory = config.data_dir or tempfile.mkdtemp(prefix="ac_keras_bench_")
    try:
        files = write_records(directory, config.num_records, config.num_shards)
        megabytes_per_record = sum(os.path.getsize(path) for path in files) / config.num_records / 1e6

        def batched(element):
            return int(element[0][schema.VIDEO_ID_KEY].shape[0])

        passes = config.passes
        args = (files, config.batch_size, passes, config.num_records)
        train_options = dict(
            training=True, num_frames=config.train_num_frames, shuffle_buffer=256, dequantize=False
        )
        with without_checks_and_bookkeeping():
            unchecked = ours_reader(*args, training=False, dequantize=False)
            unchecked_train = ours_reader(*args, **train_options)
        readers = {
            "raw TFRecordDataset": (tf.data.TFRecordDataset(files).repeat(passes), lambda _: 1),
            "ours eval, all frames": (ours_reader(*args, training=False, dequantize=False), batched),
            "ours eval, float32 frames": (ours_reader(*args, training=False), batched),
            "ours eval, unchecked": (unchecked, batched),
            f"ours train, {config.train_num_frames} frames": (ours_reader(*args, **train_options), batched),
            "ours train, unchecked": (unchecked_train, batched),
            "lean batched parse": (
                lean_reader(files, config.batch_size).repeat(passes),
                lambda element: int(element["id"].shape[0]),
            ),
            "per-example baseline": (
                per_example_reader(files, config.batch_size).repeat(passes),
                lambda element: int(element[0].shape[0]),
            ),
        }
        if config.model_garden_dir:
            for training in (False, True):
                readers[f"Model Garden {'train' if training else 'eval'}"] = (
                    model_garden_reader(
                        files,
                        config.batch_size,
                        training,
                        config.model_garden_dir,
                        config.num_records * passes,
                        passes,
                    ),
                    lambda element: int(element["video_matrix"].shape[0]),
                )
        # Rounds over all readers, each measured once per round: slow drifts of the machine touch every
        # reader alike; the median of the rounds is reported.
        rounds = {name: [] for name in readers}
        for _ in range(config.rounds):
            for name, (dataset, count_records) in readers.items():
                rounds[name].append(measure(dataset, count_records))
        results = {
            name: [statistics.median(column) for column in zip(*values, strict=True)]
            for name, values in rounds.items()
        }
    finally:
        if not config.data_dir:
            shutil.rmtree(directory, ignore_errors=True)

    print(
        f"{config.num_records} records x {MAX_FRAMES} frames ({FEATURES}, uint8), "
        f"{megabytes_per_record:.3f} MB/record, batch {config.batch_size}, {os.cpu_count()} CPUs, "
        f"{config.passes} passes per iterator"
    )
    for name, (records_per_second, cpu_per_record, first_batch_ms) in results.items():
        print(
            f"  {name:<28} {records_per_second:9.0f} records/s "
            f"{records_per_second * megabytes_per_record:8.1f} MB/s {cpu_per_record:7.0f} CPU-us/record "
            f"{first_batch_ms:7.0f} ms to the first batch"
        )
    raw = results["raw TFRecordDataset"][0]
    baseline = results["per-example baseline"][0]
    ours = results["ours eval, all frames"][0]
    train = results[f"ours train, {config.train_num_frames} frames"][0]
    cpu_ours, cpu_unchecked = results["ours eval, all frames"][1], results["ours eval, unchecked"][1]
    cpu_train = results[f"ours train, {config.train_num_frames} frames"][1]
    print(
        f"  checks + bookkeeping: {1 - cpu_unchecked / cpu_ours:.0%} of ours eval's CPU time per record, "
        f"{1 - results['ours train, unchecked'][1] / cpu_train:.0%} of ours train's (target < 20%)"
    )
    print(f"  ours eval  / lean batched parse:   {ours / results['lean batched parse'][0]:.2f}x")
    print(f"  ours eval  / per-example baseline: {ours / baseline:.2f}x (target >= 2.5)")
    print(f"  ours eval  / raw read:             {ours / raw:.2f}x (target >= 0.5)")
    print(f"  ours train / per-example baseline: {train / baseline:.2f}x (target >= 3)")
    if config.model_garden_dir:
        print(
            f"  ours eval  / Model Garden eval:    {ours / results['Model Garden eval'][0]:.2f}x "
            "(target >= 1)"
        )
        print(
            f"  ours train / Model Garden train:   {train / results['Model Garden train'][0]:.2f}x "
            "(target >= 1)"
        )
    else:
        print("  Model Garden reader: not measured (--model_garden_dir not given)")


if __name__ == "__main__":
    run_command(main, define_flags)
