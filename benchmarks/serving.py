"""Serving latency and throughput of the exported SavedModel, loaded the way TF Serving loads it.

Builds the classifier of a flagfile (`--config`, default configs/youtube8m.flags: rgb 1024 + audio 128
uint8, N 64/32, 3,862 classes, all frames at evaluation) with `ac_keras.task.Task(config).build_model()`,
exports it with `ac_keras.export.export_saved_model(model, task, ...)` to a temporary directory, and times its
`serving_default` signature (serialized `SequenceExample`s in, top-k out; decoding, dequantization and the
model all run in the graph) on synthetic 300-frame videos:

  tf1   `tf.compat.v1.saved_model.loader.load` + `session.run`: the TF1 session loader, the same
        SavedModelBundle/Session::Run path that TF Serving and `saved_model_cli run` use;
  tf2   `tf.saved_model.load(path).signatures["serving_default"]`, the TF2 loader.

For each: latency of one video per request (p50, p99 over `--requests` requests after `--warmup`) and
throughput at `--serve_batch` videos per request (videos/s). The weights are random: serving cost does not
depend on their values. The process never imports ac_keras after the export (the model runs from the
SavedModel alone). Printed with the machine load (`uptime`) at start and end.

    TF_CPP_MIN_LOG_LEVEL=2 python -m benchmarks.serving [--config=configs/youtube8m.flags] [--frames=300]
"""

import json
import os
import subprocess
import sys
import tempfile
import textwrap

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

MEASURE = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np
    import tensorflow as tf

    path, records_file, batch_size, requests, warmup = sys.argv[1:6]
    batch_size, requests, warmup = int(batch_size), int(requests), int(warmup)
    records = [r.numpy() for r in tf.data.TFRecordDataset(records_file)]
    one, batch = [records[0]], (records * batch_size)[:batch_size]

    def load():
        return open("/proc/loadavg").read().split()[:3]

    def summarize(latencies):
        latencies = 1e3 * np.asarray(latencies)
        return {"p50_ms": float(np.percentile(latencies, 50)), "p99_ms": float(np.percentile(latencies, 99)),
                "mean_ms": float(latencies.mean())}

    def measure(call, name):
        for _ in range(warmup):
            call(one)
        latencies = []
        for index in range(requests):
            request = [records[index % len(records)]]
            start = time.perf_counter()
            call(request)
            latencies.append(time.perf_counter() - start)
        for _ in range(2):
            call(batch)
        batch_times = []
        for _ in range(max(3, requests // 20)):
            start = time.perf_counter()
            call(batch)
            batch_times.append(time.perf_counter() - start)
        result = summarize(latencies)
        result["batch_size"] = batch_size
        result["batch_p50_ms"] = float(1e3 * np.median(batch_times))
        result["batch_videos_per_s"] = float(batch_size / np.median(batch_times))
        result["load"] = load()
        return result

    results = {"load_start": load()}
    # TF1 session loader: what TF Serving (SavedModelBundle + Session::Run) and saved_model_cli run do.
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph)
    meta = tf.compat.v1.saved_model.loader.load(session, ["serve"], path)
    signature = meta.signature_def["serving_default"]
    fetches = {key: value.name for key, value in signature.outputs.items()}
    input_name = signature.inputs["inputs"].name
    # Resident memory of this process with the model loaded by the TF1 loader (what a server holds).
    results["rss_after_tf1_load_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["tf1_session_run"] = measure(lambda rs: session.run(fetches, {input_name: rs}), "tf1")
    session.close()
    # TF2 loader.
    serve = tf.saved_model.load(path).signatures["serving_default"]
    results["tf2_signature"] = measure(lambda rs: serve(inputs=tf.constant(rs)), "tf2")
    results["modules"] = sorted(m for m in sys.modules if m.startswith("ac_keras"))
    print(json.dumps(results))
    """
)


def define_flags():
    from ac_keras import flags as _flags  # noqa: F401  (defines the model flags the flagfile sets)

    flags.DEFINE_string("config", "configs/youtube8m.flags", "Flagfile of the model to serve.")
    flags.DEFINE_integer("frames", 300, "Frames per synthetic video.")
    flags.DEFINE_integer("videos", 16, "Distinct synthetic videos cycled through the requests.")
    flags.DEFINE_integer("serve_batch", 64, "Videos per request for the throughput figure.")
    flags.DEFINE_integer("requests", 200, "Timed one-video requests per loader.")
    flags.DEFINE_integer("warmup", 10, "Untimed requests first.")
    flags.DEFINE_string("json_out", None, "Write the results to this JSON file.")


def main(argv):
    del argv
    import numpy as np
    import tensorflow as tf

    from ac_keras import flags as ac_flags
    from ac_keras.data.writer import make_sequence_example
    from ac_keras.export import export_saved_model
    from ac_keras.task import Task

    FLAGS = flags.FLAGS
    # The model flags come from the flagfile; flags given on the command line override it.
    FLAGS([sys.argv[0], f"--flagfile={os.path.join(ROOT, FLAGS.config)}", *sys.argv[1:]], known_only=True)
    work = tempfile.mkdtemp(prefix="ac_keras_serving_")
    config = ac_flags.config_from_flags(
        FLAGS, need_train_data=False, train_data=None, eval_data=None, stats=None, model_dir=work
    )
    task = Task(config)
    model = task.build_model()
    specs = config.data.feature_specs
    rng = np.random.default_rng(0)
    records_file = os.path.join(work, "requests.tfrecord")
    with tf.io.TFRecordWriter(records_file) as writer:
        for index in range(FLAGS.videos):
            frames = {}
            for spec in specs:
                if spec.quantized:
                    frames[spec.name] = rng.integers(0, 256, (FLAGS.frames, spec.dim), dtype=np.uint8)
                else:
                    frames[spec.name] = rng.normal(size=(FLAGS.frames, spec.dim)).astype(np.float32)
            example = make_sequence_example(f"video{index:04d}", [], frames, specs)
            writer.write(example.SerializeToString())
    path = export_saved_model(model, task, os.path.join(work, "export"))
    parameters = int(sum(np.prod(weight.shape) for weight in model.weights))
    del model
    command = [
        sys.executable,
        "-c",
        MEASURE,
        path,
        records_file,
        str(FLAGS.serve_batch),
        str(FLAGS.requests),
        str(FLAGS.warmup),
    ]
    # A fresh process without ac_keras on the path: the SavedModel alone, as a server has it.
    env = {**os.environ, "PYTHONPATH": ""}
    output = subprocess.run(command, capture_output=True, text=True, check=True, cwd=work, env=env).stdout
    results = json.loads(output.strip().splitlines()[-1])
    results["config"] = {
        "features": config.data.features,
        "cluster_sizes": dict(config.model.cluster_sizes),
        "num_classes": config.data.num_classes,
        "eval_frames": config.data.eval_frames,
        "frames_per_video": FLAGS.frames,
        "parameters": parameters,
        "savedmodel_bytes": sum(
            os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files
        ),
    }
    print(
        f"SavedModel {path} ({results['config']['savedmodel_bytes'] / 1e6:.0f} MB, "
        f"{parameters / 1e6:.1f}M parameters = {4 * parameters / 1e6:.0f} MB of float32 weights); "
        f"server process peak RSS after the TF1 load {results['rss_after_tf1_load_mb']:.0f} MB"
    )
    for loader in ("tf1_session_run", "tf2_signature"):
        r = results[loader]
        print(
            f"{loader:16s} one {FLAGS.frames}-frame video: p50 {r['p50_ms']:.1f} ms, "
            f"p99 {r['p99_ms']:.1f} ms; "
            f"batch {r['batch_size']}: {r['batch_p50_ms']:.0f} ms, {r['batch_videos_per_s']:.0f} videos/s "
            f"(load {' '.join(r['load'])})"
        )
    print(
        f"load at start {' '.join(results['load_start'])}; "
        f"ac_keras modules in the server: {results['modules']}"
    )
    if FLAGS.json_out:
        with open(FLAGS.json_out, "w") as handle:
            json.dump(results, handle, indent=2)
    tf.io.gfile.rmtree(work)


if __name__ == "__main__":
    define_flags()
    app.run(main)
