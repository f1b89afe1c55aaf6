"""Guards that keep the package's structure: no import cycle, hub apart from the model, Rich only in the CLI; shell
scripts that run on macOS's bash 3.2."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mammofuse"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imports(path: Path, modules: dict[str, Path], top_level_only: bool) -> set[str]:
    """The package modules ``path`` imports (``if TYPE_CHECKING`` blocks excluded; function bodies unless top_level_only)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            if top_level_only and isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name in modules)
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0 and child.module.startswith("mammofuse"):
                for alias in child.names:
                    sub = f"{child.module}.{alias.name}"
                    found.add(sub if sub in modules else child.module)
            visit(child)

    visit(tree)
    return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def _graph(top_level_only: bool) -> dict[str, set[str]]:
    modules = _modules()
    # A package's own __init__ importing its submodules is how packages are built, not a cycle.
    return {name: {m for m in _imports(path, modules, top_level_only) if not (path.name == "__init__.py" and m.startswith(name + "."))}
            for name, path in modules.items()}


def test_no_import_cycle_at_module_level() -> None:
    assert _cycles(_graph(top_level_only=True)) == []


def test_the_hub_never_imports_the_model() -> None:
    """Not even inside a function: model/io.py imports the hub, so the other direction would be a cycle."""
    graph = _graph(top_level_only=False)
    assert not {m for m in graph["mammofuse.hub"] if m.startswith("mammofuse.model")}


def test_rich_is_imported_only_by_the_cli() -> None:
    users = [name for name, path in _modules().items()
             if not name.startswith("mammofuse.cli") and any(
                 (isinstance(n, ast.Import) and any(a.name.split(".")[0] == "rich" for a in n.names))
                 or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "rich")
                 for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))))]
    assert users == []


def test_the_front_door_exports() -> None:
    import mammofuse

    for name in ("MammoFuse", "predict", "explain", "evaluate", "load_dataset", "Prediction", "Explanation", "Metrics", "Fusion"):
        assert getattr(mammofuse, name) is not None, name
    import mammofuse.api
    import mammofuse.cli  # noqa: F401  (imports the explanation methods' package)
    import mammofuse.explainers  # noqa: F401

    assert mammofuse.explain is mammofuse.api.explain and mammofuse.predict is mammofuse.api.predict


def test_shell_scripts_expand_an_array_that_may_be_empty_only_guarded() -> None:
    """``"${a[@]}"`` of an empty array aborts a ``set -u`` script on bash before 4.4 (macOS's /bin/bash is 3.2):
    examples/score_folder.sh did without FINDINGS.csv. Such an array is expanded as ``${a[@]+"${a[@]}"}``."""
    scripts = [p for folder in ("examples", "benchmarks") for p in sorted((PACKAGE.parent / folder).glob("*.sh"))]
    assert scripts
    for script in scripts:
        text = script.read_text(encoding="utf-8")
        for name in re.findall(r"\b(\w+)=\(\)", text):  # an array that starts empty
            bare = text.replace(f'${{{name}[@]+"${{{name}[@]}}"}}', "")
            assert f'"${{{name}[@]}}"' not in bare, f"{script.name}: guard the expansion of {name}"
