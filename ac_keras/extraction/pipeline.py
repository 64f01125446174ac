"""The extraction as an Apache Beam pipeline: video files -> sharded YouTube-8M-style frame-level records.

    videos -> Reshuffle -> Decode (frames, flow images, log-mel patches, one element each; errors apart)
           -> per modality: BatchElements -> Embed (batched inference across frames and videos)
           -> GroupByKey(video) -> [fit --pca_dims PCA on a sample] -> Finish (PCA, quantization) -> record
           -> WriteToTFRecord (shards under their final names only when complete)
    errors -> errors.csv

The same pipeline runs on the local engine (Beam's FnApiRunner, multi-process on the local cores, named
explicitly: `LOCAL_ENGINE`), on Beam's PortableRunner with an external worker pool (the way cluster engines
run Python workers), or on Dataflow, Flink or Spark with the user's Beam options. Decoding streams frames and
what is grouped per video is its features; the local engine, though, holds each stage's whole output in
memory, so `run` extracts the videos
in runs of at most `videos_per_run` (`plan_waves`), each recorded when done so that an interrupted
extraction resumes where it stopped.
"""

import contextlib
import dataclasses
import json
import logging
import os
import random
import sys
from collections.abc import Mapping, Sequence

import numpy as np

from ac_keras.data.files import write_text_atomically
from ac_keras.errors import UsageError
from ac_keras.extraction import extractor as extractor_lib

ERRORS_FILE = "errors.csv"
# The engine of a local extraction, named explicitly: Beam's FnApiRunner, multi-process on the local cores.
# (Beam 2.77's DirectRunner would first try the Prism runner, which downloads a binary from GitHub, and run
# the pipeline there when it can; docs/extract.md.)
LOCAL_ENGINE = "FnApiRunner"
# Hidden in the output directory while an extraction runs: its plan and what each run finished.
PROGRESS_DIR = ".extract-progress"
# What the local engine may hold for one run's features by default, and how many times their float size it
# holds (measured 5-10x, docs/benchmarks.md): `default_videos_per_run`.
RUN_MEMORY_BUDGET_BYTES = 2 * 10**9
_HELD_PER_FEATURE_BYTE = 10
_MIN_VIDEOS_PER_RUN = 16
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
    pcas: Mapping | None = None,
):
    """Adds the extraction to `pipeline` (a `beam.Pipeline`); returns nothing, the sinks write the output.

    Args:
        pipeline: the `beam.Pipeline`.
        spec: the `ExtractionSpec`.
        tasks: the `VideoTask`s.
        output_dir: where the shards and `errors.csv` go.
        prefix: shard name prefix.
        num_shards: number of shards.
        pcas: dict modality -> `pca.PcaParams` for `--pca_dims` modalities whose PCA was fitted before
            (an earlier run of the same extraction); the others are fitted here on a sample of these
            videos and written to their `pca_file`.
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
                # Progress on the worker's stderr: the console (the local engine), the worker logs (a
                # cluster). One write per line: the workers share the console, and a pipe keeps whole
                # writes of up to 4 KB together.
                sys.stderr.write(
                    f"[worker {os.getpid()}] {self._done} video(s) decoded; {task.video_id}: "
                    + ", ".join(f"{count} {name}" for name, count in counts.items())
                    + "\n"
                )
                sys.stderr.flush()
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

    fitted = dict(pcas or {})
    pca_names = [
        modality.name
        for modality in spec.modalities
        if modality.pca_dims is not None and modality.name not in fitted
    ]
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

        fitted[name] = beam.pvalue.AsSingleton(
            videos
            | f"Frames{name}" >> beam.FlatMap(lambda video, name=name: list(video[2].get(name, [])))
            | f"Sample{name}" >> beam.combiners.Sample.FixedSizeGlobally(PCA_SAMPLE_SIZE)
            | f"FitPca{name}" >> beam.Map(fit)
        )

    def to_record(video, **pca_params):
        from ac_keras.data import writer

        video_id, labels, arrays = video
        extractor = _shared_extractor(handle, spec)
        stored, means = {}, {}
        for name, array in arrays.items():
            stored[name], means[name] = extractor.finish(name, array, pca_params.get(name))
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
        | "Records" >> beam.Map(to_record, **fitted)
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


@dataclasses.dataclass(frozen=True)
class Wave:
    """One run of the pipeline: some of the videos, written as shards `first_shard..` of the extraction."""

    index: int
    tasks: tuple[VideoTask, ...]
    first_shard: int
    num_shards: int


def _option(beam_args: Sequence[str], name: str) -> str | None:
    """The last value of `--name=value` (or `--name value`) in `beam_args`, or None."""
    value = None
    for index, arg in enumerate(beam_args):
        if arg.startswith(f"--{name}="):
            value = arg.split("=", 1)[1]
        elif arg == f"--{name}" and index + 1 < len(beam_args):
            value = beam_args[index + 1]
    return value


def runs_locally(beam_args: Sequence[str]) -> bool:
    """Whether the pipeline's stages run in this process's memory: the default engine (no `--runner`), the
    FnApiRunner or DirectRunner named, or the PortableRunner with its job service embedded in this process
    (`--job_endpoint=embed`, whose FnApiRunner holds each stage's output as the local engine does, wherever
    its workers run). Such runs are sized by `default_videos_per_run`."""
    runner = (_option(beam_args, "runner") or LOCAL_ENGINE).lower().removesuffix("runner")
    if runner in ("fnapi", "direct", "switchingdirect", "bundlebaseddirect"):
        return True
    return runner == "portable" and _option(beam_args, "job_endpoint") == "embed"


def default_videos_per_run(spec: extractor_lib.ExtractionSpec, feature_dims: Mapping[str, int]) -> int:
    """Videos per run on the local engine (`runs_locally`): as many as keep the features it holds for one
    run (about ten times their float size, at most `num_frames` or `max_frames` per video and modality) within
    `RUN_MEMORY_BUDGET_BYTES`, and at least 16.

    Args:
        spec: the `ExtractionSpec`.
        feature_dims: modality -> values per feature that the model outputs (before any PCA).
    """
    frames = spec.num_frames or spec.max_frames
    per_video = frames * sum(feature_dims.values()) * 4 * _HELD_PER_FEATURE_BYTE
    return max(_MIN_VIDEOS_PER_RUN, RUN_MEMORY_BUDGET_BYTES // max(1, per_video))


def plan_waves(tasks: Sequence[VideoTask], *, videos_per_run: int, num_shards: int) -> list[Wave]:
    """Splits the videos into runs of at most `videos_per_run` and the shards between them.

    With more than one run the videos are first shuffled (a fixed seed: the same list gives the same runs),
    so each run is a random sample of them (the `--pca_dims` PCA is fitted on the first run's videos). The
    runs differ in size by at most one video; each gets at least one shard and at most one per video, the
    `num_shards` shared in proportion, so there are `max(num_shards, number of runs)` shards in all.
    """
    tasks = list(tasks)
    count = max(1, -(-len(tasks) // videos_per_run))
    if count > 1:
        random.Random(0).shuffle(tasks)
    sizes = [len(tasks) // count + (index < len(tasks) % count) for index in range(count)]
    waves, first_task, first_shard = [], 0, 0
    for index, size in enumerate(sizes):
        shards = num_shards // count + (index < num_shards % count)
        shards = min(max(1, shards), size)
        waves.append(Wave(index, tuple(tasks[first_task : first_task + size]), first_shard, shards))
        first_task += size
        first_shard += shards
    return waves


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
    videos_per_run: int | None = None,
) -> PipelineResult:
    """Runs the pipeline, in runs of at most `videos_per_run` videos, and waits for it.

    The local engine holds every stage's whole output in memory (measured: 5 to 10 times the float features
    of the videos of one run, docs/benchmarks.md): runs bound what it holds (`default_videos_per_run`).
    Each run writes its shards under their final names
    (`<prefix>-SSSSS-of-NNNNN.tfrecord`, numbered across runs) and records that it is done in
    `<output_dir>/.extract-progress/`; called again with the same arguments after an interruption, the runs
    done are skipped (the first run's `--pca_dims` PCA is read back from its file). At the end the runs'
    errors are merged into `errors.csv` and the progress directory is removed.

    Args:
        spec, tasks, output_dir, prefix, num_shards: as in `build_pipeline` (`num_shards` in all; see
            `plan_waves`).
        beam_args: Beam pipeline options (e.g. `--runner=DataflowRunner --project=...`); without a
            `--runner` the local engine (`LOCAL_ENGINE`) runs in multi-process mode on `num_workers`
            processes.
        num_workers: processes of the local engine. Defaults to the local CPU count.
        verbose: bool, keep Beam's INFO logging. Defaults to False.
        videos_per_run: int, the most videos one run extracts, or None for all in one run. Defaults to
            None.

    Returns:
        A `PipelineResult`.

    Raises:
        FileExistsError: `output_dir` holds an unfinished extraction with other arguments.
    """
    args = _beam_options(beam_args, num_workers, verbose)
    videos_per_run = videos_per_run or max(1, len(tasks))
    waves = plan_waves(tasks, videos_per_run=videos_per_run, num_shards=num_shards)
    total_shards = waves[-1].first_shard + waves[-1].num_shards
    progress = _Progress(output_dir)
    progress.start(
        {
            "tasks": [[task.video_id, task.path, list(task.labels)] for task in tasks],
            "spec": repr(spec),
            "prefix": prefix,
            "num_shards": num_shards,
            "videos_per_run": videos_per_run,
        }
    )
    totals = {"videos_written": 0, "videos_failed": 0, **{f"features_{name}": 0 for name in spec.names}}
    pcas = {}
    for wave in waves:
        counts = progress.done(wave.index)
        if counts is None:
            if len(waves) > 1:
                logging.info(
                    "Run %d of %d: %d video(s), shards %d-%d of %d",
                    wave.index + 1,
                    len(waves),
                    len(wave.tasks),
                    wave.first_shard,
                    wave.first_shard + wave.num_shards - 1,
                    total_shards,
                )
            counts = _run_wave(spec, wave, progress, prefix, total_shards, output_dir, pcas, args)
            progress.mark_done(wave.index, counts)
        else:
            logging.info("Run %d of %d: done before, skipped.", wave.index + 1, len(waves))
        for name, value in counts.items():
            totals[name] = totals.get(name, 0) + value
        if wave.index == 0:  # the later runs quantize with the PCA the first one fitted
            pcas = _fitted_pcas(spec)
    _merge_errors(progress, len(waves), f"{output_dir.rstrip('/')}/{ERRORS_FILE}")
    progress.remove()
    shards = [_shard_path(output_dir, prefix, index, total_shards) for index in range(total_shards)]
    return PipelineResult(
        videos_written=totals["videos_written"],
        videos_failed=totals["videos_failed"],
        features={name: totals[f"features_{name}"] for name in spec.names},
        shards=shards,
    )


def _beam_options(beam_args, num_workers, verbose) -> list[str]:
    args = list(beam_args)
    bad = [arg for arg in args if not arg.startswith("--")]
    if bad:
        raise UsageError(f"Unexpected argument {bad[0]!r}: Beam options go after '--' as --name=value.")
    if not verbose:
        # Beam's own INFO lines (bundles, gRPC, harness start and stop) drown the progress lines.
        logging.getLogger("apache_beam").setLevel(logging.WARNING)
        if not any(arg.startswith("--default_sdk_harness_log_level") for arg in args):
            args.append("--default_sdk_harness_log_level=WARNING")
    if _option(args, "runner") is None:
        workers = num_workers or os.cpu_count() or 1
        args += [f"--runner={LOCAL_ENGINE}", f"--direct_num_workers={workers}"]
        if workers > 1:
            args.append("--direct_running_mode=multi_processing")
    elif (_option(args, "runner") or "").lower() in ("directrunner", "direct"):
        logging.warning(
            "--runner=DirectRunner: Beam's DirectRunner first tries the Prism runner, which downloads a "
            "binary from GitHub and runs the pipeline there when it can (nothing here is tested on it). "
            "Leave --runner out for the local engine (%s, multi-process, nothing downloaded).",
            LOCAL_ENGINE,
        )
    return args


def make_runner(options):
    """The runner of `options` (Beam `PipelineOptions`): for the local engine (`--runner=FnApiRunner`), an
    `FnApiRunner` built as Beam's DirectRunner builds one for a batch pipeline, its workers given the
    pipeline options; None for any other runner (Beam creates it from the options)."""
    from apache_beam.options.pipeline_options import StandardOptions

    if (options.view_as(StandardOptions).runner or "").lower().removesuffix("runner") != "fnapi":
        return None
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    provision = beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded)
    return fn_runner.FnApiRunner(provision_info=fn_runner.ExtendedProvisionInfo(provision))


def _run_wave(spec, wave, progress, prefix, total_shards, output_dir, pcas, args) -> dict[str, int]:
    """Runs the pipeline on one wave's videos and moves its shards into place; returns its counters."""
    import apache_beam as beam
    import tensorflow as tf
    from apache_beam.options.pipeline_options import PipelineOptions

    wave_dir = progress.wave_dir(wave.index)
    if tf.io.gfile.exists(wave_dir):  # what an interrupted attempt left
        tf.io.gfile.rmtree(wave_dir)
    tf.io.gfile.makedirs(wave_dir)
    # Worker processes import ac_keras from where this process does.
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [package_root, *[p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]]
    )
    options = PipelineOptions(args)
    runner = make_runner(options)
    pipeline = beam.Pipeline(runner=runner, options=options)
    build_pipeline(
        pipeline, spec, wave.tasks, output_dir=wave_dir, prefix=prefix, num_shards=wave.num_shards, pcas=pcas
    )
    with _worker_log_copies_dropped(runner is not None):
        result = pipeline.run()
        result.wait_until_finish()
    counters = _counters(result)
    for index in range(wave.num_shards):
        written = f"{wave_dir}/{prefix}-{index:05d}-of-{wave.num_shards:05d}.tfrecord"
        final = _shard_path(output_dir, prefix, wave.first_shard + index, total_shards)
        if tf.io.gfile.exists(written):
            tf.io.gfile.rename(written, final, overwrite=True)
        else:  # a runner may leave the shard of no record unwritten: an empty file holds no record
            write_text_atomically(final, "")
    return {
        "videos_written": counters.get("videos_written", 0),
        "videos_failed": counters.get("videos_failed", 0),
        **{f"features_{name}": counters.get(f"features_{name}", 0) for name in spec.names},
    }


class _WorkerLogCopies(logging.Filter):
    """Drops the job service's copies of worker log lines ("Worker: severity: WARN ... message: ...")."""

    def filter(self, record):
        return not str(record.msg).startswith("Worker: ")


@contextlib.contextmanager
def _worker_log_copies_dropped(local_engine: bool):
    """While the local engine runs: its worker processes write their log lines to this console themselves,
    and Beam's job service in this process logs a copy of each; the copies are dropped, so each line shows
    once. Other engines' workers log elsewhere (a worker pool, a cluster): their copies are kept, they are
    the only ones this console gets."""
    if not local_engine:
        yield
        return
    log = logging.getLogger("apache_beam.runners.portability.local_job_service")
    copies = _WorkerLogCopies()
    log.addFilter(copies)
    try:
        yield
    finally:
        log.removeFilter(copies)


def _shard_path(output_dir, prefix, index, num_shards) -> str:
    return f"{output_dir.rstrip('/')}/{prefix}-{index:05d}-of-{num_shards:05d}.tfrecord"


def _fitted_pcas(spec) -> dict:
    """The `--pca_dims` PCAs the first run fitted, read back from their files."""
    from ac_keras.extraction import pca as pca_lib

    return {
        modality.name: pca_lib.load_pca(modality.pca_file)
        for modality in spec.modalities
        if modality.pca_dims is not None
    }


def _merge_errors(progress, num_waves, path) -> None:
    """Writes the errors of every run into one `errors.csv` (one header)."""
    import tensorflow as tf

    rows = []
    for index in range(num_waves):
        wave_errors = f"{progress.wave_dir(index)}/{ERRORS_FILE}"
        if tf.io.gfile.exists(wave_errors):
            with tf.io.gfile.GFile(wave_errors) as handle:
                lines = handle.read().splitlines()
            rows += [line for line in lines[1:] if line]
    write_text_atomically(path, "\n".join([ERRORS_HEADER, *rows]) + "\n")


class _Progress:
    """`<output_dir>/.extract-progress/`: the plan of an unfinished extraction, each run's output and a
    marker per finished run (its counters)."""

    def __init__(self, output_dir: str):
        self.root = f"{output_dir.rstrip('/')}/{PROGRESS_DIR}"

    def start(self, plan: dict) -> None:
        """Records `plan`, or checks it against the one recorded by an interrupted attempt."""
        import tensorflow as tf

        path = f"{self.root}/plan.json"
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as handle:
                recorded = json.loads(handle.read())
            if recorded != plan:
                differing = sorted(key for key in plan if recorded.get(key) != plan[key])
                raise FileExistsError(
                    f"{self.root} holds an unfinished extraction with other settings (differing: "
                    f"{', '.join(differing) or 'format'}); pass --overwrite to start over, or run the "
                    "same command to finish it."
                )
            return
        tf.io.gfile.makedirs(self.root)
        write_text_atomically(path, json.dumps(plan))

    def wave_dir(self, index: int) -> str:
        return f"{self.root}/run-{index:05d}"

    def done(self, index: int) -> dict | None:
        """The counters of run `index` if it finished, else None."""
        import tensorflow as tf

        path = f"{self.root}/run-{index:05d}.done.json"
        if not tf.io.gfile.exists(path):
            return None
        with tf.io.gfile.GFile(path) as handle:
            return json.loads(handle.read())

    def mark_done(self, index: int, counts: dict) -> None:
        write_text_atomically(f"{self.root}/run-{index:05d}.done.json", json.dumps(counts))

    def remove(self) -> None:
        import tensorflow as tf

        tf.io.gfile.rmtree(self.root)


def unfinished_extraction(output_dir: str) -> bool:
    """Whether `output_dir` holds an interrupted extraction (`run` finishes it when given the same
    arguments)."""
    import tensorflow as tf

    return tf.io.gfile.exists(f"{output_dir.rstrip('/')}/{PROGRESS_DIR}/plan.json")


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
