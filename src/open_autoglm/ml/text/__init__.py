"""Language-model code: loading, embeddings, generation, classification, tiny test models.

Import the concept modules directly (``open_autoglm.ml.text.generation`` ...); this package
imports nothing itself so ``import open_autoglm`` never pulls in torch or transformers.
"""

__all__: list[str] = []
