"""Trains an attention-cluster classifier: `python -m ac_keras.train --flagfile=configs/<name>.flags`.

Flags are defined once in `ac_keras.config`; a flagfile sets them and later command-line flags override it.
Running the same command again after an interruption resumes from the last checkpoint in `--model_dir`.
"""

from absl import app, flags

from ac_keras import config as ac_config
from ac_keras import training
from ac_keras.export import export_saved_model, first_records


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
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    try:
        config = ac_config.from_flags()
    except ac_config.ConfigError as error:
        raise app.UsageError(str(error)) from None
    run(config)  # returns metrics; app.run would take a return value as the exit status


if __name__ == "__main__":
    flags.mark_flags_as_required(["train_data", "num_classes", "model_dir"])
    app.run(main)
