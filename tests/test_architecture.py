"""The layering of ARCHITECTURE.md, enforced: an AST scan of every import in the installed
package (lazy imports inside functions included) against the layer table, and no import cycle
between the package's parts. Weight-free and fast."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]

# bottom to top: a module may import from its own layer and the layers below it, never above
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("base", ("lbnet_deploy._version", "lbnet_deploy.errors", "lbnet_deploy.descriptor",
              "lbnet_deploy.metadata", "lbnet_deploy.paper", "lbnet_deploy.quality")),
    ("model", ("lbnet_deploy.model", "lbnet_deploy.weights")),
    ("runtime", ("lbnet_deploy.runtime",)),
    ("producers", ("lbnet_deploy.export", "lbnet_deploy.calibration")),
    ("resolution", ("lbnet_deploy.resolve", "lbnet_deploy.loaders")),
    ("services", ("lbnet_deploy.evaluate", "lbnet_deploy.parity", "lbnet_deploy.benchmarks")),
    ("api", ("lbnet_deploy", "lbnet_deploy.api")),  # the package root: the Python API
    ("commands", ("lbnet_deploy.cli", "lbnet_deploy.commands")),
]  # fmt: skip


def unit(module: str) -> tuple[int, str]:
    """(layer index, the part of the package) of a module: the longest matching prefix."""
    best: tuple[int, str] | None = None
    for index, (_, parts) in enumerate(LAYERS):
        for part in parts:
            inside = part != "lbnet_deploy" and module.startswith(part + ".")
            longer = best is None or len(part) > len(best[1])
            if (module == part or inside) and longer:
                best = (index, part)
    assert best is not None, f"{module} is in no layer of ARCHITECTURE.md"
    return best


def package_files() -> Iterator[tuple[str, Path]]:
    """(module name, file) for every module the wheel installs, from pyproject's own mapping."""
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    dirs = config.get("package-dir", {})
    for package in config["packages"]:
        folder = REPO / dirs.get(package, package.replace(".", "/"))
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            yield name, path


def imports(module: str, path: Path) -> Iterator[tuple[str, int]]:
    """Every lbnet_deploy module `path` imports, anywhere in the file, with its line."""
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield target, node.lineno
            for alias in node.names:  # `from lbnet_deploy import runtime` names a package
                yield f"{target}.{alias.name}", node.lineno


def edges() -> list[tuple[str, str, str]]:
    """(importing module, imported module, where) for imports of our own modules."""
    known = dict(package_files())
    found = []
    for module, path in known.items():
        for target, line in imports(module, path):
            if not target.startswith("lbnet_deploy"):
                continue
            while target not in known and "." in target:  # `from pkg import name`: the module
                target = target.rpartition(".")[0]
            if target in known:
                found.append((module, target, f"{path.relative_to(REPO)}:{line}"))
    return found


def test_every_installed_module_has_a_layer() -> None:
    modules = [m for m, _ in package_files()]
    assert len(modules) > 40
    for module in modules:
        unit(module)


def test_imports_point_down_only() -> None:
    wrong = []
    for source, target, where in edges():
        low, high = unit(target)[0], unit(source)[0]
        if low > high:
            wrong.append(
                f"{where}: {source} ({LAYERS[high][0]}) imports {target} ({LAYERS[low][0]})"
            )
    assert not wrong, "imports against ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_no_import_cycle_between_parts_of_the_package() -> None:
    graph: dict[str, set[str]] = {}
    for source, target, _ in edges():
        a, b = unit(source)[1], unit(target)[1]
        if a != b:
            graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}  # 1: on the path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, node, nxt])
            if nxt not in state:
                visit(nxt, [*path, node])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])


def test_the_scan_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The checker itself: an import inside a function and a relative one are both found."""
    src = tmp_path / "mod.py"
    src.write_text("def f():\n    from ..cli import main\n    import lbnet_deploy.loaders\n")
    found = {t for t, _ in imports("lbnet_deploy.runtime.mod", src)}
    assert "lbnet_deploy.cli" in found and "lbnet_deploy.loaders" in found


def test_studies_are_not_installed() -> None:
    """Research scripts run from a checkout (benchmarks/studies/); the wheel carries none."""
    installed = {path.resolve() for _, path in package_files()}
    studies = sorted((REPO / "benchmarks" / "studies").glob("*.py"))
    assert studies, "benchmarks/studies/ holds the studies"
    assert not installed & {p.resolve() for p in studies}
    # code that builds a path to the checkout's shared folder (a command line in a report's
    # text, for a person to run from a checkout, is not a pointer)
    pointer = re.compile(r"""/\s*["']shared["']|["']shared/(data|weights)""")
    for _, path in package_files():
        assert not pointer.search(path.read_text()), (
            f"{path}: installed code must not point at ../shared (only the checkout's studies may)"
        )
