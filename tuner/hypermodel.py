"""The search space as a `keras_tuner.HyperModel` that builds through the training model builder."""

import keras_tuner

from ac_keras import config as ac_config
from ac_keras.task import Task

LEARNING_RATE = "learning_rate"
DROPOUT = "dropout"
WEIGHTING = "weighting"
SHIFT = "shift"


def cluster_size_name(modality):
    """Name of the hyperparameter that holds N of `modality`."""
    return f"cluster_size_{modality}"


class AttentionClusterHyperModel(keras_tuner.HyperModel):
    """Attention-cluster classifiers whose N per modality, weighting, shift, learning rate and dropout vary.

    `build(hp)` turns the hyperparameters into an `ac_keras.config.Config` (`config_for`) and builds it with
    `ac_keras.task.Task`, as training does, so a trial's model is exactly the one `python -m ac_keras.train`
    trains from the same flags.

    Args:
        base_config: the validated training `Config`; fields the search does not set come from it.
        space: a `tuner.settings.SearchSpace`.
    """

    def __init__(self, base_config, space, **kwargs):
        super().__init__(name="attention_clusters", **kwargs)
        self.base_config = base_config
        self.space = space

    def declare_hyperparameters(self, hp):
        """Registers every dimension with `hp` (fixed ones as `hp.Fixed`); returns the values chosen."""
        for modality, sizes in self.space.cluster_sizes:
            name = cluster_size_name(modality)
            if len(sizes) == 1:
                hp.Fixed(name, sizes[0])
            else:
                hp.Choice(name, list(sizes), ordered=True)
        if len(self.space.weightings) == 1:
            hp.Fixed(WEIGHTING, self.space.weightings[0])
        else:
            hp.Choice(WEIGHTING, list(self.space.weightings))
        if len(self.space.shifts) == 1:
            hp.Fixed(SHIFT, self.space.shifts[0])
        else:
            hp.Boolean(SHIFT, default=self.space.shifts[0])
        low, high = self.space.learning_rate
        if low == high:
            hp.Fixed(LEARNING_RATE, low)
        else:
            hp.Float(LEARNING_RATE, low, high, sampling="log")
        low, high = self.space.dropout
        if low == high:
            hp.Fixed(DROPOUT, low)
        else:
            hp.Float(DROPOUT, low, high)
        return dict(hp.values)

    def config_for(self, values, **overrides):
        """The training `Config` of hyperparameter values (a dict or `HyperParameters`), validated.

        Args:
            values: hyperparameter values by name; `keras_tuner.HyperParameters` works too.
            **overrides: further `Config` fields (model_dir, epochs, seed, ...).
        """
        if isinstance(values, keras_tuner.HyperParameters):
            values = values.values
        base = self.base_config
        fields = {
            "cluster_sizes": tuple(
                (modality, int(values.get(cluster_size_name(modality), size)))
                for modality, size in base.model.cluster_sizes
            ),
            "weighting": str(values.get(WEIGHTING, base.model.weighting)),
            "shift": bool(values.get(SHIFT, base.model.shift)),
            "learning_rate": float(values.get(LEARNING_RATE, base.training.learning_rate)),
            "dropout": float(values.get(DROPOUT, base.model.dropout)),
        }
        fields.update(overrides)
        return ac_config.validate(base.replace(**fields))

    def build(self, hp):
        self.declare_hyperparameters(hp)
        return Task(self.config_for(hp)).build_model()
