r"""Peak memory of `python -m tfrecords.extract`, one run against runs of fewer videos, per engine.

    python benchmarks/extract_memory.py [--videos=96] [--seconds=10] [--dim=4096] \
        [--videos_per_run=96,32] [--num_workers=1,2] [--engines=local,portable]

Engines: `local`, the default (Beam's FnApiRunner, `--num_workers` processes); `portable`, Beam's
PortableRunner with the job service embedded in the command (`--job_endpoint=embed`) and a worker pool
started here (`worker_pool_main`), as docs/extract.md runs it; the peak is then the command's, where the job
service holds the pipeline's data (the pool's workers are not its children).

Encodes `--videos` small clips (64 x 48, 30 fps, `--seconds` long) into a temporary directory and extracts
every frame (`--fps=30`) with a stand-in `.keras` model whose features are `--dim` floats (the size, not the
network, decides the memory the runner holds), once per `--videos_per_run` and `--num_workers`, each in a
fresh process. Prints the peak resident memory of the largest process of the command (the runner) and the
float features' size, and their ratio per video beyond a one-video baseline.
"""

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

_PEAK = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
    "sys.stderr.write(code.stderr[-2000:] if code.returncode else '')\n"
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code.returncode)\n"
)


def make_clips(directory, count, seconds):
    from ac_keras.testing import videos

    paths = []
    for index in range(count):
        base = np.random.default_rng(index).integers(0, 255, (48, 64, 3), dtype=np.uint8)
        path = os.path.join(directory, f"clip{index:03d}.mp4")
        videos.encode_clip(
            path, seconds=seconds, fps=30, size=(64, 48), frame_fn=lambda t, b=base: np.roll(b, int(t * 7), 1)
        )
        paths.append(path)
    return paths


def make_model(path, dim):
    import keras

    keras.utils.set_random_seed(0)
    keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(dim),
        ]
    ).save(path)


def peak_memory_mb(paths, output, model, videos_per_run, workers, beam_args=()):
    command = [
        sys.executable,
        "-m",
        "tfrecords.extract",
        f"--videos={','.join(paths)}",
        f"--output_dir={output}",
        "--modalities=rgb",
        f"--rgb_model={model}",
        "--fps=30",
        f"--num_workers={workers}",
        f"--videos_per_run={videos_per_run}",
        "--nostats",
        "--overwrite",
        *(["--", *beam_args] if beam_args else []),
    ]
    return command_peak_mb(command)


def command_peak_mb(command):
    """Runs `command` in a fresh process; returns the peak resident memory (MB) of its largest process.

    Raises:
        SystemExit: the command failed (its stderr's end is shown).
    """
    result = subprocess.run(
        [sys.executable, "-c", _PEAK, *command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    peak_kb, code = result.stdout.split()
    if code != "0":
        raise SystemExit(f"{' '.join(command[1:3])} failed:\n{result.stderr}")
    return int(peak_kb) / 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--videos_per_run", default="96,32")
    parser.add_argument("--num_workers", default="1,2")
    parser.add_argument("--engines", default="local")
    config = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="ac_keras_extract_memory_") as directory:
        paths = make_clips(directory, config.videos, config.seconds)
        model = os.path.join(directory, "model.keras")
        make_model(model, config.dim)
        frames = int(config.seconds * 30)
        per_video_mb = frames * config.dim * 4 / 1e6
        print(
            f"{config.videos} videos x {frames} frames x {config.dim} float32 = "
            f"{config.videos * per_video_mb:.0f} MB of features ({per_video_mb:.1f} MB per video)"
        )
        for engine in config.engines.split(","):
            pool, beam_args, workers_list = None, (), [int(value) for value in config.num_workers.split(",")]
            if engine == "portable":
                pool, port = _start_worker_pool()
                beam_args = (
                    "--runner=PortableRunner",
                    "--job_endpoint=embed",
                    "--environment_type=EXTERNAL",
                    f"--environment_config=localhost:{port}",
                )
                workers_list = [1]
            try:
                for workers in workers_list:
                    args = dict(workers=workers, beam_args=beam_args)
                    baseline = peak_memory_mb(paths[:1], os.path.join(directory, "base"), model, 1, **args)
                    label = f"{engine}, num_workers={workers}" if engine == "local" else engine
                    print(f"  {label}: one video: peak {baseline:.0f} MB")
                    for per_run in [int(value) for value in config.videos_per_run.split(",")]:
                        peak = peak_memory_mb(paths, os.path.join(directory, "out"), model, per_run, **args)
                        held = (peak - baseline) / (min(per_run, config.videos) - 1) / per_video_mb
                        print(
                            f"  {label}, videos_per_run={per_run}: peak {peak:.0f} MB; beyond one "
                            f"video, {held:.1f}x the float features of a run's videos"
                        )
            finally:
                if pool is not None:
                    pool.terminate()
                    pool.wait()


def _start_worker_pool():
    """A Beam worker pool on a free local port (its workers: this interpreter, ac_keras importable)."""
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        port = probe.getsockname()[1]
    environment = dict(
        os.environ, PATH=f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}", PYTHONPATH=ROOT
    )
    pool = subprocess.Popen(
        [sys.executable, "-m", "apache_beam.runners.worker.worker_pool_main", f"--service_port={port}"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(3)
    return pool, port


if __name__ == "__main__":
    main()
