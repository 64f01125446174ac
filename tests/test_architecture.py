"""docs/architecture.md is the map of the code, and the code keeps to it.

The page's module table lists the layers top to bottom; every module of `ac_keras` and `tfrecords` is on
it, in one row, and every import (lazy ones inside functions included) goes to a module of the same layer
or of a layer below. A page that puts a module in the wrong layer, forgets one, or names one twice fails
here, and so does code that imports upwards or in a circle.
"""

import ast
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "architecture.md"
PACKAGES = ("ac_keras", "tfrecords")


def _modules(package):
    """Dotted names of a package's modules, without private ones (`_x.py`) and `testing/` (test helpers)."""
    for path in sorted((ROOT / package).rglob("*.py")):
        relative = path.relative_to(ROOT)
        if path.name.startswith("_") or "testing" in relative.parts:
            continue
        yield ".".join(relative.with_suffix("").parts)


def layer_table(page_text):
    """[(layer, [path, ...]), ...] of the page's module table, in its order (top layer first).

    A path written with a folder (`ac_keras/train.py`, `ac_keras/layers/`) gives the folder of the bare file
    names after it in the same cell (`evaluate.py`).
    """
    rows = []
    for line in page_text.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not line.startswith("|") or set(cells[0]) <= set("-") or cells[0] == "layer":
            continue
        folder, paths = "", []
        for token in re.findall(r"`([\w./]+)`", cells[1]):
            if "/" in token.rstrip("/"):
                folder = token if token.endswith("/") else token.rsplit("/", 1)[0] + "/"
                paths.append(token)
            elif token.endswith(".py"):
                paths.append(folder + token)
        rows.append((cells[0], paths))
    return rows


def layers_of_modules(page_text):
    """(module -> layer rank (0 = top), [problems]) from the page: modules placed twice or not at all."""
    order, rank_of_path = [], {}
    problems = []
    for layer, paths in layer_table(page_text):
        if layer not in order:
            order.append(layer)
        elif order[-1] != layer:
            problems.append(f"layer {layer!r} appears in two places of the table")
        for path in paths:
            if path in rank_of_path:
                problems.append(f"{path} is in two rows")
            rank_of_path[path] = order.index(layer)
    ranks = {}
    for package in PACKAGES:
        for module in _modules(package):
            path = module.replace(".", "/")
            candidates = [path + ".py", *(path.rsplit("/", depth)[0] + "/" for depth in (1, 2, 3))]
            placed = [rank_of_path[candidate] for candidate in candidates if candidate in rank_of_path]
            if not placed:
                problems.append(f"{path}.py is not on the page")
                continue
            ranks[module] = placed[0]
            if module.endswith("__init__"):
                ranks[module.removesuffix(".__init__")] = placed[0]
    return ranks, problems


def imports_of(path, known):
    """The modules of `known` a file imports (top level or inside functions), as dotted names.

    `from package import module` depends on that module; `from module import name` on the module.
    """
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            submodules = {f"{node.module}.{alias.name}" for alias in node.names} & known
            found.update(submodules or {node.module})
    return found & known


def import_graph(package="ac_keras"):
    """{module: {module of ours it imports}}, a package's `__init__` named by the package."""
    names = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        dotted = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        names[dotted] = path
    return {module: imports_of(path, set(names)) - {module} for module, path in names.items()}


def upward_imports(graph, ranks):
    """["a imports b (layer i above j)"] for each import that goes to a higher layer of the page."""
    found = []
    for module, targets in sorted(graph.items()):
        if module not in ranks:
            continue
        for target in sorted(targets):
            if target in ranks and ranks[target] < ranks[module]:
                found.append(f"{module} imports {target}")
    return found


def cycles(graph):
    """The import circles of `graph` (strongly connected components of more than one module)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(module):
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in graph.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return found


def test_every_module_is_placed_once_in_the_page_layers():
    ranks, problems = layers_of_modules(PAGE.read_text())
    assert not problems, problems
    assert len(ranks) > 50, "the table's modules should be found"


def test_imports_go_down_the_page_layers_and_never_in_a_circle():
    graph = import_graph()
    ranks, _ = layers_of_modules(PAGE.read_text())
    assert not upward_imports(graph, ranks), upward_imports(graph, ranks)
    assert not cycles(graph), cycles(graph)


def test_a_wrong_page_or_an_upward_import_is_caught():
    page = PAGE.read_text()
    ranks, _ = layers_of_modules(page)
    # The schema moved to the top layer: every module that imports it now imports upwards.
    wrong = page.replace("| bottom | `ac_keras/schema.py`, ", "| bottom | ").replace(
        "| command | `ac_keras/classify.py`", "| command | `ac_keras/schema.py`, `classify.py`"
    )
    wrong_ranks, problems = layers_of_modules(wrong)
    assert not problems
    assert "ac_keras.model imports ac_keras.schema" in upward_imports(import_graph(), wrong_ranks)
    # A module left off the page, and one named twice.
    _, problems = layers_of_modules(page.replace("`ac_keras/strategy.py`", "`ac_keras/strategy`"))
    assert "ac_keras/strategy.py is not on the page" in problems
    _, problems = layers_of_modules(page.replace("`ac_keras/evaluation.py`", "`ac_keras/task.py`"))
    assert "ac_keras/task.py is in two rows" in problems
    # The circle task <-> artifacts of an earlier version.
    graph = {**import_graph(), "ac_keras.task": {*import_graph()["ac_keras.task"], "ac_keras.artifacts"}}
    assert ["ac_keras.artifacts", "ac_keras.task"] in cycles(graph)
    order = ["ac_keras.train", "ac_keras.task", "ac_keras.model", "ac_keras.schema"]
    assert [ranks[module] for module in order] == sorted(ranks[module] for module in order)
    assert len({ranks[module] for module in order}) == 4


def test_no_module_level_switches_in_the_library():
    """Speed paths and settings are passed as arguments: no module rebinds a global at run time."""
    offenders = []
    for path in (ROOT / "ac_keras").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Global):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders
