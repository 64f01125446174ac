"""Draws attention weight maps: `python -m ac_keras.visualize --flagfile=F --model_dir=D --output=X.png`.

For the first `--num_videos` videos of `--data` (all frames, file order), one panel per video and modality
shows the weights `a_k` of every attention unit (rows) over the video's frames (columns), with the video id,
its labels and the model's top prediction, as in the paper's Figure 5.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import keras
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from absl import app  # noqa: E402

from ac_keras import artifacts, schema  # noqa: E402
from ac_keras import flags as _flags  # noqa: E402, F401  (defines the shared flags)
from ac_keras.model import adapt_inputs, model_parts  # noqa: E402
from ac_keras.task import Task  # noqa: E402


def attention_model(model):
    """A model returning `(probabilities, {modality: weights (batch, N, frames)})` from a trained classifier.

    The classifier's attention clusters already compute their weights, so this only exposes them.
    """
    clusters = model_parts(model).clusters
    if not clusters:
        raise ValueError("The model has no attention cluster (was it trained with another aggregator?).")
    weights = {modality: layer.output[1] for modality, layer in clusters.items()}
    return keras.Model(model.inputs, [model.output, weights])


def attention_maps(model, features):
    """Runs `model` on a features dict; returns `(probabilities, {modality: weights})` as NumPy arrays."""
    inputs = {name: value for name, value in features.items() if name != schema.VIDEO_ID_KEY}
    probabilities, weights = attention_model(model)(adapt_inputs(model, inputs), training=False)
    return np.asarray(probabilities), {name: np.asarray(value) for name, value in weights.items()}


def plot_attention(path, video_ids, labels, probabilities, weights, frame_counts):
    """Writes one heat map per video and modality (units x real frames) to `path`."""
    modalities = list(weights)
    num_videos = len(video_ids)
    figure, axes = plt.subplots(
        num_videos, len(modalities), figsize=(4.5 * len(modalities), 2.2 * num_videos), squeeze=False
    )
    for row in range(num_videos):
        top = int(np.argmax(probabilities[row]))
        for column, modality in enumerate(modalities):
            length = int(frame_counts[modality][row])
            axis = axes[row][column]
            image = axis.imshow(weights[modality][row, :, :length], aspect="auto", cmap="viridis", vmin=0)
            axis.set_title(
                f"{video_ids[row]} {modality}: label {labels[row]}, predicted {top} "
                f"({probabilities[row, top]:.2f})",
                fontsize=7,
            )
            axis.set_xlabel("frame", fontsize=7)
            axis.set_ylabel("unit", fontsize=7)
            axis.tick_params(labelsize=6)
            figure.colorbar(image, ax=axis, fraction=0.04)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv):
    config, options = cli.command_from_argv(argv, need_train_data=False)
    pattern = options.visualize_data or config.data.eval_data
    if not pattern:
        raise app.UsageError("--data: is required (or --eval_data).")
    model = artifacts.load_trained_model(config.runtime.model_dir)
    dataset = Task(config).eval_dataset(pattern, keep_ids=True, batch_size=options.num_videos, num_frames=0)
    features, labels = next(iter(dataset))[:2]
    probabilities, weights = attention_maps(model, features)
    video_ids = [value.decode("utf-8", "replace") for value in features[schema.VIDEO_ID_KEY].numpy()]
    label_ids = [np.flatnonzero(row).tolist() for row in labels.numpy()]
    frame_counts = {name: features[name].row_lengths().numpy() for name in weights}
    plot_attention(options.visualize_output, video_ids, label_ids, probabilities, weights, frame_counts)
    print(f"Wrote attention maps of {len(video_ids)} videos to {options.visualize_output}", flush=True)


if __name__ == "__main__":
    cli.run(main)
