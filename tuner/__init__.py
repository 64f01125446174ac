"""KerasTuner search over the cluster size N per modality (and weighting, shift, learning rate, dropout).

- `tuner.search`: the `python -m tuner.search` command and `run_search(config, settings)`;
- `tuner.settings`: the tuner's flags and the frozen `SearchSettings` / `SearchSpace` built from them;
- `tuner.hypermodel`: `AttentionClusterHyperModel`, whose `build(hp)` uses the training model builder;
- `tuner.trials`: `TrainerTuner`, whose trials train with `ac_keras.trainer.Trainer`, with early stopping;
- `tuner.chief`: the oracle server of a distributed (chief/worker) search;
- `tuner.report`: results table (CSV, Markdown), metric-vs-N plot and `best.flags`.

docs/tuner.md describes the command, its outputs, resuming and the distributed mode.
"""
