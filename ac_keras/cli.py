"""What every `python -m` command shares: flag parsing, short error messages, an honest console.

- `--help` exits 0 (absl's own help flags exit 1).
- A usage or data error (a bad flag or flagfile, a missing file, a bad record, a statistics file that does
  not fit, a refused configuration change) ends the command with a short message on stderr and exit status
  2, without a traceback; `--verbose` (or the environment variable `AC_KERAS_VERBOSE=1`) shows the full
  traceback. Any other exception is a bug and keeps its traceback.
- The console (`quiet_console`, called by each command module before TensorFlow is imported): every
  warning, error and fatal line that TensorFlow, XLA, CUDA, Apache Beam or FFmpeg writes reaches stderr,
  except the lines of `HARMLESS_LINES` (each named, with why it is harmless) and native INFO lines; with
  `--verbose` nothing is dropped. A process that dies in native code (a fatal line of TensorFlow or XLA, an
  abort, a crash, the out-of-memory killer) ends with that code's own lines and one line saying what to
  check, and the command's exit status says how it ended.
"""

import atexit
import contextlib
import dataclasses
import os
import re
import select
import signal
import sys
import threading
from collections.abc import Callable, Sequence

from absl import app, flags

from ac_keras import errors

_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")
USAGE_EXIT_STATUS = 2
VERBOSE_ENV = "AC_KERAS_VERBOSE"

_VERBOSE = flags.DEFINE_bool(
    "verbose",
    False,
    f"Show full tracebacks and every log line of TensorFlow and Beam (or set {VERBOSE_ENV}=1).",
)

# A native (C++) log line of TensorFlow, XLA or absl names a C++ source file ("I0000 00:00:1795931733.157615
# 6401 port.cc:153] ..."); absl's Python log lines name .py files.
# Python's own log format at INFO level ("INFO:__main__:Logging handler created."), which Apache Beam's worker
# processes use; INFO, like native INFO lines, is left out.
_PYTHON_INFO = re.compile(rb"^INFO:[\w.]+:")
_NATIVE_INFO = re.compile(
    rb"^(?:I\d{4} [\d:.]+\s+\d+ |\d{4}-\d\d-\d\d [\d:.]+: I )[\w./-]+\.(?:cc|h|cpp|c):\d+\] "
)
_NATIVE_FATAL = re.compile(
    rb"^(?:F\d{4} [\d:.]+\s+\d+ |\d{4}-\d\d-\d\d [\d:.]+: F )[\w./-]+\.(?:cc|h|cpp|c):\d+\] "
)


@dataclasses.dataclass(frozen=True)
class HarmlessLine:
    """A line the console drops (without --verbose): what it is and why it is harmless.

    Attributes:
        name: a short name (tests and docs refer to it).
        pattern: regular expression (bytes) matched at the start of the line.
        why: why the line says nothing a user must know.
        only_without_gpu: drop it only on a machine without an NVIDIA device (`/dev/nvidiactl` absent).
    """

    name: str
    pattern: bytes
    why: str
    only_without_gpu: bool = False


# Every line the console drops besides native INFO lines: a short list, each with why. Anything else that
# TensorFlow, XLA, CUDA, Beam or FFmpeg writes to stderr (warnings, errors, fatal lines) reaches the person.
HARMLESS_LINES = (
    HarmlessLine(
        "absl-before-init",
        rb"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$",
        "absl's notice, at TensorFlow's import, that native logging starts before its initialization; it "
        "says nothing about the run.",
    ),
    HarmlessLine(
        "cpu-instructions",
        rb"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags",
        "the second line of TensorFlow's INFO notice of CPU instructions its build does not use (speed, "
        "not correctness).",
    ),
    HarmlessLine(
        "cuinit-without-gpu",
        rb"^E\d{4} [\d:.]+\s+\d+ cuda_\w+\.cc:\d+\] failed call to cuInit: ",
        "TensorFlow's CUDA build probing for a GPU on a machine that has no NVIDIA device: it then runs "
        "on the CPU, as it must. Shown on a machine with an NVIDIA device (/dev/nvidiactl), where it means "
        "the GPU is not used.",
        only_without_gpu=True,
    ),
    HarmlessLine(
        "end-of-sequence",
        rb"^W\d{4} [\d:.]+\s+\d+ local_rendezvous\.cc:\d+\] Local rendezvous is aborting with status: "
        rb"OUT_OF_RANGE: End of sequence",
        "tf.data's end of an input pass, seen by a function that asked for one more batch: every pass "
        "over the data ends so.",
    ),
    HarmlessLine(
        "beam-semi-persistent-directory",
        rb"^WARNING:__main__:No semi_persistent_directory found: +User registered objects",
        "each Apache Beam worker's note at start-up that it has no directory of registered schemas or "
        "logical types; the extraction registers none.",
    ),
    HarmlessLine(
        "beam-worker-internal-options",
        rb"^WARNING:apache_beam\.options\.pipeline_options:Discarding unparseable args: "
        rb"\[(?:'--(?:pipeline_type_check|direct_runner_use_stacked_bundle)'(?:, )?)+\]$",
        "a local Beam worker discarding the two options its runner sets for itself and the worker does not "
        "know; any other option it discards (a mistyped Beam option) is shown.",
    ),
    HarmlessLine(
        "beam-no-cloud-clients",
        rb"^(?:[IW]\d{4} [\d:. ]+\d+ (?:__init__|bigquery)\.py:\d+\] |WARNING:root:)"
        rb"(?:apitools not found|No module named google)",
        "Apache Beam's note that the optional Google Cloud clients are not installed (needed only for "
        "Dataflow and GCS, which bring them with apache-beam[gcp]).",
    ),
)
_NO_GPU = not os.path.exists("/dev/nvidiactl")

# What a command's console prints when the command died in native code, by how it died.
_DEATH_ADVICE = {
    signal.SIGABRT: "was aborted in native code (SIGABRT)",
    signal.SIGSEGV: "crashed in native code (SIGSEGV)",
    signal.SIGBUS: "crashed in native code (SIGBUS)",
    signal.SIGILL: "crashed in native code (SIGILL: an instruction this CPU lacks?)",
    signal.SIGFPE: "crashed in native code (SIGFPE)",
}
_CHECK = (
    "Check what the lines above name: an environment variable (XLA_FLAGS, TF_*, CUDA_VISIBLE_DEVICES), the "
    "GPU driver and CUDA libraries, free memory; --verbose shows every log line."
)


def dropped_line(line: bytes, *, no_gpu: bool = _NO_GPU) -> HarmlessLine | str | None:
    """Why the console drops `line` (a `HarmlessLine`, "native INFO" or "Python INFO"), or None when it is
    shown."""
    if _NATIVE_INFO.match(line):
        return "native INFO"
    if _PYTHON_INFO.match(line):
        return "Python INFO"
    for harmless in HARMLESS_LINES:
        if (no_gpu or not harmless.only_without_gpu) and re.match(harmless.pattern, line):
            return harmless
    return None


def death_message(program: str, status: int, saw_fatal_line: bool) -> str:
    """The line a command's console prints when the command ended without Python finishing it.

    Args:
        program: the command's name.
        status: the `os.waitpid` status of the command's process.
        saw_fatal_line: whether a native fatal (F) line was written before.
    """
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        if number == signal.SIGKILL:
            return (
                f"{program}: error: the process was killed (SIGKILL), most often by the system's "
                "out-of-memory killer (`dmesg` says): lower --batch_size or --shuffle_buffer_mb, or free "
                "memory."
            )
        how = _DEATH_ADVICE.get(number, f"was ended by signal {signal.Signals(number).name}")
        return f"{program}: error: the process {how}. {_CHECK}"
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else status
    cause = "a fatal error of TensorFlow or XLA (the F line above)" if saw_fatal_line else "native code"
    return f"{program}: error: the process was ended by {cause} with exit status {code}. {_CHECK}"


def verbose_requested(argv: Sequence[str] = ()) -> bool:
    """Whether `--verbose` is on the command line (before flags are parsed) or in the environment."""
    if os.environ.get(VERBOSE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return True
    return any(arg in ("--verbose", "--verbose=true", "--verbose=1") for arg in argv[1:])


class _LineFilter:
    """Copies the lines of a pipe to a file descriptor, all but the dropped ones (`dropped_line`)."""

    def __init__(self, output_fd: int, verbose: bool):
        self.output_fd = output_fd
        self.verbose = verbose
        self.pending = b""
        self.saw_fatal_line = False
        self._continuing = False  # inside a dropped line's indented continuation lines

    def feed(self, chunk: bytes) -> None:
        self.pending += chunk
        *lines, self.pending = self.pending.split(b"\n")
        self._write(lines)

    def close(self) -> None:
        if self.pending:
            self._write([self.pending], newline=False)
            self.pending = b""

    def _write(self, lines, newline=True) -> None:
        kept = []
        for line in lines:
            if _NATIVE_FATAL.match(line):
                self.saw_fatal_line = True
            drop = not self.verbose and (
                dropped_line(line) is not None or (self._continuing and line[:1] in (b"\t", b" "))
            )
            self._continuing = drop
            if not drop:
                kept.append(line + (b"\n" if newline else b""))
        if kept:
            _write_all(self.output_fd, b"".join(kept))


def _write_all(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:  # the reader of stderr went away: nothing left to tell
        pass


def quiet_console(module_name: str) -> None:
    """In a command's `__main__`: the console of `HARMLESS_LINES`, and a word when native code kills it.

    The process forks before TensorFlow is imported: the command runs on in the child, whose stderr (file
    descriptor 2, which native code writes to directly, and every process it starts) is a pipe; the parent
    copies the pipe's lines to the real stderr (all but the dropped ones), waits for the command and exits
    with its status. When the command ended without Python finishing it (a fatal line of TensorFlow or
    XLA, an abort, a crash, SIGKILL), the parent adds one line saying so and what to check. The child dies
    with the parent (a SIGKILL of the command kills both); SIGTERM and SIGHUP sent to the parent are passed
    on. Without `os.fork` the lines are filtered by a thread instead, and nothing is added at a native death.
    Does nothing when imported as a library (`module_name != "__main__"`).
    """
    if module_name != "__main__":
        return
    verbose = verbose_requested(sys.argv)
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")  # native INFO lines, where TensorFlow honours it
    try:
        read_end, write_end = os.pipe()
        status_read, status_write = os.pipe()
    except OSError:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    if not hasattr(os, "fork"):
        _filter_in_a_thread(read_end, write_end, verbose)
        return
    parent = os.getpid()
    child = os.fork()
    if child == 0:
        os.close(read_end)
        os.close(status_read)
        os.dup2(write_end, 2)
        os.close(write_end)
        _die_with_parent(parent)
        # Python's own exit (normal, sys.exit, an exception's traceback) says so; native code's exit does not.
        command = os.getpid()
        atexit.register(lambda: os.getpid() == command and _write_all(status_write, b"python exit"))
        return
    os.close(write_end)
    os.close(status_write)
    _supervise(child, read_end, status_read, verbose)


def _die_with_parent(parent: int) -> None:
    """Makes the command's process die when its console process does (as one process would)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        if libc.prctl(pr_set_pdeathsig, signal.SIGKILL) == 0:
            if os.getppid() != parent:  # the parent died before the request took effect
                os.kill(os.getpid(), signal.SIGKILL)
            return
    except (OSError, AttributeError):
        pass

    def watch():  # where prctl does not exist (macOS)
        while os.getppid() == parent:
            threading.Event().wait(0.2)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="ac_keras-parent-watch", daemon=True).start()


def _supervise(child: int, read_end: int, status_read: int, verbose: bool) -> None:
    """The console process: copies the command's stderr, waits for it, exits with its status."""
    forwarded = []

    def forward(number, _frame):
        forwarded.append(number)
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, number)

    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, forward)
    # Ctrl-C reaches the command from the terminal directly (one process group); here it would only cut
    # the copying short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lines = _LineFilter(2, verbose)
    status = None
    open_ends = {read_end, status_read}
    said = b""
    while open_ends:
        try:
            ready, _, _ = select.select(sorted(open_ends), [], [], 0.2)
        except InterruptedError:
            continue
        for fd in ready:
            chunk = os.read(fd, 65536)
            if fd == status_read:
                said += chunk
            else:
                lines.feed(chunk)
            if not chunk:
                open_ends.discard(fd)
                os.close(fd)
        if status is None:
            pid, waited = os.waitpid(child, os.WNOHANG)
            if pid:
                status = waited
                # Processes the command started may hold its stderr open: what they wrote is copied, then
                # the console ends with the command.
                for fd in sorted(open_ends):
                    if fd == read_end:
                        _drain(fd, lines)
                    else:
                        said += _read_available(fd)
                    os.close(fd)
                open_ends.clear()
    lines.close()
    if status is None:
        _, status = os.waitpid(child, 0)
    if not said and not forwarded:
        _write_all(2, (death_message(_program(sys.argv[0]), status, lines.saw_fatal_line) + "\n").encode())
    if os.WIFSIGNALED(status):  # end as the command ended, so the caller sees the same status
        number = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):
            import resource

            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # the console's own core is of no use
        with contextlib.suppress(OSError, ValueError):
            if number != signal.SIGKILL:
                signal.signal(number, signal.SIG_DFL)
                signal.pthread_sigmask(signal.SIG_UNBLOCK, [number])
            os.kill(os.getpid(), number)
        os._exit(128 + number)
    os._exit(os.WEXITSTATUS(status))


def _drain(fd: int, lines: _LineFilter) -> None:
    lines.feed(_read_available(fd))


def _read_available(fd: int) -> bytes:
    """What a pipe holds now (or within 50 ms)."""
    data = b""
    while select.select([fd], [], [], 0.05)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return data


def _filter_in_a_thread(read_end: int, write_end: int, verbose: bool) -> None:
    """Without `os.fork`: fd 2 becomes the pipe, a thread copies its lines, the rest is copied at exit."""
    real_stderr = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    lines = _LineFilter(real_stderr, verbose)

    def copy_lines():
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            while chunk := pipe.read(65536):
                lines.feed(chunk)
        lines.close()

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
