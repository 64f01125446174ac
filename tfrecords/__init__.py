"""Dataset tooling: converters (`convert`), statistics (`stats`), `inspect`, the Flash-MNIST generator.

Each tool is a `python -m tfrecords.<tool>` command with `--help`. The tools import `ac_keras` (its
schema, reader, `ac_keras.data.writer` and `ac_keras.datasets`); `ac_keras` never imports `tfrecords`.
"""

from collections.abc import Callable

from ac_keras import cli


def run_command(main: Callable, define_flags: Callable[[], None]) -> None:
    """Defines a tool's flags and runs it as every command runs (`ac_keras.cli.run`: help exits 0, usage and
    data errors exit 2 with a short message); flags exist only under `__main__`."""
    define_flags()
    cli.run(main)
