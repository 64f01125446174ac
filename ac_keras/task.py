"""The Task: every object a run needs, built from one validated `Config`.

`Task(config)` reads the statistics file once (`ac_keras.data.resolve_stats`: feature means, the fill of a
missing modality, class weights) and builds from the config and those values the model, the optimizer, the
input datasets, the loss and the metrics. Every command (train, evaluate, predict, export, visualize) and the
tuner go through it; nothing else turns settings into objects.
"""

import keras
import tensorflow as tf

from ac_keras import data as ac_data
from ac_keras import metrics as ac_metrics
from ac_keras import schema
from ac_keras.data.classes import read_class_names
from ac_keras.model import build_model

# What the shuffle buffer holds per record beyond its bytes: the string tensor, its record name
# ("file:index") and the buffer's bookkeeping (an estimate; docs/input_pipeline.md).
SHUFFLE_RECORD_OVERHEAD_BYTES = 256


class Task:
    """Builds the model, optimizer, datasets, loss and metrics of `config`.

    Args:
        config: a validated `ac_keras.config.Config`.

    Attributes:
        config: the config.
        stats: the `ac_keras.data.ResolvedStats` of `config.data.stats` (all None without a stats file).
        uint8_inputs: the quantized modalities, which stay uint8 from the records to the model (its
            `Dequantize` layers dequantize them; the datasets yield their bytes).
        class_names: the names of `config.data.class_names` (`ac_keras.data.classes.read_class_names`: one
            per class, "" for a class the file does not name), or None without the flag.
        mean_record_bytes: the mean size of the training records, once `shuffle_buffer_records` measured
            it (None before).

    Raises:
        ValueError: the statistics file does not fit the config (the message names the file), or the class
            names file is not an `index,name` CSV of the classes (the message names the file and line).
    """

    def __init__(self, config):
        self.config = config
        data = config.data
        self.stats = ac_data.resolve_stats(
            data.stats,
            data.feature_specs,
            num_classes=data.num_classes,
            missing_modality=data.missing_modality,
            class_balance=data.class_balance,
            center_features=config.model.center_features,
        )
        self.uint8_inputs = tuple(spec.name for spec in data.feature_specs if spec.quantized)
        self._shuffle_records = None
        self.mean_record_bytes = None
        self.class_names = None
        if data.class_names:
            self.class_names = read_class_names(data.class_names, data.num_classes)

    # ------------------------------------------------------------------------------------------- model
    def build_model(self, *, mixed_precision=None, input_format="ragged", uint8_inputs=None):
        """The classifier of the config (probabilities out), under the config's precision policy.

        Args:
            mixed_precision: overrides `config.runtime.mixed_precision` ("none" builds float32 layers).
            input_format: `build_model`'s `"ragged"` (training, the SavedModel) or `"dense"` (frames and
                masks, the LiteRT export). Defaults to `"ragged"`.
            uint8_inputs: the modalities the model takes as uint8 (dequantized by its first layer); None
                for `self.uint8_inputs`, () for float inputs. Defaults to None.

        The process-wide Keras precision policy is left as it was.
        """
        config = self.config
        policy = config.runtime.mixed_precision if mixed_precision is None else mixed_precision
        previous = keras.mixed_precision.global_policy()
        if policy != "none":
            keras.mixed_precision.set_global_policy(policy)
        try:
            return build_model(
                config.data.feature_specs,
                dict(config.model.cluster_sizes),
                config.data.num_classes,
                label_mode=config.data.label_mode,
                weighting=config.model.weighting,
                shift=config.model.shift,
                fc2_units=config.model.fc2_units,
                dropout=config.model.dropout,
                aggregator=config.model.aggregator,
                lstm_units=dict(config.model.lstm_units) or None,
                flatten_frames=config.flatten_frame_count or None,
                feature_means=self.stats.feature_means,
                fused_shift=config.training.fused_shift,
                input_format=input_format,
                uint8_inputs=self.uint8_inputs if uint8_inputs is None else uint8_inputs,
            )
        finally:
            keras.mixed_precision.set_global_policy(previous)

    def build_optimizer(self):
        """RMSProp or Adam with global-norm gradient clipping (`clip_norm`, 0 = none); loss scaling under
        mixed_float16."""
        training = self.config.training
        clip = {"global_clipnorm": training.clip_norm} if training.clip_norm > 0 else {}
        if training.optimizer == "rmsprop":
            optimizer = keras.optimizers.RMSprop(training.learning_rate, **clip)
        else:
            optimizer = keras.optimizers.Adam(training.learning_rate, **clip)
        if self.config.runtime.mixed_precision == "mixed_float16":
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
        return optimizer

    # ------------------------------------------------------------------------------------------ inputs
    def _dataset(self, file_pattern, *, batch_size, training, num_frames, labels=True, **options):
        data = self.config.data
        return ac_data.make_dataset(
            file_pattern,
            data.feature_specs,
            batch_size=batch_size,
            training=training,
            num_frames=num_frames or None,
            num_classes=data.num_classes if labels else None,
            label_mode=data.label_mode,
            missing_fill=self.stats.missing_fill,
            dequantize=not self.uint8_inputs,
            skip_corrupt=data.skip_corrupt,
            skip_nonfinite=data.skip_nonfinite,
            **options,
        )

    def train_dataset(self, epoch, num_workers=1):
        """The training batches of one epoch: shuffled with a seed of the epoch, frames sampled at random.

        Yields `(features, labels)` or `(features, labels, sample_weights)` with class balancing; features
        without the video ids. With `steps_per_epoch` the data repeats and the epoch is that many batches.
        Under several workers each keeps its share of every global batch (`ac_keras.data.shard_for_workers`).
        With `data_service` the records are read and parsed by the tf.data service's workers, each epoch one
        job over the whole data (`distributed_epoch`: every record once, the batches in arrival order).
        """
        config = self.config
        steps = config.training.steps_per_epoch
        service = config.runtime.data_service
        dataset = self._dataset(
            config.data.train_data,
            batch_size=config.training.batch_size,
            training=True,
            num_frames=config.data.train_frames,
            shuffle_buffer=self.shuffle_buffer_records(),
            seed=config.training.seed * 100_003 + epoch,
            class_weights=self.stats.class_weights,
            repeat=steps > 0,
            # The service's workers each read some of the files: each file is checked as it ends.
            split_files=bool(service),
        )
        if service:
            dataset = dataset.apply(
                tf.data.experimental.service.distribute(
                    processing_mode="distributed_epoch",
                    service=service if "://" in service else f"grpc://{service}",
                    job_name=f"ac_keras_train_seed{config.training.seed}_epoch{epoch}",
                )
            )
        if steps > 0:
            dataset = dataset.take(steps)
        return ac_data.shard_for_workers(dataset.map(_without_ids), num_workers)

    def shuffle_buffer_records(self):
        """Records in the training shuffle buffer: as many as `shuffle_buffer_mb` holds, by the mean size of
        the training records (their first records, measured once) plus `SHUFFLE_RECORD_OVERHEAD_BYTES`
        each; at most the records the files hold (estimated from their sizes: a larger buffer shuffles no
        better) and `shuffle_buffer` when that is set; at least 1."""
        if self._shuffle_records is None:
            data = self.config.data
            files = ac_data.list_files(data.train_data)
            record_bytes = ac_data.mean_record_bytes(files)
            records = int(data.shuffle_buffer_mb * 2**20 // (record_bytes + SHUFFLE_RECORD_OVERHEAD_BYTES))
            # Each record of a TFRecord file takes 16 bytes of framing besides its own.
            records = min(records, -(-sum(ac_data.file_sizes(files)) // int(record_bytes + 16)))
            if data.shuffle_buffer:
                records = min(records, data.shuffle_buffer)
            self._shuffle_records = max(1, records)
            self.mean_record_bytes = record_bytes
        return self._shuffle_records

    def eval_dataset(self, file_pattern=None, *, num_workers=1, labels=True, keep_ids=False, **overrides):
        """The evaluation batches: deterministic order, `eval_frames` frames at equal intervals (0 = all).

        Args:
            file_pattern: the records; defaults to `config.data.eval_data`.
            num_workers: under several workers each keeps its share of every batch.
            labels: False yields features only (prediction needs no labels).
            keep_ids: keep `schema.VIDEO_ID_KEY` in the features.
            **overrides: `batch_size` or `num_frames` instead of the config's.
        """
        config = self.config
        dataset = self._dataset(
            file_pattern or config.data.eval_data,
            batch_size=overrides.get("batch_size", config.training.batch_size),
            training=False,
            num_frames=overrides.get("num_frames", config.data.eval_frames),
            labels=labels,
        )
        if not keep_ids:
            dataset = dataset.map(_without_ids)
        return ac_data.shard_for_workers(dataset, num_workers)

    def segment_dataset(self, file_pattern, segment_size, *, check_classes=True):
        """The segments of `segment_size` frames of every video of `file_pattern`, `eval_frames` frames each
        (`ac_keras.data.segments`): per batch of `batch_size` videos, a dict with the modalities, each
        segment's video id, start, end and 2019 ratings (their classes checked against num_classes unless
        `check_classes` is False)."""
        data = self.config.data
        return ac_data.make_dataset(
            file_pattern,
            data.feature_specs,
            batch_size=self.config.training.batch_size,
            training=False,
            num_frames=data.eval_frames or None,
            num_classes=data.num_classes if check_classes else None,
            missing_fill=self.stats.missing_fill,
            dequantize=not self.uint8_inputs,
            skip_corrupt=data.skip_corrupt,
            skip_nonfinite=data.skip_nonfinite,
            segment_size=segment_size,
        )

    # ------------------------------------------------------------------------------- loss and metrics
    def per_example_loss(self, labels, logits):
        """Softmax cross-entropy (single-label) or the mean sigmoid cross-entropy over classes, float32."""
        logits = tf.cast(logits, tf.float32)
        if self.config.data.label_mode == "single":
            return tf.nn.softmax_cross_entropy_with_logits(labels, logits)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits), axis=-1)

    def make_metrics(self):
        """A fresh accumulator of the field's metrics for the label mode (`ac_keras.metrics`)."""
        return ac_metrics.make_metrics(self.config.data.label_mode, self.config.data.num_classes)


def _without_ids(features, *rest):
    if isinstance(features, dict) and schema.VIDEO_ID_KEY in features:
        features = {name: value for name, value in features.items() if name != schema.VIDEO_ID_KEY}
    return (features, *rest) if rest else features
