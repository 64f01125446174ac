"""The README's commands and example stay true."""

import contextlib
import io
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def _code_blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", README, flags=re.DOTALL)


def test_usage_example_runs_as_written():
    examples = [block for block in _code_blocks("python") if "AttentionCluster" in block]
    assert len(examples) == 1
    output = io.StringIO()
    with contextlib.redirect_stdout(output):
        exec(compile(examples[0], "README.md", "exec"), {})
    lines = output.getvalue().splitlines()
    assert lines[0].startswith("(2, 32) ")
    assert abs(float(lines[0].split()[-1]) - 1.0) < 1e-5
    assert lines[1] == "(2, 10)"


def test_ci_runs_the_readme_test_command():
    commands = [block.strip() for block in _code_blocks("bash")]
    test_command = next(command for command in commands if "pytest" in command)
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert test_command in ci_lines


def test_ci_runs_each_test_once():
    """CI runs the README's pytest command; Bazel only builds, and runs its smoke test, none of tests/."""
    commands = [
        line.strip()
        for line in (ROOT / ".ci" / "run").read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    assert sum("pytest" in command for command in commands) == 1, commands
    bazel = [command for command in commands if "bazel" in command]
    assert bazel == [".ci/bazel.sh build //...", ".ci/bazel.sh test //:entry_points_smoke_test"], bazel


def test_readme_main_command_installs_requirements():
    setup = next(block.strip() for block in _code_blocks("bash") if "requirements.txt" in block)
    assert "pip install -r requirements.txt" in setup
    module = re.search(r"python -m ([\w.]+)", setup).group(1)
    assert (ROOT / (module.replace(".", "/") + ".py")).exists(), module
