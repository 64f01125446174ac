"""The Bazel BUILD files stay true as the tree changes (docs/bazel.md); checked in plain Python, no Bazel.

The BUILD files are evaluated here the way Bazel evaluates them. They are Starlark, which for what they use
(calls, lists, dicts, comprehensions, string formatting) is also Python, so each one is executed with
stand-ins for the rules that record the targets, and with a glob() that follows Bazel's rules (`*` within one
path segment, `**` across any number of them, no descent into subpackages). Then:
- every .py file under ac_keras/, tfrecords/, tuner/ and tests/ is in the srcs of a py_library, py_binary or
  py_test;
- every tests/**/test_*.py file has its own py_test, which runs it under pytest;
- the tests marked `pytest.mark.slow` are exactly those of the targets tagged "slow" (TEST_OPTIONS in BUILD),
  so `bazel test --test_tag_filters=-slow //...` runs what `pytest -m "not slow"` runs, and `//...` runs
  every test once;
- the Bazel-only smoke test runs every py_binary's --help;
- every module with an `if __name__ == "__main__":` block (a `python -m` command) has a py_binary running it;
- every file that a target names outright exists.
"""

import ast
import os
import pathlib
import re
import shlex

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
CHECKED_DIRS = ("ac_keras", "tfrecords", "tuner", "tests")
BUILD_NAMES = ("BUILD.bazel", "BUILD")
PY_RULES = ("py_library", "py_binary", "py_test")
PYTEST_RUNNER = "//third_party/bazel_offline:pytest_runner.py"
SMOKE_TEST = "//third_party/bazel_offline:entry_points_smoke_test.py"


def _build_file(directory):
    for name in BUILD_NAMES:
        if (directory / name).is_file():
            return directory / name
    return None


def _is_other_repository(directory):
    return (directory / "WORKSPACE").exists() or (directory / "WORKSPACE.bazel").exists()


def _packages():
    """Package name -> BUILD file: the root package and every package under the checked dirs and third_party/.

    Directories with their own WORKSPACE file are other repositories (local_repository), as for Bazel.
    """
    packages = {"": _build_file(ROOT)}
    for top in (*CHECKED_DIRS, "third_party"):
        for dirpath, dirnames, _ in os.walk(ROOT / top):
            directory = pathlib.Path(dirpath)
            dirnames[:] = sorted(
                name
                for name in dirnames
                if name != "__pycache__" and not _is_other_repository(directory / name)
            )
            build = _build_file(directory)
            if build is not None:
                packages[directory.relative_to(ROOT).as_posix()] = build
    return {package: build for package, build in packages.items() if build is not None}


def _glob_regex(pattern):
    """Bazel's glob pattern as a regex over package-relative paths: `*` in one segment, `**` any segments."""
    segments = pattern.split("/")
    regex = ""
    for position, segment in enumerate(segments):
        last = position == len(segments) - 1
        if segment == "**":
            regex += ".+" if last else "(?:[^/]+/)*"
        else:
            regex += "".join("[^/]*" if char == "*" else re.escape(char) for char in segment)
            regex += "" if last else "/"
    return re.compile(regex + r"\Z")


def _glob_files(package, pattern, subpackages):
    """Files under the pattern's literal prefix, relative to the package, not descending into subpackages."""
    prefix = []
    for segment in pattern.split("/")[:-1]:
        if "*" in segment:
            break
        prefix.append(segment)
    base = ROOT / package
    start = base.joinpath(*prefix)
    for depth in range(1, len(prefix) + 1):  # the prefix itself may lie in a subpackage
        if base.joinpath(*prefix[:depth]).relative_to(ROOT).as_posix() in subpackages:
            return []
    files = []
    for dirpath, dirnames, filenames in os.walk(start):
        directory = pathlib.Path(dirpath)
        dirnames[:] = [
            name
            for name in dirnames
            if name != "__pycache__"
            and (directory / name).relative_to(ROOT).as_posix() not in subpackages
            and not _is_other_repository(directory / name)
        ]
        files += [(directory / name).relative_to(base).as_posix() for name in filenames]
    return files


def _evaluate(package, build, subpackages):
    """Runs one BUILD file; returns its targets as dicts of rule kind, package and attributes."""
    targets = []

    def glob(include, exclude=(), exclude_directories=1, allow_empty=True):
        excluded = [_glob_regex(pattern) for pattern in exclude]
        matches = set()
        for pattern in include:
            regex = _glob_regex(pattern)
            matches.update(path for path in _glob_files(package, pattern, subpackages) if regex.match(path))
        return sorted(path for path in matches if not any(regex.match(path) for regex in excluded))

    def rule(kind):
        def record(**attributes):
            targets.append(dict(kind=kind, package=package, **attributes))

        return record

    def exports_files(srcs, **attributes):
        targets.append(dict(kind="exports_files", package=package, srcs=srcs, **attributes))

    def load(*_):
        raise AssertionError(f"{build}: load() is not understood by {__file__}; keep BUILD files load-free")

    namespace = {"glob": glob, "load": load, "exports_files": exports_files, "package": lambda **_: None}
    for kind in (*PY_RULES, "genrule", "filegroup", "alias", "sh_binary", "sh_test", "test_suite"):
        namespace[kind] = rule(kind)
    exec(compile(build.read_text(), str(build), "exec"), namespace)
    return targets


def _file_label(label, package):
    """Workspace-relative path of a source-file label, or None for a label of another repository."""
    if label.startswith("@"):
        return None
    if label.startswith("//"):
        target_package, _, name = label[2:].partition(":")
        return f"{target_package}/{name}" if target_package else name
    name = label[1:] if label.startswith(":") else label
    return f"{package}/{name}" if package else name


@pytest.fixture(scope="module")
def targets():
    packages = _packages()
    found = []
    for package, build in packages.items():
        found += _evaluate(package, build, set(packages))
    return found


def _py_targets(targets, kinds=PY_RULES):
    return [target for target in targets if target["kind"] in kinds]


def _srcs(target):
    return {_file_label(label, target["package"]) for label in target.get("srcs", [])} - {None}


def _python_files():
    files = set()
    for directory in CHECKED_DIRS:
        for path in (ROOT / directory).rglob("*.py"):
            if "__pycache__" not in path.parts:
                files.add(path.relative_to(ROOT).as_posix())
    return files


def _entry_point_modules():
    modules = set()
    for path in _python_files():
        if path.startswith("tests/"):
            continue
        tree = ast.parse((ROOT / path).read_text(), path)
        for node in tree.body:
            if (
                isinstance(node, ast.If)
                and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name)
                and node.test.left.id == "__name__"
                and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in node.test.comparators)
            ):
                modules.add(path[: -len(".py")].replace("/", "."))
    return modules


def _binary_module(binary, targets):
    """The module that a py_binary runs: its main's, or the one its generated launcher hands to runpy."""
    main = binary.get("main") or binary["srcs"][0]
    path = _file_label(main, binary["package"])
    for genrule in _py_targets(targets, ("genrule",)):
        if path in {_file_label(out, genrule["package"]) for out in genrule.get("outs", [])}:
            match = re.search(r"run_module\(\\?[\"']([\w.]+)", genrule["cmd"])
            assert match, f"genrule {genrule['name']} does not run a module with runpy.run_module"
            return match.group(1)
    return path[: -len(".py")].replace("/", ".")


def test_glob_follows_bazel_semantics():
    assert _glob_regex("tests/**/test_*.py").match("tests/test_x.py")
    assert _glob_regex("tests/**/test_*.py").match("tests/a/b/test_x.py")
    assert not _glob_regex("tests/**/test_*.py").match("tests/a/x_test.py")
    assert _glob_regex("ac_keras/**/*.py").match("ac_keras/__init__.py")
    assert not _glob_regex("configs/*.flags").match("configs/sub/x.flags")
    assert not _glob_regex("*.py").match("ac_keras/x.py")


def test_every_python_file_is_in_a_target(targets):
    covered = set().union(*(_srcs(target) for target in _py_targets(targets)))
    missing = sorted(_python_files() - covered)
    assert not missing, (
        f"not in the srcs of any py_library/py_binary/py_test of a BUILD file: {missing}. "
        "Extend the glob() in BUILD that should hold them (docs/bazel.md)."
    )


def test_libraries_exist(targets):
    names = {target["name"] for target in _py_targets(targets, ("py_library",)) if target["package"] == ""}
    assert {"ac_keras", "tfrecords", "tuner"} <= names


def test_every_test_file_has_a_py_test_that_runs_it_under_pytest(targets):
    tests = {}
    for target in _py_targets(targets, ("py_test",)):
        for src in _srcs(target):
            tests.setdefault(src, []).append(target)
    test_files = sorted(path for path in _python_files() if re.search(r"(^|/)test_[^/]*\.py\Z", path))
    assert test_files
    for path in test_files:
        assert path in tests, f"{path} has no py_test (BUILD's glob of tests/**/test_*.py should produce it)"
        for target in tests[path]:
            assert target.get("main") == PYTEST_RUNNER, target["name"]
            assert path in target.get("args", []), f"{target['name']} does not pass {path} to pytest"


def test_every_python_m_command_has_a_py_binary(targets):
    binaries = {
        _binary_module(binary, targets): binary["name"] for binary in _py_targets(targets, ("py_binary",))
    }
    missing = sorted(_entry_point_modules() - set(binaries))
    assert not missing, (
        f'`python -m` modules (with an `if __name__ == "__main__":` block) without a py_binary: {missing}. '
        "Add them to ENTRY_POINTS in BUILD."
    )
    for module, name in binaries.items():
        assert (ROOT / (module.replace(".", "/") + ".py")).is_file(), (
            f"py_binary {name} runs a missing {module}"
        )


def test_named_files_exist(targets):
    generated = {_file_label(out, target["package"]) for target in targets for out in target.get("outs", [])}
    names = {f"{target['package']}/{target['name']}".lstrip("/") for target in targets if "name" in target}
    for target in targets:
        for attribute in ("srcs", "data"):
            for label in target.get(attribute, []):
                path = _file_label(label, target["package"])
                if path is None or path in generated or path in names:
                    continue
                assert (ROOT / path).exists(), (
                    f"{target.get('name', target['kind'])}: {attribute} {label} is missing"
                )


def _slow_marking(source, filename="<test file>"):
    """ "all" (a module-level `pytestmark` with pytest.mark.slow), "some" (other slow marks) or None."""
    tree = ast.parse(source, filename)

    def marks_slow(node):
        return any(
            isinstance(child, ast.Attribute)
            and child.attr == "slow"
            and isinstance(child.value, ast.Attribute)
            and child.value.attr == "mark"
            for child in ast.walk(node)
        )

    for statement in tree.body:
        names = []
        if isinstance(statement, ast.Assign):
            names = [target.id for target in statement.targets if isinstance(target, ast.Name)]
        elif isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
            names = [statement.target.id]
        if "pytestmark" in names and statement.value is not None and marks_slow(statement.value):
            return "all"
    return "some" if marks_slow(tree) else None


def _marker_expression(target):
    """The `-m` expression a py_test passes to pytest (Bazel tokenizes `args` like a shell), or None."""
    tokens = [token for argument in target.get("args", []) for token in shlex.split(argument)]
    return tokens[tokens.index("-m") + 1] if "-m" in tokens else None


def test_slow_marking_is_read_from_the_source():
    assert _slow_marking("import pytest\npytestmark = pytest.mark.slow\n") == "all"
    assert _slow_marking("import pytest\npytestmark = [pytest.mark.slow, pytest.mark.xfail]\n") == "all"
    assert _slow_marking("import pytest\n@pytest.mark.slow\ndef test_a():\n    pass\n") == "some"
    assert _slow_marking("import pytest\nP = [pytest.param(1, marks=pytest.mark.slow)]\n") == "some"
    unmarked = "import pytest\n@pytest.mark.parametrize('slow', [1])\ndef test_a(slow):\n    pass\n"
    assert _slow_marking(unmarked) is None


def test_slow_tags_follow_the_slow_markers(targets):
    expected_by_marking = {
        None: [(None, False)],
        "all": [(None, True)],
        "some": [("not slow", False), ("slow", True)],
    }
    options = {
        None: 'no entry in TEST_OPTIONS (or no "slow" in it)',
        "all": '"slow": "all" in TEST_OPTIONS',
        "some": '"slow": "some" in TEST_OPTIONS',
    }
    runs = {}
    for target in _py_targets(targets, ("py_test",)):
        if target.get("main") != PYTEST_RUNNER:
            continue
        path = target["args"][0]  # the test file the runner runs
        runs.setdefault(path, []).append((_marker_expression(target), "slow" in target.get("tags", [])))
    for path in sorted(runs):
        marking = _slow_marking((ROOT / path).read_text(), path)
        assert sorted(runs[path], key=str) == sorted(expected_by_marking[marking], key=str), (
            f"{path}: {'no' if marking is None else marking} of its tests are marked pytest.mark.slow, "
            f"so BUILD needs {options[marking]}; its py_test targets run (-m, tagged slow): {runs[path]}"
        )


def test_smoke_test_runs_every_binary(targets):
    smoke = [target for target in _py_targets(targets, ("py_test",)) if target.get("main") == SMOKE_TEST]
    assert len(smoke) == 1, "BUILD needs one py_test running the entry points' smoke test"
    binaries = {target["name"] for target in _py_targets(targets, ("py_binary",)) if target["package"] == ""}
    assert {label.lstrip(":") for label in smoke[0].get("data", [])} >= binaries
    checked = {re.match(r"\$\(rootpath :(\w+)\)=\w+\Z", argument) for argument in smoke[0].get("args", [])}
    assert None not in checked, smoke[0]["args"]
    assert {match.group(1) for match in checked} == binaries
