"""The layering of DESIGN §1, checked over the source text of every module.

Imports are read with `ast`, so lazy imports inside functions and imports under ``if TYPE_CHECKING:`` count
the same as module-level ones: a type-only import upward is still a dependency a reader has to hold in mind,
and the lazy ones are where layering quietly erodes.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "vsalmonn"
MAX_LINES = 600

# component -> layer; lower layers never import higher ones, and components of one layer do not import
# each other (DESIGN allows no such crossing).
LAYERS: dict[str, int] = {
    "memory_store": 1,
    "plugins": 2,  # the plugin API: hook specifications, manager, events
    "perception": 3,
    "tools": 3,
    "agent": 4,
    "builtin": 5,  # the built-in plugins, reached only through the plugin manager
    "root": 5,  # cli, settings, app, demo: the composition root
}
# Importable from anywhere because they import nothing of vsalmonn: the bare package (its version), the sample
# data, and the one-line error rule every layer uses.
NEUTRAL = {"vsalmonn", "vsalmonn.sample", "vsalmonn.errors"}


@dataclass(frozen=True)
class Edge:
    source: str  # importing module, dotted
    target: str  # imported module, dotted
    line: int

    def __str__(self) -> str:
        return f"{self.source}:{self.line} imports {self.target}"


def module_name(path: Path, package: Path) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, package: Path) -> list[Edge]:
    """Every import of a `vsalmonn` module in the file, wherever it sits in the file."""
    source = module_name(path, package)
    is_package = path.name == "__init__.py"
    edges: list[Edge] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against this module's package
                base = source.split(".")
                base = base if is_package else base[:-1]
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            # `from vsalmonn import sample` names a module; `from vsalmonn.x import name` names x
            targets = [f"{module}.{alias.name}" if module == "vsalmonn" else module for alias in node.names]
        else:
            continue
        edges += [
            Edge(source, t, node.lineno) for t in targets if t == "vsalmonn" or t.startswith("vsalmonn.")
        ]
    return edges


def component(module: str) -> str | None:
    """The component of DESIGN §1 a dotted module belongs to; None for the neutral package data."""
    if module in NEUTRAL or module == "vsalmonn.__version__":
        return None
    parts = module.split(".")
    if len(parts) >= 3 and parts[1] == "plugins" and parts[2] == "builtin":
        return "builtin"
    if len(parts) >= 2 and parts[1] in LAYERS and parts[1] not in ("builtin", "root"):
        return parts[1]
    return "root"


def violations(package: Path) -> list[str]:
    found: list[str] = []
    for path in sorted(package.rglob("*.py")):
        for edge in imports_of(path, package):
            here, there = component(edge.source), component(edge.target)
            if here is None or there is None or here == there:
                continue
            if LAYERS[there] > LAYERS[here]:
                found.append(
                    f"{edge}: upward, {here} (layer {LAYERS[here]}) -> {there} (layer {LAYERS[there]})"
                )
            elif LAYERS[there] == LAYERS[here]:
                found.append(f"{edge}: across layer {LAYERS[here]}, {here} -> {there}")
    return found


def long_modules(package: Path, limit: int = MAX_LINES) -> list[str]:
    lines = {path: len(path.read_text(encoding="utf-8").splitlines()) for path in package.rglob("*.py")}
    return [f"{p.relative_to(package.parent)}: {n} lines" for p, n in sorted(lines.items()) if n > limit]


def test_no_module_imports_upward_or_across_a_layer() -> None:
    assert violations(PACKAGE) == []


def test_no_module_is_longer_than_the_limit() -> None:
    assert long_modules(PACKAGE) == []


@pytest.mark.parametrize("module", sorted(NEUTRAL))
def test_the_neutral_modules_import_nothing_of_vsalmonn(module: str) -> None:
    """Everything may import these; that is only safe while they import nothing of vsalmonn themselves."""
    relative = Path(*module.split(".")[1:])
    path = PACKAGE / relative / "__init__.py" if (PACKAGE / relative).is_dir() else PACKAGE / f"{relative}.py"
    assert path.is_file()
    assert imports_of(path, PACKAGE) == []


# --- the checker itself, on small trees that break each rule ------------------------------------------------


def write(root: Path, relative: str, text: str) -> None:
    path = root / "vsalmonn" / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    for folder in path.relative_to(root).parents:
        init = root / folder / "__init__.py"
        if folder != Path(".") and not init.exists():
            init.write_text("")
    path.write_text(text)


@pytest.mark.parametrize(
    ("relative", "text", "expected"),
    [
        ("memory_store/a.py", "from vsalmonn.perception.decode import x\n", "upward, memory_store"),
        ("memory_store/a.py", "def f():\n    import vsalmonn.tools.render\n", "upward, memory_store"),
        (
            "memory_store/a.py",
            "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from vsalmonn.agent import loop\n",
            "upward, memory_store",
        ),
        ("tools/a.py", "from vsalmonn.perception import config\n", "across layer 3, tools -> perception"),
        ("perception/a.py", "from ..tools.render import y\n", "across layer 3, perception -> tools"),
        ("plugins/manager.py", "from .builtin.surveillance import S\n", "upward, plugins"),
        ("cli/export.py", "from vsalmonn.plugins.builtin.meeting_monitor import M\n", "across layer 5, root"),
        ("plugins/builtin/a.py", "from vsalmonn.settings import Settings\n", "across layer 5, builtin"),
    ],
)
def test_the_checker_finds_each_kind_of_violation(
    tmp_path: Path, relative: str, text: str, expected: str
) -> None:
    write(tmp_path, relative, text)
    found = violations(tmp_path / "vsalmonn")
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize(
    ("relative", "text"),
    [
        (
            "perception/a.py",
            "from vsalmonn.memory_store.store import M\nfrom vsalmonn import __version__\n",
        ),
        ("agent/a.py", "from vsalmonn.tools import render\nfrom vsalmonn.plugins import manager\n"),
        (
            "cli/a.py",
            "from vsalmonn.agent.loop import A\nfrom . import b\nfrom vsalmonn.settings import S\n",
        ),
        ("plugins/builtin/a.py", "from vsalmonn.perception.config import C\nfrom .b import c\n"),
        ("memory_store/sub/a.py", "from .. import store\nfrom ..catalog import Catalog\n"),
    ],
)
def test_the_checker_allows_downward_and_inner_imports(tmp_path: Path, relative: str, text: str) -> None:
    write(tmp_path, relative, text)
    assert violations(tmp_path / "vsalmonn") == []


def test_the_line_limit_counts_lines(tmp_path: Path) -> None:
    write(tmp_path, "tools/long.py", "x = 1\n" * (MAX_LINES + 1))
    write(tmp_path, "tools/ok.py", "x = 1\n" * MAX_LINES)
    assert long_modules(tmp_path / "vsalmonn") == [f"vsalmonn/tools/long.py: {MAX_LINES + 1} lines"]
