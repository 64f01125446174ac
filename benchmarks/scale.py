"""Scale: memory and time per sample of training as the dataset grows 10x.

Writes YouTube-8M-layout records (rgb 1024 + audio 128 uint8, 150-300 frames, 3 labels of 3,862) once, as
`--shards` shards, then trains one epoch (`ac_keras.trainer.Trainer.train()` of the flagfile's `Task`, the
real path: `make_dataset` from the files, training loop, fused RMSProp update, epoch-end checkpoint; each step
is timed through `train(step_fn=...)`) on the first 1/10 of the shards and on all of them, each in a fresh
process, and reports per run:

  peak RSS    the process's high-water resident memory (`ru_maxrss`, which includes the epoch-end
              checkpoint), and its RSS sampled at every step (shown at each quarter of the epoch);
  time/sample steady-state milliseconds per training sample (the first `--warmup_steps` steps excluded),
              and the epoch's wall time.

The shuffle buffer is fixed (`--shuffle_records` records) so that both runs fill it; memory beyond the
model, optimizer state, shuffle and prefetch buffers must not grow with the number of records.

    TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.scale [--records=1024] [--batch=64]
"""

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGFILE = os.path.join(ROOT, "configs", "youtube8m.flags")


def define_flags():
    flags.DEFINE_integer("records", 1024, "Records of the small dataset; the large one has 10x.")
    flags.DEFINE_integer("shards", 80, "Shards of the large dataset (the small one is the first tenth).")
    flags.DEFINE_integer("batch", 64, "Training batch size.")
    flags.DEFINE_integer("shuffle_records", 512, "Shuffle buffer (records), the same for both sizes.")
    flags.DEFINE_integer("warmup_steps", 4, "Steps excluded from the time per sample.")
    flags.DEFINE_string("data_dir", None, "Where to write the records; a temporary directory by default.")
    flags.DEFINE_string("json_out", None, "Write the results to this JSON file.")
    flags.DEFINE_string("child", None, "Internal: comma-separated shard files to train on in this process.")


def rss_mb():
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load():
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def write_data(directory, num_records, num_shards):
    import numpy as np

    from ac_keras import schema
    from ac_keras.data.writer import ShardedWriter

    features = "rgb:1024,audio:128"
    rng = np.random.default_rng(0)
    pool = {
        spec.name: rng.integers(0, 256, (600, spec.dim), dtype=np.uint8)
        for spec in schema.parse_features(features)
    }
    with ShardedWriter(directory, features, num_shards=num_shards, overwrite=True) as writer:
        for index in range(num_records):
            length = int(rng.integers(150, 301))
            offset = int(rng.integers(0, 300))
            frames = {name: values[offset : offset + length] for name, values in pool.items()}
            labels = sorted(rng.choice(3862, 3, replace=False).tolist())
            writer.write(f"video{index:07d}", labels, frames)
        return writer.paths


def run_child(files):
    from ac_keras import flags as ac_flags
    from ac_keras.task import Task
    from ac_keras.trainer import Trainer

    FLAGS = flags.FLAGS
    batch, shuffle = FLAGS.batch, FLAGS.shuffle_records
    FLAGS([sys.argv[0], f"--flagfile={FLAGFILE}"], known_only=True)
    work = tempfile.mkdtemp(prefix="ac_keras_scale_")
    config = ac_flags.config_from_flags(
        FLAGS,
        train_data=files,
        eval_data=None,
        batch_size=batch,
        shuffle_buffer=shuffle,
        epochs=1,
        model_dir=os.path.join(work, "model"),
        export=False,
        strategy="default",
        checkpoint_every=10**9,
    )
    # With checkpoints: the epoch-end checkpoint is part of the measured epoch (a fresh model_dir, so
    # nothing is restored).
    trainer = Trainer(Task(config), progress=False)
    step = trainer.make_train_step()
    times, samples, step_rss = [], [], []
    rss = {"after_build": rss_mb()}

    def timed(batch):
        times.append(time.perf_counter())
        step_rss.append(rss_mb())
        result = step(batch)
        samples.append(int(batch[1].shape[0]))
        return result

    start = time.perf_counter()
    trainer.train(step_fn=timed)
    wall = time.perf_counter() - start
    rss["end"] = rss_mb()
    # RSS at the start of the first step and at each quarter of the epoch, and the most over all steps.
    for quarter in range(5):
        rss[f"step_{quarter * 25}%"] = step_rss[min(len(step_rss) - 1, quarter * len(step_rss) // 4)]
    rss["max_over_steps"] = max(step_rss)
    warm = min(FLAGS.warmup_steps, len(times) - 2)
    # Call k starts when step k-1 has finished (the loop reads the loss); steps warm..n-2 are timed.
    per_sample_ms = 1e3 * (times[-1] - times[warm]) / sum(samples[warm:-1])
    record = {
        "num_records": sum(samples),
        "steps": len(times),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_mb": rss,
        "ms_per_sample": per_sample_ms,
        "epoch_wall_s": wall,
        "load": load(),
    }
    print(json.dumps(record), flush=True)


def main(argv):
    del argv
    FLAGS = flags.FLAGS
    if FLAGS.child:
        run_child(FLAGS.child)
        return
    directory = FLAGS.data_dir or tempfile.mkdtemp(prefix="ac_keras_scale_data_")
    start = time.perf_counter()
    paths = write_data(directory, 10 * FLAGS.records, FLAGS.shards)
    print(
        f"wrote {10 * FLAGS.records} records in {time.perf_counter() - start:.0f} s to {directory}",
        flush=True,
    )
    sizes = {"1x": paths[: FLAGS.shards // 10], "10x": paths}
    results = {"load_start": load()}
    for name, files in sizes.items():
        command = [
            sys.executable,
            "-m",
            "benchmarks.scale",
            f"--child={','.join(files)}",
            f"--batch={FLAGS.batch}",
            f"--shuffle_records={FLAGS.shuffle_records}",
            f"--warmup_steps={FLAGS.warmup_steps}",
        ]
        output = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True).stdout
        record = json.loads(output.strip().splitlines()[-1])
        record["bytes"] = sum(os.path.getsize(path) for path in files)
        results[name] = record
        rss = record["rss_mb"]
        print(
            f"{name:>4}: {record['num_records']} records ({record['bytes'] / 1e9:.2f} GB), "
            f"{record['steps']} steps: peak RSS {record['peak_rss_mb']:.0f} MB "
            f"(after build {rss['after_build']:.0f}; during the epoch "
            + "/".join(f"{rss[f'step_{q}%']:.0f}" for q in range(0, 101, 25))
            + f" at 0/25/50/75/100%, max {rss['max_over_steps']:.0f}; after the epoch-end checkpoint "
            f"{rss['end']:.0f}); {record['ms_per_sample']:.2f} ms/sample, "
            f"epoch {record['epoch_wall_s']:.0f} s ({record['load']})",
            flush=True,
        )
    ratio_rss = results["10x"]["peak_rss_mb"] / results["1x"]["peak_rss_mb"]
    ratio_time = results["10x"]["ms_per_sample"] / results["1x"]["ms_per_sample"]
    print(f"10x / 1x: peak RSS {ratio_rss:.2f}x, time per sample {ratio_time:.2f}x")
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as handle:
            json.dump(results, handle, indent=2)
    if not FLAGS.data_dir:
        import shutil

        shutil.rmtree(directory)


if __name__ == "__main__":
    define_flags()
    app.run(main)
