"""Touchflow: a streaming next-best-action service (Faust agents around a pure decision core)."""

__all__ = ["__version__"]

__version__ = "0.1.0"
