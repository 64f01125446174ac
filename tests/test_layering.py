"""The library sits below the tools: no module of `ac_keras` imports `tfrecords` or `tuner`.

Every .py file under ac_keras/ is parsed and each of its imports checked, those inside functions included
(a lazy import is still a dependency).
"""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
FORBIDDEN = ("tfrecords", "tuner")


def forbidden_imports(path, root):
    """Returns "file:line: imports module" for each import of `path` that reaches a forbidden package."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        else:
            continue
        found.extend(
            f"{path.relative_to(root)}:{node.lineno}: imports {module}"
            for module in modules
            if module.split(".")[0] in FORBIDDEN
        )
    return found


def test_ac_keras_never_imports_the_tools():
    paths = sorted((ROOT / "ac_keras").rglob("*.py"))
    assert len(paths) > 20, "the library's modules should be found"
    offending = [entry for path in paths for entry in forbidden_imports(path, ROOT)]
    assert not offending, "ac_keras must not import tfrecords or tuner:\n" + "\n".join(offending)


def test_the_check_sees_every_form_of_import(tmp_path):
    module = tmp_path / "lazy.py"
    module.write_text(
        "import os\nimport tuner.search\n\n\ndef generate():\n"
        "    from tfrecords import flash_mnist\n    from ac_keras import tfrecords_like\n"
    )
    assert forbidden_imports(module, tmp_path) == [
        "lazy.py:2: imports tuner.search",
        "lazy.py:6: imports tfrecords",
    ]
