"""No import cycle among Tocsin's modules: each module's imports are read with `ast`
and the graph of `tocsin.*` modules must have no cycle.

Every import counts: at module level, under `if TYPE_CHECKING:` (it binds two
modules just as tightly for a reader) and inside a function (deferring an import
to call time hides a cycle from the interpreter, not from the design).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for source in ROOT.glob("*/*/src/tocsin/**/*.py"):
        parts = source.relative_to(ROOT).parts
        package = list(parts[parts.index("src") + 1 :])
        package[-1] = package[-1].removesuffix(".py")
        if package[-1] == "__init__":
            package.pop()
        found[".".join(package)] = source
    return found


def _imports(name: str, source: Path, known: set[str]) -> Iterator[str]:
    tree = ast.parse(source.read_text(), str(source))
    package = name if source.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            # The module itself, or the package whose name it imports from.
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name and target.startswith("tocsin."):
                yield target


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        stack.append(module)
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)) is not None:
                return found
        stack.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)) is not None:
            return found
    return None


def test_the_graph_finds_a_cycle_when_there_is_one() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_tocsin_module_imports_itself_back_through_others() -> None:
    modules = _modules()
    assert "tocsin.gateway.session" in modules
    assert "tocsin.common.keys" in modules
    known = set(modules)
    graph = {name: set(_imports(name, path, known)) for name, path in modules.items()}
    # A package's __init__ importing its own submodules is not a cycle of substance.
    for name, targets in graph.items():
        graph[name] = {t for t in targets if not name.startswith(t + ".")}
    assert _cycle(graph) is None, " -> ".join(_cycle(graph) or [])
