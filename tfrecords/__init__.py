"""Dataset tooling: TFRecord writers (`writer`), converters (`convert`), statistics (`stats`), `inspect`.

Each tool is a `python -m tfrecords.<tool>` command with `--help`. The tools import `ac_keras` (its
schema and reader); `ac_keras` never imports `tfrecords`.
"""

from collections.abc import Callable, Sequence

from absl import app

_HELP_FLAGS = ("-h", "-?", "--help", "--helpshort", "--helpfull", "--helpxml")


def parse_flags(argv: Sequence[str]) -> list[str]:
    """Parses the flags; asking for help exits with status 0 (absl's own help flags exit with 1)."""
    try:
        return app.parse_flags_with_usage(argv)
    except SystemExit as exit_request:
        if exit_request.code == 1 and any(arg in _HELP_FLAGS for arg in argv[1:]):
            raise SystemExit(0) from None
        raise


def run_command(main: Callable, define_flags: Callable[[], None]) -> None:
    """Defines a tool's flags and runs it with absl (help exits 0); flags exist only under `__main__`."""
    define_flags()
    app.run(main, flags_parser=parse_flags)
