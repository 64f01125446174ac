"""Trains an attention-cluster classifier: `python -m ac_keras.train --flagfile=configs/<name>.flags`.

Flags are defined once in `ac_keras.config`; a flagfile sets them and later command-line flags override it.
Running the same command again after an interruption resumes from the last checkpoint in `--model_dir`.
"""

import tensorflow as tf
from absl import app, flags

from ac_keras import cli, training
from ac_keras import config as _config  # noqa: F401  (defines the shared flags)
from ac_keras.export import export_saved_model, first_records


def maybe_generate_flash_mnist(config):
    """Generates Flash-MNIST on first use when --generate_flash_mnist is set and --train_data is missing.

    A dataset generated before the generator wrote `stats.json` gets it now (the configs' --stats), computed
    from --train_data as `python -m tfrecords.stats` does.
    """
    if not flags.FLAGS.generate_flash_mnist:
        return
    if tf.io.gfile.glob(config.train_data):
        _add_missing_stats(config)
        return
    directory = flags.FLAGS.flash_mnist_dir
    if not config.train_data.startswith(directory.rstrip("/") + "/"):
        raise app.UsageError(
            f"--train_data {config.train_data!r} must lie in --flash_mnist_dir {directory!r} to be generated."
        )
    # The dataset tools sit above the library; only this entry point reaches for them.
    from tfrecords import flash_mnist

    print(f"No file matches --train_data; generating Flash-MNIST into {directory} (first use).", flush=True)
    info = flash_mnist.generate_dataset(
        directory,
        seed=config.seed,
        videos_per_class_train=flags.FLAGS.flash_mnist_videos_per_class_train,
        videos_per_class_test=flags.FLAGS.flash_mnist_videos_per_class_test,
        mnist_dir=flags.FLAGS.mnist_dir,
        cnn_epochs=flags.FLAGS.flash_mnist_cnn_epochs,
        overwrite=False,
    )
    print(
        f"Flash-MNIST ready in {info['generation_seconds']:.0f} s: {info['num_train_videos']} training and "
        f"{info['num_test_videos']} test videos; frame CNN accuracy on held-out digits "
        f"{info['cnn_test_digit_accuracy']:.1%}.",
        flush=True,
    )


def _add_missing_stats(config):
    directory = flags.FLAGS.flash_mnist_dir.rstrip("/") + "/"
    if not config.stats or tf.io.gfile.exists(config.stats) or not config.stats.startswith(directory):
        return
    from tfrecords import flash_mnist

    print(
        f"Writing the training statistics {config.stats} (--stats) of the existing Flash-MNIST data.",
        flush=True,
    )
    flash_mnist.write_training_stats(config.train_data, config.stats)


def run(config):
    """Trains `config`, then exports the best (or final) model when `--export_dir` is set."""
    trainer = training.Trainer(config)
    results = trainer.train()
    if results:
        summary = ", ".join(f"{name} {value:.4f}" for name, value in sorted(results.items()))
        print(f"Final evaluation: {summary}", flush=True)
    if config.export and config.export_dir and trainer.is_chief:
        model = training.best_or_final_model(trainer)
        path = export_saved_model(
            model,
            config,
            config.export_dir,
            warmup_examples=first_records(config.eval_data or config.train_data),
        )
        print(f"Exported SavedModel to {path}", flush=True)
    return results


def main(argv):
    config = cli.config_from_argv(argv)
    maybe_generate_flash_mnist(config)
    run(config)  # returns metrics; app.run would take a return value as the exit status


if __name__ == "__main__":
    flags.mark_flags_as_required(["train_data", "num_classes", "model_dir"])
    cli.run(main)
