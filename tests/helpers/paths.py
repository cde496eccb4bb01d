"""Paths of test fixtures."""

from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
PLUGIN_DIR = FIXTURES / "plugins"
# The data sets the project may use offline: ../shared/data beside the checkout.
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"

__all__ = ["EXAMPLES", "FIXTURES", "PLUGIN_DIR", "REPO", "SHARED_DATA"]

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
