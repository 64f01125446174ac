"""Main of every py_test in //:BUILD: runs its test file under pytest, as `python -m pytest tests/...` would.

Running pytest (instead of the test file as a script) keeps what the plain pytest run has: tests/conftest.py
(the two logical CPU devices) and the other conftest.py files, fixtures, parametrization, and pyproject.toml's
[tool.pytest.ini_options] (strict markers, warnings from our packages as errors). On top of that it follows
Bazel's test protocol: the JUnit XML goes to $XML_OUTPUT_FILE, temporary directories to $TEST_TMPDIR, pytest's
cache is off (the runfiles tree is not a place to write), HOME is a fresh directory under $TEST_TMPDIR, and
`shard_count` splits the collected tests between shards ($TEST_TOTAL_SHARDS / $TEST_SHARD_INDEX).

Usage (what //:BUILD passes as `args`): pytest_runner.py tests/path/test_x.py [more pytest arguments]
"""

import os
import sys

import pytest


class _Shard:
    """Keeps every TEST_TOTAL_SHARDS-th collected test, starting at TEST_SHARD_INDEX."""

    def __init__(self, index, total):
        self.index = index
        self.total = total

    @pytest.hookimpl(trylast=True)
    def pytest_collection_modifyitems(self, config, items):
        kept = [item for position, item in enumerate(items) if position % self.total == self.index]
        deselected = [item for position, item in enumerate(items) if position % self.total != self.index]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = kept


def main(argv):
    # Bazel runs the test from the runfiles copy of the workspace; the test file paths are relative to it.
    workspace = os.environ.get("TEST_SRCDIR") and os.path.join(
        os.environ["TEST_SRCDIR"], os.environ.get("TEST_WORKSPACE", "")
    )
    if workspace and os.path.isdir(workspace):
        os.chdir(workspace)
    args = ["-p", "no:cacheprovider", f"--rootdir={os.getcwd()}"]
    if os.environ.get("XML_OUTPUT_FILE"):
        args.append(f"--junitxml={os.environ['XML_OUTPUT_FILE']}")
    tmp = os.environ.get("TEST_TMPDIR")
    if tmp:
        args.append(f"--basetemp={os.path.join(tmp, 'pytest')}")
        # The sandbox mounts the real home directory read-only: give Keras, matplotlib and the tests'
        # subprocesses a writable one (set before anything imports them; subprocesses inherit it).
        home = os.path.join(tmp, "home")
        os.makedirs(home, exist_ok=True)
        os.environ["HOME"] = home
        os.environ.setdefault("MPLCONFIGDIR", os.path.join(home, ".config", "matplotlib"))
    plugins = []
    total = int(os.environ.get("TEST_TOTAL_SHARDS", "1"))
    if total > 1:
        plugins.append(_Shard(int(os.environ["TEST_SHARD_INDEX"]), total))
        if os.environ.get("TEST_SHARD_STATUS_FILE"):  # tells Bazel that this runner understands sharding
            with open(os.environ["TEST_SHARD_STATUS_FILE"], "w"):
                pass
    status = pytest.main(args + argv, plugins=plugins)
    if status == pytest.ExitCode.NO_TESTS_COLLECTED and total > 1:
        return 0  # a shard of a file with fewer tests than shards
    return int(status)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
