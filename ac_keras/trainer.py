"""The training loop: `strategy.run` steps, checkpoints, summaries, evaluation and the best model.

Keras 3 `model.fit` does not run under MultiWorkerMirroredStrategy (keras issue 20585) and cannot distribute
ragged inputs under MirroredStrategy, so ac_keras trains with one loop of its own for every strategy:

- the global batch is split across replicas by `experimental_distribute_dataset`, so every strategy sees the
  same samples per step and the per-replica losses are summed over the global batch size;
- checkpoints (model, optimizer, step counters) are written every `checkpoint_every` steps and at each epoch
  end by `tf.train.CheckpointManager` (TensorFlow writes them to temporary names and renames them, and updates
  its state file atomically); a restarted run resumes from the latest one at the same step, with the same
  optimizer state and the same position in the epoch (the epoch's shuffle is seeded by the epoch number and
  the batches already done are skipped);
- after each epoch the evaluation set is scored (`ac_keras.evaluation`), scalars go to TensorBoard under
  `model_dir`, and the best model by the evaluation metric is kept (`ac_keras.artifacts`);
- a non-finite loss stops training with `TrainingDivergedError` before anything is saved, so the last
  good checkpoint stays the latest;
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

log = logging.getLogger("ac_keras")


class TrainingDivergedError(UserError, RuntimeError):
    """The training loss became NaN or infinite."""


class Callback:
    """Hooks `Trainer.train` calls; override the ones needed. An exception raised in one ends training."""

    def on_step_end(self, trainer, logs):
        """After each step; `logs` has `step` (global), `loss` and `samples` (of this step)."""

    def on_epoch_end(self, trainer, epoch, logs):
        """After each epoch's checkpoint (`epoch` counts from 1); `logs` has `loss` and `accuracy`."""

    def on_evaluation(self, trainer, epoch, results):
        """After each evaluation and the best-model update (`epoch` counts from 1)."""


def make_apply_gradients(optimizer, variables, fused):
    """The function that applies one step's gradients: `FusedUpdate` when `fused` and supported, else
    Keras's `optimizer.apply` (the reason is logged)."""
    reason = fused_update_unsupported(optimizer, variables) if fused else "--nofused_optimizer"
    if reason is None:
        return FusedUpdate(optimizer, variables)
    log.info("Optimizer update: Keras optimizer.apply (the fused update does not support %s).", reason)
    return optimizer.apply


def make_training_head(model, seed, fused):
    """The fused dropout + classifier of the training step (`ac_keras.head`), or None for the Keras layers."""
    reason = head_lib.head_unsupported(model) if fused else "--nofused_head"
    if reason is None:
        return head_lib.TrainingHead(model, seed)
    log.info("Training head: Keras Dropout and Dense layers (the fused head does not support %s).", reason)
    return None


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
        """The compiled training step: a distributed batch -> (loss, hits, count), summed over replicas."""
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

        results = {}
        while int(self.epoch.numpy()) < config.training.epochs:
            self._train_epoch(step_fn, dataset_fn)
            if config.data.eval_data:
                results = self.evaluate()
                self._record_evaluation(results, int(self.epoch.numpy()))
        self.train_writer.flush()
        self.eval_writer.flush()
        return results

    def _train_epoch(self, step_fn, dataset_fn):
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
        loss_sum = hits_sum = count_sum = 0.0
        start = time.perf_counter()
        done = skip
        for batch in self.strategy.experimental_distribute_dataset(dataset):
            loss, hits, count = step_fn(batch)
            loss = float(loss)
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"Training loss became {loss} at step {int(self.step.numpy()) + 1} "
                    f"(epoch {epoch + 1}). "
                    f"Nothing was saved after the last good checkpoint "
                    f"({self.manager.latest_checkpoint or 'none yet'}). Lower --learning_rate, keep "
                    "--clip_norm on, or look for NaN/Inf in the features (python -m tfrecords.stats)."
                )
            self.step.assign_add(1)
            self.step_in_epoch.assign_add(1)
            done += 1
            loss_sum += loss * float(count)
            hits_sum += float(hits)
            count_sum += float(count)
            throughput = count_sum / max(time.perf_counter() - start, 1e-9)
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
            for callback in self.callbacks:
                callback.on_step_end(self, {"step": step, "loss": loss, "samples": float(count)})
            if step % config.runtime.checkpoint_every == 0:
                self._maybe_save()
        if count_sum == 0 and skip == 0:
            raise DataError(
                f"--train_data {config.data.train_data!r} produced no training batch (no records, or every "
                "video skipped)."
            )
        bar.update(done, finalize=True)
        self.epoch_steps.assign(done)
        self.epoch.assign_add(1)
        self.step_in_epoch.assign(0)
        self._maybe_save()
        logs = {}
        if count_sum:
            logs = {"loss": loss_sum / count_sum, "accuracy": hits_sum / count_sum}
            if self.is_chief:
                with self.train_writer.as_default(step=int(self.step.numpy())):
                    tf.summary.scalar("epoch_loss", logs["loss"])
                    tf.summary.scalar("epoch_accuracy", logs["accuracy"])
        for callback in self.callbacks:
            callback.on_epoch_end(self, epoch + 1, logs)

    def _record_evaluation(self, results, epoch):
        """Logs the evaluation of `epoch` (from 1), keeps the best model, then calls the callbacks."""
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
            self._maybe_save()
        for callback in self.callbacks:
            callback.on_evaluation(self, epoch, results)

    def best_or_final_model(self):
        """The best model by the evaluation metric if one was kept, else the trained model (plain copies)."""
        return artifacts.best_or_final_model(self.config.runtime.model_dir, self.model, self.task)

    def _say(self, message):
        if self.progress and self.is_chief:
            print(message, flush=True)
        else:
            log.info(message)
