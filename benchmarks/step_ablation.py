"""Each training-speed change's effect: the compiled train step with that change switched off, in one run.

For a flagfile of configs/ at a batch size, builds one `ac_keras.trainer.Trainer` per variant, from the
flagfile's config with that variant's speed flags, and times its `make_train_step()` (the step
`python -m ac_keras.train` runs, on one in-memory batch of `--frames` frames per video, so the input pipeline
is not measured). The variants:

  all        every change on (the default);
  -optimizer `--nofused_optimizer`: Keras's `optimizer.apply` instead of the XLA-fused update;
  -head      `--nofused_head`: the model's Keras Dropout and Dense layers instead of `ac_keras.head`
             (hash dropout mask, faster matmul gradients);
  -shift     `--nofused_shift`: ShiftNormalize as plain TensorFlow ops instead of one XLA kernel per
             direction;
  none       all three off (the Keras baseline).

The variants are timed in turn, `--rounds` times, so that each ratio (variant time / `all` time) compares
measurements taken minutes apart on the same machine; the median ratio over rounds is printed. Each timing is
`--steps` steps after two warm-up steps.

    TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.step_ablation --setup=kinetics --batch=64
"""

import os
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FLAGFILES = {
    "kinetics": "configs/kinetics.flags",
    "youtube8m": "configs/youtube8m.flags",
    "flash_mnist": "configs/flash_mnist.flags",
}
# Variant -> the speed flags it switches off (Config fields).
VARIANTS = {
    "all": {},
    "-optimizer": {"fused_optimizer": False},
    "-head": {"fused_head": False},
    "-shift": {"fused_shift": False},
    "none": {"fused_optimizer": False, "fused_head": False, "fused_shift": False},
}


def define_flags():
    flags.DEFINE_enum("setup", "kinetics", list(FLAGFILES), "Configuration (a flagfile of configs/).")
    flags.DEFINE_integer("batch", 64, "Batch size.")
    flags.DEFINE_integer("frames", 20, "Frames per video of the in-memory batch.")
    flags.DEFINE_integer("steps", 8, "Timed steps per measurement.")
    flags.DEFINE_integer("rounds", 3, "Rounds over all variants.")


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from ac_keras import flags as ac_flags
    from ac_keras.task import Task
    from ac_keras.trainer import Trainer

    flags.FLAGS([sys.argv[0], f"--flagfile={os.path.join(ROOT, FLAGFILES[FLAGS.setup])}"], known_only=True)
    work = tempfile.mkdtemp(prefix="ac_keras_ablation_")
    config = ac_flags.config_from_flags(
        flags.FLAGS,
        train_data="unused",
        eval_data=None,
        batch_size=FLAGS.batch,
        model_dir=os.path.join(work, "model"),
        export=False,
        strategy="default",
        class_balance=False,
        missing_modality="zeros",
        stats=None,
        center_features=False,  # needs stats; one subtraction per frame
    )
    rng = np.random.default_rng(0)
    features = {
        spec.name: tf.RaggedTensor.from_tensor(
            tf.constant(rng.normal(size=(FLAGS.batch, FLAGS.frames, spec.dim)).astype(np.float32))
        )
        for spec in config.data.feature_specs
    }
    num_classes = config.data.num_classes
    if config.data.label_mode == "single":
        labels = tf.one_hot(rng.integers(0, num_classes, FLAGS.batch), num_classes)
    else:
        labels = tf.constant((rng.random((FLAGS.batch, num_classes)) < 0.001).astype(np.float32))
    batch = (features, labels)

    steps = {}
    for name, off in VARIANTS.items():
        variant = config.replace(model_dir=os.path.join(work, name), **off)
        trainer = Trainer(Task(variant), progress=False, checkpoints=False)
        steps[name] = trainer.make_train_step()
        steps[name](batch)[0].numpy()  # traced here

    times = {name: [] for name in VARIANTS}
    for round_index in range(FLAGS.rounds):
        for name, step in steps.items():
            for _ in range(2):
                step(batch)[0].numpy()
            start = time.perf_counter()
            for _ in range(FLAGS.steps):
                result = step(batch)
            result[0].numpy()
            times[name].append((time.perf_counter() - start) / FLAGS.steps)
        print(
            f"round {round_index + 1}: "
            + ", ".join(f"{name} {1000 * values[-1]:.1f} ms" for name, values in times.items()),
            flush=True,
        )
    with open("/proc/loadavg") as handle:
        load = " ".join(handle.read().split()[:3])
    print(f"\n{FLAGS.setup}, batch {FLAGS.batch}, {FLAGS.frames} frames, load {load}")
    print("| variant | ms/step (median) | samples/s | time / time with all changes |")
    print("|---|---|---|---|")
    for name, values in times.items():
        ratio = np.median(np.array(values) / np.array(times["all"]))
        median = float(np.median(values))
        print(f"| {name} | {1000 * median:.1f} | {FLAGS.batch / median:.0f} | {ratio:.2f}x |")


FLAGS = flags.FLAGS

if __name__ == "__main__":
    from ac_keras import flags as _flags  # noqa: F401  (defines the training flags)

    define_flags()
    app.run(main)
