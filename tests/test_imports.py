"""Imports flow one way: resources and the task registry → pipeline (no torch) → data, model → analyzer, eval,
pictures → training, the REST service and the Ray engine → command line. No module imports one of a later layer,
and no two modules import each other in a circle, counting imports inside functions too (a lazy import hides a
cycle from Python, not from this test)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "qface"

# A module may import modules of its own layer or an earlier one. `qface` itself (the public names, loaded
# lazily on first use) sits above everything.
LAYERS = {
    "qface.resources": 0,
    "qface.tasks": 0,
    "qface.metrics": 0,
    "qface.pipeline": 1,
    "qface.data": 2,
    "qface.model": 2,
    "qface.teacher": 3,
    "qface.analyzer": 3,
    "qface.onnx": 3,
    "qface.eval": 3,
    "qface.viz": 3,
    "qface.train": 4,
    "qface.serve": 4,
    "qface.scale": 4,
    "qface.cli": 5,
    "qface": 6,
}

LIGHT_MODULES = [
    "qface",
    "qface.cli",
    "qface.tasks",
    "qface.resources",
    "qface.pipeline.io",
    "qface.pipeline.detect",
    "qface.pipeline.align",
    "qface.pipeline.results",
    "qface.pipeline.output",
    "qface.pipeline.files",
    "qface.train.config",
    "qface.data.registry",
    "qface.serve.settings",
]
HEAVY = ("torch", "cv2", "yaml", "scipy", "mediapipe", "pandas")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def qface_imports(path: Path, modules: set[str]) -> set[str]:
    """Every qface module `path` imports, wherever the import statement is, except under `if TYPE_CHECKING:`.
    `from a import b` imports module a.b where that is one, else module a."""
    tree = ast.parse(path.read_text())
    typing_only = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and ast.unparse(block.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        for statement in block.body
        for node in ast.walk(statement)
    }
    found = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names
            }
    return found & modules


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: qface_imports(path, set(modules)) - {name} for name, path in modules.items()}


def layer(module: str) -> int:
    """The rank of the longest prefix of `module` in LAYERS."""
    prefix = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[prefix]


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same graph between sub-packages (qface.train, qface.eval, …): they must not import each other either."""
    top = {module: ".".join(module.split(".")[:2]) for module in graph}
    packages: dict[str, set[str]] = {package: set() for package in top.values()}
    for module, targets in graph.items():
        packages[top[module]] |= {top[target] for target in targets if top[target] != top[module]}
    return packages


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_the_import_graph_has_no_cycles_between_modules_or_packages():
    graph = import_graph()
    assert cycles(graph) == []
    assert cycles({k: v - {"qface"} for k, v in package_graph(graph).items()}) == []


def test_the_checker_sees_a_cycle_hidden_in_a_function():
    assert cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_no_module_imports_a_later_layer():
    backward = [
        f"{module} (layer {layer(module)}) imports {target} (layer {layer(target)})"
        for module, targets in import_graph().items()
        if module != "qface"
        for target in targets
        if layer(target) > layer(module)
    ]
    assert backward == []


def test_the_graph_is_read_from_the_real_package():
    graph = import_graph()
    assert "qface.model.qface" in graph["qface.analyzer"] and "qface.tasks" in graph["qface.pipeline.output"]


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_light_modules_import_without_torch_or_optional_packages(module):
    code = f"import sys, {module}; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_help_does_not_import_torch():
    code = (
        "import sys\nfrom qface.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=PACKAGE.parent)
    assert "usage: qface" in done.stdout and done.stderr.strip() == "False"
