"""docs/architecture.md names every module of the library and every tool, so the map stays true."""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _modules(package):
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT)
        if path.name.startswith("_") or "testing" in relative.parts:
            continue
        yield relative


def test_every_module_is_on_the_architecture_page():
    page = (ROOT / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"[\w/]+\.py|[\w/]+/", page))
    missing = []
    for relative in [*_modules("ac_keras"), *_modules("tfrecords")]:
        text = str(relative)
        parents = {str(parent) + "/" for parent in relative.parents if str(parent) != "."}
        # A module is named by its path, by its file name in a row of its folder, or by its folder.
        in_row = any(
            relative.name in line and (str(relative.parent) in line)
            for line in page.splitlines()
            if line.startswith("|")
        )
        if text not in named and not in_row and not (parents & named - {"ac_keras/", "tfrecords/"}):
            missing.append(text)
    assert not missing, f"docs/architecture.md does not place: {missing}"


def test_no_module_level_switches_in_the_library():
    """Speed paths and settings are passed as arguments: no module rebinds a global at run time."""
    offenders = []
    for path in (ROOT / "ac_keras").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Global):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
