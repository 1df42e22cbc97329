"""The layers of DESIGN.md point one way: base <- db <- api <- worker <- cli, dashboard.

Every import in engine/ is checked (module level, under TYPE_CHECKING, and inside
functions), so that a type-level cycle is caught too. The one exception is the lazy
import in `Engine.worker()`, which API.md allows."""

from __future__ import annotations

import ast
from pathlib import Path

ENGINE = Path(__file__).resolve().parent.parent / "engine"

# the layer of each module: the first prefix that matches wins
LAYERS: list[tuple[str, int]] = [
    ("engine.errors", 0),
    ("engine.models", 0),
    ("engine.values", 0),
    ("engine._durations", 0),
    ("engine._jsonb", 0),
    ("engine.db", 1),
    ("engine.api", 2),
    ("engine.wait", 2),
    ("engine.worker", 3),
    ("engine.cli", 4),
    ("engine.dashboard", 4),
    ("engine", 5),  # engine/__init__.py: the public names, re-exported from every layer
]
LAYER_NAMES = ["base", "db", "api", "worker", "cli/dashboard", "package"]
# (importer, imported): edges allowed against the direction, each with its reason
ALLOWED = {
    # API.md: app.worker(...) builds the worker through a lazy import
    ("engine.api.engine", "engine.worker"),
    # the CLI serves the dashboard (`skiplock dashboard`, `skiplock dev`)
    ("engine.cli.main", "engine.dashboard"),
    ("engine.cli.dev", "engine.dashboard"),
}


def _layer(module: str) -> int:
    for prefix, layer in LAYERS:
        if module == prefix or module.startswith(prefix + "."):
            return layer
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _module_name(path: Path) -> tuple[str, bool]:
    parts = list(path.relative_to(ENGINE.parent).with_suffix("").parts)
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _imports(path: Path) -> set[str]:
    """Every engine module `path` imports, as absolute names."""
    return _imports_in(path.read_text(), *_module_name(path))


def _imports_in(source: str, module: str, is_package: bool) -> set[str]:
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "engine")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "engine":
                continue
            # `from . import x` imports the submodule x when there is one
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if _exists(sub) else target)
    return found


def _exists(module: str) -> bool:
    path = ENGINE.parent.joinpath(*module.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def _same_or_under(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def test_every_import_points_down_the_layers() -> None:
    wrong = []
    for path in sorted(ENGINE.rglob("*.py")):
        importer, _ = _module_name(path)
        for imported in sorted(_imports(path)):
            if _layer(imported) <= _layer(importer) or imported == "engine":
                continue
            if any(_same_or_under(importer, a) and _same_or_under(imported, b) for a, b in ALLOWED):
                continue
            wrong.append(
                f"{importer} ({LAYER_NAMES[_layer(importer)]}) imports {imported} "
                f"({LAYER_NAMES[_layer(imported)]})"
            )
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


def test_layers_do_not_reach_sideways_into_each_other() -> None:
    """cli and dashboard share a layer: the dashboard never imports the CLI."""
    for path in sorted((ENGINE / "dashboard").rglob("*.py")):
        assert not any(_same_or_under(m, "engine.cli") for m in _imports(path)), path


def _graph() -> dict[str, set[str]]:
    """Module -> the engine modules it imports, without the ALLOWED edges."""
    graph: dict[str, set[str]] = {}
    for path in sorted(ENGINE.rglob("*.py")):
        importer, _ = _module_name(path)
        graph[importer] = {
            m
            for m in _imports(path)
            if not any(_same_or_under(importer, a) and _same_or_under(m, b) for a, b in ALLOWED)
        }
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in `graph`, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)) is not None:
                return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)) is not None:
            return found
    return None


def test_no_import_cycle_between_engine_modules() -> None:
    """Not even at type level (imports under TYPE_CHECKING count), and not even inside a
    package; `engine/__init__.py` is left out: it re-exports, and nothing imports it."""
    graph = {m: {i for i in deps if i != "engine"} for m, deps in _graph().items() if m != "engine"}
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_checks_see_an_upward_import_and_a_cycle() -> None:
    """The checkers are not blind."""
    found = _imports_in("from ..api.runs import Runs\n", "engine.db.x", False)
    assert found == {"engine.api.runs"}
    assert _layer("engine.api.runs") > _layer("engine.db.x")
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
