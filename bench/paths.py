"""Where the benchmarks find the project and the rulebook they all run."""

from __future__ import annotations

from pathlib import Path

__all__ = ["ROOT", "RULES"]

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "examples" / "default" / "rulebook.yaml"
