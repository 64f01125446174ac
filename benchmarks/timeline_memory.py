r"""Peak memory of `python -m ac_keras.classify --window_seconds` on a 1-hour video against a 1-minute one.

    python benchmarks/timeline_memory.py [--minutes=1,60] [--window_seconds=10] [--keep=DIR]

Encodes one clip per `--minutes` (64 x 48 pixels, 2 frames a second, a 16 kHz AAC tone: the same frame size
and rates, only the length differs) into a temporary directory, builds a model_dir with tiny feature models
(`ac_keras.testing.model_dirs`: rgb at 1 frame a second and VGGish-style audio patches, the YouTube-8M
rates, `max_frames=300`), then runs the command on each clip in a fresh process and prints its peak resident
memory (`getrusage` of the child), its wall time and the number of windows. With `--keep=DIR` the clips and
the model_dir are made in DIR and kept (reused by a later run with the same DIR). With `--plain` each clip
is also classified without a timeline, for comparison: that path decodes the whole audio track at once.
"""

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from benchmarks.extract_memory import command_peak_mb  # noqa: E402


def make_clip(path, minutes):
    from ac_keras.testing import videos

    if os.path.exists(path):
        return path
    base = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    return videos.encode_clip(
        path,
        seconds=60 * minutes,
        fps=2,
        size=(64, 48),
        audio_tone_hz=440.0,
        sample_rate=16000,
        frame_fn=lambda t: np.roll(base, int(t * 3), 1),
    )


def run_classify(clip, model_dir, output, window_seconds):
    """(peak MB, seconds, windows) of one run of the command; window_seconds None: without a timeline."""
    command = [
        sys.executable,
        "-m",
        "ac_keras.classify",
        clip,
        f"--model_dir={model_dir}",
        f"--output_json={output}",
        "--overwrite",
    ]
    if window_seconds:
        command.append(f"--window_seconds={window_seconds}")
    start = time.monotonic()
    peak = command_peak_mb(command)
    seconds = time.monotonic() - start
    with open(output) as handle:
        windows = len(json.load(handle)[0].get("windows", []))
    return peak, seconds, windows


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,60", help="Clip lengths in minutes, comma separated.")
    parser.add_argument("--window_seconds", type=float, default=10.0)
    parser.add_argument("--keep", help="Make (or reuse) the clips and the model_dir here, and keep them.")
    parser.add_argument(
        "--plain",
        action="store_true",
        help="Also run classify without a timeline (the whole video: its first 300 s of frames, the whole "
        "audio track decoded at once).",
    )
    config = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from ac_keras.testing import model_dirs

    with tempfile.TemporaryDirectory(prefix="ac_keras_timeline_memory_") as temporary:
        directory = config.keep or temporary
        os.makedirs(directory, exist_ok=True)
        model_dir = os.path.join(directory, "model")
        if not os.path.exists(os.path.join(model_dir, "config.json")):
            model_dirs.classify_model_dir(model_dir, fps=1.0, max_frames=300, num_classes=4, eval_frames=5)
        print(
            f"classify --window_seconds={config.window_seconds:g}, 64 x 48 clips at 2 fps with 16 kHz audio"
        )
        for minutes in [float(value) for value in config.minutes.split(",")]:
            start = time.monotonic()
            clip = make_clip(os.path.join(directory, f"clip_{minutes:g}min.mp4"), minutes)
            made = time.monotonic() - start
            peak, seconds, windows = run_classify(
                clip, model_dir, os.path.join(directory, "out.json"), config.window_seconds
            )
            print(
                f"  {minutes:g} min ({os.path.getsize(clip) / 1e6:.1f} MB file, made in {made:.0f} s): "
                f"peak {peak:.0f} MB, {seconds:.1f} s, {windows} windows"
            )
            if config.plain:
                peak, seconds, _ = run_classify(clip, model_dir, os.path.join(directory, "out.json"), None)
                print(f"    without --window_seconds: peak {peak:.0f} MB, {seconds:.1f} s")


if __name__ == "__main__":
    main()
