"""Training throughput (samples/s) through the real training code, beside the PyTorch reference.

For each setup (a flagfile of configs/ at a batch size) this writes synthetic TFRecords of that layout to a
temporary directory, builds an `ac_keras.trainer.Trainer` of the flagfile's `ac_keras.task.Task` (the same
`Config` the train command builds) and measures, in one process:

  files    `Trainer.train()` reading the TFRecords through `ac_keras.data.make_dataset` (the real path:
           pipeline, training loop with its per-step loss sync, progress and summaries, train step);
  memory   `Trainer.train()` fed one in-memory batch over and over (loop + step, no input pipeline);
  step     the compiled train step (`Trainer.make_train_step()`) alone on that in-memory batch (compute only);
  keras    the step of a second trainer whose config has `--nofused_optimizer --nofused_head --nofused_shift`:
           Keras's `optimizer.apply`, the model's own Dropout and Dense layers and plain ShiftNormalize ops
           instead of the fused update, `ac_keras.head` and the XLA ShiftNormalize (`--baseline`: the
           "before"; benchmarks/step_ablation.py times each change on its own);
  torch    the PyTorch reference (/work/shared/benchmarks/peer_torch.py's model and step, same shapes,
           2 threads) in one subprocess started once (benchmarks/torch_reference.py), run for a ~4 s
           burst right after each of our measurements, so each ratio compares adjacent measurements;
           peer_torch.py itself also runs once per setup at the end (`peer_torch_once`);
  peak     a 4096x4096 float32 `tf.matmul`, this machine's practical matmul peak, in the same run.

The files and memory loops run through `Trainer.train(step_fn=..., dataset_fn=...)` of a trainer made with
`checkpoints=False`, so no checkpoint is written inside a timing; one `Trainer.save_checkpoint()` is timed on
its own (`checkpoint_save_s`). Flash-MNIST runs without `--center_features`, as docs/benchmarks.md states.

Throughput is steady state: the first `--warmup_steps` steps (tracing, XLA compilation, shuffle-buffer fill)
are excluded; each figure is the median of `--rounds` rounds, and an ours/torch ratio is the median over
rounds of (our measurement / the torch burst right after it). FLOPs per sample count the matmuls
analytically (attention logits 2*L*M*N, pooling 2*N*L*M per modality, classifier 2*(sum N*M)*C) times 3 for
forward and backward. The machine load (`uptime`) is printed at the start and end of every setup.

    TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.train_throughput \
        --setups=kinetics64,kinetics256,youtube8m256,flash_mnist64 --baseline

Each setup runs in its own subprocess (separate memory; YouTube-8M's 269M-parameter classifier needs ~6 GB).
The last line of each subprocess is a JSON record; the parent prints a table.
"""

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER_TORCH = "/work/shared/benchmarks/peer_torch.py"


@dataclasses.dataclass(frozen=True)
class Setup:
    flagfile: str
    batch_size: int
    min_frames: int  # frames per synthetic video, uniform in [min_frames, max_frames]
    max_frames: int
    num_records: int


SETUPS = {
    "kinetics64": Setup("configs/kinetics.flags", 64, 20, 40, 512),
    "kinetics256": Setup("configs/kinetics.flags", 256, 20, 40, 1024),
    "youtube8m256": Setup("configs/youtube8m.flags", 256, 150, 300, 1024),
    "flash_mnist64": Setup("configs/flash_mnist.flags", 64, 25, 25, 2048),
}


def define_flags():
    flags.DEFINE_list("setups", list(SETUPS), f"Setups to measure, of {sorted(SETUPS)}.")
    flags.DEFINE_integer("steps", 0, "Timed steps per measurement; 0 = about --seconds' worth (>= 6).")
    flags.DEFINE_float("seconds", 6.0, "Target duration of each measurement when --steps is 0.")
    flags.DEFINE_integer("warmup_steps", 4, "Steps excluded from the timing at the start of each run.")
    flags.DEFINE_integer("rounds", 3, "Rounds of (ours, torch) measurements per setup.")
    flags.DEFINE_bool("baseline", False, "Also time the step with Keras's optimizer.apply (the 'before').")
    flags.DEFINE_string("torch_python", "/work/torchvenv/bin/python", "Python with torch; empty: skip.")
    flags.DEFINE_string("json_out", None, "Write all records to this JSON file.")
    flags.DEFINE_string("markdown_from", None, "Print the Markdown table of an earlier --json_out and exit.")
    flags.DEFINE_string("child", None, "Internal: run one setup in this process.")


def uptime():
    with open("/proc/loadavg") as handle:
        return "load " + " ".join(handle.read().split()[:3])


def flops_per_sample(config):
    """Training FLOPs per sample: 3 x the forward matmuls (logits, pooling, classifier)."""
    frames = config.data.train_frames
    sizes = dict(config.model.cluster_sizes)
    forward = 0
    width = 0
    for spec in config.data.feature_specs:
        units = sizes[spec.name]
        forward += 2 * frames * spec.dim * units  # attention logits X W
        forward += 2 * units * frames * spec.dim  # pooling a X
        width += units * spec.dim
    forward += 2 * width * config.data.num_classes
    return 3 * forward


# ----------------------------------------------------------------------------------------- child process
def _write_data(directory, config, setup, rng):
    """Writes synthetic training records of `config`'s layout and a stats JSON; returns (pattern, stats)."""
    import numpy as np

    from ac_keras import data as ac_data
    from ac_keras.data.writer import ShardedWriter

    data = config.data
    specs = data.feature_specs
    # A pool of frames; each video takes a random window, so records differ without generating each one.
    pool = {}
    for spec in specs:
        if spec.quantized:
            pool[spec.name] = rng.integers(0, 256, (2 * setup.max_frames, spec.dim), dtype=np.uint8)
        else:
            pool[spec.name] = rng.normal(size=(2 * setup.max_frames, spec.dim)).astype(np.float32)
    counts = np.zeros(data.num_classes, np.int64)
    labels_per_video = 3 if data.label_mode == "multi" else 1
    with ShardedWriter(directory, data.features, num_shards=8, overwrite=True) as writer:
        for index in range(setup.num_records):
            length = int(rng.integers(setup.min_frames, setup.max_frames + 1))
            offset = int(rng.integers(0, setup.max_frames))
            frames = {name: values[offset : offset + length] for name, values in pool.items()}
            labels = sorted(rng.choice(data.num_classes, labels_per_video, replace=False).tolist())
            counts[labels] += 1
            writer.write(f"video{index:06d}", labels, frames)
    stats = {
        "format": ac_data.STATS_FORMAT,
        "num_videos": setup.num_records,
        "class_counts": counts.tolist(),
        "modalities": {spec.name: {"dim": spec.dim, "mean": np.zeros(spec.dim).tolist()} for spec in specs},
    }
    stats_path = os.path.join(directory, "stats.json")
    with open(stats_path, "w") as handle:
        json.dump(stats, handle)
    return os.path.join(directory, "train-*"), stats_path


class _TimedStep:
    """Wraps a train step and records the time of each call (the loop syncs on the loss every step)."""

    def __init__(self, step):
        self.step = step
        self.times = []

    def __call__(self, batch):
        self.times.append(time.perf_counter())
        return self.step(batch)

    def samples_per_second(self, batch_size, warmup):
        # Call k starts when step k-1 has finished (the loop reads the loss); steps warmup..n-2 are timed.
        times = self.times[warmup:]
        return batch_size * (len(times) - 1) / (times[-1] - times[0])


def _peak_matmul_gflops():
    import tensorflow as tf

    size = 4096
    a = tf.random.normal([size, size])
    matmul = tf.function(lambda: tf.matmul(a, a))
    matmul().numpy()
    best = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(3):
            result = matmul()
        result.numpy()
        best.append((time.perf_counter() - start) / 3)
    return 2 * size**3 / min(best) / 1e9


def _torch_modalities(config):
    """The reference's `--modalities`: name:dim:N of each modality."""
    sizes = dict(config.model.cluster_sizes)
    return ",".join(f"{spec.name}:{spec.dim}:{sizes[spec.name]}" for spec in config.data.feature_specs)


class TorchReference:
    """The PyTorch reference step (benchmarks/torch_reference.py) in a subprocess, run in bursts."""

    def __init__(self, config, batch_size, torch_python, burst_seconds=4.0):
        modalities = _torch_modalities(config)
        self.command = [
            torch_python,
            os.path.join(ROOT, "benchmarks", "torch_reference.py"),
            f"--modalities={modalities}",
            f"--classes={config.data.num_classes}",
            f"--frames={config.data.train_frames}",
            f"--batch={batch_size}",
            f"--optimizer={config.training.optimizer}",
            f"--dropout={config.model.dropout}",
            "--threads=2",
        ]
        self.batch_size = batch_size
        self.process = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        if self.process.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{' '.join(self.command)} did not start")
        # Steps per burst: about burst_seconds, from one timed step.
        self.steps = max(2, round(burst_seconds / self._run(1)))

    def _run(self, steps):
        self.process.stdin.write(f"{steps}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline())

    def burst(self):
        """Samples/s of one burst of `self.steps` steps."""
        return self.batch_size * self.steps / self._run(self.steps)

    def close(self):
        self.process.stdin.write("\n")
        self.process.stdin.flush()
        self.process.wait()


def _peer_torch_once(config, batch_size, steps, torch_python):
    """One plain run of peer_torch.py (its own process, its own warm-up), as the issue runs it."""
    modalities = _torch_modalities(config)
    command = [
        torch_python,
        PEER_TORCH,
        f"--modalities={modalities}",
        f"--classes={config.data.num_classes}",
        f"--frames={config.data.train_frames}",
        f"--batch={batch_size}",
        f"--steps={steps}",
        f"--optimizer={config.training.optimizer}",
        f"--dropout={config.model.dropout}",
        "--threads=2",
    ]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    line = [line for line in output.splitlines() if line.startswith("peer_torch")][-1]
    return float(line.split("samples_per_s=")[1].split()[0])


def run_child(name):
    import numpy as np
    import tensorflow as tf

    from ac_keras import flags as ac_flags
    from ac_keras.task import Task
    from ac_keras.trainer import Trainer

    setup = SETUPS[name]
    record = {"setup": name, "load_start": uptime()}
    flags.FLAGS([sys.argv[0], f"--flagfile={os.path.join(ROOT, setup.flagfile)}"], known_only=True)
    batch = setup.batch_size
    steps = FLAGS.steps or 6  # set from a timed step below when --steps is 0
    warmup = FLAGS.warmup_steps
    rng = np.random.default_rng(0)
    work = tempfile.mkdtemp(prefix="ac_keras_bench_")
    base = ac_flags.config_from_flags(
        flags.FLAGS,
        train_data="unused",
        eval_data=None,
        batch_size=batch,
        model_dir=os.path.join(work, "model"),
        export=False,
        strategy="default",
        stats=os.path.join(work, "data", "stats.json"),  # written below, before any data is read
        center_features=False,  # the figures of docs/benchmarks.md are without centering
    )
    pattern, stats = _write_data(os.path.join(work, "data"), base, setup, rng)
    config = base.replace(
        train_data=pattern,
        stats=stats,
        epochs=1,
        steps_per_epoch=warmup + steps + 1,
        checkpoint_every=10**9,  # no step checkpoint; the timing trainer writes none at all
        shuffle_buffer=setup.num_records,  # at most the data; the flagfile's --shuffle_buffer_mb otherwise
    )
    record["config"] = {
        "features": config.data.features,
        "cluster_sizes": dict(config.model.cluster_sizes),
        "num_classes": config.data.num_classes,
        "label_mode": config.data.label_mode,
        "train_frames": config.data.train_frames,
        "batch_size": batch,
        "optimizer": config.training.optimizer,
        "clip_norm": config.training.clip_norm,
        "dropout": config.model.dropout,
        "class_balance": config.data.class_balance,
        "frames_per_record": [setup.min_frames, setup.max_frames],
        "num_records": setup.num_records,
    }
    record["flops_per_sample"] = flops_per_sample(config)

    task = Task(config)
    trainer = Trainer(task, progress=False, checkpoints=False)
    record["parameters"] = int(sum(np.prod(v.shape) for v in trainer.model.trainable_variables))
    step = trainer.make_train_step()
    distributed = trainer.strategy.experimental_distribute_dataset(task.train_dataset(0))
    in_memory = next(iter(distributed))
    memory_element = next(iter(task.train_dataset(0)))
    keras_step = None
    if FLAGS.baseline:
        keras_config = config.replace(
            fused_optimizer=False,
            fused_head=False,
            fused_shift=False,
            model_dir=os.path.join(work, "keras_model"),
        )
        keras_trainer = Trainer(Task(keras_config), progress=False, checkpoints=False)
        keras_step = keras_trainer.make_train_step()
        start = time.perf_counter()
        keras_step(in_memory)[0].numpy()
        record["first_step_keras_s"] = time.perf_counter() - start

    start = time.perf_counter()
    step(in_memory)[0].numpy()
    record["first_step_s"] = time.perf_counter() - start  # tracing + XLA compilation of the update
    if not FLAGS.steps:
        for _ in range(warmup):
            step(in_memory)[0].numpy()
        start = time.perf_counter()
        for _ in range(3):
            step(in_memory)[0].numpy()
        steps = int(min(1000, max(6, FLAGS.seconds * 3 / (time.perf_counter() - start))))
    record["timed_steps"] = steps

    def time_step(function):
        for _ in range(warmup):
            function(in_memory)[0].numpy()
        start = time.perf_counter()
        for _ in range(steps):
            result = function(in_memory)
        result[0].numpy()
        return batch * steps / (time.perf_counter() - start)

    # Checkpoints are written every --checkpoint_every steps, not per step: one save is timed on its own
    # and the timed runs (checkpoints=False) write none.
    start = time.perf_counter()
    trainer.save_checkpoint()
    record["checkpoint_save_s"] = time.perf_counter() - start

    # The epoch of a timed run: warm-up, timed steps and one more (the last call's end is not observed).
    files_task = Task(config.replace(steps_per_epoch=warmup + steps + 1))

    def files_dataset(epoch):
        return files_task.train_dataset(epoch, trainer.num_workers)

    def memory_dataset(epoch):
        return tf.data.Dataset.from_tensors(memory_element).repeat(warmup + steps + 1)

    def time_train(dataset_fn):
        trainer.epoch.assign(0)
        trainer.step_in_epoch.assign(0)
        timed = _TimedStep(step)
        start = time.perf_counter()
        trainer.train(step_fn=timed, dataset_fn=dataset_fn)
        wall = time.perf_counter() - start
        return timed.samples_per_second(batch, warmup), wall

    torch = TorchReference(config, batch, FLAGS.torch_python) if FLAGS.torch_python else None
    keys = ("files", "memory", "step", "keras")
    rounds = {key: [] for key in (*keys, "peak", "files_wall")}
    torch_after = {key: [] for key in keys}  # the torch burst right after each of our measurements

    def measured(key, value):
        rounds[key].append(value)
        if torch is not None:
            torch_after[key].append(torch.burst())

    for round_index in range(FLAGS.rounds):
        rounds["peak"].append(_peak_matmul_gflops())
        files, wall = time_train(files_dataset)
        rounds["files_wall"].append(wall)
        measured("files", files)
        measured("memory", time_train(memory_dataset)[0])
        measured("step", time_step(step))
        if keras_step is not None:
            measured("keras", time_step(keras_step))
        print(
            f"{name} round {round_index + 1}: "
            + ", ".join(
                f"{key} {rounds[key][-1]:.1f}"
                + (f" (torch {torch_after[key][-1]:.1f})" if torch_after.get(key) else "")
                for key in rounds
                if rounds[key]
            )
            + f" ({uptime()})",
            file=sys.stderr,
            flush=True,
        )
    if torch is not None:
        record["torch_burst_steps"] = torch.steps
        torch.close()
        record["peer_torch_once"] = _peer_torch_once(config, batch, max(4, torch.steps), FLAGS.torch_python)
    median = {key: float(np.median(values)) for key, values in rounds.items() if values}
    all_torch = [value for values in torch_after.values() for value in values]
    if all_torch:
        median["torch"] = float(np.median(all_torch))
    record["rounds"] = rounds
    record["torch_after"] = torch_after
    record["median"] = median
    flops = record["flops_per_sample"]
    record["peak_fraction"] = {
        key: median[key] * flops / (median["peak"] * 1e9) for key in keys if key in median
    }
    record["vs_torch"] = {
        key: float(np.median(np.array(rounds[key]) / np.array(torch_after[key])))
        for key in keys
        if torch_after[key]
    }
    if rounds["keras"]:
        record["fused_vs_keras_step"] = float(np.median(np.array(rounds["step"]) / np.array(rounds["keras"])))
    record["load_end"] = uptime()
    tf.io.gfile.rmtree(work)
    print(json.dumps(record), flush=True)


# ---------------------------------------------------------------------------------------- parent process
def markdown_table(records):
    """The results as a Markdown table (docs/benchmarks.md)."""
    lines = [
        "| setup | batch | params | real path (files) | loop, in-memory | step only | step, Keras apply "
        "| torch | files / torch | step / torch | fused / Keras step | MFLOP/sample | peak GFLOP/s "
        "| % of peak (files / step) | first step s (fused / Keras) | load start -> end |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for record in records:
        median, ratios = record["median"], record.get("vs_torch", {})

        def number(value, fmt="{:.0f}"):
            return fmt.format(value) if value is not None else "-"

        fraction = record["peak_fraction"]
        lines.append(
            f"| {record['setup']} | {record['config']['batch_size']} | {record['parameters'] / 1e6:.1f}M "
            f"| {number(median.get('files'))} | {number(median.get('memory'))} "
            f"| {number(median.get('step'))} "
            f"| {number(median.get('keras'))} | {number(median.get('torch'))} "
            f"| {number(ratios.get('files'), '{:.2f}x')} | {number(ratios.get('step'), '{:.2f}x')} "
            f"| {number(record.get('fused_vs_keras_step'), '{:.2f}x')} "
            f"| {record['flops_per_sample'] / 1e6:.1f} | {median['peak']:.0f} "
            f"| {100 * fraction['files']:.0f}% / {100 * fraction['step']:.0f}% "
            f"| {number(record.get('first_step_s'), '{:.1f}')} / "
            f"{number(record.get('first_step_keras_s'), '{:.1f}')} "
            f"| {record['load_start'][5:]} -> {record['load_end'][5:]} |"
        )
    return "\n".join(lines)


def main(argv):
    del argv
    if FLAGS.child:
        run_child(FLAGS.child)
        return
    if FLAGS.markdown_from:
        with open(FLAGS.markdown_from) as handle:
            print(markdown_table(json.load(handle)))
        return
    unknown = [name for name in FLAGS.setups if name not in SETUPS]
    if unknown:
        raise app.UsageError(f"--setups: unknown {unknown}; known {sorted(SETUPS)}.")
    records = []
    for name in FLAGS.setups:
        command = [sys.executable, "-m", "benchmarks.train_throughput", f"--child={name}"]
        command += [
            f"--steps={FLAGS.steps}",
            f"--warmup_steps={FLAGS.warmup_steps}",
            f"--rounds={FLAGS.rounds}",
            f"--torch_python={FLAGS.torch_python}",
            "--baseline" if FLAGS.baseline else "--nobaseline",
        ]
        print(f"== {name} ({uptime()})", flush=True)
        result = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        if result.returncode:
            raise RuntimeError(f"setup {name} failed with exit status {result.returncode}")
        records.append(json.loads(result.stdout.strip().splitlines()[-1]))
    header = (
        f"{'setup':<15}{'files':>8}{'memory':>8}{'step':>8}{'keras':>8}{'torch':>8}"
        f"{'files/torch':>12}{'step/torch':>11}{'fused/keras':>12}{'MFLOP/smp':>10}{'peak GF/s':>10}"
        f"{'%peak':>7}  load"
    )
    print(header)
    for record in records:
        median = record["median"]
        ratios = record.get("vs_torch", {})

        def cell(value, width, fmt="{:.1f}"):
            return (fmt.format(value) if value is not None else "-").rjust(width)

        print(
            f"{record['setup']:<15}"
            + cell(median.get("files"), 8)
            + cell(median.get("memory"), 8)
            + cell(median.get("step"), 8)
            + cell(median.get("keras"), 8)
            + cell(median.get("torch"), 8)
            + cell(ratios.get("files"), 12, "{:.2f}x")
            + cell(ratios.get("step"), 11, "{:.2f}x")
            + cell(record.get("fused_vs_keras_step"), 12, "{:.2f}x")
            + cell(record["flops_per_sample"] / 1e6, 10)
            + cell(median["peak"], 10, "{:.0f}")
            + cell(100 * record["peak_fraction"]["files"], 7, "{:.0f}%")
            + f"  {record['load_start']} -> {record['load_end']}"
        )
    print(markdown_table(records))
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as handle:
            json.dump(records, handle, indent=2)


FLAGS = flags.FLAGS

if __name__ == "__main__":
    define_flags()
    app.run(main)
