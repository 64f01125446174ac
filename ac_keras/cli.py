"""What every `python -m` command shares: flag parsing, short error messages, a quiet console.

- `--help` exits 0 (absl's own help flags exit 1).
- A usage or data error (a bad flag or flagfile, a missing file, a bad record, a statistics file that does
  not fit, a refused configuration change) ends the command with a short message on stderr and exit status
  2, without a traceback; `--verbose` (or the environment variable `AC_KERAS_VERBOSE=1`) shows the full
  traceback. Any other exception is a bug and keeps its traceback.
- TensorFlow's native log lines (oneDNN and CUDA notices, XLA service lines, rendezvous warnings) are
  dropped from stderr unless `--verbose`; `quiet_console(__name__)` must run before TensorFlow is imported,
  so each command module calls it first.
"""

import atexit
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence

from absl import app, flags

from ac_keras import errors

_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")
USAGE_EXIT_STATUS = 2
VERBOSE_ENV = "AC_KERAS_VERBOSE"

_VERBOSE = flags.DEFINE_bool(
    "verbose", False, f"Show full tracebacks and TensorFlow's own log lines (or set {VERBOSE_ENV}=1)."
)

# A native (C++) log line of TensorFlow, XLA or absl ("I0000 00:00:1795931733.157615  6401 port.cc:153] ...",
# from a C++ source file; absl's Python log lines name .py files and are kept), absl's notice before its
# initialization, and the continuation line of TensorFlow's CPU-feature notice.
_NATIVE_LOG_LINE = re.compile(
    rb"^(?:[IWEF]\d{4} \d\d:\d\d:[\d.]+\s+\d+ [\w./-]+\.(?:cc|h|cpp|c):\d+\] "
    rb"|\d{4}-\d\d-\d\d \d\d:\d\d:[\d.]+: [IWEF] [\w./-]+\.(?:cc|h|cpp|c):\d+\] "
    rb"|WARNING: All log messages before absl::InitializeLog\(\) is called"
    rb"|To enable the following instructions: .* rebuild TensorFlow)"
    # Apache Beam's worker harness notices (tfrecords.extract): the job service's copies of worker log
    # lines, optional cloud clients it did not find, and its start-up remarks.
    rb"|^[IW]\d{4} [\d:. ]+\d+ local_job_service\.py:\d+\] Worker: "
    rb"|^[IW]\d{4} [\d:. ]+\d+ (?:__init__|bigquery)\.py:\d+\] (?:apitools not found|No module named google)"
    rb"|^WARNING:root:apitools not found"
    rb"|^(?:INFO|WARNING):__main__:(?:Logging handler created|No semi_persistent_directory)"
    rb"|^WARNING:apache_beam\.options\.pipeline_options:Discarding unparseable args"
)


def verbose_requested(argv: Sequence[str] = ()) -> bool:
    """Whether `--verbose` is on the command line (before flags are parsed) or in the environment."""
    if os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    return any(arg in ("--verbose", "--verbose=true", "--verbose=1") for arg in argv[1:])


def quiet_console(module_name: str) -> None:
    """In a command's `__main__` without `--verbose`: drop TensorFlow's native log lines from stderr.

    Native code writes to file descriptor 2 directly, so the descriptor is pointed at a pipe whose lines a
    thread copies to the real stderr, all but the native log lines. At exit the descriptor is restored and
    the rest of the pipe is copied. Does nothing when imported as a library (`module_name != "__main__"`).
    """
    if module_name != "__main__" or verbose_requested(sys.argv):
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    try:
        real_stderr = os.dup(2)
        read_end, write_end = os.pipe()
    except OSError:
        return
    sys.stderr.flush()
    os.dup2(write_end, 2)
    os.close(write_end)

    def copy_lines():
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending = b""
            dropping = False  # inside a dropped native line's indented continuation lines
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = []
                for line in lines:
                    dropping = bool(_NATIVE_LOG_LINE.match(line)) or (dropping and line[:1] in (b"\t", b" "))
                    if not dropping:
                        kept.append(line + b"\n")
                if kept:
                    os.write(real_stderr, b"".join(kept))
            if pending and not _NATIVE_LOG_LINE.match(pending):
                os.write(real_stderr, pending)

    thread = threading.Thread(target=copy_lines, name="ac_keras-stderr", daemon=True)
    thread.start()

    def restore():
        sys.stderr.flush()
        os.dup2(real_stderr, 2)  # closes the pipe's last write end: the thread reads to its end
        thread.join(timeout=5)

    atexit.register(restore)


def parse_flags(argv: Sequence[str]) -> list[str]:
    """Parses the flags; help exits 0, a bad flag or flagfile exits 2 with a one-line message."""
    try:
        return flags.FLAGS(argv)
    except flags.Error as error:
        if verbose_requested(argv):
            raise
        message = re.sub(r"^(ERROR:+\s*)+", "", str(error).strip())
        _fail(argv[0], f"{message}\nPass --helpfull to see every flag.")
    except SystemExit as exit_request:
        if exit_request.code == 1 and any(arg in _HELP_FLAGS for arg in argv[1:]):
            raise SystemExit(0) from None
        raise
    return []  # not reached


def user_error_message(error: BaseException) -> str | None:
    """The short message of a usage or data error, or None for an error that is a bug."""
    if isinstance(error, app.UsageError | errors.UserError | FileExistsError | FileNotFoundError):
        return str(error)
    if type(error).__module__.startswith("tensorflow"):
        text = str(error)
        message = errors.assertion_message(text)
        if message is not None:
            return message
        if type(error).__name__ in ("DataLossError", "NotFoundError"):
            return text.strip().splitlines()[0]
    return None


def _program(argv0: str) -> str:
    """The command's name: `ac_keras.train` for `python -m ac_keras.train`, else the script's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return spec.name
    return os.path.basename(argv0 or "") or "ac_keras"


def _fail(argv0: str, message: str) -> None:
    sys.stdout.flush()
    print(f"{_program(argv0)}: error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(USAGE_EXIT_STATUS)


def _guarded(main: Callable) -> Callable:
    def guarded_main(argv):
        try:
            return main(argv)
        except Exception as error:
            message = user_error_message(error)
            if message is None or _VERBOSE.value or verbose_requested():
                raise
            _fail(sys.argv[0], message)

    return guarded_main


def run(main: Callable) -> None:
    """Runs `main` with absl: `--help` exits 0; usage and data errors exit 2 with a short message."""
    app.run(_guarded(main), flags_parser=parse_flags)


def command_from_argv(
    argv: Sequence[str], *, need_train_data: bool = True, max_arguments: int = 0, run_config: bool = True
):
    """`(Config, CommandOptions)` of a command's parsed flags (`ac_keras.flags.command_from_flags`; the
    `Config` is None with `run_config=False`); a bad flag or more than `max_arguments` positional arguments
    is a usage error.

    Only the ac_keras commands and the tuner call this: importing `ac_keras.flags` defines the shared training
    flags, which the `tfrecords` tools (also users of this module) must not get.
    """
    from ac_keras import config as ac_config
    from ac_keras import flags as ac_flags

    if len(argv) > 1 + max_arguments:
        raise app.UsageError(f"Unexpected arguments: {argv[1 + max_arguments :]}")
    if not (_VERBOSE.value or verbose_requested()):
        ac_flags.quiet_tensorflow_logging()
    try:
        return ac_flags.command_from_flags(need_train_data=need_train_data, run_config=run_config)
    except ac_config.ConfigError as error:
        raise app.UsageError(str(error)) from None


def config_from_argv(argv: Sequence[str], *, need_train_data: bool = True):
    """The validated `Config` of a command's parsed flags (`command_from_argv` without the options)."""
    return command_from_argv(argv, need_train_data=need_train_data)[0]
