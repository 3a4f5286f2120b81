"""The rooms of `service/` import only downwards: schemas < domain < ops < stream < replay <
tools < cli. Every import statement counts, including those inside functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Each room and the rooms it may import (itself included).
ALLOWED: dict[str, set[str]] = {
    "schemas": {"schemas"},
    "domain": {"schemas", "domain"},
    "ops": {"schemas", "domain", "ops"},
    "stream": {"schemas", "domain", "ops", "stream"},
    "replay": {"schemas", "domain", "ops", "stream", "replay"},
    "tools": {"schemas", "domain", "ops", "stream", "replay", "tools", "package"},
    "cli": {"schemas", "domain", "ops", "stream", "replay", "tools", "cli", "package"},
    "package": {"package"},
}
ROOMS = ("domain", "ops", "stream", "replay", "tools")


def room_of(module: str) -> str | None:
    """The room a dotted module name belongs to, or None for third-party modules."""
    parts = module.split(".")
    if parts[0] == "schemas":
        return "schemas"
    if parts[0] != "service":
        return None
    if len(parts) > 1 and parts[1] in ("cli", "__main__"):
        return "cli"
    if len(parts) > 1 and parts[1] in ROOMS:
        return parts[1]
    return "package"  # `service` itself: its docstring and __version__


def imports_of(path: Path) -> list[tuple[int, str]]:
    """Every module `path` imports, with its line."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
    return found


def sources() -> list[Path]:
    return sorted(p for d in ("service", "schemas") for p in (ROOT / d).rglob("*.py")
                  if "__pycache__" not in p.parts)


def test_every_module_sits_in_a_known_room() -> None:
    """A new top-level module under service/ must be given a room (or be the command line)."""
    loose = [p.name for p in (ROOT / "service").glob("*.py")
             if p.name not in ("__init__.py", "__main__.py", "cli.py")]
    assert loose == []
    rooms = {p.name for p in (ROOT / "service").iterdir()
             if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms == set(ROOMS), rooms ^ set(ROOMS)


@pytest.mark.parametrize("path", sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_imports_only_go_down(path: Path) -> None:
    """No module imports a room above its own (e.g. the pure core never imports the worker)."""
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    own = room_of(module)
    assert own is not None
    upward = [f"line {line}: {name}" for line, name in imports_of(path)
              if (target := room_of(name)) is not None and target not in ALLOWED[own]]
    assert upward == [], f"{module} imports upwards: {upward}"
