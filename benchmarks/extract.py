r"""Extraction throughput: `python -m tfrecords.extract` beside the backbone's own batched inference.

    python benchmarks/extract.py [--videos=48] [--seconds=20] [--model=inception_v3] [--num_workers=1,2]

Encodes `--videos` H.264 clips (320 x 240, 30000/1001 fps, `--seconds` long, changing content) into a
temporary directory, then in one run:
1. backbone alone: the same frames the command samples (1 per second), decoded beforehand, through the
   backbone's `FrameEmbedder.embed` in batches of `--batch_size` (random weights: the speed is the same);
2. the whole command (DirectRunner; decoding, resizing, batching across videos, inference, grouping,
   writing) for each `--num_workers`, as a user runs it, in a fresh process (start-up included);
3. the command on a single one-second clip, the fixed cost (process and worker start, model builds).
Prints videos/s and frames/s of each and the ratio pipeline / backbone alone (the target is >= 0.8).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def make_clips(directory, count, seconds):
    from ac_keras.testing import videos

    def frame_fn_for(index):
        rng = np.random.default_rng(index)
        base = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)

        def frame_fn(t):
            return np.roll(base, int(t * 7), axis=1)

        return frame_fn

    paths = []
    for index in range(count):
        path = os.path.join(directory, f"clip{index:03d}.mp4")
        videos.encode_clip(
            path, seconds=seconds, fps=30000 / 1001, size=(320, 240), frame_fn=frame_fn_for(index)
        )
        paths.append(path)
    return paths


def backbone_alone(paths, model, batch_size):
    from ac_keras.extraction import backbones, extractor, video

    embedder = backbones.make_frame_embedder(model, weights="none")
    frames = []
    for path in paths:
        for _, frame in video.iter_frames(path, video.Sampling(fps=1.0, max_frames=300)):
            frames.append(np.asarray(extractor.resize_frames(frame, embedder.input_size)))
    frames = np.stack(frames)
    embedder.embed(frames[:batch_size], batch_size=batch_size)  # compile, warm up
    start = time.perf_counter()
    embedder.embed(frames, batch_size=batch_size)
    return len(frames), time.perf_counter() - start


def run_command(paths_glob, output, model, batch_size, workers):
    start = time.perf_counter()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tfrecords.extract",
            f"--videos={paths_glob}",
            f"--output_dir={output}",
            "--modalities=rgb",
            f"--rgb_model={model}",
            "--rgb_weights=none",
            "--fps=1",
            f"--batch_size={batch_size}",
            f"--num_workers={workers}",
            "--nostats",
            "--overwrite",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
    )
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--videos", type=int, default=48)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--model", default="inception_v3")
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--num_workers", default="1,2")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    with tempfile.TemporaryDirectory() as directory:
        clips = os.path.join(directory, "clips")
        os.makedirs(clips)
        paths = make_clips(clips, args.videos, args.seconds)
        single = os.path.join(directory, "single")
        os.makedirs(single)
        make_clips(single, 1, 1.0)
        print(f"machine: {os.cpu_count()} CPU(s), GPUs: {len(tf.config.list_physical_devices('GPU'))}")
        print(
            f"{args.videos} clips of {args.seconds:.0f} s, 320 x 240 H.264 at 29.97 fps; {args.model}, 1 fps"
        )
        frames, seconds = backbone_alone(paths, args.model, args.batch_size)
        alone = frames / seconds
        print(f"backbone alone: {frames} frames in {seconds:.1f} s = {alone:.2f} frames/s")
        for workers in [int(w) for w in args.num_workers.split(",")]:
            fixed = run_command(
                os.path.join(single, "*.mp4"),
                os.path.join(directory, "o1"),
                args.model,
                args.batch_size,
                workers,
            )
            total = run_command(
                os.path.join(clips, "*.mp4"),
                os.path.join(directory, "o2"),
                args.model,
                args.batch_size,
                workers,
            )
            rate = frames / total
            steady = frames / max(total - fixed, 1e-9)
            print(
                f"tfrecords.extract, {workers} worker(s): {args.videos / total:.3f} videos/s, "
                f"{rate:.2f} frames/s "
                f"({total:.1f} s) = {rate / alone:.2f}x the backbone alone; fixed cost {fixed:.1f} s (one "
                f"1-second clip), without it {steady:.2f} frames/s = {steady / alone:.2f}x"
            )


if __name__ == "__main__":
    main()
