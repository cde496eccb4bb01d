"""The llama.cpp backend for GGUF models (through llama-cpp-python's low-level API).

Imports nothing heavy: ``llama_cpp`` loads when a model does.
"""

from __future__ import annotations

__all__ = ["LlamaCppModel", "LlamaCppOptions"]

from open_autoglm.ml.text.llama_cpp.model import LlamaCppModel, LlamaCppOptions
