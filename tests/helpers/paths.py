"""Paths of test fixtures."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PLUGIN_DIR = FIXTURES / "plugins"

__all__ = ["FIXTURES", "PLUGIN_DIR"]
