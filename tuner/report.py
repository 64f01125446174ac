"""What a search leaves beside KerasTuner's state: results table, metric-vs-N plot and `best.flags`."""

import csv
import io
import math
import os

import tensorflow as tf
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tuner import hypermodel as hm
from tuner.trials import EXTRA_METRICS

RESULTS_CSV = "results.csv"
RESULTS_MD = "results.md"
PLOT_FILE = "metric_vs_cluster_size.png"
BEST_FLAGS = "best.flags"
BEST_RUN = "best_run"
COMPLETED = "COMPLETED"


def _write(path, data):
    """Writes text or bytes under a temporary name, then renames it into place (readers never see half).

    The chief and the workers of a distributed search may write the same reports at once: each uses its own
    temporary name, and the last rename wins with a whole file.
    """
    temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    with tf.io.gfile.GFile(temporary, "wb" if isinstance(data, bytes) else "w") as handle:
        handle.write(data)
    tf.io.gfile.rename(temporary, path, overwrite=True)


def _trial_order(trial):
    trial_id = str(trial.trial_id)
    return (0, int(trial_id), "") if trial_id.isdigit() else (1, 0, trial_id)


def _metric(trial, name):
    if trial.metrics.exists(name):
        return trial.metrics.get_last_value(name)
    return None


def _format(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}" if math.isfinite(value) else str(value)
    return str(value)


def results_rows(trials, hypermodel, metric):
    """One row (dict) per trial, ordered by trial id: hyperparameters, metrics, best epoch, epochs, seconds.

    The objective `metric` comes first, then the other evaluation metrics at the trial's best epoch.
    """
    names = [hm.cluster_size_name(modality) for modality, _ in hypermodel.space.cluster_sizes]
    names += [hm.WEIGHTING, hm.SHIFT, hm.LEARNING_RATE, hm.DROPOUT]
    extra = sorted({key for trial in trials for key in trial.hyperparameters.values if key not in names})
    others = sorted({name for trial in trials for name in trial.metrics.metrics} - {metric, *EXTRA_METRICS})
    rows = []
    for trial in sorted(trials, key=_trial_order):
        values = trial.hyperparameters.values
        row = {"trial": trial.trial_id, "status": trial.status}
        row.update({name: values.get(name) for name in names + extra})
        score = trial.score if trial.score is not None else _metric(trial, metric)
        row[metric] = score if trial.status == COMPLETED else None
        row.update({name: _metric(trial, name) for name in others})
        for name in EXTRA_METRICS:
            value = _metric(trial, name)
            row[name] = int(round(value)) if value is not None and name != "seconds" else value
        rows.append(row)
    return rows


def best_trial(trials):
    completed = [
        t for t in trials if t.status == COMPLETED and t.score is not None and math.isfinite(t.score)
    ]
    # Objectives are maximized (top1, gap); `max` keeps the first of equals, so ties go to the earlier trial.
    return max(sorted(completed, key=_trial_order), key=lambda t: t.score, default=None)


def write_table(rows, tuner_dir, metric, best=None):
    columns = list(rows[0]) if rows else ["trial", "status", metric]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({key: _format(value) for key, value in row.items()})
    _write(os.path.join(tuner_dir, RESULTS_CSV), text.getvalue())

    done = sum(row["status"] == COMPLETED for row in rows)
    lines = [f"# Search results: {metric} on the evaluation set", ""]
    lines.append(f"{len(rows)} trials, {done} completed.")
    if best is not None:
        lines.append(f"Best: trial {best.trial_id}, {metric} {_format(best.score)} (`{BEST_FLAGS}`).")
    lines += ["", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        lines.append("| " + " | ".join(_format(row[column]) for column in columns) + " |")
    _write(os.path.join(tuner_dir, RESULTS_MD), "\n".join(lines) + "\n")


def write_plot(rows, hypermodel, tuner_dir, metric):
    """The metric against N, one panel per modality, one marker per weighting and shift (PNG, Agg)."""
    done = [row for row in rows if row["status"] == COMPLETED and row[metric] is not None]
    modalities = [modality for modality, _ in hypermodel.space.cluster_sizes]
    figure = Figure(figsize=(5 * len(modalities), 4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(modalities), squeeze=False)[0]
    groups = sorted({(str(row[hm.WEIGHTING]), bool(row[hm.SHIFT])) for row in done})
    markers = "osD^v<>ph*"
    for axis, (modality, sizes) in zip(axes, hypermodel.space.cluster_sizes, strict=True):
        name = hm.cluster_size_name(modality)
        for index, (weighting, shift) in enumerate(groups):
            members = [r for r in done if str(r[hm.WEIGHTING]) == weighting and bool(r[hm.SHIFT]) == shift]
            axis.scatter(
                [r[name] for r in members],
                [r[metric] for r in members],
                marker=markers[index % len(markers)],
                label=f"{weighting}, {'shift' if shift else 'no shift'}",
                alpha=0.8,
            )
        axis.set_xscale("log", base=2)
        axis.set_xticks(list(sizes), [str(size) for size in sizes])
        axis.minorticks_off()
        axis.set_xlabel(f"N ({modality})")
        axis.set_ylabel(metric)
        axis.grid(alpha=0.3)
        if groups:
            axis.legend(fontsize="small")
    figure.suptitle(f"{metric} against the cluster size N: {len(done)} completed trials")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    _write(os.path.join(tuner_dir, PLOT_FILE), buffer.getvalue())


def best_flags(trial, hypermodel, tuner_dir, metric):
    """The flagfile text that retrains `trial`'s configuration with `python -m ac_keras.train`."""
    base = hypermodel.base_config
    run_dir = os.path.join(tuner_dir, BEST_RUN)
    config = hypermodel.config_for(
        trial.hyperparameters.values,
        model_dir=run_dir,
        export_dir=os.path.join(run_dir, "export"),
        epochs=base.training.epochs,
        seed=base.training.seed,
    )
    path = os.path.join(tuner_dir, BEST_FLAGS)
    header = (
        f"# Best trial {trial.trial_id} of the search in {tuner_dir}: {metric} {_format(trial.score)} on "
        "the evaluation set.\n"
        f"# Command:  python -m ac_keras.train --flagfile={path}\n"
        f"# Retrains it for the full --epochs={base.training.epochs} into {run_dir} and exports it.\n"
    )
    return header + config.to_flags()


def write_reports(trials, hypermodel, tuner_dir, metric):
    """Writes results.csv, results.md, the plot and (once a trial completed) best.flags; returns the best."""
    tf.io.gfile.makedirs(tuner_dir)
    rows = results_rows(trials, hypermodel, metric)
    best = best_trial(trials)
    write_table(rows, tuner_dir, metric, best)
    write_plot(rows, hypermodel, tuner_dir, metric)
    if best is not None:
        _write(os.path.join(tuner_dir, BEST_FLAGS), best_flags(best, hypermodel, tuner_dir, metric))
    return best
