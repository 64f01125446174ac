"""Trains an attention-cluster classifier: `python -m ac_keras.train --flagfile=configs/<name>.flags`.

Flags are defined once in `ac_keras.flags`; a flagfile sets them and later command-line flags override it.
Running the same command again after an interruption resumes from the last checkpoint in `--model_dir`.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import json
import os

import tensorflow as tf
from absl import app, flags

from ac_keras import artifacts
from ac_keras import flags as _flags  # noqa: F401  (defines the shared flags)
from ac_keras.export import export_saved_model, first_records
from ac_keras.task import Task
from ac_keras.trainer import Trainer


def maybe_generate_flash_mnist(config, options):
    """Generates Flash-MNIST on first use when `options.generate` and no file matches --train_data.

    Args:
        config: the run's `Config`.
        options: the `FlashMnistOptions` (`CommandOptions.flash_mnist`).

    A dataset whose `flash_mnist.json` records an older frame CNN (`frame_cnn_version` absent or below
    `flash_mnist.FRAME_CNN_VERSION`) is generated again with the current one, replacing only that
    directory, atomically (the generator's overwrite: the new dataset is built beside it and swapped in);
    a --model_dir that holds a run trained on the old features is refused first, before anything is
    generated. A dataset generated before the generator wrote `stats.json` gets it now (the configs'
    --stats), computed from --train_data as `python -m tfrecords.stats` does.
    """
    if not options.generate:
        return
    from ac_keras.datasets import flash_mnist

    data = config.data
    directory = options.directory.rstrip("/") + "/"
    regenerate = False
    if tf.io.gfile.glob(data.train_data):
        if not _lies_in(data.train_data, directory):
            print(
                f"--train_data {data.train_data!r} lies outside --flash_mnist_dir {directory!r}: training on "
                "those files as they are, nothing is generated (to generate into --flash_mnist_dir, pass "
                "--train_data, --eval_data and --stats under it too).",
                flush=True,
            )
            return
        old_version = _stale_frame_cnn_version(options.directory, data.train_data, directory)
        if old_version is None:
            if data.stats and not tf.io.gfile.exists(data.stats) and _lies_in(data.stats, directory):
                print(f"Writing the training statistics {data.stats} (--stats) of the existing Flash-MNIST.")
                flash_mnist.write_training_stats(data.train_data, data.stats)
            return
        model_dir = config.runtime.model_dir
        checkpoints = os.path.join(model_dir, artifacts.CHECKPOINT_SUBDIR) if model_dir else None
        if checkpoints and tf.io.gfile.exists(checkpoints) and tf.io.gfile.listdir(checkpoints):
            raise app.UsageError(
                f"The Flash-MNIST data in {directory} was made with frame CNN version {old_version} (the "
                f"current one is {flash_mnist.FRAME_CNN_VERSION}) and --model_dir {model_dir!r} holds a run "
                "trained on it. Nothing was generated or changed. Move or remove that model_dir, or pass "
                "another --model_dir, and run the command again: the data is then generated anew."
            )
        print(
            f"The Flash-MNIST data in {directory} was made with frame CNN version {old_version}; the current "
            f"version is {flash_mnist.FRAME_CNN_VERSION} (the authors' dropout, docs/flash_mnist.md). "
            f"Generating it again: the new dataset is built beside it and replaces {directory} only when "
            "complete; nothing outside that directory is touched.",
            flush=True,
        )
        regenerate = True
    elif not _lies_in(data.train_data, directory):
        raise app.UsageError(
            f"--train_data {data.train_data!r} must lie in --flash_mnist_dir {directory!r} to be generated."
        )
    else:
        print(
            f"No file matches --train_data; generating Flash-MNIST into {directory} (first use).", flush=True
        )
    info = flash_mnist.generate_dataset(
        options.directory,
        seed=config.training.seed,
        videos_per_class_train=options.videos_per_class_train,
        videos_per_class_test=options.videos_per_class_test,
        mnist_dir=options.mnist_dir,
        cnn_epochs=options.cnn_epochs,
        overwrite=regenerate,
    )
    print(
        f"Flash-MNIST ready in {info['generation_seconds']:.0f} s: {info['num_train_videos']} training and "
        f"{info['num_test_videos']} test videos; frame CNN accuracy on held-out digits "
        f"{info['cnn_test_digit_accuracy']:.1%}.",
        flush=True,
    )


def _lies_in(path, directory):
    """Whether `path` (a file or glob) lies under `directory`; local paths compare absolute ("./data" and
    "data" are one directory), URLs as written."""
    if "://" not in path and "://" not in directory:
        path, directory = os.path.abspath(path), os.path.abspath(directory)
    return path.startswith(directory.rstrip("/") + "/")


def _stale_frame_cnn_version(flash_mnist_dir, train_data, directory):
    """Returns the older frame CNN version of a generated dataset, or None when it is current or not ours.

    Only a directory the generator wrote (its `flash_mnist.json` present) that holds --train_data counts;
    version 1 is the one that recorded no version.
    """
    from ac_keras.datasets import flash_mnist

    metadata_path = os.path.join(flash_mnist_dir, flash_mnist.METADATA_FILE)
    if not _lies_in(train_data, directory) or not tf.io.gfile.exists(metadata_path):
        return None
    with tf.io.gfile.GFile(metadata_path) as stream:
        metadata = json.load(stream)
    version = metadata.get("frame_cnn_version", 1)
    return version if version < flash_mnist.FRAME_CNN_VERSION else None


def run(config):
    """Trains `config`, then exports the best (or final) model under `--export_dir` (default
    `<model_dir>/export`) unless `--noexport` or when the same model was exported with the same settings
    before (a finished run run again)."""
    task = Task(config)
    trainer = Trainer(task)
    results = trainer.train()
    if results:
        summary = ", ".join(f"{name} {value:.4f}" for name, value in sorted(results.items()))
        print(f"Final evaluation: {summary}", flush=True)
    runtime = config.runtime
    if runtime.export and trainer.is_chief:
        record = artifacts.export_record(config, trainer.step.numpy(), runtime.export_base)
        previous = artifacts.previous_export(runtime.model_dir, record)
        if previous:
            print(
                f"Nothing trained since the export {previous}: not exported again "
                "(python -m ac_keras.export writes another version).",
                flush=True,
            )
            return results
        path = export_saved_model(
            trainer.best_or_final_model(),
            task,
            runtime.export_base,
            warmup_examples=first_records(config.data.eval_data or config.data.train_data),
        )
        artifacts.write_export_record(runtime.model_dir, record, path)
        print(f"Exported SavedModel to {path}", flush=True)
    return results


def main(argv):
    config, options = cli.command_from_argv(argv)
    maybe_generate_flash_mnist(config, options.flash_mnist)
    run(config)  # returns metrics; app.run would take a return value as the exit status


if __name__ == "__main__":
    flags.mark_flags_as_required(["train_data", "num_classes", "model_dir"])
    cli.run(main)
