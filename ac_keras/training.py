"""Training: one custom loop with `strategy.run` for the default, Mirrored and MultiWorker strategies.

Keras 3 `model.fit` does not run under MultiWorkerMirroredStrategy (keras issue 20585) and cannot distribute
ragged inputs under MirroredStrategy, so ac_keras trains with its own loop:

- the global batch is split across replicas by `experimental_distribute_dataset`, so every strategy sees the
  same samples per step and the per-replica losses are summed over the global batch size;
- checkpoints (model, optimizer, step counters) are written every `checkpoint_every` steps and at each epoch
  end by `tf.train.CheckpointManager` (TensorFlow writes them to temporary names and renames them, and updates
  its state file atomically); a restarted run resumes from the latest one at the same step, with the same
  optimizer state and the same position in the epoch (the epoch's shuffle is seeded by the epoch number and
  the batches already done are skipped);
- after each epoch the evaluation set is scored with `ac_keras.metrics`, scalars go to TensorBoard under
  `model_dir`, and the best checkpoint by the evaluation metric is kept under `model_dir/best`;
- a non-finite loss stops training with `TrainingDivergedError` before anything is saved, so the last
  good checkpoint stays the latest.
"""

import json
import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from ac_keras import data as ac_data
from ac_keras import head as head_lib
from ac_keras import metrics as ac_metrics
from ac_keras import schema
from ac_keras.model import build_model
from ac_keras.optimizers import FusedUpdate, fused_update_unsupported

CHECKPOINT_SUBDIR = "checkpoints"
BEST_SUBDIR = "best"
BEST_MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
SUMMARY_EVERY = 10  # steps between TensorBoard step scalars
# Whether the train step uses ac_keras.optimizers.FusedUpdate where it applies (benchmarks switch it off).
FUSED_OPTIMIZER = True
# Whether the training step runs dropout + classifier through `ac_keras.head` (see make_training_head).
FAST_HEAD = True

log = logging.getLogger("ac_keras")


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


def make_strategy(name, devices=()):
    """Returns the `tf.distribute.Strategy` for `--strategy`.

    Args:
        name: `"auto"` (MirroredStrategy when more than one GPU is visible, else the default strategy),
            `"default"`, `"mirrored"` (all local GPUs, or `devices`), or `"multi_worker"` (cluster from the
            `TF_CONFIG` environment variable).
        devices: optional device names for `"mirrored"`, e.g. `("/cpu:0", "/cpu:1")`.
    """
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices) or None)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable (cluster spec)."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"--strategy must be one of auto, default, mirrored, multi_worker; got {name!r}.")


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and not has_chief)


def _worker_dir(model_dir, strategy):
    """Where this task writes: the model dir for the chief, a scratch dir for other workers.

    Under MultiWorkerMirroredStrategy every worker must take part in saving (the save is a collective), but
    only the chief's files are kept.
    """
    if _is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, f".worker_scratch_{resolver.task_type}_{resolver.task_id}")


def feature_means(config):
    """The training-set mean frame of each modality from `--stats`, for `--center_features`; else None."""
    if not config.center_features:
        return None
    try:
        return ac_data.modality_means(ac_data.load_stats(config.stats), config.feature_specs)
    except ValueError as error:
        raise ValueError(f"--center_features with --stats={config.stats}: {error}") from None


def model_from_config(config):
    """Builds the classifier of `config` (the one builder training, tuning and export use)."""
    return build_model(
        config.feature_specs,
        config.cluster_size_map,
        config.num_classes,
        label_mode=config.label_mode,
        weighting=config.weighting,
        shift=config.shift,
        fc2_units=config.fc2_units,
        dropout=config.dropout,
        aggregator=config.aggregator,
        lstm_units=dict(config.lstm_units) or None,
        flatten_frames=config.flatten_frame_count or None,
        feature_means=feature_means(config),
    )


def make_optimizer(config):
    """RMSProp or Adam with global-norm gradient clipping (`--clip_norm`, 0 = none)."""
    clip = {"global_clipnorm": config.clip_norm} if config.clip_norm > 0 else {}
    if config.optimizer == "rmsprop":
        optimizer = keras.optimizers.RMSprop(config.learning_rate, **clip)
    else:
        optimizer = keras.optimizers.Adam(config.learning_rate, **clip)
    if config.mixed_precision == "mixed_float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


def make_apply_gradients(optimizer, variables):
    """The function that applies one step's gradients: fused RMSProp/Adam where possible, else Keras's.

    `ac_keras.optimizers.FusedUpdate` runs the optimizer's own update formulas and clipping as one XLA kernel
    per variable (about 3x faster on the 60M-parameter classifier, docs/benchmarks.md) and keeps the Keras
    optimizer's state, so checkpoints are the same either way. `LossScaleOptimizer` (mixed_float16) and
    other configurations it does not implement use `optimizer.apply`. `FUSED_OPTIMIZER = False` turns the
    fused path off.
    """
    reason = "FUSED_OPTIMIZER = False"
    if FUSED_OPTIMIZER:
        reason = fused_update_unsupported(optimizer, variables)
    if reason is None:
        return FusedUpdate(optimizer, variables)
    log.info("Optimizer update: Keras optimizer.apply (the fused update does not support %s).", reason)
    return optimizer.apply


def make_training_head(model, seed):
    """The fast dropout + classifier of the training step (`ac_keras.head`), or None for the Keras layers.

    `ac_keras.head.TrainingHead` computes the same function as the model's `dropout` and `classifier`
    layers with a fused dropout mask and a faster gradient (docs/benchmarks.md); it is used for float32
    models with the standard head. `FAST_HEAD = False` turns it off.
    """
    reason = "FAST_HEAD = False"
    if FAST_HEAD:
        reason = head_lib.head_unsupported(model)
    if reason is None:
        return head_lib.TrainingHead(model, seed)
    log.info("Training head: Keras Dropout and Dense layers (the fast head does not support %s).", reason)
    return None


def dataset_options(config):
    """Keyword arguments of `ac_keras.data.make_dataset` shared by training and evaluation."""
    missing = config.missing_modality
    if missing == "auto":
        missing = "mean" if config.stats else "zeros"
    return {
        "features": config.features,
        "num_classes": config.num_classes,
        "label_mode": config.label_mode,
        "stats": config.stats,
        "missing_modality": missing,
        "skip_corrupt": config.skip_corrupt,
    }


def _shard_by_element(dataset, num_workers):
    """Under several workers, each reads every file and keeps its share of the elements.

    File-based auto-sharding cannot see through the pipeline's batched parsing ("did not find a shardable
    source"), so element sharding is used; it costs each worker a full read of the files.
    """
    if num_workers <= 1:
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def _num_workers(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return 1
    return max(len(resolver.cluster_spec().as_dict().get("worker", [])), 1) + len(
        resolver.cluster_spec().as_dict().get("chief", [])
    )


def _without_ids(features, labels, *weights):
    features = {name: value for name, value in features.items() if name != schema.VIDEO_ID_KEY}
    return (features, labels, *weights)


def train_dataset(config, epoch, num_workers=1):
    """The training set of one epoch: shuffled with a seed of the epoch, frames sampled at random."""
    dataset = ac_data.make_dataset(
        config.train_data,
        batch_size=config.batch_size,
        training=True,
        num_frames=config.train_frames or None,
        shuffle_buffer=config.shuffle_buffer,
        seed=config.seed * 100_003 + epoch,
        class_balance=config.class_balance,
        repeat=config.steps_per_epoch > 0,
        drop_remainder=False,
        **dataset_options(config),
    )
    if config.steps_per_epoch > 0:
        dataset = dataset.take(config.steps_per_epoch)
    return _shard_by_element(dataset.map(_without_ids), num_workers)


def eval_dataset(config, file_pattern=None, num_workers=1):
    """The evaluation set: deterministic order, frames at equal intervals (or all).

    Under several workers every worker reads it all and keeps its share of the elements; the predictions are
    gathered back, so each worker scores the whole set.
    """
    dataset = ac_data.make_dataset(
        file_pattern or config.eval_data,
        batch_size=config.batch_size,
        training=False,
        num_frames=config.eval_frames or None,
        **dataset_options(config),
    )
    return _shard_by_element(dataset.map(_without_ids), num_workers)


class Trainer:
    """Trains, evaluates, checkpoints and resumes one configuration on one strategy.

    Args:
        config: a validated `ac_keras.config.Config`.
        strategy: optional `tf.distribute.Strategy`; defaults to `make_strategy(config.strategy)`.
        progress: bool, whether to show a progress bar per epoch. Defaults to True.
    """

    def __init__(self, config, strategy=None, progress=True):
        if config.model_dir is None:
            raise ValueError("--model_dir is required for training (checkpoints and logs go there).")
        self.config = config
        self.progress = progress
        keras.utils.set_random_seed(config.seed)
        self.strategy = strategy or make_strategy(config.strategy, config.devices)
        self.is_chief = _is_chief(self.strategy)
        self.write_dir = _worker_dir(config.model_dir, self.strategy)
        # The precision policy applies to the layers built here; the process-wide policy is left as it was.
        previous_policy = keras.mixed_precision.global_policy()
        if config.mixed_precision != "none":
            keras.mixed_precision.set_global_policy(config.mixed_precision)
        try:
            with self.strategy.scope():
                self.model = model_from_config(config)
        finally:
            keras.mixed_precision.set_global_policy(previous_policy)
        with self.strategy.scope():
            # Train on logits for a numerically stable loss; the exported model keeps the probabilities.
            self.logits_model = keras.Model(self.model.inputs, self.model.get_layer("classifier").output)
            self.optimizer = make_optimizer(config)
            self.optimizer.build(self.model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step")
            self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
            self.step_in_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
            self.best_value = tf.Variable(-math.inf, dtype=tf.float64, trainable=False, name="best_value")
            # Steps of one full epoch, learned at the end of the first one (0 = not known yet).
            self.epoch_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch_steps")
        self.checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            step=self.step,
            epoch=self.epoch,
            step_in_epoch=self.step_in_epoch,
            best_value=self.best_value,
            epoch_steps=self.epoch_steps,
        )
        self.manager = tf.train.CheckpointManager(
            self.checkpoint,
            os.path.join(self.write_dir, CHECKPOINT_SUBDIR),
            max_to_keep=config.keep_checkpoints,
            step_counter=self.step,
        )
        self._train_step = None
        self._eval_step = None
        self.loss_history = []  # (step, loss) of every step this process ran
        self.eval_history = []  # (epoch, metrics) of every evaluation this process ran
        writer_dir = config.model_dir if self.is_chief else self.write_dir
        self.train_writer = tf.summary.create_file_writer(os.path.join(writer_dir, "train"))
        self.eval_writer = tf.summary.create_file_writer(os.path.join(writer_dir, "eval"))

    # ----------------------------------------------------------------------------------------------- steps
    def _per_example_loss(self, labels, logits):
        logits = tf.cast(logits, tf.float32)
        if self.config.label_mode == "single":
            return tf.nn.softmax_cross_entropy_with_logits(labels, logits)
        return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(labels, logits), axis=-1)

    def _build_train_step(self):
        global_batch = self.config.batch_size
        optimizer = self.optimizer
        variables = self.model.trainable_variables
        single = self.config.label_mode == "single"
        apply_gradients = make_apply_gradients(optimizer, variables)
        head = make_training_head(self.model, self.config.seed)

        def replica_step(features, labels, sample_weight=None):
            with tf.GradientTape() as tape:
                if head is not None:
                    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                    logits = head(features, optimizer.iterations, replica)
                else:
                    logits = self.logits_model(features, training=True)
                per_example = self._per_example_loss(labels, logits)
                if sample_weight is not None:
                    per_example *= tf.cast(sample_weight, per_example.dtype)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                scaled = optimizer.scale_loss(loss) if hasattr(optimizer, "scale_loss") else loss
            gradients = tape.gradient(scaled, variables)
            apply_gradients(gradients, variables)
            if single:
                hits = tf.cast(tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)), tf.float32)
            else:
                top = tf.argmax(logits, -1)
                hits = tf.gather(labels, top, batch_dims=1)
            return loss, tf.reduce_sum(hits), tf.cast(tf.shape(labels)[0], tf.float32)

        @tf.function
        def train_step(batch):
            loss, hits, count = self.strategy.run(replica_step, args=batch)
            reduce = tf.distribute.ReduceOp.SUM
            return (
                self.strategy.reduce(reduce, loss, axis=None),
                self.strategy.reduce(reduce, hits, axis=None),
                self.strategy.reduce(reduce, count, axis=None),
            )

        return train_step

    def _build_eval_step(self):
        def replica_step(features, labels, *unused):
            probabilities = self.model(features, training=False)
            return tf.cast(probabilities, tf.float32), labels

        @tf.function
        def eval_step(batch):
            probabilities, labels = self.strategy.run(replica_step, args=batch)
            return (
                self.strategy.gather(probabilities, axis=0),
                self.strategy.gather(labels, axis=0),
            )

        return eval_step

    # ------------------------------------------------------------------------------------------ evaluate
    def evaluate(self, dataset=None):
        """Scores the evaluation set; returns a dict of metrics (`ac_keras.metrics` definitions)."""
        if dataset is None:
            dataset = eval_dataset(self.config, num_workers=_num_workers(self.strategy))
        if self._eval_step is None:
            self._eval_step = self._build_eval_step()
        accumulator = ac_metrics.make_metrics(self.config.label_mode, self.config.num_classes)
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            probabilities, labels = self._eval_step(batch)
            if probabilities.shape[0]:
                accumulator.update(labels.numpy(), probabilities.numpy())
        return accumulator.result()

    # --------------------------------------------------------------------------------------------- train
    def restore(self):
        """Restores the latest checkpoint of `model_dir`, if any; returns its path or None."""
        latest = tf.train.latest_checkpoint(os.path.join(self.config.model_dir, CHECKPOINT_SUBDIR))
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            message = (
                f"Resumed from {latest} at step {int(self.step.numpy())} "
                f"(epoch {int(self.epoch.numpy()) + 1}, step {int(self.step_in_epoch.numpy())} of it)."
            )
            if self.progress and self.is_chief:
                print(message, flush=True)
            else:
                log.info(message)
        return latest

    def _save(self):
        path = self.manager.save(checkpoint_number=self.step)
        if not self.is_chief:
            tf.io.gfile.rmtree(self.write_dir)
        return path

    def train(self):
        """Runs (or resumes) training to `config.epochs`; returns the last evaluation metrics (or {})."""
        config = self.config
        if self.is_chief:
            tf.io.gfile.makedirs(config.model_dir)
            with tf.io.gfile.GFile(os.path.join(config.model_dir, CONFIG_FILE), "w") as handle:
                handle.write(config.to_json())
        self.restore()
        if self._train_step is None:
            self._train_step = self._build_train_step()
        results = {}
        while int(self.epoch.numpy()) < config.epochs:
            epoch = int(self.epoch.numpy())
            skip = int(self.step_in_epoch.numpy())
            dataset = train_dataset(config, epoch, _num_workers(self.strategy))
            if skip:
                dataset = dataset.skip(skip)
            target = config.steps_per_epoch or int(self.epoch_steps.numpy()) or None
            bar = keras.utils.Progbar(
                target,
                stateful_metrics=["loss", "accuracy", "samples/s"],
                verbose=1 if self.progress and self.is_chief else 0,
            )
            if self.progress and self.is_chief:
                print(
                    f"Epoch {epoch + 1}/{config.epochs}" + (f" (resuming at step {skip})" if skip else ""),
                    flush=True,
                )
            loss_sum = hits_sum = count_sum = 0.0
            start = time.perf_counter()
            done = skip
            for batch in self.strategy.experimental_distribute_dataset(dataset):
                loss, hits, count = self._train_step(batch)
                loss = float(loss)
                if not math.isfinite(loss):
                    latest = self.manager.latest_checkpoint
                    raise TrainingDivergedError(
                        f"Training loss became {loss} at step {int(self.step.numpy()) + 1} "
                        f"(epoch {epoch + 1}). "
                        f"Nothing was saved after the last good checkpoint ({latest or 'none yet'}). Lower "
                        "--learning_rate, keep --clip_norm on, or look for NaN/Inf in the features "
                        "(python -m tfrecords.stats)."
                    )
                self.step.assign_add(1)
                self.step_in_epoch.assign_add(1)
                done += 1
                loss_sum += loss * float(count)
                hits_sum += float(hits)
                count_sum += float(count)
                elapsed = time.perf_counter() - start
                throughput = count_sum / max(elapsed, 1e-9)
                bar.update(
                    done,
                    [
                        ("loss", loss_sum / count_sum),
                        ("accuracy", hits_sum / count_sum),
                        ("samples/s", throughput),
                    ],
                )
                step = int(self.step.numpy())
                self.loss_history.append((step, loss))
                if self.is_chief and (step % SUMMARY_EVERY == 0 or done == 1):
                    with self.train_writer.as_default(step=step):
                        tf.summary.scalar("loss", loss)
                        tf.summary.scalar(
                            "learning_rate", float(np.asarray(self.optimizer.learning_rate.numpy()))
                        )
                        tf.summary.scalar("samples_per_second", throughput)
                if step % config.checkpoint_every == 0:
                    self._save()
            if count_sum == 0 and skip == 0:
                raise ValueError(f"--train_data {config.train_data!r} produced no training batch.")
            bar.update(done, finalize=True)
            self.epoch_steps.assign(done)
            self.epoch.assign_add(1)
            self.step_in_epoch.assign(0)
            self._save()
            if self.is_chief and count_sum:
                with self.train_writer.as_default(step=int(self.step.numpy())):
                    tf.summary.scalar("epoch_loss", loss_sum / count_sum)
                    tf.summary.scalar("epoch_accuracy", hits_sum / count_sum)
            if config.eval_data:
                results = self.evaluate()
                self._record_eval(results, epoch)
        self.train_writer.flush()
        self.eval_writer.flush()
        return results

    def _record_eval(self, results, epoch):
        config = self.config
        self.eval_history.append((epoch + 1, dict(results)))
        summary = ", ".join(f"{name} {value:.4f}" for name, value in sorted(results.items()))
        if self.is_chief:
            print(f"Epoch {epoch + 1}/{config.epochs} evaluation: {summary}", flush=True)
            with self.eval_writer.as_default(step=int(self.step.numpy())):
                for name, value in results.items():
                    tf.summary.scalar(name, value)
        value = results.get(config.best_metric)
        if value is not None and value > float(self.best_value.numpy()):
            self.best_value.assign(value)
            if self.is_chief:
                self._write_best(results, epoch)
            self._save()

    def _write_best(self, results, epoch):
        """Writes the best model (`.keras`) and its metrics, replacing the previous best atomically."""
        best_dir = os.path.join(self.config.model_dir, BEST_SUBDIR)
        tf.io.gfile.makedirs(best_dir)
        temporary = os.path.join(best_dir, f".{BEST_MODEL_FILE}.tmp.keras")
        self.model.save(temporary)
        tf.io.gfile.rename(temporary, os.path.join(best_dir, BEST_MODEL_FILE), overwrite=True)
        record = {
            "epoch": epoch + 1,
            "step": int(self.step.numpy()),
            "metric": self.config.best_metric,
            **{name: float(value) for name, value in results.items()},
        }
        temporary = os.path.join(best_dir, ".metrics.json.tmp")
        with tf.io.gfile.GFile(temporary, "w") as handle:
            handle.write(json.dumps(record, indent=2))
        tf.io.gfile.rename(temporary, os.path.join(best_dir, "metrics.json"), overwrite=True)


def load_best_model(model_dir):
    """Loads `<model_dir>/best/model.keras`, the best model by the evaluation metric."""
    path = os.path.join(model_dir, BEST_SUBDIR, BEST_MODEL_FILE)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"No best model at {path}: train with --eval_data so the best checkpoint is kept, or pass "
            "--saved_model."
        )
    return keras.models.load_model(path)


def plain_copy(model, config):
    """A copy of `model` built outside any strategy (for export and prediction)."""
    with tf.distribute.get_strategy().scope():
        copy = model_from_config(config)
    copy.set_weights([np.asarray(weight) for weight in model.get_weights()])
    return copy


def best_or_final_model(trainer):
    """The best model by the evaluation metric when one was kept, else the trained model (plain copies)."""
    path = os.path.join(trainer.config.model_dir, BEST_SUBDIR, BEST_MODEL_FILE)
    if tf.io.gfile.exists(path):
        return keras.models.load_model(path)
    return plain_copy(trainer.model, trainer.config)
