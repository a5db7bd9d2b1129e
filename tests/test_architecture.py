"""Imports run one way (docs/ARCHITECTURE.md, "Layers"): a module may import its own unit and
the layers below it, never a layer above or a sibling in its own layer; and no private name
(``_x``) is imported from another unit. Every import counts, the lazy ones inside functions
too. A small AST check: no import of facefleet is executed."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "facefleet"

# Bottom first. A unit is a sub-package (``edge``) or a top-level module (``identify``).
# Units in one layer are independent of each other.
LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("fileio", "progress", "layout", "clock", "texttable", "formats", "settings", "lifetime", "__init__"),
    ("ssh", "compute"),
    ("vision", "store"),
    ("workspace",),
    ("registry",),
    ("train",),
    ("fleet", "edge", "enrol", "identify"),
    ("curate", "demo"),
    ("web",),  # the model server and the web console, a front-end over curate like cli
    ("cli",),
]

# Known exceptions, each to be removed by the change named beside it. Keep it short: an entry
# here is a defect that has an owner, not a permission. (file, imported module or module.name)
ALLOWED: set[tuple[str, str]] = set()


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _level(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"unit {unit!r} is in no layer: add it to LAYERS and docs/ARCHITECTURE.md")


def _imports(path: Path):
    """(line, imported module, imported name or None) for every facefleet import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "facefleet":
                    yield node.lineno, alias.name, None
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.split(".")[0] != "facefleet":
                continue
            for alias in node.names:
                sub = ROOT / alias.name
                if node.module == "facefleet" and (sub.is_dir() or sub.with_suffix(".py").is_file()):
                    yield node.lineno, f"facefleet.{alias.name}", None  # from facefleet import layout
                else:
                    yield node.lineno, node.module, alias.name
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}:{node.lineno}: use absolute imports")


def violations() -> tuple[list[str], set[tuple[str, str]]]:
    found: list[str] = []
    used: set[tuple[str, str]] = set()
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        src = _unit("facefleet." + rel.removesuffix(".py").replace("/", "."))
        for line, module, name in _imports(path):
            dst = _unit(module)
            if dst == src:
                continue
            problems = []
            if _level(dst) >= _level(src):
                where = "a sibling in its layer" if _level(dst) == _level(src) else "a higher layer"
                problems.append((module, f"imports {module} ({where})"))
            if name and name.startswith("_") and not name.startswith("__"):
                problems.append((f"{module}.{name}", f"imports the private name {module}.{name}"))
            for key, text in problems:
                if (rel, key) in ALLOWED:
                    used.add((rel, key))
                else:
                    found.append(f"facefleet/{rel}:{line}: {src} {text}")
    return found, used


def test_imports_follow_the_layers():
    found, _ = violations()
    assert not found, "imports against the layers:\n" + "\n".join(found)


def test_allow_list_has_no_stale_entries():
    _, used = violations()
    stale = sorted(ALLOWED - used)
    assert not stale, f"fixed, so remove from ALLOWED: {stale}"


def test_every_unit_has_a_layer():
    units = {p.stem if p.is_file() else p.name for p in ROOT.iterdir() if p.suffix == ".py" or p.is_dir()}
    units.discard("__pycache__")
    for unit in units:
        _level(unit)
