"""Dataset tooling: converters (`convert`), statistics (`stats`), `inspect`, the Flash-MNIST generator.

Each tool is a `python -m tfrecords.<tool>` command with `--help`. The tools import `ac_keras` (its
schema, reader, `ac_keras.data.writer` and `ac_keras.datasets`); `ac_keras` never imports `tfrecords`.
"""

from collections.abc import Callable

from ac_keras.cli import parse_flags


def run_command(main: Callable, define_flags: Callable[[], None]) -> None:
    """Defines a tool's flags and runs it with absl (help exits 0); flags exist only under `__main__`."""
    from absl import app

    define_flags()
    app.run(main, flags_parser=parse_flags)
