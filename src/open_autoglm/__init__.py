"""Open-AutoGLM: automate language-model and graph-learning work.

Importing this package is cheap: it never imports torch, reads config or starts threads.
"""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
