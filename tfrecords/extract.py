r"""Extracts frame features from video files into YouTube-8M-style frame-level TFRecords (Apache Beam).

    python -m tfrecords.extract --labels_csv=videos.csv --output_dir=/data/records/train \
        --modalities=rgb,audio --rgb_model=yt8m --yt8m_model_dir=~/yt8m \
        --audio_model=vggish --audio_weights=~/vggish/vggish_model.ckpt

    # the same pipeline on a cluster: Beam's options after `--`
    python -m tfrecords.extract --videos='gs://bucket/videos/*.mp4' --output_dir=gs://bucket/records/train \
        -- --runner=DataflowRunner --project=my-project --region=us-central1 \
           --temp_location=gs://bucket/tmp --requirements_file=requirements.txt

Writes to `--output_dir` (one directory per split): `<prefix>-SSSSS-of-NNNNN.tfrecord` shards (under their
final names only when complete), `extraction.json` (what made the features, so a trained model can extract
the same features from a new video), `errors.csv` (every video that could not be used and why; the job
goes on without them), `stats.json` (as `python -m tfrecords.stats` writes it) and, with `--pca_dims`, the
fitted `pca_<modality>.npz`. Existing output is refused before any work unless `--overwrite`. The videos are
extracted in runs of `--videos_per_run`; an interrupted extraction is finished by the same command (its
finished runs are kept).
See docs/extract.md.
"""

from ac_keras import cli  # first: a command's console is quieted before TensorFlow loads

cli.quiet_console(__name__)

import csv
import os
import sys
import time

import tensorflow as tf
from absl import flags, logging

from ac_keras.errors import DataError, MissingDataError, UsageError
from ac_keras.extraction import extractor as extractor_lib
from ac_keras.extraction import pipeline
from tfrecords import run_command

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".avi", ".mov", ".m4v", ".mpg", ".mpeg", ".flv", ".3gp", ".ts")


def define_flags() -> None:
    """Defines the command-line flags (only when run as a program, so importing defines none)."""
    flags.DEFINE_list("videos", None, "Comma-separated globs of video files (gs:// works).")
    flags.DEFINE_string(
        "labels_csv",
        None,
        "CSV of 'path,labels' rows (labels separated by spaces or ';'; optional header 'path,labels[,id]'; "
        "relative paths are relative to the CSV's directory). The video id is the file's stem unless an id "
        "column is given.",
    )
    flags.DEFINE_string(
        "output_dir", None, "Directory for the shards, extraction.json, errors.csv, stats.json."
    )
    flags.DEFINE_string("prefix", "train", "Shard name prefix.")
    flags.DEFINE_integer(
        "num_shards", None, "Number of shards; default: one per 1,000 videos.", lower_bound=1
    )
    flags.DEFINE_bool("overwrite", False, "Replace existing output in --output_dir.")
    flags.DEFINE_list("modalities", ["rgb", "audio"], "Any of rgb, audio, flow, in record order.")
    flags.DEFINE_float("fps", 1.0, "Frames sampled per second (YouTube-8M: 1).")
    flags.DEFINE_integer("max_frames", 300, "At most this many frames (and audio features) per video.")
    flags.DEFINE_integer(
        "num_frames", None, "Instead of --fps: this many frames at equal intervals over the whole video."
    )
    flags.DEFINE_string(
        "rgb_model",
        "yt8m",
        "'yt8m' (the exact YouTube-8M features, files in --yt8m_model_dir), a keras.applications backbone "
        "(inception_v3, inception_resnet_v2, resnet152, efficientnet_v2_s, ...) or a .keras model path.",
    )
    flags.DEFINE_string(
        "rgb_weights", "imagenet", "'imagenet', 'none' (random: tests only) or a weights file."
    )
    flags.DEFINE_string(
        "yt8m_model_dir", "~/yt8m", "classify_image_graph_def.pb, mean.npy, eigenvals.npy, eigenvecs.npy."
    )
    flags.DEFINE_string("audio_model", "vggish", "'vggish' or a .keras model over 96 x 64 log-mel patches.")
    flags.DEFINE_string(
        "audio_weights",
        "~/vggish/vggish_model.ckpt",
        "VGGish: the released vggish_model.ckpt, or 'none' (random: tests only).",
    )
    flags.DEFINE_string(
        "vggish_pca", None, "The released vggish_pca_params.npz; default: beside --audio_weights."
    )
    flags.DEFINE_string(
        "flow_model",
        "inception_v3",
        "A keras.applications backbone (on x, y, magnitude images) or a .keras model.",
    )
    flags.DEFINE_string(
        "flow_weights", "imagenet", "'imagenet', 'none' (random: tests only) or a weights file."
    )
    flags.DEFINE_integer(
        "pca_dims",
        None,
        "Fit a PCA with whitening on a sample of the backbone features and store this many quantized values "
        "per frame, as YouTube-8M does (backbones and .keras models only).",
        lower_bound=1,
    )
    flags.DEFINE_integer("batch_size", 64, "Frames (or audio patches) per inference batch.", lower_bound=1)
    flags.DEFINE_integer("seed", 0, "Seed of random initializations (--*_weights=none).")
    flags.DEFINE_integer(
        "num_workers",
        None,
        "Worker processes of the local engine (Beam's FnApiRunner, the default); default: the CPU count.",
        lower_bound=1,
    )
    flags.DEFINE_integer(
        "videos_per_run",
        None,
        "Extract the videos in runs of at most this many (the local engine holds a run's features in memory; "
        "a finished run is kept when the command is interrupted and run again). Default on the local engine "
        "and on --runner=PortableRunner --job_endpoint=embed: "
        f"as many as hold about {pipeline.RUN_MEMORY_BUDGET_BYTES / 1e9:.0f} GB (from --max_frames or "
        "--num_frames and the models' feature sizes); on other runners all videos in one run.",
        lower_bound=1,
    )
    flags.DEFINE_bool("stats", True, "Write stats.json after the records.")
    flags.mark_flags_as_required(["output_dir"])


def _split_labels(text: str, where: str) -> tuple[int, ...]:
    parts = [part for part in text.replace(";", " ").split() if part]
    try:
        labels = tuple(sorted({int(part) for part in parts}))
    except ValueError:
        raise DataError(
            f"{where}: labels must be integers separated by spaces or ';', got {text!r}."
        ) from None
    if any(label < 0 for label in labels):
        raise DataError(f"{where}: negative label in {text!r}.")
    return labels


def read_labels_csv(path: str) -> list[pipeline.VideoTask]:
    """Reads `path,labels[,id]` rows (header optional; an `id` column needs the header).

    Raises:
        MissingDataError: the CSV does not exist. DataError: a malformed row, naming its line.
    """
    if not tf.io.gfile.exists(path):
        raise MissingDataError(f"--labels_csv={path} does not exist.")
    with tf.io.gfile.GFile(path, "r") as handle:
        rows = list(csv.reader(handle))
    base = os.path.dirname(path)
    columns = {"path": 0, "labels": 1}
    tasks = []
    for line, row in enumerate(rows, start=1):
        if not row or not "".join(row).strip():
            continue
        cells = [cell.strip() for cell in row]
        if line == 1 and "path" in [cell.lower() for cell in cells]:
            lowered = [cell.lower() for cell in cells]
            unknown = sorted(set(lowered) - {"path", "labels", "id"})
            if unknown or "labels" not in lowered:
                raise DataError(f"{path}:1: header must name path, labels and optionally id, got {row!r}.")
            columns = {name: lowered.index(name) for name in lowered}
            continue
        if len(cells) != len(columns):
            raise DataError(
                f"{path}:{line}: expected {len(columns)} columns ({','.join(columns)}), got {row!r}."
            )
        video_path = cells[columns["path"]]
        if not video_path:
            raise DataError(f"{path}:{line}: empty path.")
        if "://" not in video_path and not os.path.isabs(video_path):
            video_path = os.path.join(base, video_path)
        video_id = cells[columns["id"]] if "id" in columns else _stem(video_path)
        if not video_id:
            raise DataError(f"{path}:{line}: empty id.")
        tasks.append(
            pipeline.VideoTask(
                video_id, video_path, _split_labels(cells[columns["labels"]], f"{path}:{line}")
            )
        )
    if not tasks:
        raise DataError(f"--labels_csv={path} lists no videos.")
    return tasks


def _stem(path: str) -> str:
    return os.path.splitext(os.path.basename(path))[0]


def list_videos(patterns) -> list[pipeline.VideoTask]:
    """Videos matched by the globs (sorted); a pattern that matches nothing is an error."""
    tasks = []
    for given in patterns:
        pattern = os.path.expanduser(given)
        matched = sorted(tf.io.gfile.glob(pattern))
        matched = [path for path in matched if not tf.io.gfile.isdir(path)]
        if not matched:
            raise MissingDataError(f"--videos: {pattern} matches no file.")
        tasks += [pipeline.VideoTask(_stem(path), path) for path in matched]
    return tasks


def collect_tasks(videos, labels_csv) -> list[pipeline.VideoTask]:
    """The videos to extract: from --labels_csv, --videos or both (then labels are looked up by id)."""
    if not videos and not labels_csv:
        raise UsageError("Name the videos: --videos (globs) and/or --labels_csv (path,labels rows).")
    if labels_csv and not videos:
        tasks = read_labels_csv(labels_csv)
    elif videos and not labels_csv:
        tasks = list_videos(videos)
    else:
        labelled = {task.video_id: task.labels for task in read_labels_csv(labels_csv)}
        tasks = [
            pipeline.VideoTask(task.video_id, task.path, labelled.get(task.video_id, ()))
            for task in list_videos(videos)
        ]
        unlabelled = [task.video_id for task in tasks if task.video_id not in labelled]
        if unlabelled:
            logging.warning(
                "%d video(s) matched by --videos are not in --labels_csv and get no labels, e.g. %s",
                len(unlabelled),
                unlabelled[0],
            )
    seen = {}
    for task in tasks:
        if task.video_id in seen:
            raise DataError(
                f"Video id {task.video_id!r} is given twice ({seen[task.video_id]} and {task.path}); "
                "ids must be unique (give an id column in --labels_csv)."
            )
        seen[task.video_id] = task.path
    return tasks


def _absolute(path: str | None) -> str | None:
    if path is None or "://" in path or path in extractor_lib.WEIGHTS_KEYWORDS:
        return path
    return os.path.abspath(os.path.expanduser(path))


def _model_path(model: str) -> str:
    return _absolute(model) if model.endswith(".keras") else model


def spec_from_flags(config, output_dir: str) -> extractor_lib.ExtractionSpec:
    """The `ExtractionSpec` the flags describe (paths made absolute, so extraction.json is usable later)."""
    modalities = []
    for given in config.modalities:
        name = given.strip()
        if name == "rgb":
            model = _model_path(config.rgb_model)
            if model == "yt8m" and config.rgb_weights != "imagenet":
                raise UsageError(
                    "--rgb_weights: the yt8m extractor's weights are the Inception graph in "
                    "--yt8m_model_dir; "
                    "leave --rgb_weights unset."
                )
            modalities.append(
                extractor_lib.ModalitySpec(
                    "rgb",
                    model,
                    weights=_absolute(config.rgb_weights),
                    seed=config.seed,
                    model_dir=_absolute(config.yt8m_model_dir) if model == "yt8m" else None,
                    pca_dims=config.pca_dims if model != "yt8m" else None,
                    pca_file=_pca_file(output_dir, "rgb") if config.pca_dims and model != "yt8m" else None,
                )
            )
        elif name == "audio":
            model = _model_path(config.audio_model)
            weights = _absolute(config.audio_weights)
            pca_file = None
            if model == "vggish" and weights not in extractor_lib.WEIGHTS_KEYWORDS:
                pca_file = _absolute(config.vggish_pca) or os.path.join(
                    os.path.dirname(weights), "vggish_pca_params.npz"
                )
            elif model == "vggish" and config.vggish_pca:
                pca_file = _absolute(config.vggish_pca)
            modalities.append(
                extractor_lib.ModalitySpec(
                    "audio", model, weights=weights, seed=config.seed, pca_file=pca_file
                )
            )
        elif name == "flow":
            model = _model_path(config.flow_model)
            modalities.append(
                extractor_lib.ModalitySpec(
                    "flow",
                    model,
                    weights=_absolute(config.flow_weights),
                    seed=config.seed,
                    pca_dims=config.pca_dims,
                    pca_file=_pca_file(output_dir, "flow") if config.pca_dims else None,
                )
            )
        else:
            raise UsageError(f"--modalities: unknown modality {name!r}; choose from rgb, audio, flow.")
    return extractor_lib.ExtractionSpec(
        modalities=tuple(modalities),
        fps=config.fps,
        max_frames=config.max_frames,
        num_frames=config.num_frames,
        batch_size=config.batch_size,
    )


def _pca_file(output_dir: str, name: str) -> str:
    return f"{output_dir.rstrip('/')}/{extractor_lib.PCA_FILE_TEMPLATE.format(modality=name)}"


def existing_outputs(output_dir: str, prefix: str) -> list[str]:
    """Files of an earlier extraction that this one would replace."""
    if not tf.io.gfile.isdir(output_dir):
        return []
    found = sorted(tf.io.gfile.glob(f"{output_dir.rstrip('/')}/{prefix}-*-of-*.tfrecord"))
    for name in (extractor_lib.EXTRACTION_FILE, pipeline.ERRORS_FILE, "stats.json"):
        path = f"{output_dir.rstrip('/')}/{name}"
        if tf.io.gfile.exists(path):
            found.append(path)
    found += sorted(tf.io.gfile.glob(f"{output_dir.rstrip('/')}/pca_*.npz"))
    return found


def main(argv) -> None:
    beam_args = argv[1:]
    config = flags.FLAGS
    output_dir = _absolute(config.output_dir)
    tasks = collect_tasks(config.videos, config.labels_csv)
    spec = spec_from_flags(config, output_dir)
    existing = existing_outputs(output_dir, config.prefix)
    resuming = pipeline.unfinished_extraction(output_dir) and not config.overwrite
    if existing and not config.overwrite and not resuming:
        raise FileExistsError(
            f"{existing[0]} already exists ({len(existing)} file(s) of an earlier extraction in "
            f"{output_dir}); "
            "pass --overwrite to replace them, or choose another --output_dir."
        )
    for modality in spec.modalities:
        if (
            modality.weights == "none"
            and modality.model not in ("yt8m",)
            and not modality.model.endswith(".keras")
        ):
            logging.warning(
                "RANDOM WEIGHTS: --%s_weights=none initializes %s at random (seed %d). These features are "
                "for tests only; no model trained on real features can use them.",
                modality.name,
                modality.model,
                modality.seed,
            )
    extractor = extractor_lib.Extractor(spec)
    start = time.monotonic()
    feature_spec = extractor.feature_spec()  # builds the models: a missing file fails here, before any work
    logging.info(
        "Extracting %s from %d video(s) into %s (models ready in %.1f s)",
        feature_spec,
        len(tasks),
        output_dir,
        time.monotonic() - start,
    )
    if resuming:
        logging.info("Finishing the interrupted extraction in %s (its finished runs are kept)", output_dir)
    else:
        for path in existing:
            tf.io.gfile.remove(path)
        progress = f"{output_dir.rstrip('/')}/{pipeline.PROGRESS_DIR}"
        if tf.io.gfile.exists(progress):  # --overwrite: an interrupted extraction starts over
            tf.io.gfile.rmtree(progress)
    tf.io.gfile.makedirs(output_dir)
    num_shards = config.num_shards or max(1, -(-len(tasks) // 1000))
    num_shards = min(num_shards, len(tasks))
    videos_per_run = config.videos_per_run
    if videos_per_run is None and pipeline.runs_locally(beam_args):
        dims = {name: extractor.embedder(name).output_dim for name in spec.names}
        videos_per_run = pipeline.default_videos_per_run(spec, dims)
    result = pipeline.run(
        spec,
        tasks,
        output_dir=output_dir,
        prefix=config.prefix,
        num_shards=num_shards,
        beam_args=beam_args,
        num_workers=config.num_workers,
        verbose=cli.verbose_requested(sys.argv),
        videos_per_run=videos_per_run,
    )
    elapsed = time.monotonic() - start
    extractor_lib.write_description(
        extractor.describe(), f"{output_dir.rstrip('/')}/{extractor_lib.EXTRACTION_FILE}"
    )
    errors_path = f"{output_dir.rstrip('/')}/{pipeline.ERRORS_FILE}"
    if result.videos_written == 0:
        raise DataError(f"No video could be used; {errors_path} says why for each.")
    stats_path = f"{output_dir.rstrip('/')}/stats.json"
    pattern = f"{output_dir.rstrip('/')}/{config.prefix}-*-of-*.tfrecord"
    num_classes = None
    if config.stats:
        from ac_keras.data import stats as data_stats

        stats = data_stats.compute_stats(pattern, feature_spec)
        data_stats.write_stats(stats, stats_path)
        num_classes = stats["num_classes"]
    print(
        f"Extracted {result.videos_written} of {len(tasks)} video(s) in {elapsed:.1f} s "
        f"({', '.join(f'{n}: {c} features' for n, c in result.features.items())}) into "
        f"{len(result.shards)} shard(s) in {output_dir}."
    )
    if result.videos_failed:
        print(f"{result.videos_failed} video(s) could not be used: see {errors_path}.")
    if any(modality.weights == "none" for modality in spec.modalities):
        print("WARNING: random weights (--*_weights=none): these features are for tests only.")
    print(f"\nTrain with --features={feature_spec}, e.g.:")
    stats_flag = f" --stats={stats_path}" if config.stats else ""
    classes_flag = f" --num_classes={num_classes}" if num_classes else " --num_classes=<classes>"
    print(
        f"  python -m ac_keras.train --train_data='{pattern}' --features={feature_spec}"
        f"{stats_flag}{classes_flag} --model_dir=runs/my_model"
    )
    if result.shards:
        print(f"Inspect a record: python -m tfrecords.inspect {result.shards[0]} --features={feature_spec}")
    sys.stdout.flush()


if __name__ == "__main__":
    run_command(main, define_flags)
