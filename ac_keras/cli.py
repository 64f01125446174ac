"""What every `python -m` command shares: absl's runner with `--help` exiting 0 (absl's own exits 1)."""

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


def run(main: Callable) -> None:
    """Runs `main` with absl; `--help` prints the flags and exits 0."""
    app.run(main, flags_parser=parse_flags)


def config_from_argv(argv: Sequence[str], *, need_train_data: bool = True):
    """The validated `Config` of a command's parsed flags; a bad flag or stray argument is a usage error.

    Only the ac_keras commands call this: importing `ac_keras.flags` defines the shared training flags, which
    the `tfrecords` tools (also users of this module) must not get.
    """
    from ac_keras import config as ac_config
    from ac_keras import flags as ac_flags

    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    ac_flags.quiet_tensorflow_logging()
    try:
        return ac_flags.config_from_flags(need_train_data=need_train_data)
    except ac_config.ConfigError as error:
        raise app.UsageError(str(error)) from None
