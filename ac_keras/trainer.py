"""The training loop: `strategy.run` steps, checkpoints, summaries, evaluation and the best model.

Keras 3 `model.fit` does not run under MultiWorkerMirroredStrategy (keras issue 20585) and cannot distribute
ragged inputs under MirroredStrategy, so ac_keras trains with one loop of its own for every strategy:

- the global batch is split across replicas by `experimental_distribute_dataset`, so every strategy sees the
  same samples per step and the per-replica losses are summed over the global batch size;
- checkpoints (model, optimizer, step counters, the best value) are written every `checkpoint_every` steps
  and once at each epoch end, after the evaluation, by `tf.train.CheckpointManager` (TensorFlow writes them
  to temporary names and renames them, and updates its state file atomically); a restarted run resumes
  from the latest one at the same step, with the same optimizer state and the same position in the epoch
  (the epoch's shuffle is seeded by the epoch number and the batches already done are skipped); a step
  checkpoint is written when the next step is about to run, so one that falls on the epoch's end is the
  epoch's checkpoint, written once;
- after each epoch the evaluation set is scored (`ac_keras.evaluation`), scalars go to TensorBoard under
  `model_dir`, and the best model by the evaluation metric is kept (`ac_keras.artifacts`);
- each step's loss stays on the device until the progress is shown (about every `DISPLAY_SECONDS`) or a
  checkpoint is due: then the losses since the last look are read at once and checked; a non-finite one
  stops training with `TrainingDivergedError` (naming its step) before anything is saved, so the last good
  checkpoint stays the latest;
- a model_dir whose `config.json` holds other settings (beyond those a resumed run may change) is refused
  before anything is restored or written (`artifacts.check_same_run`).

Hooks: `make_train_step()` returns the compiled step; `train(step_fn=..., dataset_fn=...)` runs the loop with
another step or other data (benchmarks time the real loop this way), and `Callback`s see every step, epoch
end and evaluation (the tuner's early stopping is one).
"""

import logging
import math
import os
import time

import keras
import numpy as np
import tensorflow as tf

from ac_keras import artifacts, evaluation
from ac_keras import head as head_lib
from ac_keras import strategy as strategy_lib
from ac_keras.errors import DataError, UserError
from ac_keras.model import model_parts
from ac_keras.optimizers import FusedUpdate, fused_update_unsupported

SUMMARY_EVERY = 10  # steps between TensorBoard step scalars
DISPLAY_SECONDS = 0.5  # the progress bar (and the loss read from the device) at most this often

log = logging.getLogger("ac_keras")


class TrainingDivergedError(UserError, RuntimeError):
    """The training loss became NaN or infinite."""


class Callback:
    """Hooks `Trainer.train` calls; override the ones needed. An exception raised in one ends training."""

    def on_step_end(self, trainer, logs):
        """After each step; `logs` has `step` (the global step, an int), `loss` and `samples` (this step's,
        scalar tensors: reading one, e.g. `float(logs["loss"])`, waits for the step to finish on the
        device, which the loop itself avoids)."""

    def on_epoch_end(self, trainer, epoch, logs):
        """After each epoch's evaluation and checkpoint (`epoch` counts from 1); `logs` has `loss` and
        `accuracy`."""

    def on_evaluation(self, trainer, epoch, results):
        """After each evaluation, the best-model update and the epoch's checkpoint (`epoch` counts from 1)."""


def make_apply_gradients(optimizer, variables, fused):
    """The function that applies one step's gradients: `FusedUpdate` when `fused` and supported, else
    Keras's `optimizer.apply`. A fused update asked for but not supported prints one warning line saying
    why."""
    if not fused:
        return optimizer.apply
    reason = fused_update_unsupported(optimizer, variables)
    if reason is None:
        return FusedUpdate(optimizer, variables)
    log.warning(
        "The fused optimizer update does not support %s: Keras's optimizer.apply runs instead (the same "
        "update, slower; --nofused_optimizer silences this).",
        reason,
    )
    return optimizer.apply


def make_training_head(model, seed, fused):
    """The fused dropout + classifier of the training step (`ac_keras.head`), or None for the Keras layers.
    A fused head asked for but not supported prints one warning line saying why."""
    if not fused:
        return None
    reason = head_lib.head_unsupported(model)
    if reason is None:
        return head_lib.TrainingHead(model, seed)
    log.warning(
        "The fused training head does not support %s: the model's Keras Dropout and Dense layers run instead "
        "(the same function, slower; --nofused_head silences this).",
        reason,
    )
    return None


class _EpochProgress:
    """One epoch's running figures, kept on the device between looks (`Trainer._train_epoch`).

    `add` keeps each step's loss, hits and count as tensors (no host read); `look` reads those since the
    last look in one go, checks the losses, adds them to the sums and `loss_history`, writes the
    TensorBoard step scalars, and brings the trainer's step counters up to date.
    """

    def __init__(self, trainer, epoch, *, start_step, done):
        self.trainer = trainer
        self.epoch = epoch
        self.step = start_step  # the global step of the last step run
        self.done = done  # steps of this epoch run, those before a resume included
        self.loss_sum = self.hits_sum = self.count_sum = 0.0
        self.start = time.perf_counter()
        self.last_look = -math.inf
        self._pending = []  # (step, loss, hits, count) tensors not read yet

    def add(self, loss, hits, count):
        self.step += 1
        self.done += 1
        self._pending.append((self.step, loss, hits, count))

    def due(self):
        """Whether the progress is to be shown now: the first step, then about every DISPLAY_SECONDS."""
        return self.done == 1 or time.perf_counter() - self.last_look >= DISPLAY_SECONDS

    def look(self):
        """Reads and checks the steps since the last look; raises `TrainingDivergedError` at a bad loss."""
        trainer = self.trainer
        self.last_look = time.perf_counter()
        if self._pending:
            steps = [step for step, *_ in self._pending]
            values = tf.stack([tf.cast(tf.stack(row[1:]), tf.float64) for row in self._pending]).numpy()
            self._pending = []
            for step, (loss, hits, count) in zip(steps, values, strict=True):
                if not math.isfinite(loss):
                    raise TrainingDivergedError(
                        f"Training loss became {loss} at step {step} (epoch {self.epoch + 1}). Nothing was "
                        "saved after the last good checkpoint "
                        f"({trainer.manager.latest_checkpoint or 'none yet'}). Lower --learning_rate, keep "
                        "--clip_norm on, or look for NaN/Inf in the features (python -m tfrecords.stats)."
                    )
                self.loss_sum += loss * count
                self.hits_sum += hits
                self.count_sum += count
                trainer.loss_history.append((step, float(loss)))
            self._write_summaries(steps, values[:, 0])
        trainer.step.assign(self.step)
        trainer.step_in_epoch.assign(self.done)

    def values(self):
        """The progress bar's figures of the steps looked at so far."""
        if not self.count_sum:
            return []
        return [
            ("loss", self.loss_sum / self.count_sum),
            ("accuracy", self.hits_sum / self.count_sum),
            ("samples/s", self.count_sum / max(time.perf_counter() - self.start, 1e-9)),
        ]

    def _write_summaries(self, steps, losses):
        trainer = self.trainer
        if not trainer.is_chief:
            return
        throughput = self.count_sum / max(time.perf_counter() - self.start, 1e-9)
        learning_rate = None
        for step, loss in zip(steps, losses, strict=True):
            first_of_epoch = self.done - (self.step - step) == 1
            if step % SUMMARY_EVERY and not first_of_epoch:
                continue
            if learning_rate is None:
                learning_rate = float(np.asarray(trainer.optimizer.learning_rate.numpy()))
            with trainer.train_writer.as_default(step=int(step)):
                tf.summary.scalar("loss", float(loss))
                tf.summary.scalar("learning_rate", learning_rate)
                tf.summary.scalar("samples_per_second", throughput)


class Trainer:
    """Trains, evaluates, checkpoints and resumes one task on one strategy.

    Args:
        task: an `ac_keras.task.Task` (its config must have a model_dir).
        strategy: optional `tf.distribute.Strategy`; defaults to the config's (`ac_keras.strategy`).
        progress: bool, whether to show a progress bar per epoch. Defaults to True.
        callbacks: sequence of `Callback`s. Defaults to none.
        checkpoints: bool; False neither restores nor writes step and epoch checkpoints (timing runs).
            Defaults to True.
    """

    def __init__(self, task, strategy=None, progress=True, callbacks=(), checkpoints=True):
        config = task.config
        if config.runtime.model_dir is None:
            raise ValueError("--model_dir is required for training (checkpoints and logs go there).")
        self.task = task
        self.config = config
        self.progress = progress
        self.callbacks = list(callbacks)
        self.checkpoints = checkpoints
        keras.utils.set_random_seed(config.training.seed)
        runtime = config.runtime
        self.strategy = strategy or strategy_lib.make_strategy(runtime.strategy, runtime.devices)
        self.is_chief = strategy_lib.is_chief(self.strategy)
        self.num_workers = strategy_lib.num_workers(self.strategy)
        self.write_dir = strategy_lib.write_dir(runtime.model_dir, self.strategy)
        with self.strategy.scope():
            self.model = task.build_model()
            # Train on logits for a numerically stable loss; the exported model keeps the probabilities.
            self.logits_model = model_parts(self.model).logits_model(self.model)
            self.optimizer = task.build_optimizer()
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
            os.path.join(self.write_dir, artifacts.CHECKPOINT_SUBDIR),
            max_to_keep=runtime.keep_checkpoints,
            step_counter=self.step,
        )
        self._train_step = None
        self._eval_step = None
        self.loss_history = []  # (step, loss) of every step this process ran
        self.eval_history = []  # (epoch, metrics) of every evaluation this process ran
        writer_dir = runtime.model_dir if self.is_chief else self.write_dir
        self.train_writer = tf.summary.create_file_writer(os.path.join(writer_dir, "train"))
        self.eval_writer = tf.summary.create_file_writer(os.path.join(writer_dir, "eval"))

    # ----------------------------------------------------------------------------------------- steps
    def make_train_step(self):
        """The compiled training step: a distributed batch -> (loss, hits, count), summed over replicas.

        The loss is the data loss plus the model's regularization losses (`model.losses`: the penalties of
        kernel regularizers given to `build_model`), which the gradients include.
        """
        config = self.config
        global_batch = config.training.batch_size
        optimizer = self.optimizer
        variables = self.model.trainable_variables
        single = config.data.label_mode == "single"
        apply_gradients = make_apply_gradients(optimizer, variables, config.training.fused_optimizer)
        head = make_training_head(self.model, config.training.seed, config.training.fused_head)

        def replica_step(features, labels, sample_weight=None):
            with tf.GradientTape() as tape:
                if head is not None:
                    replica = tf.distribute.get_replica_context().replica_id_in_sync_group
                    logits = head(features, optimizer.iterations, replica)
                else:
                    logits = self.logits_model(features, training=True)
                per_example = self.task.per_example_loss(labels, logits)
                if sample_weight is not None:
                    per_example *= tf.cast(sample_weight, per_example.dtype)
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
                if self.model.losses:  # the layers' kernel regularizers (build_model(kernel_regularizer=...))
                    # Each replica adds its share, so the replicas' sum holds the penalty once.
                    loss += tf.nn.scale_regularization_loss(
                        tf.add_n([tf.cast(penalty, tf.float32) for penalty in self.model.losses])
                    )
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

    def _make_eval_step(self):
        def replica_step(features, labels, *unused):
            probabilities = self.model(features, training=False)
            return tf.cast(probabilities, tf.float32), labels

        @tf.function
        def eval_step(batch):
            probabilities, labels = self.strategy.run(replica_step, args=batch)
            return self.strategy.gather(labels, axis=0), self.strategy.gather(probabilities, axis=0)

        return eval_step

    # -------------------------------------------------------------------------------------- evaluate
    def evaluate(self, dataset=None):
        """Scores the evaluation set (default: the config's); returns a dict of metrics.

        Under several workers every worker scores the whole set: each keeps its share of the batches and
        the predictions are gathered back.
        """
        if dataset is None:
            dataset = self.task.eval_dataset(num_workers=self.num_workers)
        if self._eval_step is None:
            self._eval_step = self._make_eval_step()
        batches = self.strategy.experimental_distribute_dataset(dataset)
        return evaluation.evaluate(batches, self._eval_step, self.task.make_metrics())

    # ----------------------------------------------------------------------------------- checkpoints
    def restore(self):
        """Restores the latest checkpoint of `model_dir`, if any; returns its path or None."""
        latest = tf.train.latest_checkpoint(
            os.path.join(self.config.runtime.model_dir, artifacts.CHECKPOINT_SUBDIR)
        )
        if latest:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
            epochs = self.config.training.epochs
            if int(self.epoch.numpy()) >= epochs:
                self._say(
                    f"Restored {latest} at step {int(self.step.numpy())}: the run has finished its {epochs} "
                    "epoch(s), nothing to train (a larger --epochs trains on)."
                )
            else:
                self._say(
                    f"Resumed from {latest} at step {int(self.step.numpy())} "
                    f"(epoch {int(self.epoch.numpy()) + 1}, step {int(self.step_in_epoch.numpy())} of it)."
                )
        return latest

    def save_checkpoint(self):
        """Writes a checkpoint at the current step; returns its path (workers' copies are discarded)."""
        path = self.manager.save(checkpoint_number=self.step)
        if not self.is_chief:
            tf.io.gfile.rmtree(self.write_dir)
        return path

    def _maybe_save(self):
        if self.checkpoints:
            self.save_checkpoint()

    # ----------------------------------------------------------------------------------------- train
    def train(self, *, step_fn=None, dataset_fn=None):
        """Runs (or resumes) training to `epochs`; returns the last evaluation metrics (or {}).

        Each epoch: the steps (a checkpoint every `checkpoint_every` steps, written before the next step
        runs), then the evaluation and the best model, then one checkpoint of the epoch's end (it records
        the best value too), then the callbacks' `on_epoch_end` and `on_evaluation`.

        Args:
            step_fn: the step to run on each distributed batch, returning `(loss, hits, count)`; defaults
                to `make_train_step()`.
            dataset_fn: function `epoch -> tf.data.Dataset` of training batches; defaults to the task's
                `train_dataset(epoch, num_workers)`.
        """
        config = self.config
        artifacts.check_same_run(config.runtime.model_dir, config)
        if self.is_chief:
            artifacts.write_config(config.runtime.model_dir, config)
            artifacts.copy_extraction_description(config.runtime.model_dir, config.data.train_data)
            if self.task.class_names is not None:
                artifacts.write_class_names(config.runtime.model_dir, self.task.class_names)
        if self.checkpoints:
            self.restore()
        if step_fn is None:
            if self._train_step is None:
                self._train_step = self.make_train_step()
            step_fn = self._train_step
        if dataset_fn is None:

            def dataset_fn(epoch):
                return self.task.train_dataset(epoch, self.num_workers)

            if int(self.epoch.numpy()) < config.training.epochs:
                records = self.task.shuffle_buffer_records()
                self._say(
                    f"Shuffle buffer: {records} training records (--shuffle_buffer_mb="
                    f"{config.data.shuffle_buffer_mb} at about {self.task.mean_record_bytes / 1024:.1f} KB a "
                    "record"
                    + (
                        f", at most --shuffle_buffer={config.data.shuffle_buffer}"
                        if config.data.shuffle_buffer
                        else ""
                    )
                    + ")."
                )

        results = {}
        while int(self.epoch.numpy()) < config.training.epochs:
            logs = self._train_epoch(step_fn, dataset_fn)
            epoch = int(self.epoch.numpy())
            if config.data.eval_data:
                results = self.evaluate()
                self._record_evaluation(results, epoch)
            self._maybe_save()
            for callback in self.callbacks:
                callback.on_epoch_end(self, epoch, logs)
            if config.data.eval_data:
                for callback in self.callbacks:
                    callback.on_evaluation(self, epoch, results)
        self.train_writer.flush()
        self.eval_writer.flush()
        return results

    def _train_epoch(self, step_fn, dataset_fn):
        """Runs one epoch's steps; leaves the step counters at its end (the caller saves); returns its logs.

        A step's loss stays on the device until it is shown: the progress bar and the TensorBoard scalars
        are updated about every `DISPLAY_SECONDS`, and all losses since the last look are read then (one
        read), checked (a non-finite one stops training, naming its step) and kept in `loss_history`. They
        are also read and checked before each checkpoint, so no checkpoint holds a diverged model.
        """
        config = self.config
        epochs = config.training.epochs
        epoch = int(self.epoch.numpy())
        skip = int(self.step_in_epoch.numpy())
        dataset = dataset_fn(epoch)
        if skip:
            dataset = dataset.skip(skip)
        target = config.training.steps_per_epoch or int(self.epoch_steps.numpy()) or None
        show = self.progress and self.is_chief
        bar = keras.utils.Progbar(
            target, stateful_metrics=["loss", "accuracy", "samples/s"], verbose=1 if show else 0
        )
        if show:
            print(f"Epoch {epoch + 1}/{epochs}" + (f" (resuming at step {skip})" if skip else ""), flush=True)
        progress = _EpochProgress(self, epoch, start_step=int(self.step.numpy()), done=skip)
        save_due = False
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            if save_due:  # the step checkpoint, once the epoch goes on (its end writes one anyway)
                progress.look()
                self._maybe_save()
                save_due = False
            loss, hits, count = step_fn(batch)
            progress.add(loss, hits, count)
            for callback in self.callbacks:
                callback.on_step_end(self, {"step": progress.step, "loss": loss, "samples": count})
            if progress.due():
                progress.look()
                bar.update(progress.done, progress.values())
            if progress.step % config.runtime.checkpoint_every == 0:
                save_due = True
        progress.look()
        if progress.count_sum == 0 and skip == 0:
            raise DataError(
                f"--train_data {config.data.train_data!r} produced no training batch (no records, or every "
                "video skipped)."
            )
        bar.update(progress.done, progress.values() if progress.count_sum else None, finalize=True)
        self.epoch_steps.assign(progress.done)
        self.epoch.assign_add(1)
        self.step_in_epoch.assign(0)
        logs = {}
        if progress.count_sum:
            logs = {
                "loss": progress.loss_sum / progress.count_sum,
                "accuracy": progress.hits_sum / progress.count_sum,
            }
            if self.is_chief:
                with self.train_writer.as_default(step=int(self.step.numpy())):
                    tf.summary.scalar("epoch_loss", logs["loss"])
                    tf.summary.scalar("epoch_accuracy", logs["accuracy"])
        return logs

    def _record_evaluation(self, results, epoch):
        """Logs the evaluation of `epoch` (from 1) and keeps the best model; the caller then saves."""
        config = self.config
        self.eval_history.append((epoch, dict(results)))
        summary = ", ".join(f"{name} {value:.4f}" for name, value in sorted(results.items()))
        if self.is_chief:
            print(f"Epoch {epoch}/{config.training.epochs} evaluation: {summary}", flush=True)
            with self.eval_writer.as_default(step=int(self.step.numpy())):
                for name, value in results.items():
                    tf.summary.scalar(name, value)
        value = results.get(config.best_metric)
        if value is not None and value > float(self.best_value.numpy()):
            self.best_value.assign(value)
            if self.is_chief:
                record = {
                    "epoch": epoch,
                    "step": int(self.step.numpy()),
                    "metric": config.best_metric,
                    **{name: float(value) for name, value in results.items()},
                }
                artifacts.write_best_model(config.runtime.model_dir, self.model, record)

    def best_or_final_model(self):
        """The best model by the evaluation metric if one was kept, else the trained model (plain copies)."""
        return artifacts.best_or_final_model(self.config.runtime.model_dir, self.model, self.task)

    def _say(self, message):
        if self.progress and self.is_chief:
            print(message, flush=True)
        else:
            log.info(message)
