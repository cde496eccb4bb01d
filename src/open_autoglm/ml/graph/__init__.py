"""ml/graph."""
