"""Sentences for embedding tests: short and long together, so packs and groups differ."""

MIXED_TEXTS = [
    "the cat sat on the mat",
    "a graph neural network passes messages between nodes and edges of a large graph",
    "hello",
    "embeddings map sentences to vectors",
    "one two three four five six seven eight nine ten one two three",
]

__all__ = ["MIXED_TEXTS"]
