r"""Peak memory of `python -m tfrecords.extract` on the DirectRunner, one run against runs of fewer videos.

    python benchmarks/extract_memory.py [--videos=96] [--seconds=10] [--dim=4096] \
        [--videos_per_run=96,32] [--num_workers=1,2]

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


def peak_memory_mb(paths, output, model, videos_per_run, workers):
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
    ]
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
        raise SystemExit(f"extract failed:\n{result.stderr}")
    return int(peak_kb) / 1e3


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=96)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--videos_per_run", default="96,32")
    parser.add_argument("--num_workers", default="1,2")
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
        for workers in [int(value) for value in config.num_workers.split(",")]:
            baseline = peak_memory_mb(paths[:1], os.path.join(directory, "base"), model, 1, workers)
            print(f"  num_workers={workers}: one video: peak {baseline:.0f} MB")
            for per_run in [int(value) for value in config.videos_per_run.split(",")]:
                peak = peak_memory_mb(paths, os.path.join(directory, "out"), model, per_run, workers)
                held = (peak - baseline) / (min(per_run, config.videos) - 1) / per_video_mb
                print(
                    f"  num_workers={workers}, videos_per_run={per_run}: peak {peak:.0f} MB; beyond one "
                    f"video, {held:.1f}x the float features of a run's videos"
                )


if __name__ == "__main__":
    main()
