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


def layers_of_architecture_md() -> list[tuple[str, tuple[str, ...]]]:
    """The layer table of ARCHITECTURE.md, bottom to top, as (layer, module prefixes): the test
    enforces the document itself, so the two cannot drift apart."""
    text = (REPO / "ARCHITECTURE.md").read_text()
    table = text[text.index("| layer | parts |") :].split("\n\n", 1)[0].splitlines()[2:]
    layers = []
    for row in table:
        name, parts = (c.strip() for c in row.strip("|").split("|")[:2])
        names = [p.rstrip("/") for p in re.findall(r"`([^`]+)`", parts)]
        layers.append(
            (name, tuple(n if n == "lbnet_deploy" else f"lbnet_deploy.{n}" for n in names))
        )
    return layers


# bottom to top: a module may import from its own layer and the layers below it, never above
LAYERS = layers_of_architecture_md()
CHECKOUT_NAMES = ("runtime", "export", "calibration", "benchmarks")  # folders, not packages


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
        if isinstance(node, ast.Call) and _dynamic_import(node):  # importlib.import_module("x")
            yield node.args[0].value, node.lineno  # type: ignore[attr-defined]
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


def _dynamic_import(call: ast.Call) -> bool:
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    literal = bool(call.args) and isinstance(call.args[0], ast.Constant)
    return name in ("import_module", "__import__") and literal


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
    return sorted(set(found))


def test_every_installed_module_has_a_layer() -> None:
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = {m.rpartition(".")[0] if not p.name.startswith("__init__") else m
             for m, p in package_files()}  # fmt: skip
    missing = [pkg for pkg in config["packages"] if pkg not in found]
    assert not missing, f"pyproject packages with no files where package-dir says: {missing}"
    assert [name for name, _ in LAYERS][:3] == ["base", "model", "runtime"]
    for module, _ in package_files():
        unit(module)


def test_nothing_imports_the_checkout_folders_by_name() -> None:
    """`from export.x import y` works from a checkout only and bypasses the layer names."""
    wrong = [
        f"{path.relative_to(REPO)}:{line}: {target}"
        for module, path in package_files()
        for target, line in imports(module, path)
        if target.split(".")[0] in CHECKOUT_NAMES
    ]
    assert not wrong, wrong


def test_runtime_needs_torch_only_in_the_pytorch_runner() -> None:
    wrong = [
        f"{path.relative_to(REPO)}:{line}"
        for module, path in package_files()
        if module.startswith("lbnet_deploy.runtime") and module != "lbnet_deploy.runtime.torch_ref"
        for target, line in imports(module, path)
        if target.split(".")[0] == "torch"
    ]
    assert not wrong, f"torch imported in the runtime outside torch_ref: {wrong}"


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
    src.write_text(
        "import importlib\n"
        "def f():\n    from ..cli import main\n    import lbnet_deploy.loaders\n"
        "    importlib.import_module('lbnet_deploy.commands')\n    __import__('export.x')\n"
    )
    found = {t for t, _ in imports("lbnet_deploy.runtime.mod", src)}
    assert {"lbnet_deploy.cli", "lbnet_deploy.loaders", "lbnet_deploy.commands"} <= found
    assert "export.x" in found


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


def test_the_data_the_commands_read_ships_in_the_wheel() -> None:
    """`--backend auto` reads PRECISION.md's data at run time: pyproject lists it as package
    data (a wheel carries no other non-Python file)."""
    import tomllib

    from lbnet_deploy.benchmarks import accuracy

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    shipped = pyproject["tool"]["setuptools"]["package-data"]["lbnet_deploy.benchmarks"]
    assert accuracy.PRECISION_JSON.name in shipped and accuracy.PRECISION_JSON.is_file()
