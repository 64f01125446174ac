"""The LiteRT export of a trained run beside its SavedModel: file sizes, top-1 per `--quantize`, latency.

Exports the run's model (its best model, else its latest checkpoint) to a temporary directory as a SavedModel
(`ac_keras.export.export_saved_model`) and as LiteRT files with `--quantize=none`, `float16` and `int8`
(`ac_keras.litert.export_litert`; int8 calibrates on the first 256 training videos), then over the records
of `--data` (default: the run's `--eval_data`):

- sizes: the SavedModel directory and each LiteRT file;
- top-1 per model: the SavedModel's `serving_default` on the serialized records (its own parsing, frame
  selection and fill), and each LiteRT model through `ac_keras.litert_client` (the client's selection and
  fill) with the `ai_edge_litert` interpreter; the top-1 changes against the float LiteRT model; and for the
  float LiteRT model the largest probability difference to the SavedModel's `predict_features` signature
  (the same prepared frames) and to `serving_default`'s top-k scores;
- per-video latency (median and p90 of `--latency_videos` one-video calls after 20 warm-up calls, cycling
  over the videos): each LiteRT model (`LiteRTClassifier.run` on prepared inputs, and the whole client call
  with the frame selection), at `--threads` interpreter threads and at one thread, and the SavedModel's
  `predict_features` signature on the same prepared video (`tf.saved_model.load`, eager signature call),
  in one process.

    TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.litert --model_dir=runs/flash_mnist [--data=PATTERN]
"""

import argparse
import os
import subprocess
import tempfile
import time

import numpy as np
import tensorflow as tf

from ac_keras import artifacts, export, litert, litert_client
from ac_keras import data as ac_data
from ac_keras.task import Task

QUANTIZATIONS = ("none", "float16", "int8")


def _load():
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def _directory_size(path):
    return sum(
        os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names
    )


def _videos(pattern, specs, limit):
    """Every frame (no selection, no fill) and the labels of each record, and the serialized records."""
    videos, labels, serialized = [], [], []
    for batch, _ in ac_data.read_serialized_batches(pattern, batch_size=256):
        parsed = ac_data.parse_batch(
            batch, specs, training=False, num_frames=None, fill_missing=False, dequantize=False
        )
        for index in range(int(batch.shape[0])):
            videos.append({spec.name: parsed.features[spec.name][index].numpy() for spec in specs})
            labels.append(parsed.label_ids[index].numpy())
        serialized.extend(batch.numpy())
        if limit and len(videos) >= limit:
            break
    count = limit or len(videos)
    return videos[:count], labels[:count], serialized[:count]


def _timed(call, inputs, repeats):
    for index in range(20):
        call(inputs[index % len(inputs)])
    times = []
    for index in range(repeats):
        start = time.perf_counter()
        call(inputs[index % len(inputs)])
        times.append(time.perf_counter() - start)
    times = 1e3 * np.asarray(times)
    return f"median {np.median(times):.3f} ms, p90 {np.percentile(times, 90):.3f} ms"


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model_dir", required=True, help="The trained run (its config.json and model).")
    parser.add_argument("--data", help="Records to classify; default: the run's --eval_data.")
    parser.add_argument("--limit", type=int, default=0, help="At most this many videos (0: all).")
    parser.add_argument("--latency_videos", type=int, default=300, help="One-video calls timed per model.")
    parser.add_argument("--threads", type=int, default=2, help="LiteRT interpreter threads.")
    args = parser.parse_args()

    print("\n".join(subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines()[:14]))
    print(f"load at start {_load()}", flush=True)
    config = artifacts.load_run_config(model_dir=args.model_dir)
    task = Task(config)
    model = artifacts.load_trained_model(args.model_dir)
    specs = config.data.feature_specs
    pattern = args.data or config.data.eval_data
    videos, labels, serialized = _videos(pattern, specs, args.limit)
    print(f"{len(videos)} videos of {pattern}", flush=True)

    with tempfile.TemporaryDirectory(prefix="ac_keras_litert_") as directory:
        saved_model = export.export_saved_model(model, task, os.path.join(directory, "export"))
        print(f"SavedModel: {_directory_size(saved_model):,} bytes", flush=True)
        files = {}
        for quantize in QUANTIZATIONS:
            start = time.perf_counter()
            written = litert.export_litert(
                model, task, os.path.join(directory, f"{quantize}.tflite"), quantize=quantize
            )
            files[quantize] = written.path
            print(
                f"LiteRT --quantize={quantize}: {written.size:,} bytes, T={written.max_frames} "
                f"({written.max_frames_source}), converted in {time.perf_counter() - start:.1f} s",
                flush=True,
            )

        loaded = tf.saved_model.load(saved_model)
        serving = loaded.signatures[export.SERVING_SIGNATURE]
        features = loaded.signatures[export.FEATURES_SIGNATURE]
        served_classes, served_scores = [], []
        for start in range(0, len(serialized), 256):
            out = serving(inputs=tf.constant(serialized[start : start + 256]))
            served_classes.append(out["classes"].numpy())
            served_scores.append(out["scores"].numpy())
        served_classes, served_scores = np.concatenate(served_classes), np.concatenate(served_scores)
        truth = [set(label.tolist()) for label in labels]

        def top1(best):
            return np.mean([int(cls) in label for cls, label in zip(best, truth, strict=True)])

        print(f"SavedModel serving_default top-1 {top1(served_classes[:, 0]):.4f}", flush=True)
        description = litert_client.load_description(litert_client.description_path(files["none"]))
        prepared = [litert_client.prepare_inputs(description, video) for video in videos]

        def saved_model_probabilities(batch):
            inputs = {}
            for spec in specs:
                inputs[spec.name] = tf.constant(np.concatenate([one[spec.name] for one in batch]))
                lengths = np.concatenate([one[spec.name + "_mask"].sum(axis=1) for one in batch])
                inputs[spec.name + artifacts.NUM_FRAMES_SUFFIX] = tf.constant(lengths.astype(np.int32))
            return features(**inputs)["probabilities"].numpy()

        reference = np.concatenate(
            [
                saved_model_probabilities(prepared[start : start + 256])
                for start in range(0, len(prepared), 256)
            ]
        )
        probabilities = {}
        for quantize in QUANTIZATIONS:
            classifier = litert_client.LiteRTClassifier(files[quantize], num_threads=args.threads)
            probabilities[quantize] = np.stack([classifier.run(inputs) for inputs in prepared])
            best = probabilities[quantize].argmax(axis=1)
            changed = np.mean(best != probabilities["none"].argmax(axis=1))
            print(
                f"LiteRT --quantize={quantize}: top-1 {top1(best):.4f}; top-1 class differs from the float "
                f"LiteRT model's for {changed:.2%} of the videos; largest |p - p_SavedModel| "
                f"{np.abs(probabilities[quantize] - reference).max():.2e}",
                flush=True,
            )
        float_probabilities = probabilities["none"]
        same_top1 = np.mean(float_probabilities.argmax(axis=1) == served_classes[:, 0])
        scores = np.take_along_axis(float_probabilities, served_classes, axis=1)
        print(
            f"float LiteRT vs serving_default on the records: same top-1 for {same_top1:.2%}, largest top-k "
            f"score difference {np.abs(scores - served_scores).max():.2e}",
            flush=True,
        )

        print(f"per-video latency over {args.latency_videos} calls (load {_load()}):", flush=True)
        one_video = [
            {name: tf.constant(value) for name, value in inputs.items()} for inputs in prepared[:256]
        ]

        def predict_one(inputs):
            arguments = {}
            for spec in specs:
                arguments[spec.name] = inputs[spec.name]
                lengths = tf.reduce_sum(inputs[spec.name + "_mask"], axis=1)
                arguments[spec.name + artifacts.NUM_FRAMES_SUFFIX] = lengths
            return features(**arguments)["probabilities"]

        print(f"  SavedModel predict_features: {_timed(predict_one, one_video, args.latency_videos)}")
        for threads in sorted({args.threads, 1}, reverse=True):
            for quantize in QUANTIZATIONS:
                classifier = litert_client.LiteRTClassifier(files[quantize], num_threads=threads)
                invoke = _timed(classifier.run, prepared[:256], args.latency_videos)
                client = _timed(classifier, videos[:256], args.latency_videos)
                print(
                    f"  LiteRT --quantize={quantize}, {threads} thread(s): invoke {invoke}; with the "
                    f"client's frame selection and fill {client}",
                    flush=True,
                )
    print(f"load at end {_load()}; quantized modalities {[s.name for s in specs if s.quantized]}", flush=True)


if __name__ == "__main__":
    main()
