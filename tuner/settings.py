"""The tuner's flags, defined once, and the frozen, validated search settings built from them.

Every training flag comes from `ac_keras.flags` (imported here, so a training flagfile is accepted as is);
this module adds the search: which tuner, how many trials, where its state goes, early stopping, and the
search space. Each search dimension is a flag; one value fixes it, and `--fixed` takes a dimension's value
from the training flags instead.
"""

import dataclasses
import json
import math

from absl import flags

from ac_keras import config as ac_config
from ac_keras import flags as _flags  # noqa: F401  (defines the training flags)

TUNERS = ("random", "bayesian", "hyperband", "grid")
DIMENSIONS = ("cluster_sizes", "weighting", "shift", "learning_rate", "dropout")
_TRUE = ("true", "on", "1", "yes")
_FALSE = ("false", "off", "0", "no")

flags.DEFINE_enum("tuner", "random", TUNERS, "KerasTuner algorithm of the search.")
flags.DEFINE_string(
    "tuner_dir", None, "Directory of the search: KerasTuner state, trials, results, best.flags."
)
flags.DEFINE_integer(
    "max_trials", 20, "Trials (hyperparameter sets) to run at most; a resumed search counts finished ones."
)
flags.DEFINE_integer(
    "executions_per_trial", 1, "Trainings per trial, seeds --seed, --seed+1, ...; the metric is their mean."
)
flags.DEFINE_integer(
    "patience",
    3,
    "Early stopping: stop a trial after this many evaluations without a new best of the validation metric "
    "(top1 or gap); 0 = train every epoch.",
)
flags.DEFINE_integer("hyperband_factor", 3, "--tuner=hyperband: reduction factor of epochs and trials.")
flags.DEFINE_integer(
    "bayesian_initial_points",
    0,
    "--tuner=bayesian: random trials before the Gaussian process; 0 = 3 per dim.",
)
flags.DEFINE_integer(
    "num_tuner_workers",
    0,
    "Distributed tuning, chief only: keep serving until this many workers were told the search is over "
    "(so a late worker is not left waiting); 0 = KerasTuner's rule (stop once every worker that asked for "
    "a trial was told).",
)
flags.DEFINE_string(
    "search_cluster_sizes",
    "1,2,4,8,16,32,64,128",
    "Cluster sizes N to try: one list for all modalities (1,2,4) or per modality with | (rgb:32|64,audio:8).",
)
flags.DEFINE_list("search_weighting", ["fc1", "fc2"], "Weighting functions to try (average, fc1, fc2).")
flags.DEFINE_list("search_shift", ["true", "false"], "Shifting operation on and/or off (true,false).")
flags.DEFINE_list(
    "search_learning_rate",
    ["1e-4", "1e-2"],
    "Learning rate range min,max, sampled on a log scale; one value fixes it.",
)
flags.DEFINE_list("search_dropout", ["0.0", "0.7"], "Dropout range min,max; one value fixes it.")
flags.DEFINE_list(
    "fixed",
    [],
    f"Search dimensions set by the training flags instead of searched: any of {', '.join(DIMENSIONS)}.",
)

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """What the search tries; a dimension with one value (or min == max) is fixed.

    Attributes:
        cluster_sizes: ((modality, (N, ...)), ...) in the order of `--features`.
        weightings: weighting functions to try.
        shifts: shift settings to try.
        learning_rate: (min, max), sampled on a log scale.
        dropout: (min, max), sampled uniformly.
    """

    cluster_sizes: tuple[tuple[str, tuple[int, ...]], ...]
    weightings: tuple[str, ...] = ("fc1", "fc2")
    shifts: tuple[bool, ...] = (True, False)
    learning_rate: tuple[float, float] = (1e-4, 1e-2)
    dropout: tuple[float, float] = (0.0, 0.7)

    def to_dict(self):
        return json.loads(json.dumps(dataclasses.asdict(self)))


@dataclasses.dataclass(frozen=True)
class SearchSettings:
    """Validated settings of one search: `from_flags()`, or `SearchSettings(...)` then `validate()`."""

    tuner_dir: str
    space: SearchSpace
    tuner: str = "random"
    max_trials: int = 20
    executions_per_trial: int = 1
    patience: int = 3
    hyperband_factor: int = 3
    bayesian_initial_points: int = 0
    num_tuner_workers: int = 0

    def identity(self):
        """What a resumed search must share with the one that started: all but max_trials and workers."""
        values = dataclasses.asdict(self)
        for name in ("tuner_dir", "max_trials", "num_tuner_workers"):
            values.pop(name)
        values["space"] = self.space.to_dict()
        return values


def _fail(flag, message):
    raise ac_config.ConfigError(f"--{flag}: {message}")


def parse_cluster_size_choices(text, modalities):
    """Parses `--search_cluster_sizes` into ((modality, (N, ...)), ...) in modality order."""
    text = (text or "").strip()
    if not text:
        _fail("search_cluster_sizes", "expected a list of N (1,2,4) or name:N|N pairs, got an empty value.")

    def sizes_of(part, separator):
        try:
            sizes = tuple(int(value) for value in part.split(separator) if value.strip())
        except ValueError:
            _fail("search_cluster_sizes", f"{part!r} is not a list of integers.")
        if not sizes:
            _fail("search_cluster_sizes", f"{part!r} names no N.")
        if min(sizes) < 1:
            _fail("search_cluster_sizes", f"every N must be >= 1, got {part!r}.")
        return tuple(sorted(set(sizes)))

    if ":" not in text:
        sizes = sizes_of(text, ",")
        return tuple((name, sizes) for name in modalities)
    choices = {}
    for part in text.split(","):
        name, _, values = part.strip().partition(":")
        choices[name] = sizes_of(values, "|")
    missing = [name for name in modalities if name not in choices]
    unknown = [name for name in choices if name not in modalities]
    if missing or unknown:
        _fail(
            "search_cluster_sizes",
            f"needs the N to try for each modality of --features {list(modalities)}; "
            f"missing {missing}, unknown {unknown}.",
        )
    return tuple((name, choices[name]) for name in modalities)


def _parse_bool(value):
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    _fail("search_shift", f"expected true/false (or on/off), got {value!r}.")


def _parse_range(flag, values):
    try:
        numbers = [float(value) for value in values]
    except ValueError:
        _fail(flag, f"expected min,max or one number, got {','.join(values)!r}.")
    if len(numbers) == 1:
        numbers *= 2
    if len(numbers) != 2 or numbers[0] > numbers[1]:
        _fail(flag, f"expected min,max with min <= max, or one number; got {','.join(values)!r}.")
    return tuple(numbers)


def validate(settings, config):
    """Checks the settings against the training config; raises `ConfigError` naming the flag."""
    if not settings.tuner_dir:
        _fail("tuner_dir", "is required (where the search keeps its state and results).")
    if settings.tuner not in TUNERS:
        _fail("tuner", f"must be one of {TUNERS}, got {settings.tuner!r}.")
    if settings.max_trials < 1:
        _fail("max_trials", f"must be >= 1, got {settings.max_trials}.")
    if settings.executions_per_trial < 1:
        _fail("executions_per_trial", f"must be >= 1, got {settings.executions_per_trial}.")
    if settings.patience < 0:
        _fail("patience", f"must be >= 0 (0 = no early stopping), got {settings.patience}.")
    if settings.hyperband_factor < 2:
        _fail("hyperband_factor", f"must be >= 2, got {settings.hyperband_factor}.")
    if settings.bayesian_initial_points < 0:
        _fail("bayesian_initial_points", f"must be >= 0, got {settings.bayesian_initial_points}.")
    if settings.num_tuner_workers < 0:
        _fail("num_tuner_workers", f"must be >= 0, got {settings.num_tuner_workers}.")
    if not config.data.eval_data:
        raise ac_config.ConfigError("--eval_data: is required: trials are scored on the evaluation set.")
    if config.runtime.strategy == "multi_worker":
        raise ac_config.ConfigError(
            "--strategy: multi_worker is not supported by the tuner; spread trials over machines with "
            "KerasTuner's chief/worker mode instead (docs/tuner.md), each worker on default or mirrored."
        )
    space = settings.space
    modalities = [spec.name for spec in config.data.feature_specs]
    if [name for name, _ in space.cluster_sizes] != modalities:
        _fail("search_cluster_sizes", f"needs the N to try for each modality of --features {modalities}.")
    for name, sizes in space.cluster_sizes:
        if not sizes or min(sizes) < 1:
            _fail("search_cluster_sizes", f"N of {name!r} must be >= 1, got {sizes}.")
    if not space.weightings or any(w not in ac_config.WEIGHTINGS for w in space.weightings):
        _fail("search_weighting", f"values must be among {ac_config.WEIGHTINGS}, got {space.weightings}.")
    if not space.shifts:
        _fail("search_shift", "needs at least one of true, false.")
    low, high = space.learning_rate
    if not (0 < low <= high and math.isfinite(high)):
        _fail("search_learning_rate", f"needs 0 < min <= max, got {space.learning_rate}.")
    low, high = space.dropout
    if not 0.0 <= low <= high < 1.0:
        _fail("search_dropout", f"needs 0 <= min <= max < 1, got {space.dropout}.")
    return settings


def from_flags(config, flag_values=FLAGS):
    """Builds and validates `SearchSettings` from parsed flags and the training config they also set."""
    fixed = [name.strip() for name in flag_values.fixed if name.strip()]
    unknown = [name for name in fixed if name not in DIMENSIONS]
    if unknown:
        _fail("fixed", f"unknown dimensions {unknown}; allowed: {list(DIMENSIONS)}.")
    modalities = [spec.name for spec in config.data.feature_specs]
    if "cluster_sizes" in fixed:
        cluster_sizes = tuple((name, (size,)) for name, size in config.model.cluster_sizes)
    else:
        cluster_sizes = parse_cluster_size_choices(flag_values.search_cluster_sizes, modalities)
    if "weighting" in fixed:
        weightings = (config.model.weighting,)
    else:
        weightings = tuple(dict.fromkeys(w.strip() for w in flag_values.search_weighting if w.strip()))
    if "shift" in fixed:
        shifts = (config.model.shift,)
    else:
        shifts = tuple(dict.fromkeys(_parse_bool(value) for value in flag_values.search_shift))
    if "learning_rate" in fixed:
        learning_rate = (config.training.learning_rate, config.training.learning_rate)
    else:
        learning_rate = _parse_range("search_learning_rate", flag_values.search_learning_rate)
    if "dropout" in fixed:
        dropout = (config.model.dropout, config.model.dropout)
    else:
        dropout = _parse_range("search_dropout", flag_values.search_dropout)
    settings = SearchSettings(
        tuner_dir=flag_values.tuner_dir,
        space=SearchSpace(
            cluster_sizes=cluster_sizes,
            weightings=weightings,
            shifts=shifts,
            learning_rate=learning_rate,
            dropout=dropout,
        ),
        tuner=flag_values.tuner,
        max_trials=flag_values.max_trials,
        executions_per_trial=flag_values.executions_per_trial,
        patience=flag_values.patience,
        hyperband_factor=flag_values.hyperband_factor,
        bayesian_initial_points=flag_values.bayesian_initial_points,
        num_tuner_workers=flag_values.num_tuner_workers,
    )
    return validate(settings, config)
