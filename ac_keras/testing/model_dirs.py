"""A model_dir that `python -m ac_keras.classify` can use, built in seconds: tiny `.keras` feature models, the
extraction.json that records them, and an untrained (seeded) classifier saved as the run's best model.

For tests and benchmarks of classify that need a run but not a trained one (a training run's model_dir has
the same files: config.json, extraction.json, best/model.keras).
"""

import os

import keras

from ac_keras import artifacts
from ac_keras import config as ac_config
from ac_keras.extraction import extractor as extractor_lib
from ac_keras.task import Task


def feature_models(directory, *, rgb_dim=6, audio_dim=8):
    """Saves the tiny models: rgb over 32 x 32 RGB frames (`rgb_dim` floats), audio over 96 x 64 log-mel
    patches (`audio_dim` floats); returns {modality: path}."""
    keras.utils.set_random_seed(0)
    rgb = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Conv2D(rgb_dim, 3, strides=2),
            keras.layers.GlobalAveragePooling2D(),
        ]
    )
    audio = keras.Sequential(
        [
            keras.Input((96, 64, 1)),
            keras.layers.AveragePooling2D((96, 64 // audio_dim)),
            keras.layers.Flatten(),
        ]
    )
    paths = {}
    os.makedirs(directory, exist_ok=True)
    for name, model in (("rgb", rgb), ("audio", audio)):
        paths[name] = os.path.join(directory, f"{name}_features.keras")
        model.save(paths[name])
    return paths


def classify_model_dir(
    directory,
    *,
    modalities=("rgb", "audio"),
    fps=1.0,
    max_frames=300,
    num_frames=None,
    batch_size=64,
    num_classes=4,
    eval_frames=5,
    top_k=3,
    seed=1,
):
    """Writes a model_dir for classify: extraction.json (the tiny models of `feature_models`, the sampling
    given), config.json and an untrained classifier of the features (seed `seed`) as its best model.

    Returns:
        The model_dir's path.
    """
    directory = os.fspath(directory)
    models = feature_models(os.path.join(directory, "feature_models"))
    spec = extractor_lib.ExtractionSpec(
        modalities=tuple(extractor_lib.ModalitySpec(name, models[name]) for name in modalities),
        fps=fps,
        max_frames=max_frames,
        num_frames=num_frames,
        batch_size=batch_size,
    )
    extractor = extractor_lib.Extractor(spec)
    extractor_lib.write_description(extractor.describe(), os.path.join(directory, artifacts.EXTRACTION_FILE))
    config = ac_config.from_values(
        features=extractor.feature_spec(),
        num_classes=num_classes,
        label_mode="multi",
        cluster_sizes="2",
        eval_frames=eval_frames,
        batch_size=batch_size,
        top_k=top_k,
        model_dir=directory,
        need_train_data=False,
    )
    keras.utils.set_random_seed(seed)
    artifacts.write_config(directory, config)
    artifacts.write_best_model(directory, Task(config).build_model(), {"epoch": 0})
    return directory
