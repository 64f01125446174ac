"""The `tf.distribute` strategy of a run and the facts about this task within it (chief, workers)."""

import os

import tensorflow as tf


def make_strategy(name, devices=()):
    """Returns the `tf.distribute.Strategy` for `--strategy`.

    Args:
        name: `"auto"` (MirroredStrategy when more than one GPU is visible, else the default strategy),
            `"default"`, `"mirrored"` (all local GPUs, or `devices`), or `"multi_worker"` (cluster from the
            `TF_CONFIG` environment variable).
        devices: optional device names for `"mirrored"`, e.g. `("/cpu:0", "/cpu:1")`.

    Raises:
        ValueError: an unknown name, or `"multi_worker"` without `TF_CONFIG`.
    """
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(list(devices) or None)
    if name == "multi_worker":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "--strategy=multi_worker needs the TF_CONFIG environment variable (cluster spec)."
            )
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"--strategy must be one of auto, default, mirrored, multi_worker; got {name!r}.")


def _cluster(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, {}
    return resolver, resolver.cluster_spec().as_dict()


def is_chief(strategy):
    """Whether this task writes the run's files: the chief, or worker 0 of a cluster without a chief."""
    resolver, spec = _cluster(strategy)
    if not spec:
        return True
    task_type, task_id = resolver.task_type, resolver.task_id
    return task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in spec)


def num_workers(strategy):
    """The number of tasks that train (chief and workers); 1 outside a cluster."""
    _, spec = _cluster(strategy)
    if not spec:
        return 1
    return max(len(spec.get("worker", [])), 1) + len(spec.get("chief", []))


def write_dir(model_dir, strategy):
    """Where this task writes: the model dir for the chief, a scratch dir for other workers.

    Under MultiWorkerMirroredStrategy every worker must take part in saving (the save is a collective), but
    only the chief's files are kept.
    """
    if is_chief(strategy):
        return model_dir
    resolver = strategy.cluster_resolver
    return os.path.join(model_dir, f".worker_scratch_{resolver.task_type}_{resolver.task_id}")
