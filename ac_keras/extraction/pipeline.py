"""The extraction as an Apache Beam pipeline: video files -> sharded YouTube-8M-style frame-level records.

    videos -> Reshuffle -> Decode (frames, flow images, log-mel patches, one element each; errors apart)
           -> per modality: BatchElements -> Embed (batched inference across frames and videos)
           -> GroupByKey(video) -> [fit --pca_dims PCA on a sample] -> Finish (PCA, quantization) -> record
           -> WriteToTFRecord (shards under their final names only when complete)
    errors -> errors.csv

The same pipeline runs on the DirectRunner (multi-process on the local cores, the default) or on Dataflow,
Flink or Spark with the user's Beam options. Memory per worker is bounded by the inference batch and one
decoded frame, not by the video length or the number of videos: decoding streams frames, and what is
grouped per video is its features.
"""

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from ac_keras.errors import UsageError
from ac_keras.extraction import extractor as extractor_lib

ERRORS_FILE = "errors.csv"
ERRORS_HEADER = "video,path,kind,detail"
_META = "__meta__"
# Frames of one modality kept for fitting a --pca_dims PCA.
PCA_SAMPLE_SIZE = 20000


@dataclasses.dataclass(frozen=True)
class VideoTask:
    """One video to extract: its id (the record's `id`), its path and its labels."""

    video_id: str
    path: str
    labels: tuple[int, ...] = ()


@dataclasses.dataclass
class PipelineResult:
    """Counts of a finished run."""

    videos_written: int
    videos_failed: int
    features: dict[str, int]
    shards: list[str]


def _shared_extractor(shared_handle, spec, pcas=None):
    """One `Extractor` per worker process, shared by the pipeline's steps (models are built once)."""

    def build():
        return extractor_lib.Extractor(spec, pcas)

    return shared_handle.acquire(build, tag=repr((spec, sorted((pcas or {}).keys()))))


def build_pipeline(
    pipeline,
    spec: extractor_lib.ExtractionSpec,
    tasks: Sequence[VideoTask],
    *,
    output_dir: str,
    prefix: str,
    num_shards: int,
):
    """Adds the extraction to `pipeline` (a `beam.Pipeline`); returns nothing, the sinks write the output.

    Args:
        pipeline: the `beam.Pipeline`.
        spec: the `ExtractionSpec`.
        tasks: the `VideoTask`s.
        output_dir: where the shards, `errors.csv` and any `--pca_dims` PCA files go.
        prefix: shard name prefix.
        num_shards: number of shards.
    """
    import apache_beam as beam
    from apache_beam.utils import shared

    names = spec.names
    handle = shared.Shared()

    class Decode(beam.DoFn):
        def setup(self):
            self._extractor = _shared_extractor(handle, spec)
            self._done = 0

        def process(self, task):
            from ac_keras.extraction import video

            counts = dict.fromkeys(names, 0)
            error = None
            try:
                for name, index, model_input in self._extractor.inputs(task.path):
                    counts[name] += 1
                    yield beam.pvalue.TaggedOutput(name, (task.video_id, index, model_input))
            except video.VideoError as video_error:
                error = (video_error.kind, video_error.detail)
            except Exception as unexpected:  # a decoder failure we do not know: the job goes on without it
                logging.exception("Video %s (%s) failed", task.video_id, task.path)
                error = ("unreadable", f"{type(unexpected).__name__}: {unexpected}")
            if error is None and not any(counts.values()):
                error = ("no_frames", "no frame or audio could be decoded")
            if error is not None:
                beam.metrics.Metrics.counter("extract", "videos_failed").inc()
                yield beam.pvalue.TaggedOutput("errors", (task.video_id, task.path, *error))
            else:
                self._done += 1
                # Progress on the worker's stderr: the console (DirectRunner), the worker logs (a cluster).
                print(
                    f"[worker {os.getpid()}] {self._done} video(s) decoded; {task.video_id}: "
                    + ", ".join(f"{count} {name}" for name, count in counts.items()),
                    file=sys.stderr,
                    flush=True,
                )
            meta = {"labels": list(task.labels), "path": task.path, "failed": error is not None}
            yield beam.pvalue.TaggedOutput(_META, (task.video_id, (_META, meta)))

    class Embed(beam.DoFn):
        def __init__(self, name):
            self._name = name

        def setup(self):
            self._extractor = _shared_extractor(handle, spec)

        def process(self, batch):
            features = self._extractor.embed(self._name, [model_input for _, _, model_input in batch])
            beam.metrics.Metrics.counter("extract", f"features_{self._name}").inc(len(batch))
            for (video_id, index, _), feature in zip(batch, features, strict=True):
                yield video_id, (self._name, index, feature)

    def assemble(element):
        video_id, values = element
        meta = None
        per_modality = {name: [] for name in names}
        for value in values:
            if value[0] == _META:
                meta = value[1]
            else:
                name, index, feature = value
                per_modality[name].append((index, feature))
        if meta is None or meta["failed"]:
            return
        arrays = {}
        for name, indexed in per_modality.items():
            if indexed:
                indexed.sort(key=lambda item: item[0])
                arrays[name] = np.stack([feature for _, feature in indexed])
        yield video_id, meta["labels"], arrays

    tagged = (
        pipeline
        | "Videos" >> beam.Create(list(tasks))
        | "Spread" >> beam.Reshuffle()
        | "Decode" >> beam.ParDo(Decode()).with_outputs(*names, "errors", _META)
    )
    features = [tagged[_META]]
    for name in names:
        features.append(
            tagged[name]
            | f"Batch{name}" >> beam.BatchElements(min_batch_size=1, max_batch_size=spec.batch_size)
            | f"Embed{name}" >> beam.ParDo(Embed(name))
        )
    videos = (
        features
        | "Together" >> beam.Flatten()
        | "ByVideo" >> beam.GroupByKey()
        | "Assemble" >> beam.FlatMap(assemble)
    )

    pca_names = [modality.name for modality in spec.modalities if modality.pca_dims is not None]
    pcas = {}
    for name in pca_names:
        modality = spec.modality(name)
        pca_path = modality.pca_file

        def fit(sample, modality=modality, pca_path=pca_path):
            from ac_keras.extraction import pca as pca_lib

            params = pca_lib.fit_pca(np.stack(sample), modality.pca_dims)
            pca_lib.save_pca(params, pca_path)
            logging.info(
                "Fitted the %s PCA (%d dims) on %d features: %s",
                modality.name,
                modality.pca_dims,
                len(sample),
                pca_path,
            )
            return params

        pcas[name] = beam.pvalue.AsSingleton(
            videos
            | f"Frames{name}" >> beam.FlatMap(lambda video, name=name: list(video[2].get(name, [])))
            | f"Sample{name}" >> beam.combiners.Sample.FixedSizeGlobally(PCA_SAMPLE_SIZE)
            | f"FitPca{name}" >> beam.Map(fit)
        )

    def to_record(video, **fitted):
        from ac_keras.data import writer

        video_id, labels, arrays = video
        extractor = _shared_extractor(handle, spec)
        stored, means = {}, {}
        for name, array in arrays.items():
            stored[name], means[name] = extractor.finish(name, array, fitted.get(name))
        example = writer.make_sequence_example(
            video_id,
            sorted(labels),
            stored,
            extractor.feature_spec(),
            allow_missing=True,
            video_level={name: mean for name, mean in means.items() if mean is not None},
        )
        # A modality without features (no audio stream) is written as an empty feature list (the writer's
        # allow_missing): never zero bytes.
        beam.metrics.Metrics.counter("extract", "videos_written").inc()
        return example.SerializeToString()

    (
        videos
        | "Records" >> beam.Map(to_record, **pcas)
        | "Write"
        >> beam.io.WriteToTFRecord(
            f"{output_dir.rstrip('/')}/{prefix}",
            file_name_suffix=".tfrecord",
            num_shards=num_shards,
            shard_name_template="-SSSSS-of-NNNNN",
        )
    )
    (
        tagged["errors"]
        | "ErrorRows" >> beam.Map(_csv_row)
        | "WriteErrors"
        >> beam.io.WriteToText(
            f"{output_dir.rstrip('/')}/{ERRORS_FILE}",
            shard_name_template="",
            num_shards=1,
            header=ERRORS_HEADER,
        )
    )


def _csv_row(error) -> str:
    import csv
    import io

    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="").writerow([str(value) for value in error])
    return buffer.getvalue()


def run(
    spec: extractor_lib.ExtractionSpec,
    tasks: Sequence[VideoTask],
    *,
    output_dir: str,
    prefix: str,
    num_shards: int,
    beam_args: Sequence[str] = (),
    num_workers: int | None = None,
    verbose: bool = False,
) -> PipelineResult:
    """Runs the pipeline and waits for it.

    Args:
        spec, tasks, output_dir, prefix, num_shards: as in `build_pipeline`.
        beam_args: Beam pipeline options (e.g. `--runner=DataflowRunner --project=...`); without a
            `--runner` the DirectRunner runs in multi-process mode on `num_workers` processes.
        num_workers: DirectRunner processes. Defaults to the local CPU count.
        verbose: bool, keep Beam's INFO logging. Defaults to False.

    Returns:
        A `PipelineResult`.
    """
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    args = list(beam_args)
    bad = [arg for arg in args if not arg.startswith("--")]
    if bad:
        raise UsageError(f"Unexpected argument {bad[0]!r}: Beam options go after '--' as --name=value.")
    if not verbose:
        # Beam's own INFO lines (bundles, gRPC, harness start and stop) drown the progress lines.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        if not any(arg.startswith("--default_sdk_harness_log_level") for arg in args):
            args.append("--default_sdk_harness_log_level=WARNING")
    if not any(arg.startswith("--runner") for arg in args):
        workers = num_workers or os.cpu_count() or 1
        args += ["--runner=DirectRunner", f"--direct_num_workers={workers}"]
        if workers > 1:
            args.append("--direct_running_mode=multi_processing")
    # Worker processes import ac_keras from where this process does.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [package_root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    options = PipelineOptions(args)
    pipeline = beam.Pipeline(options=options)
    build_pipeline(pipeline, spec, tasks, output_dir=output_dir, prefix=prefix, num_shards=num_shards)
    result = pipeline.run()
    result.wait_until_finish()
    counters = _counters(result)
    import tensorflow as tf

    shards = sorted(tf.io.gfile.glob(f"{output_dir.rstrip('/')}/{prefix}-*-of-*.tfrecord"))
    return PipelineResult(
        videos_written=counters.get("videos_written", 0),
        videos_failed=counters.get("videos_failed", 0),
        features={name: counters.get(f"features_{name}", 0) for name in spec.names},
        shards=shards,
    )


def _counters(result) -> Mapping[str, int]:
    from apache_beam.metrics.metric import MetricsFilter

    try:
        queried = result.metrics().query(MetricsFilter().with_namespace("extract"))
    except (NotImplementedError, AttributeError):
        return {}
    counters = {}
    for counter in queried["counters"]:
        value = counter.committed if counter.committed is not None else counter.attempted
        counters[counter.key.metric.name] = counters.get(counter.key.metric.name, 0) + int(value or 0)
    return counters
